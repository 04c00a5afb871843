"""Seconds of the output stage (``engine.outputs.write_outputs``) per photo (not a test; prints figures).

    python benchmarks/write_benchmark.py [--repeats 5] [--json FILE]

On the bundled astronaut photo: one fit (``engine.reconstruct.reconstruct``, whose own
timings are printed: model, load, detect, fit, write, total), then ``write_outputs`` of that
estimate into fresh temporary folders — the **first** call on a freshly loaded head model
(the UV layout is built inside it, as when nothing prepared it) and ``--repeats`` **warm**
calls (layout cached, as in ``reconstruct``, which builds it in the background during the
fit) — with the stage timings ``write_outputs(..., timings=)`` reports (texture = albedo
bake + eye texture + PNG encoding, obj, glb, rig, previews, params) plus ``params.json``.
Wall and CPU time of this process are both printed; the machine may be shared, so the
CPU time is the fairer figure for a single-threaded stage.
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

        Image.fromarray(data.astronaut()).save(photo_path)
        res = reconstruct(photo_path, Path(tmp) / "out")
        photo = load_image(photo_path)
        recon = {k: round(v, 3) for k, v in res.timings.items() if not k.startswith("fit_")}
        print("reconstruct (astronaut):", "  ".join(f"{k} {v:.3f} s" for k, v in recon.items()))
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
