"""Where the procedural teeth of the output files (``engine.head.teeth``) show, and whether
they ever poke through the face.

    python tools/teeth_check.py [--model open] [--size 320]

Renders the head with and without its teeth (triangle ids, no shading) from five views
(front, ±35° of yaw, ±25° of pitch, 0.35 m away), for the neutral face and every expression
unit at weight 1, each at jaw openings 0, 0.2 and 0.4 rad, and counts per case the tooth
pixels (teeth shown) and the tooth pixels where the head without teeth shows skin (a tooth in
front of the lips, cheeks or chin: poke-through). Prints the totals and the cases with
poke-through, worst first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.face import FaceDecoder, FaceParams  # noqa: E402
from engine.head.model import HeadModel  # noqa: E402
from engine.render.camera import PerspectiveCamera, intrinsics, look_at  # noqa: E402

#: (yaw, pitch) in degrees around the mouth
VIEWS = ((0.0, 0.0), (35.0, 0.0), (-35.0, 0.0), (0.0, 25.0), (0.0, -25.0))
JAWS = (0.0, 0.2, 0.4)


def triangle_ids(model: HeadModel, expression: dict[str, float], jaw: float, yaw: float, pitch: float,
                 identity: torch.Tensor | None = None, size: int = 320) -> np.ndarray:
    """``(size, size)`` triangle index per pixel (-1: background) of ``model`` with the given
    expression weights and jaw opening (rad), seen from ``yaw``/``pitch`` degrees around the mouth."""
    centre = torch.tensor([0.0, -0.06, 0.02])
    a, b = np.radians(yaw), np.radians(pitch)
    eye = centre + 0.35 * torch.tensor([np.sin(a) * np.cos(b), -np.sin(b), np.cos(a) * np.cos(b)],
                                       dtype=torch.float32)
    R, t = look_at(eye[None], centre[None])
    cam = PerspectiveCamera(intrinsics(1400.0 * size / 320, image_size=(size, size)), R, t, (size, size))
    p = FaceParams.neutral(model, cam)
    for name, value in expression.items():
        p.expression[0, model.expression_names.index(name)] = value
    if "jaw" in model.joint_names:
        p.pose[0, model.joint_names.index("jaw"), 0] = jaw
    if identity is not None:
        p.identity[0] = identity
    with torch.no_grad():
        return FaceDecoder(model)(p).render(lit=False, antialias=False).fragments.tri_id[0].numpy()


def tooth_pixels(model: HeadModel, files: HeadModel, expression: dict[str, float], jaw: float,
                 identity: torch.Tensor | None = None, size: int = 320) -> tuple[int, int]:
    """(tooth pixels, tooth pixels over the teeth-less head's skin) summed over :data:`VIEWS`;
    ``files`` is ``with_teeth(model)``."""
    F = model.n_faces
    skin = model.regions["skin"].cpu().numpy()[model.faces.cpu().numpy()].all(1)
    shown = over = 0
    for yaw, pitch in VIEWS:
        with_t = triangle_ids(files, expression, jaw, yaw, pitch, identity, size)
        without = triangle_ids(model, expression, jaw, yaw, pitch, identity, size)
        tooth = with_t >= F
        shown += int(tooth.sum())
        over += int((tooth & (without >= 0) & skin[np.maximum(without, 0)]).sum())
    return shown, over


def main(argv: list[str] | None = None) -> int:
    from engine.head import load_head_model
    from engine.head.teeth import with_teeth

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="open")
    ap.add_argument("--size", type=int, default=320)
    args = ap.parse_args(argv)
    model = load_head_model(args.model)
    files = with_teeth(model)
    if files is model:
        print(f"{args.model}: the files add no teeth (the model has its own, or no mouth cavity)")
        return 0
    print(files.info["teeth"])
    cases = [("neutral", {})] + [(n, {n: 1.0}) for n in model.expression_names]
    rows = []
    for label, expr in cases:
        for jaw in JAWS:
            shown, over = tooth_pixels(model, files, expr, jaw, size=args.size)
            rows.append((label, jaw, shown, over))
    for jaw in JAWS:
        sel = [r for r in rows if r[1] == jaw]
        print(f"jaw {jaw:.1f} rad: {len(sel)} faces x {len(VIEWS)} views, tooth pixels {sum(r[2] for r in sel)}, "
              f"over skin {sum(r[3] for r in sel)} ({sum(r[3] > 0 for r in sel)} faces); neutral "
              f"{next(r[2] for r in sel if r[0] == 'neutral')} / {next(r[3] for r in sel if r[0] == 'neutral')}")
    bad = sorted((r for r in rows if r[3] > 0), key=lambda r: -r[3])
    print("poke-through (unit, jaw rad: tooth pixels over skin of tooth pixels):" if bad else "no poke-through")
    for label, jaw, shown, over in bad:
        print(f"  {label:18s} {jaw:.1f}: {over} of {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
