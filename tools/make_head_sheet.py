"""Render docs/head_models_sheet.png: the open and ICT models side by side.

Per model: neutral with the 68 landmarks, identity modes 1 and 2 at -2/+2 sd, three ARKit
expressions, the jaw opened by its joint, and a three-quarter view. Uses the head
package's own numpy rasteriser (no GPU, no Blender). Run:

    python tools/make_head_sheet.py [--out docs/head_models_sheet.png] [--models open ict]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.errors import ModelFileError  # noqa: E402
from engine.head import load_head_model, raster  # noqa: E402

SIZE = 360
FOCAL = 1000.0
DIST = 0.8


def panels_for(name: str) -> list[tuple[str, Image.Image]]:
    m = load_head_model(name)
    jaw = m.joint_names.index("jaw")
    cases: list[tuple[str, dict, float, bool]] = [("neutral + 68 landmarks", {}, 0, True)]
    for k in (0, 1):
        for s in (-2, 2):
            beta = torch.zeros(1, m.n_identity)
            beta[0, k] = s * float(m.identity_std[k])
            cases.append((f"identity {k + 1} {s:+d} sd", {"identity": beta}, 0, False))
    for expr in ("jawOpen", "mouthSmileLeft", "eyeBlinkLeft"):
        psi = torch.zeros(1, m.n_expression)
        psi[0, m.expression_names.index(expr)] = 1.0
        cases.append((f"{expr} = 1", {"expression": psi}, 0, False))
    pose = torch.zeros(1, m.n_joints, 3)
    pose[0, jaw, 0] = 0.35
    cases.append(("jaw joint rx = 0.35 rad", {"pose": pose}, 0, True))
    cases.append(("neutral, yaw 40 deg", {}, 40, True))
    K = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2 - 10], [0, 0, 1.0]])
    out = []
    f = m.faces.numpy()
    if "eye_extras" in m.regions:  # ICT's transparent eye occlusion/tear/lash layers: not drawn
        f = f[~m.regions["eye_extras"].numpy()[f].all(1)]
    for label, kw, yaw, lmk in cases:
        with torch.no_grad():
            v = m(**kw).vertices
        lm = m.landmarks(v)[0].numpy().astype(np.float64)
        v = v[0].numpy().astype(np.float64)
        R, t = raster.look_at_frontal(yaw, 0, DIST)
        r = raster.rasterize(v, f, R, t, K, SIZE, SIZE, cull_back=True)
        im = Image.fromarray((raster.shade(r, v, f, R) * 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        if lmk:
            for x, y, z in raster.project(lm, R, t, K):
                xi, yi = int(np.clip(x, 0, SIZE - 1)), int(np.clip(y, 0, SIZE - 1))
                vis = r.depth[yi, xi] > z - 3e-3
                d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(220, 30, 30) if vis else (245, 175, 175))
        d.text((6, 6), f"{name}: {label}", fill=(0, 0, 0))
        out.append((label, im))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/head_models_sheet.png")
    ap.add_argument("--models", nargs="+", default=["open", "ict"])
    args = ap.parse_args()
    rows = []
    for name in args.models:
        try:
            rows.append(panels_for(name))
        except ModelFileError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
    cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (cols * SIZE, len(rows) * SIZE), "white")
    for i, row in enumerate(rows):
        for j, (_, im) in enumerate(row):
            sheet.paste(im, (j * SIZE, i * SIZE))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.size[0]}x{sheet.size[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
