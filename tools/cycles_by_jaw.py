"""Cycles-set reports split by the true jaw opening: where a method beats the mean face.

    python tools/cycles_by_jaw.py REPORT.json [REPORT.json ...] [--deg 3]

For each report (``python -m engine.eval cycles --report``): the faces whose true jaw opening
is below / at least ``--deg`` degrees, the share better than the mean face (mean NoW distance)
and the mean gain over it (mm; negative = better), and the predicted jaw's correlation / mean
absolute error against the truth where the method predicts one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _col(faces: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if f.get(key) is None else float(f[key]) for f in faces])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--deg", type=float, default=3.0, help="jaw opening that counts as open (degrees)")
    args = ap.parse_args(argv)
    print(f"| report | faces jaw < {args.deg:g}° / ≥ {args.deg:g}° | better than mean face (closed / open) "
          "| mean gain mm (closed / open) | jaw corr / MAE ° |")
    print("|---|---|---|---|---|")
    for path in args.reports:
        faces = json.loads(path.read_text())["faces"]
        jaw = _col(faces, "jaw_true_deg")
        gain = _col(faces, "now_mean_mm") - _col(faces, "mean_face_mean_mm")
        pred = _col(faces, "jaw_pred_deg")
        rows = []
        for mask in (jaw < args.deg, jaw >= args.deg):
            rows.append((int(mask.sum()), 100 * float(np.mean(gain[mask] < 0)), float(np.mean(gain[mask]))))
        ok = np.isfinite(pred) & np.isfinite(jaw)
        jaw_txt = "–"
        if ok.sum() > 2 and np.std(pred[ok]) > 0:
            jaw_txt = f"{np.corrcoef(pred[ok], jaw[ok])[0, 1]:.3f} / {np.mean(np.abs(pred[ok] - jaw[ok])):.2f}"
        print(f"| {path.stem} | {rows[0][0]} / {rows[1][0]} | {rows[0][1]:.0f} % / {rows[1][1]:.0f} % "
              f"| {rows[0][2]:+.3f} / {rows[1][2]:+.3f} | {jaw_txt} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
