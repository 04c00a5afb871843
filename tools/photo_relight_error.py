"""How closely the head rendered in Blender under the photo's lighting reproduces the photo.

    python tools/photo_relight_error.py RESULT_DIR [RESULT_DIR ...] [--save DIR] [--samples 32] [--size 384]

For each ``engine reconstruct`` output folder: a fresh scene, the head imported by the add-on
(photo pose, the fitted expression, *Photo lighting* on: the world made from the fitted SH
light), its *Photo Camera* (blender_addon/photo_camera.py), rendered with Cycles through it
(film transparent, Standard view transform) at ``--size`` pixels on the longer side, and
compared with ``photo.jpg`` at the same size on the face: pixels the head covers fully,
inside the hull of the fitted 68 landmarks (jaw line and brows; no hair, no neck), eroded by
2 px. Printed per face and as medians: the mean absolute difference (sRGB, 0-255), the
brightness ratio (mean render / mean photo luma) and the contrast ratio (standard deviation
of the render's luma / the photo's). The texture is the photo divided by the fitted shading,
so a render that reproduces the fitted shading reproduces the photo: ratios of 1, and what
is left is the fit's own error. Runs under the project's venv (the ``bpy`` module).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def face_mask(alpha: np.ndarray, landmarks_px: np.ndarray) -> np.ndarray:
    """(H, W) bool: covered by the head (alpha > 0.99), inside the landmarks' hull, eroded 2 px."""
    import cv2

    hull = np.zeros(alpha.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(landmarks_px).astype(np.int32)), 1)
    mask = (hull > 0) & (alpha > 0.99)
    return cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0


def compare(render_rgba: np.ndarray, photo_rgb: np.ndarray, landmarks_px: np.ndarray) -> dict[str, float]:
    """The scores of one face (module docstring); uint8 images of one size."""
    mask = face_mask(render_rgba[..., 3].astype(np.float32) / 255.0, landmarks_px)
    if mask.sum() < 100:
        raise ValueError(f"only {int(mask.sum())} face pixels to compare")
    r = render_rgba[..., :3][mask].astype(np.float64)
    p = photo_rgb[mask].astype(np.float64)
    luma = np.array([0.2126, 0.7152, 0.0722])
    lr, lp = r @ luma, p @ luma
    return {"pixels": int(mask.sum()), "mae": float(np.abs(r - p).mean()),
            "brightness": float(lr.mean() / max(lp.mean(), 1e-6)),
            "contrast": float(lr.std() / max(lp.std(), 1e-6))}


def render_through_photo_camera(folder: Path, out_png: Path, size: int, samples: int):
    """Render the folder's head through its photo camera; returns the add-on's PhotoCamera."""
    import bpy

    from blender_addon.figure import _fresh_import, through_camera_setup
    from blender_addon.photo_camera import add_photo_camera

    obj = _fresh_import(folder, photo_lighting=True)
    made = add_photo_camera(bpy.context, obj)
    scene = bpy.context.scene
    through_camera_setup(scene, samples, size)
    scene.render.filepath = str(out_png)
    bpy.ops.render.render(write_still=True)
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--save", type=Path, help="keep each render and a side-by-side with the photo here")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--size", type=int, default=384)
    args = ap.parse_args(argv)
    from PIL import Image

    from blender_addon.importer import read_params

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for folder in args.folders:
            if not (folder / "params.json").is_file():
                print(f"{folder}: not an engine reconstruct output folder, skipped", flush=True)
                continue
            png = Path(tmp) / f"{folder.name}.png"
            made = render_through_photo_camera(folder, png, args.size, args.samples)
            if made.photo is None:
                print(f"{folder}: no photo.jpg (and the photo is gone), skipped", flush=True)
                continue
            render = np.asarray(Image.open(png).convert("RGBA"))
            photo = np.asarray(Image.open(made.photo).convert("RGB").resize(render.shape[1::-1], Image.LANCZOS))
            params = read_params(folder)
            lm = np.asarray(params["landmarks68_image_px"], np.float64) * render.shape[1] / params["image_size"][0]
            score = compare(render, photo, lm)
            rows.append(score)
            print(f"{folder.name}: mean |render - photo| {score['mae']:5.1f} /255  brightness {score['brightness']:.3f}"
                  f"  contrast {score['contrast']:.3f}  ({score['pixels']} face pixels)", flush=True)
            if args.save is not None:
                args.save.mkdir(parents=True, exist_ok=True)
                over = Image.fromarray(photo).convert("RGBA")
                over.alpha_composite(Image.fromarray(render))
                pair = Image.new("RGB", (2 * render.shape[1], render.shape[0]))
                pair.paste(Image.fromarray(photo), (0, 0))
                pair.paste(over.convert("RGB"), (render.shape[1], 0))
                pair.save(args.save / f"{folder.name}.png")
    if rows:
        med = {k: float(np.median([r[k] for r in rows])) for k in ("mae", "brightness", "contrast")}
        print(f"median over {len(rows)} faces: mean |render - photo| {med['mae']:.1f} /255  brightness "
              f"{med['brightness']:.3f}  contrast {med['contrast']:.3f}", flush=True)
    return 0 if rows else 1


if __name__ == "__main__":
    from blender_addon.figure import exit_after

    exit_after(main)  # (bpy as a module can hang in its exit handlers)
