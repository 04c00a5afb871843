"""Seconds per photo: one ``reconstruct`` command per photo against one batch command
(not a test; prints figures).

    python benchmarks/batch_benchmark.py [--n 8] [--method fit] [--json FILE]

Makes ``--n`` photos from the bundled examples (astronaut and Grace Hopper, plain and
mirrored, so that no two are the same picture), then times, wall clock, in fresh processes
as a user runs them: ``python -m engine reconstruct PHOTO --out DIR`` once per photo, and
``python -m engine reconstruct FOLDER --out DIR`` once for all of them (engine/batch.py:
model, method and detector loaded once). Prints both totals, seconds per photo and the
batch's own per-face seconds from ``batch.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _photos(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    from engine.photo.examples import example_image

    sources = [example_image("astronaut"), example_image("grace_hopper")]
    paths = []
    for k in range(n):
        rgb = sources[k % 2]
        if (k // 2) % 2:
            rgb = rgb[:, ::-1]
        shift = k // 4  # more than four photos: crop a few pixels off, still a different picture
        rgb = rgb[shift:, shift:]
        path = folder / f"photo{k:02d}.png"
        Image.fromarray(rgb.copy()).save(path)
        paths.append(path)
    return paths


def _run(args: list[str]) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "engine", "reconstruct", *args, "--progress", "none"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{r.stderr}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="photos (default 8)")
    ap.add_argument("--method", default="fit")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "photos").mkdir()
        photos = _photos(root / "photos", a.n)
        single = [_run([str(p), "--out", str(root / "single" / p.stem), "--method", a.method]) for p in photos]
        batch = _run([str(root / "photos"), "--out", str(root / "batch"), "--method", a.method])
        report = json.loads((root / "batch" / "batch.json").read_text())
    per_face = [i["seconds"] for i in report["items"]]
    figures = {"photos": a.n, "method": a.method, "single_total_s": round(sum(single), 2),
               "single_per_photo_s": round(sum(single) / a.n, 3), "single_median_s": round(statistics.median(single), 3),
               "batch_total_s": round(batch, 2), "batch_per_photo_s": round(batch / a.n, 3),
               "batch_face_median_s": round(statistics.median(per_face), 3), "faces_done": report["faces_done"]}
    print(f"{a.n} photos, --method {a.method}, wall clock in fresh processes")
    print(f"  one command per photo: {figures['single_total_s']:.2f} s in all, {figures['single_per_photo_s']:.3f} s "
          f"per photo (median {figures['single_median_s']:.3f} s)")
    print(f"  one batch command:     {figures['batch_total_s']:.2f} s in all, {figures['batch_per_photo_s']:.3f} s "
          f"per photo (batch.json: {figures['batch_face_median_s']:.3f} s per face, median; "
          f"{figures['faces_done']} faces)")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
