"""Seconds per photo for the default fit (not a test; prints figures).

    python benchmarks/fit_benchmark.py [--device cpu|cuda] [--n 5] [--model open]

Times ``fit_photo`` on synthetic 224-px faces with detected-quality landmarks replaced by
the ground truth (detection is timed separately on the astronaut photo), after one warm-up
fit, and the whole ``reconstruct`` call (load, detect, fit, write all files) on the
astronaut.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--model", default="open")
    args = ap.parse_args()
    from engine.fitting import FitConfig, fit_photo, model_cache
    from engine.head import load_head_model
    from engine.reconstruct import reconstruct
    from engine.synthetic import render_sample

    model = load_head_model(args.model, device=args.device)
    cpu_model = load_head_model(args.model)
    model_cache(model)
    samples = [render_sample(cpu_model, 100 + i) for i in range(args.n)]
    fit_photo(model, samples[0].image, samples[0].landmarks2d.numpy(), FitConfig())  # warm-up
    times, stages = [], {}
    for s in samples:
        t = time.perf_counter()
        r = fit_photo(model, s.image, s.landmarks2d.numpy(), FitConfig())
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        for k, v in r.timings.items():
            stages.setdefault(k, []).append(v)
    print(f"fit_photo ({args.model}, {args.device}, torch threads during fit: "
          f"{FitConfig().cpu_threads if args.device == 'cpu' else 'n/a'}): "
          f"median {statistics.median(times):.3f} s, mean {statistics.mean(times):.3f} s over {len(times)} faces")
    print("  stages (median s): " + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in stages.items()))
    with tempfile.TemporaryDirectory() as d:
        from PIL import Image
        from skimage import data

        photo = Path(d) / "astronaut.png"
        Image.fromarray(data.astronaut()).save(photo)
        t = time.perf_counter()
        res = reconstruct(photo, Path(d) / "out", model=args.model, device=args.device)
        total = time.perf_counter() - t
    print(f"reconstruct(astronaut) end to end: {total:.2f} s  "
          + ", ".join(f"{k} {v:.2f}" for k, v in res.timings.items() if not k.startswith("fit_")))


if __name__ == "__main__":
    main()
