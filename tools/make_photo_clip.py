"""A short clip made from one photo moved like a hand-held shot: pan, zoom and roll.

    python tools/make_photo_clip.py OUT.mp4 [--photo PHOTO | --example astronaut] [--frames 45] [--fps 30]

Each frame is the photo turned (±8°), scaled (0.85-1.15) and shifted (±12 % of its side)
along smooth paths, cropped to the photo's size, and written with OpenCV (mp4v). The face in
it moves in 2-D only, so ``python -m engine animate`` should give a steady head whose
camera follows the motion: the Blender add-on's video camera figure (docs/blender_addon.md)
uses it.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def frames_of(photo: np.ndarray, n: int) -> list[np.ndarray]:
    """``n`` moved copies of ``photo`` (RGB uint8) along the module docstring's paths."""
    import cv2

    h, w = photo.shape[:2]
    out = []
    for k in range(n):
        s = k / max(n - 1, 1)
        angle = 8.0 * math.sin(2 * math.pi * s)
        scale = 1.0 + 0.15 * math.sin(math.pi * s)
        dx, dy = 0.12 * w * math.sin(2 * math.pi * s + 1.0), 0.12 * h * math.sin(math.pi * s) * 0.5
        M = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        M[:, 2] += (dx, dy)
        out.append(cv2.warpAffine(photo, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--photo", type=Path)
    ap.add_argument("--example", default="astronaut")
    ap.add_argument("--frames", type=int, default=45)
    ap.add_argument("--fps", type=float, default=30.0)
    args = ap.parse_args(argv)
    import cv2

    from engine.photo import load_image
    from engine.photo.examples import example_image

    rgb = load_image(args.photo).rgb if args.photo else example_image(args.example)
    frames = frames_of(rgb, args.frames)
    h, w = rgb.shape[:2]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(args.out), cv2.VideoWriter_fourcc(*"mp4v"), args.fps, (w, h))
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()
    print(f"wrote {args.out}: {len(frames)} frames of {w} x {h} at {args.fps:g} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
