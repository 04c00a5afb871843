"""Render CEST's figures (issue #13, docs/cest.md).

    python tools/make_cest_figure.py --checkpoint engine/assets/cest_open_default.pt \
        [--cache runs/realistic_ids] [--out docs/cest_reflectance.png]
    python tools/make_cest_figure.py --checkpoint runs/cest_open/final.pt \
        --compare runs/cest_free/final.pt --out docs/cest_degenerate.png

Faces: the held-out identity groups of :func:`engine.eval.reflectance.held_out_groups` (the
realistic generator's validation split, never trained on). Six views are picked by their true
skin luma (light, medium, dark thirds) and head yaw (the most frontal, and the one nearest 60°).

* Default: one row per face — the input crop; the *illuminated texture* (the photo unwrapped
  into the face's part of the UV layout through the estimated shape and pose; black = not
  seen); the estimated UV reflectance; the shading alone (a grey face under the estimated
  light); the relit render over the photo.
* ``--compare CKPT2``: the degenerate solution — for three of the faces, the reflectance and
  the shading of the first network next to those of the second (e.g. trained without the
  symmetry and cross-frame constraints).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def _face_window(head):
    from engine.render.uv import uv_window

    return uv_window(head.uv, head.face_uv, head.faces, head.regions["face_skin"])


def _pick_views(data, n_groups: int) -> list[tuple[int, int, str]]:
    """(group, view, label) of six views: light/medium/dark skin x frontal/~60 deg yaw."""
    from engine.eval.cycles import face_luminance
    from engine.eval.cycles_set import head_angles

    region = data.head.regions["face_skin"].numpy()
    rows = []
    for g in range(n_groups):
        item = data[g]
        for k in range(item["image"].shape[0]):
            yaw = float(head_angles(item["gt_R"][k].double().numpy())[1])
            rows.append((g, k, face_luminance(item["gt_albedo"][k].numpy(), region), yaw))
    lumas = np.array([r[2] for r in rows])
    edges = np.quantile(lumas, [1 / 3, 2 / 3])
    picks = []
    for tone, lo, hi in (("light", edges[1], 9.0), ("medium", edges[0], edges[1]), ("dark", -1.0, edges[0])):
        band = [r for r in rows if lo <= r[2] < hi]
        front = min(band, key=lambda r: abs(r[3]))
        turned = min(band, key=lambda r: abs(abs(r[3]) - 60.0))
        for r, what in ((front, "frontal"), (turned, "turned")):
            picks.append((r[0], r[1], f"{tone} skin, {what} (yaw {r[3]:+.0f}°)"))
    return picks


@torch.no_grad()
def _estimate(net, image: torch.Tensor, window, size: int) -> dict[str, np.ndarray]:
    """The network's illuminated texture, reflectance (face window of the UV layout), shading
    and relit render of one crop ``(1, 3, S, S)``."""
    from engine.render.uv import full_to_window

    code = net.encode(image)
    params = net.decode(code)
    out = {}
    # a face-window network's texture is already its window (the same face window); a
    # whole-layout network's is cut to it
    windowed = getattr(net, "window", None) is not None

    def to_window(m: torch.Tensor, texture: bool) -> torch.Tensor:
        if texture and windowed:
            return torch.nn.functional.interpolate(m.float(), size=(size, size), mode="bilinear", align_corners=False)
        return full_to_window(m.float(), window, size)

    for key, m in (("texture", getattr(code, "texture", None)), ("reflectance", params.albedo_map)):
        if m is not None:
            win = to_window(m, key == "texture")
            if key == "texture":
                win = win * (to_window(code.texture_mask, True) > 0.5)
            out[key] = win[0].permute(1, 2, 0).clamp(0, 1).numpy()
    dec = net.decoder(params)
    render = dec.render(antialias=True)
    cover = render.fragments.mask[:, None].float()
    out["relit"] = (image * (1 - cover) + render.image.clamp(0, 1) * cover)[0].permute(1, 2, 0).numpy()
    V = net.head.n_vertices
    grey = params.replace(albedo_map=None, reflectance=None, albedo=torch.full((1, V, 3), 0.6))
    shade = net.decoder(grey).render(antialias=True)
    c = shade.fragments.mask[:, None].float()
    out["shading"] = (shade.image.clamp(0, 1) * c + (1 - c))[0].permute(1, 2, 0).numpy()
    return out


def _draw_row(axes, panels: list[np.ndarray | None], titles: list[str] | None, label: str, title_size: int) -> None:
    """One figure row: each panel without ticks (a missing one black), the column titles on
    the first row, the row's label on its left."""
    for c, (ax, p) in enumerate(zip(axes, panels)):
        ax.imshow(p if p is not None else np.zeros((8, 8, 3)))
        ax.set_xticks([])
        ax.set_yticks([])
        if titles:
            ax.set_title(titles[c], fontsize=title_size)
        if c == 0:
            ax.set_ylabel(label, fontsize=8)


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.eval.reflectance import held_out_groups, load_network

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--compare", default=None, metavar="CKPT2", help="the degenerate-solution figure against this network")
    ap.add_argument("--labels", nargs=2, default=["with symmetry + cross-frame consistency", "without them"])
    ap.add_argument("--cache", default=None, help="identity-group corpus (its identities_val); default: render")
    ap.add_argument("--groups", type=int, default=48, help="held-out groups to pick the faces from")
    ap.add_argument("--out", default=None)
    ap.add_argument("--texels", type=int, default=128, help="size of the UV panels")
    a = ap.parse_args(argv)

    torch.manual_seed(0)
    net = load_network(a.checkpoint)
    data = held_out_groups(net.head, a.groups, net.image_size, a.cache)
    window = _face_window(net.head)
    picks = _pick_views(data, a.groups)
    if a.compare is None:
        out = Path(a.out or "docs/cest_reflectance.png")
        cols = ["input (held out)", "illuminated texture\n(photo unwrapped to UV)", "estimated reflectance\n(UV)",
                "estimated shading\n(grey face, estimated light)", "relit render"]
        fig, axes = plt.subplots(len(picks), len(cols), figsize=(2.3 * len(cols), 2.35 * len(picks)))
        for r, (g, k, label) in enumerate(picks):
            img = data[g]["image"][k:k + 1].float()
            est = _estimate(net, img, window, a.texels)
            panels = [img[0].permute(1, 2, 0).numpy(), est.get("texture"), est["reflectance"], est["shading"],
                      est["relit"]]
            _draw_row(axes[r], panels, cols if r == 0 else None, label, title_size=9)
        fig.suptitle(f"CEST on held-out realistic faces ({Path(a.checkpoint).name})", fontsize=11)
    else:
        other = load_network(a.compare)
        out = Path(a.out or "docs/cest_degenerate.png")
        rows = picks[::2]
        cols = ["input", f"reflectance\n{a.labels[0]}", f"shading\n{a.labels[0]}", f"reflectance\n{a.labels[1]}",
                f"shading\n{a.labels[1]}"]
        fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.6 * len(cols), 2.5 * len(rows)))
        for r, (g, k, label) in enumerate(rows):
            img = data[g]["image"][k:k + 1].float()
            e1, e2 = _estimate(net, img, window, a.texels), _estimate(other, img, window, a.texels)
            panels = [img[0].permute(1, 2, 0).numpy(), e1["reflectance"], e1["shading"], e2["reflectance"],
                      e2["shading"]]
            _draw_row(axes[r], panels, cols if r == 0 else None, label, title_size=8)
        fig.suptitle("Reflectance and light with and without CEST's constraints (held-out faces)", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
