"""Render docs/deca_detail_animated.png: one DECA detail code animated across five expressions.

    python tools/make_detail_figure.py --checkpoint runs/deca_detail/final.pt \
        [--out docs/deca_detail_animated.png] [--seed 8]

Person ``seed`` of the realistic generator (a clean frontal shot under a raking light,
:func:`engine.generator.wrinkles.figure_config`) is photographed neutral; the network encodes
that one photo (true landmarks) into its coarse face and its detail code. Rows:

1. the generator's photos of that person at the five expressions (true wrinkles), for reference;
2. the network's face from the *neutral* photo, posed with each expression's weights, shaded
   with the detail decoded from the **one neutral detail code** at that expression (grey
   albedo, the network's own SH light estimate): the wrinkles must move with the expression;
3. those detail maps, front view of the face (mm);
4. the generator's true detail maps (mm), same view and scale.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.export.detail import whole_layout
    from engine.generator.realistic import render_realistic
    from engine.generator.wrinkles import FIGURE_EXPRESSIONS, figure_config, figure_pose, front_view, raking_light
    from engine.methods.deca import Deca

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", default="docs/deca_detail_animated.png")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args(argv)

    torch.manual_seed(0)
    net = Deca.load(a.checkpoint)
    head = net.head
    cfg = figure_config(a.size)
    shots = []
    for title, units, jaw_rad in FIGURE_EXPRESSIONS:
        e, q = figure_pose(head, units, jaw_rad)
        shots.append((title, e, q, render_realistic(head, a.seed, cfg, expression=e, pose=q, lights=raking_light())))

    neutral_photo = shots[0][3]
    with torch.no_grad():
        est = net.predict_photo(neutral_photo.image, neutral_photo.landmarks2d.numpy())
        code = est.detail_code
        window = tuple(float(x) for x in net.detail_window)
        renders, maps_pred, maps_true = [], [], []
        for title, e, q, shot in shots:
            et = torch.tensor(e, dtype=torch.float32)[None]
            qt = torch.tensor(q, dtype=torch.float32)[None]
            d = net.decode_detail(code, et, qt)
            p = est.replace(expression=et, pose=qt, displacement=d, displacement_window=net.window_batch(1),
                            albedo=torch.full((1, head.n_vertices, 3), 0.62), reflectance=None, albedo_map=None)
            out = net.decoder(p).render(antialias=True)
            img = (out.image[0].permute(1, 2, 0).clamp(0, 1).numpy() ** (1 / 1.6))  # a little gamma for the paper
            renders.append(np.where(out.mask[0, 0].numpy()[..., None] > 0, img, 1.0))
            full, _ = whole_layout(d, window)
            maps_pred.append(front_view(head, full[:1]) * 1e3)
            maps_true.append(front_view(head, shot.params.displacement) * 1e3)

    n = len(shots)
    fig, ax = plt.subplots(4, n, figsize=(2.9 * n, 11.6))
    lim = 0.8
    for k, (title, _, _, shot) in enumerate(shots):
        ax[0, k].imshow(shot.image)
        ax[0, k].set_title(title)
        ax[1, k].imshow(renders[k])
        im = ax[2, k].imshow(maps_pred[k], cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax[3, k].imshow(maps_true[k], cmap="RdBu_r", vmin=-lim, vmax=lim)
        for a_ in ax[:, k]:
            a_.set_xticks([])
            a_.set_yticks([])
    ax[0, 0].set_ylabel("generator photo\n(true wrinkles)")
    ax[1, 0].set_ylabel("network: neutral photo's\ncode at each expression")
    ax[2, 0].set_ylabel("network detail (mm)")
    ax[3, 0].set_ylabel("true detail (mm)")
    fig.colorbar(im, ax=ax[2:, :].ravel().tolist(), shrink=0.6, label="displacement (mm)")
    fig.suptitle(f"DECA detail: one detail code (from the neutral photo, seed {a.seed}) decoded at five "
                 f"expressions — {Path(a.checkpoint).name}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
