"""Speed of the synthetic face generators on one CPU thread (images per second).

    .venv/bin/python benchmarks/generator_benchmark.py                    # realistic, open + ICT, 224 px
    .venv/bin/python benchmarks/generator_benchmark.py --models open --n 50 --basic

Renders faces ``--start .. --start + n − 1`` after ``--warmup`` untimed ones (the first call
of a head model builds its template-only caches: UV texels, feature zones, ambient
occlusion; that one-off cost is printed separately). Reports per image the median and mean
wall time and the process CPU time (on a shared machine, wall above CPU means other jobs
were competing for the core), and the CPU time of the stages (painting, scene, background
and degradations, ground truth: ``params.timings``). ICT is skipped when its files are absent.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time(fn, seeds: list[int]) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for s in seeds:
        w0, c0 = time.perf_counter(), time.process_time()
        fn(s)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="open,ict")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--start", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--basic", action="store_true", help="also time the basic generator")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from engine.errors import UserError
    from engine.generator import SyntheticConfig, render_sample
    from engine.generator.realistic import RealisticConfig, render_realistic
    from engine.head import load_head_model

    print(f"one CPU thread, {a.size} px, {a.n} images per model (seeds {a.start}..{a.start + a.n - 1})")
    for name in a.models.split(","):
        try:
            head = load_head_model(name)
        except UserError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        cfg = RealisticConfig(image_size=a.size)
        t0, c0 = time.perf_counter(), time.process_time()
        render_realistic(head, a.start - 1, cfg)
        print(f"{name}: first image (builds the model's caches) {time.perf_counter() - t0:.2f} s wall, "
              f"{time.process_time() - c0:.2f} s CPU")
        for s in range(a.warmup):
            render_realistic(head, a.start - 2 - s, cfg)
        seeds = list(range(a.start, a.start + a.n))
        stages: dict[str, list[float]] = {}

        def one(s: int) -> None:
            for k, v in render_realistic(head, s, cfg).params.timings.items():
                stages.setdefault(k, []).append(v)

        wall, cpu = _time(one, seeds)
        med = statistics.median(cpu)
        print(f"{name} realistic: {1 / med:.1f} img/s (median CPU {1000 * med:.0f} ms, mean {1000 * statistics.mean(cpu):.0f} ms; "
              f"wall median {1000 * statistics.median(wall):.0f} ms) -> 100k images in {1e5 * statistics.mean(cpu) / 3600:.1f} h")
        print("  stages (median CPU ms): " + ", ".join(f"{k} {1000 * statistics.median(v):.0f}" for k, v in stages.items()))
        if a.basic:
            bcfg = SyntheticConfig(image_size=a.size)
            _, bcpu = _time(lambda s: render_sample(head, s, bcfg), seeds)
            print(f"{name} basic:     {1 / statistics.median(bcpu):.1f} img/s (median CPU {1000 * statistics.median(bcpu):.0f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
