"""Seconds per photo for the default fit (not a test; prints figures).

    python benchmarks/fit_benchmark.py [--device cpu|cuda] [--n 5] [--model open] [--fit-option KEY=VALUE ...]

Times ``fit_photo`` on synthetic 224-px faces, after one warm-up fit, twice: with the
ground-truth iBUG-68 landmarks, and with the MediaPipe detection (dense 478-point path, the
default on photos; detection itself not timed); then the whole ``reconstruct`` call (load,
detect, fit, write all files) on the astronaut. Wall time and CPU time of this process
(``time.process_time``) are both printed: on a loaded machine the CPU time is the fairer
figure (the fit runs one intra-op thread).
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--json", default=None, metavar="FILE", help="also append JSON records to FILE")
    ap.add_argument("--no-reconstruct", action="store_true", help="skip the end-to-end astronaut run")
    ap.add_argument("--fit-option", action="append", default=[], metavar="KEY=VALUE",
                    help="a FitConfig field (engine/fitting/config.py), e.g. landmark_solver=lm; repeatable")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="profile one fit (ground-truth landmarks); print its N most expensive operators by CPU time")
    args = ap.parse_args()
    from engine.fitting import fit_config, fit_photo, model_cache
    from engine.head import load_head_model
    from engine.reconstruct import reconstruct
    from engine.generator import render_sample

    cfg = fit_config(args.fit_option)
    model = load_head_model(args.model, device=args.device)
    cpu_model = load_head_model(args.model)
    model_cache(model)
    samples = [render_sample(cpu_model, 100 + i) for i in range(args.n)]
    fit_photo(model, samples[0].image, samples[0].landmarks2d.numpy(), cfg)  # warm-up
    if args.profile:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _profile import profile_call

        s0 = samples[0]
        print(profile_call(lambda: fit_photo(model, s0.image, s0.landmarks2d.numpy(), cfg),
                           args.device == "cuda", args.profile, sort="cpu_time_total"))
    detections = []
    try:
        from engine.detect import detect_faces

        for s in samples:
            faces = [f for f in detect_faces(s.image) if f.landmarks68 is not None]
            detections.append(faces[0] if faces else None)
    except Exception as exc:  # noqa: BLE001 - no detector installed: ground truth only
        print(f"detector unavailable ({exc}); timing ground-truth landmarks only")
    runs = [("ground-truth iBUG-68", [(s, None) for s in samples]),
            ("detected, dense MediaPipe", [(s, d) for s, d in zip(samples, detections) if d is not None])]
    for label, items in runs:
        if not items:
            continue
        times, cpu, stages = [], [], {}
        for s, det in items:
            lm = s.landmarks2d.numpy() if det is None else det.landmarks68[:, :2]
            extra = {} if det is None else dict(native=det.landmarks_native, native_convention=det.convention)
            t, c = time.perf_counter(), time.process_time()
            r = fit_photo(model, s.image, lm, cfg, **extra)
            if args.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            for k, v in r.timings.items():
                stages.setdefault(k, []).append(v)
        print(f"fit_photo ({args.model}, {args.device}, {label}, torch threads during fit: "
              f"{cfg.cpu_threads if args.device == 'cpu' else 'n/a'}): "
              f"wall median {statistics.median(times):.3f} s (mean {statistics.mean(times):.3f}), "
              f"CPU median {statistics.median(cpu):.3f} s (mean {statistics.mean(cpu):.3f}) over {len(times)} faces")
        print("  stages (median wall s): " + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in stages.items()))
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps({"bench": "fit", "device": args.device, "landmarks": label,
                                     "wall_median_s": statistics.median(times), "faces": len(times),
                                     "stages": {k: statistics.median(v) for k, v in stages.items()}}) + "\n")
    if args.no_reconstruct:
        return
    with tempfile.TemporaryDirectory() as d:
        from PIL import Image
        from skimage import data

        photo = Path(d) / "astronaut.png"
        Image.fromarray(data.astronaut()).save(photo)
        t, c = time.perf_counter(), time.process_time()
        res = reconstruct(photo, Path(d) / "out", model=args.model, device=args.device, config=cfg)
        total, total_cpu = time.perf_counter() - t, time.process_time() - c
    print(f"reconstruct(astronaut) end to end: {total:.2f} s wall, {total_cpu:.2f} s CPU  "
          + ", ".join(f"{k} {v:.2f}" for k, v in res.timings.items() if not k.startswith("fit_")))


if __name__ == "__main__":
    main()
