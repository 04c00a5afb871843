"""Seconds of the output stage (``engine.outputs.write_outputs``) per photo (not a test; prints figures).

    python benchmarks/write_benchmark.py [--repeats 5] [--upscale N] [--json FILE]

On the bundled astronaut photo (512 px; ``--upscale 4``: enlarged to 2048 px, a large photo):
one ``engine.reconstruct.reconstruct`` in this fresh process, whose own timings are printed
(model, load, detect, fit, write, total: its ``write`` is the CLI's write stage, cold
process, with the UV layout and OBJ text prepared during the fit), then ``write_outputs`` of
that estimate into fresh temporary folders — the **first** call on a freshly loaded head
model (the UV layout is built inside it, as when nothing prepared it) and ``--repeats``
**warm** calls — with the stage timings ``write_outputs(..., timings=)`` reports (this
thread's wall time: texture = crop + albedo bake, previews = the summary, meshes / glb =
what was left to wait for of the background jobs, eyes, params) plus ``params.json``.
Wall and CPU time of this process are both printed; the stage runs three threads on the
machine's cores, so the wall time is the figure (CPU time shows the total work).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _write_once(model, estimate, photo) -> tuple[dict[str, float], float, float]:
    from engine.outputs import write_outputs, write_params

    stages: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        params = write_outputs(tmp, model, estimate, photo, method="fit", timings=stages)
        t1 = time.perf_counter()
        write_params(Path(tmp) / "params.json", params)
        stages["params.json"] = time.perf_counter() - t1
        return stages, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads of the process (default: torch's own, as the CLI; the fit "
                         "and write_outputs each set their own)")
    ap.add_argument("--upscale", type=int, default=1,
                    help="enlarge the photo this many times (Lanczos) first: a large photo (4 -> 2048 px)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from skimage import data

    from engine.head import load_head_model
    from engine.photo import load_image
    from engine.reconstruct import reconstruct

    with tempfile.TemporaryDirectory() as tmp:
        photo_path = Path(tmp) / "astronaut.png"
        from PIL import Image

        img = Image.fromarray(data.astronaut())
        if args.upscale > 1:
            img = img.resize((img.width * args.upscale, img.height * args.upscale), Image.LANCZOS)
        img.save(photo_path)
        res = reconstruct(photo_path, Path(tmp) / "out")
        photo = load_image(photo_path)
        recon = {k: round(v, 3) for k, v in res.timings.items() if not k.startswith("fit_")}
        print(f"reconstruct (astronaut, {img.width} px):", "  ".join(f"{k} {v:.3f} s" for k, v in recon.items()))
        model = load_head_model("open")  # fresh: no cached UV layout
        first, wall0, cpu0 = _write_once(model, res.estimate, photo)
        print(f"write_outputs, first call (UV layout built inside): {wall0:.3f} s wall, {cpu0:.3f} s CPU")
        print("  " + "  ".join(f"{k} {v:.3f}" for k, v in first.items()))
        warm = [_write_once(model, res.estimate, photo) for _ in range(args.repeats)]
        keys = list(warm[0][0])
        med = {k: statistics.median(w[0][k] for w in warm) for k in keys}
        wall = statistics.median(w[1] for w in warm)
        cpu = statistics.median(w[2] for w in warm)
        print(f"write_outputs, warm (median of {args.repeats}): {wall:.3f} s wall, {cpu:.3f} s CPU")
        print("  " + "  ".join(f"{k} {v:.3f}" for k, v in med.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "reconstruct": recon, "first": {"wall": wall0, "cpu": cpu0, "stages": first},
            "warm": {"wall": wall, "cpu": cpu, "stages": med, "repeats": args.repeats}}, indent=1))


if __name__ == "__main__":
    main()
