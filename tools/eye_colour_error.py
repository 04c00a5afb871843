"""How close are the eye colours an output folder gives the eye material to the truth?

    python tools/eye_colour_error.py --set data/cycles_val ROOT [ROOT ...]

Each ROOT holds ``python -m engine reconstruct data/cycles_val/NNNNN.png --out ROOT/NNNNN``
folders (any version of the engine); their ``params.json`` ``eyes`` entry (``iris_rgb``,
``sclera_rgb``, sRGB) is compared with the Cycles set's true eye albedo: the iris is the
median albedo of the true head's eyeball vertices 15–30° from the eyeball's forward axis
(the set paints the iris from 13° to 32°), the sclera that of those 40–70° from it. The error
is CIE76 ΔE (Euclidean distance in CIELAB; ~2.3 is a just-noticeable difference) per face;
printed: the median and mean over faces per ROOT, and each later ROOT against the first face
by face. Needs the ICT Face Model (the set's heads) for the eyeball regions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IRIS_DEG = (15.0, 30.0)
SCLERA_DEG = (40.0, 70.0)


def true_eye_colours(gt: dict, eyes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(iris, sclera) sRGB of one sample of the set: medians of its per-vertex albedo over the
    eyeball vertices (``eyes (V,)`` bool) at :data:`IRIS_DEG` / :data:`SCLERA_DEG` from each
    eyeball's forward axis (+Z of the model frame), the eyeballs' centres fitted as spheres."""
    from engine.generator.eyes import _fit_sphere

    X = np.asarray(gt["vertices_model"], np.float64)
    alb = np.asarray(gt["albedo"], np.float64)
    theta = np.full(len(X), np.nan)
    for side in (1.0, -1.0):
        ids = np.flatnonzero(eyes & (np.sign(X[:, 0]) == side))
        c, _ = _fit_sphere(X[ids])
        d = X[ids] - c
        theta[ids] = np.degrees(np.arccos(np.clip(d[:, 2] / np.linalg.norm(d, axis=1), -1, 1)))
    iris = (theta >= IRIS_DEG[0]) & (theta <= IRIS_DEG[1])
    sclera = (theta >= SCLERA_DEG[0]) & (theta <= SCLERA_DEG[1])
    return np.median(alb[iris], 0), np.median(alb[sclera], 0)


def delta_e(a: np.ndarray, b: np.ndarray) -> float:
    """CIE76 ΔE between two sRGB colours in [0, 1]."""
    from skimage.color import rgb2lab

    la, lb = rgb2lab(np.clip(np.array([[a, b]], np.float64), 0, 1))[0]
    return float(np.linalg.norm(la - lb))


def main(argv: list[str] | None = None) -> int:
    from engine.head import load_head_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", required=True, dest="set_dir", help="the Cycles set the folders were made from")
    ap.add_argument("roots", nargs="+", help="folders of reconstruct outputs named by sample (00010, ...)")
    args = ap.parse_args(argv)
    try:
        ict = load_head_model("ict")
    except Exception as exc:  # noqa: BLE001 - the message says what is missing
        print(f"error: the Cycles set's heads are ICT's, which could not be loaded ({exc})", file=sys.stderr)
        return 2
    eyes = ict.regions["eyes"].numpy()
    roots = [Path(r) for r in args.roots]
    names = sorted(p.name for p in roots[0].iterdir() if (p / "params.json").is_file())
    if not names:
        print(f"error: no reconstruct output folders in {roots[0]}", file=sys.stderr)
        return 2
    errors = {r: {} for r in roots}
    for name in names:
        npz = Path(args.set_dir) / f"{name}.npz"
        if not npz.is_file():
            continue
        with np.load(npz, allow_pickle=False) as z:
            gt = {k: z[k] for k in ("vertices_model", "albedo")}
        iris_t, sclera_t = true_eye_colours(gt, eyes)
        for r in roots:
            p = r / name / "params.json"
            if not p.is_file():
                continue
            e = json.loads(p.read_text())["eyes"]
            errors[r][name] = (delta_e(np.array(e["iris_rgb"]), iris_t), delta_e(np.array(e["sclera_rgb"]), sclera_t))
    print("| folder | faces | iris ΔE median (mean) | sclera ΔE median (mean) |")
    print("|---|---|---|---|")
    for r in roots:
        v = np.array(list(errors[r].values()))
        if not len(v):
            print(f"| {r} | 0 | – | – |")
            continue
        print(f"| {r} | {len(v)} | {np.median(v[:, 0]):.1f} ({v[:, 0].mean():.1f}) | "
              f"{np.median(v[:, 1]):.1f} ({v[:, 1].mean():.1f}) |")
    first = errors[roots[0]]
    for r in roots[1:]:
        common = sorted(set(first) & set(errors[r]))
        if not common:
            continue
        a = np.array([first[n] for n in common])
        b = np.array([errors[r][n] for n in common])
        print(f"  {r} against {roots[0]}, face by face ({len(common)} faces): iris lower on "
              f"{100 * np.mean(b[:, 0] < a[:, 0]):.0f} %, sclera lower on {100 * np.mean(b[:, 1] < a[:, 1]):.0f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
