"""Seconds per photo: one ``reconstruct`` command per photo, one batch command, and one
request per photo to a kept engine (not a test; prints figures).

    python benchmarks/batch_benchmark.py [--n 8] [--method fit] [--json FILE]

Makes ``--n`` photos from the bundled examples (astronaut and Grace Hopper, plain and
mirrored, so that no two are the same picture), then times, wall clock, in fresh processes
as a user runs them: ``python -m engine reconstruct PHOTO --out DIR`` once per photo;
``python -m engine reconstruct FOLDER --out DIR`` once for all of them (engine/batch.py:
model, method and detector loaded once); and ``python -m engine serve`` (engine/serve.py,
what the Blender add-on keeps running) sent one request per photo, each timed from its
request to its answer, the start of the server (until ``ready``) apart. Prints the totals,
seconds per photo and the batch's own per-face seconds from ``batch.json``.
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


def _serve(photos: list[Path], out: Path, method: str) -> tuple[float, list[float]]:
    """(seconds until the server is ready, seconds of each request) for a kept engine."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    try:
        json.loads(proc.stdout.readline())  # {"ready": true, ...}
        ready = time.perf_counter() - t
        each = []
        for k, photo in enumerate(photos):
            t = time.perf_counter()
            argv = ["reconstruct", str(photo), "--out", str(out / photo.stem), "--method", method]
            proc.stdin.write(json.dumps({"id": k, "argv": argv}) + "\n")
            proc.stdin.flush()
            while True:
                event = json.loads(proc.stdout.readline())
                if "end" in event:
                    if event["status"] != 0:
                        raise SystemExit(f"failed: {photo}: {event['error']}")
                    break
            each.append(time.perf_counter() - t)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    return ready, each


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
        ready, served = _serve(photos, root / "served", a.method)
    per_face = [i["seconds"] for i in report["items"]]
    figures = {"photos": a.n, "method": a.method, "single_total_s": round(sum(single), 2),
               "single_per_photo_s": round(sum(single) / a.n, 3), "single_median_s": round(statistics.median(single), 3),
               "batch_total_s": round(batch, 2), "batch_per_photo_s": round(batch / a.n, 3),
               "batch_face_median_s": round(statistics.median(per_face), 3), "faces_done": report["faces_done"],
               "serve_ready_s": round(ready, 2), "serve_first_s": round(served[0], 3),
               "serve_rest_median_s": round(statistics.median(served[1:] or served), 3)}
    print(f"{a.n} photos, --method {a.method}, wall clock in fresh processes")
    print(f"  one command per photo: {figures['single_total_s']:.2f} s in all, {figures['single_per_photo_s']:.3f} s "
          f"per photo (median {figures['single_median_s']:.3f} s)")
    print(f"  one batch command:     {figures['batch_total_s']:.2f} s in all, {figures['batch_per_photo_s']:.3f} s "
          f"per photo (batch.json: {figures['batch_face_median_s']:.3f} s per face, median; "
          f"{figures['faces_done']} faces)")
    print(f"  kept engine (serve):   ready after {figures['serve_ready_s']:.2f} s; first request "
          f"{figures['serve_first_s']:.3f} s, the others {figures['serve_rest_median_s']:.3f} s (median)")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
