"""``python -m engine.eval synthetic [--n 50] [--seed 0] [--model open] [--generator basic|realistic] [--option K=V] [--json]``;
``python -m engine.eval cycles-set build --out DIR [--n 100] [--seed 0]``;
``python -m engine.eval cycles --set DIR --method fit|mofa|hybrid [--json]``;
``python -m engine.eval same-person --set DIR [--method fit]`` (a set built with ``--views``);
``python -m engine.eval expressions [--n 100] [--seed 0] [--neutral 20] [--presets 3] [--json]``;
``python -m engine.eval skin [--n 40] [--seed 0] [--landmarks gt|detected] [--json]``;
``python -m engine.eval detail --checkpoint CKPT [--n 40] [--seed 900000] [--json]``;
``python -m engine.eval reflectance --checkpoint CKPT [--checkpoint CKPT ...] [--n 48] [--cache DIR] [--json]``."""

from __future__ import annotations

import argparse
import json
import os
import sys

# MediaPipe's C++ side logs an info line to stderr at teardown; a CLI error must stay one line.
os.environ.setdefault("GLOG_minloglevel", "2")

from engine.errors import cli_errors
from engine.methods import registry


def _method_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--model", default="open", choices=["open", "ict", "flame"])
    s.add_argument("--model-path", default=None)
    s.add_argument("--backend", default="default", help="face detector backend")
    s.add_argument("--method", default="fit", choices=registry.names(include_aliases=True),
                   help="any registered method (python -m engine methods)")
    s.add_argument("--init", default=None, choices=[m.name for m in registry.methods("learned")],
                   help="the learned method a hybrid starts from")
    s.add_argument("--checkpoint", default=None, metavar="CKPT", help="network of a learned method or hybrid")
    s.add_argument("--fit-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a FitConfig field for fits and hybrids (engine/fitting/config.py), e.g. "
                        "light_level_weight=1; repeatable")
    s.add_argument("--json", action="store_true", help="print the full report as JSON")
    s.add_argument("--quiet", action="store_true")


def _fit_config(options: list[str]):
    """FitConfig with ``KEY=VALUE`` overrides (:func:`engine.fitting.fit_config`), or None for
    the default."""
    if not options:
        return None
    from engine.fitting import fit_config

    return fit_config(options)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["cycles-set"]:  # renders with bpy; its own parser and exit path
        from engine.eval.cycles_set import main as cycles_set_main

        return cycles_set_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m engine.eval")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synthetic", help="MoFA's ground-truth protocol on rendered faces")
    s.add_argument("--n", type=int, default=50)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--landmarks", default="both", choices=["both", "detected", "gt"])
    s.add_argument("--generator", default="basic", choices=["basic", "realistic"],
                   help="the faces: the basic generator's 224-px faces (default) or the realistic generator's "
                        "224-px photo-like frames (any pose, props, lights)")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a field of the generator's config (SyntheticConfig / RealisticConfig, YAML value), e.g. "
                        "wide_pose_probability=1; repeatable")
    _method_args(s)
    sub.add_parser("cycles-set", help="render the Cycles validation set: cycles-set build --out DIR [--n 100] [--seed 0]")
    c = sub.add_parser("cycles", help="score a method on the Cycles validation set (NoW-style geometry, "
                                      "landmarks, pose, skin tone, time)")
    c.add_argument("--set", required=True, dest="set_dir", metavar="DIR", help="a folder built by cycles-set build")
    c.add_argument("--limit", type=int, default=None, help="only the first N samples")
    c.add_argument("--save", default=None, metavar="DIR", help="write each prediction (for the contact sheets)")
    c.add_argument("--report", default=None, metavar="JSON", help="also write the full report (as --json) to this file")
    _method_args(c)
    sp = sub.add_parser("same-person", help="one identity from several photos of one person, against each photo's "
                                            "own (a set built with cycles-set build --views V)")
    sp.add_argument("--set", required=True, dest="set_dir", metavar="DIR", help="a folder built with --views 2 or more")
    sp.add_argument("--report", default=None, metavar="JSON", help="also write the full report to this file")
    _method_args(sp)
    e = sub.add_parser("expressions", help="ARKit expression recovery on synthetic faces with strong, preset "
                                            "and neutral expressions (per-unit correlation, MAE on active units)")
    e.add_argument("--n", type=int, default=100, help="faces with 1-3 random units")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--neutral", type=int, default=20, help="faces with no expression")
    e.add_argument("--presets", type=int, default=3, help="faces per named preset (smile, one-sided smile, ...)")
    e.add_argument("--expression-max", type=float, default=1.0, help="largest weight of a random unit")
    e.add_argument("--landmarks", default="detected", choices=["detected", "gt"])
    e.add_argument("--all-units", action="store_true", help="list every unit, also those never active")
    e.add_argument("--report", default=None, metavar="JSON", help="also write the full report (as --json) to this file")
    _method_args(e)
    k = sub.add_parser("skin", help="skin-tone recovery (luma of the albedo) on realistic generator faces")
    k.add_argument("--n", type=int, default=40)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--landmarks", default="gt", choices=["detected", "gt"])
    k.add_argument("--report", default=None, metavar="JSON", help="also write the full report (as --json) to this file")
    _method_args(k)
    d = sub.add_parser("detail", help="DECA detail against the true wrinkles/pores of realistic generator faces "
                                       "(detail error, high-pass correlation, photometric gain, time)")
    d.add_argument("--checkpoint", required=True, metavar="CKPT", help="a deca network with a detail stage")
    d.add_argument("--n", type=int, default=40)
    d.add_argument("--seed", type=int, default=900000)
    d.add_argument("--json", action="store_true")
    d.add_argument("--quiet", action="store_true")
    d.add_argument("--report", default=None, metavar="JSON", help="also write the full report (as --json) to this file")
    r = sub.add_parser("reflectance", help="reflectance, skin tone, cross-view consistency, photometric, geometry "
                                           "and landmarks of networks on held-out realistic identity groups")
    r.add_argument("--checkpoint", required=True, action="append", metavar="CKPT",
                   help="a learned network (any method); repeat for a table of several")
    r.add_argument("--n", type=int, default=48, help="held-out identity groups (3 photos each)")
    r.add_argument("--cache", default=None, metavar="DIR",
                   help="a corpus from python -m engine.data.synthetic --identities (its identities_val); "
                        "default: render the groups")
    r.add_argument("--json", action="store_true")
    r.add_argument("--quiet", action="store_true")
    r.add_argument("--report", default=None, metavar="JSON", help="also write the full reports (as --json) to this file")
    t = sub.add_parser("cycles-table", help="one markdown table of several 'cycles --json' reports (and each "
                       "per face against the first)")
    t.add_argument("reports", nargs="+", metavar="JSON")
    args = p.parse_args(argv)
    if args.command == "cycles-table":
        with cli_errors():
            from pathlib import Path

            from engine.errors import UserError
            from engine.eval.cycles import format_table

            missing = [r for r in args.reports if not Path(r).is_file()]
            if missing:
                raise UserError(f"{missing[0]} does not exist (write it with python -m engine.eval cycles ... --json)")
            try:
                reports = [json.loads(Path(r).read_text()) for r in args.reports]
            except json.JSONDecodeError as exc:
                raise UserError(f"a report is not JSON from python -m engine.eval cycles --json ({exc})") from None
            print(format_table(reports, labels=[Path(r).stem for r in args.reports]))
        return 0
    if args.command == "reflectance":
        with cli_errors():
            import torch

            from engine.errors import UserError
            from engine.eval.reflectance import (evaluate_reflectance, format_table as format_reflectance,
                                                 held_out_groups, load_network)

            if args.n < 1:
                raise UserError("--n must be at least 1")
            torch.manual_seed(0)
            log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
            reports = []
            groups = {}
            for ckpt in args.checkpoint:
                network = load_network(ckpt)
                key = (network.head.name, network.image_size)
                if key not in groups:  # one data set per head model and crop size, shared by the networks
                    groups[key] = held_out_groups(network.head, args.n, network.image_size, args.cache)
                if log:
                    log(f"{ckpt}: {network.name}")
                reports.append(evaluate_reflectance(network, args.n, checkpoint=ckpt, log=log, groups=groups[key]))
            out = [r.to_dict() for r in reports]
            if args.report:
                from pathlib import Path

                Path(args.report).write_text(json.dumps(out, indent=1))
            print(json.dumps(out, indent=1) if args.json else format_reflectance(reports))
        return 0
    if args.command == "detail":
        with cli_errors():
            import torch

            from engine.eval.detail import evaluate_detail, format_report as format_detail
            from engine.methods.deca import Deca

            torch.manual_seed(args.seed)
            torch.set_num_threads(1)  # the speed figure is per face on one thread
            network = Deca.load(args.checkpoint)
            log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
            rep = evaluate_detail(network.head, network, n=args.n, seed=args.seed, log=log)
            if args.report:
                from pathlib import Path

                Path(args.report).write_text(json.dumps(rep.to_dict(), indent=1))
            print(json.dumps(rep.to_dict(), indent=1) if args.json else format_detail(rep))
        return 0
    with cli_errors():
        import torch

        from engine.head import load_head_model
        from engine.methods import build_predictor

        if args.command in ("synthetic", "expressions", "skin"):
            torch.manual_seed(args.seed)
        else:
            from engine.eval.cycles_set import read_set

            read_set(args.set_dir)  # a missing or unbuilt set fails before anything loads
        model = load_head_model(args.model, args.model_path)
        log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
        if args.command == "expressions":
            from engine.eval.expressions import evaluate_expressions, format_report

            predictor = build_predictor(args.method, model, checkpoint=args.checkpoint, init=args.init,
                                        config=_fit_config(args.fit_option))
            rep = evaluate_expressions(model, predictor, n=args.n, seed=args.seed, neutral=args.neutral,
                                       presets=args.presets, expression_max=args.expression_max,
                                       landmarks=args.landmarks, backend=args.backend, log=log)
            if args.report:
                from pathlib import Path

                Path(args.report).write_text(json.dumps(rep.to_dict(), indent=1))
            print(json.dumps(rep.to_dict(), indent=1) if args.json else format_report(rep, args.all_units))
            return 0
        if args.command == "skin":
            from engine.eval.skin import evaluate_skin, format_report as format_skin

            predictor = build_predictor(args.method, model, checkpoint=args.checkpoint, init=args.init,
                                        config=_fit_config(args.fit_option))
            rep = evaluate_skin(model, predictor, n=args.n, seed=args.seed, landmarks=args.landmarks,
                                backend=args.backend, log=log)
            if args.report:
                from pathlib import Path

                Path(args.report).write_text(json.dumps(rep.to_dict(), indent=1))
            print(json.dumps(rep.to_dict(), indent=1) if args.json else format_skin(rep))
            return 0
        if args.command == "cycles":
            from engine.eval.cycles import evaluate_cycles, format_summary

            predictor = build_predictor(args.method, model, checkpoint=args.checkpoint, init=args.init,
                                        config=_fit_config(args.fit_option))
            rep = evaluate_cycles(args.set_dir, model, predictor, backend=args.backend, limit=args.limit, log=log,
                                  save=args.save)
            if args.report:
                from pathlib import Path

                Path(args.report).write_text(json.dumps(rep.to_dict(), indent=1))
            print(json.dumps(rep.to_dict(), indent=1) if args.json else format_summary(rep))
            return 0
        if args.command == "same-person":
            from engine.eval.cycles import evaluate_same_person, format_same_person

            predictor = build_predictor(args.method, model, checkpoint=args.checkpoint, init=args.init,
                                        config=_fit_config(args.fit_option))
            rep = evaluate_same_person(args.set_dir, model, predictor, config=_fit_config(args.fit_option),
                                       backend=args.backend, log=log)
            if args.report:
                from pathlib import Path

                Path(args.report).write_text(json.dumps(rep, indent=1))
            print(json.dumps(rep, indent=1) if args.json else format_same_person(rep))
            return 0
        from engine.eval.synthetic import evaluate_synthetic

        from engine.data.synthetic import generator_config, parse_generator_options

        sources = ("detected", "gt") if args.landmarks == "both" else (args.landmarks,)
        synth = generator_config(args.generator, 224, parse_generator_options(args.option))
        predictor = build_predictor(args.method, model, checkpoint=args.checkpoint, init=args.init,
                                        config=_fit_config(args.fit_option))
        rep = evaluate_synthetic(model, n=args.n, seed=args.seed, sources=sources, backend=args.backend, log=log,
                                 predictor=predictor, synth=synth)
        if args.json:
            print(json.dumps(rep.to_dict(), indent=1))
        else:
            print(f"synthetic protocol: method={predictor.name} model={rep.model} generator={args.generator}"
                  f"{' ' + ' '.join(args.option) if args.option else ''} n={rep.n} seed={rep.seed} size={rep.image_size}px "
                  f"detector failures={rep.detection_failures}")
            for src, d in rep.summary().items():
                print(f"  {src:9s} faces={int(d['faces'])}  geometric {d['geometric_mm_median']:.2f} mm median "
                      f"({d['geometric_mm_mean']:.2f} mean)  photometric {d['photometric_median']:.3f} median "
                      f"({d['photometric_mean']:.3f} mean)  landmarks {d['landmark_px_median']:.2f} px median "
                      f"({d['landmark_px_mean']:.2f} mean)  {d['seconds_median']:.2f} s/face  "
                      f"[mean-face baseline {d['mean_face_mm_median']:.2f} mm median]")
            for src, bands in rep.by_yaw().items():
                for b in bands:
                    print(f"  {src:9s} |yaw| {b['lo']:.0f}-{min(b['hi'], 90):.0f}°: faces={b['faces']} (detector misses "
                          f"{b['detector_misses']})  geometric {b['geometric_mm_median']:.2f} mm median  [mean face "
                          f"{b['mean_face_mm_median']:.2f}]  landmarks {b['landmark_px_median']:.1f} px median")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
