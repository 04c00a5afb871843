"""Do props in front of the face end up in the texture? Realistic frames with glasses, scored.

    python tools/occluder_texture_error.py build --out runs/glasses [--n 30] [--seed 9000] [--size 320] [--props glasses|all]
    python -m engine reconstruct runs/glasses/NNNNN.png --out ROOT/NNNNN      # for every frame
    python tools/occluder_texture_error.py score --set runs/glasses ROOT [ROOT ...]

``build`` renders near-frontal frames of the realistic generator (open head) in which every
face wears clear glasses (no hands, hats or sunglasses; ``--props all``: the generator's own
odds of glasses, sunglasses, hats and hands instead), with their ground truth: the posed mesh
in the camera frame, its per-vertex albedo and the segmentation (which pixels show the
glasses, hair, eyes...). ``score`` renders each reconstruction (its ``head.obj`` with
``albedo.png``, unlit, through its own camera) and the truth (unlit, per-vertex albedo) in
the photo's frame and compares them on the truth's face skin (no brows, lips or eyes), in
groups of pixels: **under the glasses** (the frame and lenses cover the skin in the photo),
**under hair, a hat or a hand** and **elsewhere** (skin the photo shows). Each image is divided by its own median over
the "elsewhere" pixels, channel by channel, so the figures measure the pattern (a dark frame
painted onto the skin), not the overall skin level: the median over faces of the mean
absolute relative difference. Lower is better.

These are the project's own generated faces, so they flatter nothing learned here: the bake
is not learned. Check real photos too (``--example grace_hopper`` wears glasses).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GLASSES_LABEL = 8  # engine.generator.props.SEGMENT_LABELS["glasses"]
OTHER_PROP_LABELS = (5, 7, 9)  # ... ["hair"], ["hat"], ["hand"]


def build(out: Path, n: int, seed: int, size: int, props: str = "glasses") -> None:
    import torch
    from PIL import Image

    from engine.generator.props import SEGMENT_LABELS
    from engine.generator.realistic import RealisticConfig, render_realistic
    from engine.head import load_head_model

    if (SEGMENT_LABELS["glasses"], SEGMENT_LABELS["hair"], SEGMENT_LABELS["hat"], SEGMENT_LABELS["hand"]) \
            != (GLASSES_LABEL, *OTHER_PROP_LABELS):
        raise SystemExit("the generator's segmentation labels changed; update GLASSES_LABEL / OTHER_PROP_LABELS")
    head = load_head_model("open")
    frame = dict(image_size=size, wide_pose_probability=0.0, pose_sd_deg=(8.0, 15.0, 5.0), face_fraction=(0.35, 0.7),
                 blink_probability=0.0)
    cfg = RealisticConfig(**frame) if props == "all" else RealisticConfig(
        **frame, glasses_probability=1.0, sunglasses_fraction=0.0, hand_probability=0.0, hat_probability=0.0)
    out.mkdir(parents=True, exist_ok=True)
    skin = head.regions["face_skin"].cpu().numpy()
    for k in range(n):
        s = render_realistic(head, seed + k, cfg)
        p = s.params
        cam = p.camera
        R, t = cam.R[0].double().numpy(), cam.t[0].double().numpy()
        verts = s.vertices.double().numpy() @ R.T + t
        Image.fromarray(s.image).save(out / f"{k:05d}.png")
        np.savez_compressed(out / f"{k:05d}.npz", vertices_camera=verts.astype(np.float32),
                            faces=head.faces.cpu().numpy().astype(np.int32), albedo=p.albedo[0].float().numpy(),
                            K=cam.K[0].double().numpy(), skin_face_mask=skin, segmentation=s.segmentation,
                            image_size=np.array(s.image.shape[1::-1]), seed=np.int64(seed + k))
        print(f"{k + 1}/{n}", end="\r", flush=True)
    print(f"{n} frames ({'the generator' + chr(39) + 's props' if props == 'all' else 'with glasses'}) in {out}")


def face_errors(folder: Path, gt: dict) -> tuple[float, float, float]:
    """(under the glasses, under hair / a hat / a hand, elsewhere) relative texture error of one
    reconstruction folder (nan where fewer than 20 pixels of a group compare)."""
    import torch
    from PIL import Image

    from engine.render import PerspectiveCamera
    from engine.render.renderer import render_mesh
    from texture_error import read_obj

    params = json.loads((folder / "params.json").read_text())
    verts, faces, uv, face_uv = read_obj(folder / "head.obj")
    albedo = np.asarray(Image.open(folder / "albedo.png").convert("RGB"), np.float32) / 255.0
    ours = verts @ np.asarray(params["R"]).T + np.asarray(params["t"])
    W, H = (int(x) for x in gt["image_size"])

    def camera(K):
        return PerspectiveCamera(torch.tensor(np.asarray(K), dtype=torch.float32)[None], torch.eye(3)[None],
                                 torch.zeros(1, 3), (H, W))

    with torch.no_grad():
        mine = render_mesh(torch.tensor(ours, dtype=torch.float32)[None], torch.from_numpy(faces), camera(params["K"]),
                           texture=torch.from_numpy(albedo).permute(2, 0, 1)[None],
                           uv=torch.tensor(uv, dtype=torch.float32), face_uv=torch.from_numpy(face_uv), antialias=False)
        true = render_mesh(torch.from_numpy(gt["vertices_camera"])[None], torch.from_numpy(gt["faces"].astype(np.int64)),
                           camera(gt["K"]), vertex_colors=torch.from_numpy(gt["albedo"])[None],
                           region_mask=torch.from_numpy(gt["skin_face_mask"].astype(np.float32)), antialias=False)
    a = mine.albedo[0].permute(1, 2, 0).numpy()
    b = true.albedo[0].permute(1, 2, 0).numpy()
    both = mine.fragments.mask[0].numpy() & true.fragments.mask[0].numpy() & (true.region[0, 0].numpy() > 0.99)
    seg = gt["segmentation"]
    rest = both & (seg == 1)  # face skin the photo shows
    if rest.sum() < 200:
        return float("nan"), float("nan"), float("nan")
    ra = a / np.maximum(np.median(a[rest], 0), 1e-3)
    rb = b / np.maximum(np.median(b[rest], 0), 1e-3)
    err = np.abs(ra - rb).mean(-1)
    groups = (both & (seg == GLASSES_LABEL), both & np.isin(seg, OTHER_PROP_LABELS), rest)
    return tuple(float(err[g].mean()) if g.sum() >= 20 else float("nan") for g in groups)


def score(set_dir: Path, roots: list[str]) -> None:
    print("| folder | faces (with glasses / other props) | under the glasses | under hair, a hat or a hand "
          "| elsewhere on the face |")
    print("|---|---|---|---|---|")
    results = []
    for root in roots:
        names = sorted(p.name for p in Path(root).iterdir() if (p / "params.json").is_file() and p.name.isdigit())
        if not names:
            raise SystemExit(f"{root} holds no reconstruct output folders named by frame")
        rows = {}
        for name in names:
            with np.load(set_dir / f"{name}.npz") as z:
                rows[name] = face_errors(Path(root) / name, {k: z[k] for k in z.files})
        results.append(rows)
        r = np.array(list(rows.values()))
        cells = [f"{np.nanmedian(r[:, k]):.3f}" if np.isfinite(r[:, k]).any() else "–" for k in range(3)]
        print(f"| {root} | {np.isfinite(r[:, 2]).sum()} ({np.isfinite(r[:, 0]).sum()} / {np.isfinite(r[:, 1]).sum()}) | "
              + " | ".join(cells) + " |")
    if len(results) == 2:
        common = sorted(set(results[0]) & set(results[1]))
        d = np.array([np.subtract(results[1][n], results[0][n]) for n in common])
        parts = []
        for k, name in enumerate(("under the glasses", "under hair, a hat or a hand", "elsewhere")):
            ok = np.isfinite(d[:, k])
            if ok.any():
                parts.append(f"{name} lower on {100 * np.mean(d[ok, k] < 0):.0f} % of {ok.sum()} "
                             f"(median {np.median(d[ok, k]):+.4f})")
        print(f"  {roots[1]} against {roots[0]}, face by face: " + "; ".join(parts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="render the frames and their ground truth")
    b.add_argument("--out", required=True)
    b.add_argument("--n", type=int, default=30)
    b.add_argument("--seed", type=int, default=9000)
    b.add_argument("--size", type=int, default=320)
    b.add_argument("--props", choices=("glasses", "all"), default="glasses",
                   help="glasses on every face (default), or the generator's own odds of every prop")
    s = sub.add_parser("score", help="score reconstruction folders of the frames")
    s.add_argument("--set", required=True, dest="set_dir")
    s.add_argument("roots", nargs="+")
    a = ap.parse_args(argv)
    if a.cmd == "build":
        if a.n < 1 or a.size < 64:
            ap.error("--n must be at least 1 and --size at least 64")
        build(Path(a.out), a.n, a.seed, a.size, a.props)
    else:
        if not Path(a.set_dir).is_dir():
            ap.error(f"no frames at {a.set_dir}; make them with the build command")
        score(Path(a.set_dir), a.roots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
