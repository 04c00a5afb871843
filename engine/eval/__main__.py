"""``python -m engine.eval synthetic [--n 50] [--seed 0] [--model open] [--json]``."""

from __future__ import annotations

import argparse
import json
import os
import sys

# MediaPipe's C++ side logs an info line to stderr at teardown; a CLI error must stay one line.
os.environ.setdefault("GLOG_minloglevel", "2")

from engine.errors import cli_errors
from engine.methods import registry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.eval")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synthetic", help="MoFA's ground-truth protocol on rendered faces")
    s.add_argument("--n", type=int, default=50)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--model", default="open", choices=["open", "ict", "flame"])
    s.add_argument("--model-path", default=None)
    s.add_argument("--landmarks", default="both", choices=["both", "detected", "gt"])
    s.add_argument("--backend", default="default", help="face detector backend for 'detected'")
    s.add_argument("--method", default="fit", choices=registry.names(include_aliases=True),
                   help="any registered method (python -m engine methods)")
    s.add_argument("--init", default=None, choices=[m.name for m in registry.methods("learned")],
                   help="the learned method a hybrid starts from")
    s.add_argument("--checkpoint", default=None, metavar="CKPT", help="network of a learned method or hybrid")
    s.add_argument("--json", action="store_true", help="print the full report as JSON")
    s.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    with cli_errors():
        import torch

        from engine.eval.synthetic import evaluate_synthetic
        from engine.head import load_head_model

        torch.manual_seed(args.seed)
        model = load_head_model(args.model, args.model_path)
        sources = ("detected", "gt") if args.landmarks == "both" else (args.landmarks,)
        log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
        from engine.methods import build_predictor

        predictor = build_predictor(args.method, model, checkpoint=args.checkpoint, init=args.init)
        rep = evaluate_synthetic(model, n=args.n, seed=args.seed, sources=sources, backend=args.backend, log=log,
                                 predictor=predictor)
        if args.json:
            print(json.dumps(rep.to_dict(), indent=1))
        else:
            print(f"synthetic protocol: method={predictor.name} model={rep.model} n={rep.n} seed={rep.seed} size={rep.image_size}px "
                  f"detector failures={rep.detection_failures}")
            for src, d in rep.summary().items():
                print(f"  {src:9s} faces={int(d['faces'])}  geometric {d['geometric_mm_median']:.2f} mm median "
                      f"({d['geometric_mm_mean']:.2f} mean)  photometric {d['photometric_median']:.3f} median "
                      f"({d['photometric_mean']:.3f} mean)  landmarks {d['landmark_px_median']:.2f} px median "
                      f"({d['landmark_px_mean']:.2f} mean)  {d['seconds_median']:.2f} s/face  "
                      f"[mean-face baseline {d['mean_face_mm_median']:.2f} mm median]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
