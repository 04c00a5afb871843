"""``python -m engine <command>``: a small dispatcher; each command lives in its own module.

Commands: ``reconstruct`` (photo -> head, :mod:`engine.reconstruct`; several photos, folders or
every face of a group photo: :mod:`engine.batch`), ``serve`` (reconstruct requests on stdin with
everything kept loaded, :mod:`engine.serve`), ``animate`` (video ->
animated head, :mod:`engine.video`), ``methods`` (the method registry, :mod:`engine.methods.registry`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# MediaPipe's C++ side logs an info line to stderr at teardown; a CLI error must stay one line.
os.environ.setdefault("GLOG_minloglevel", "2")
from pathlib import Path
from typing import Callable

from engine.errors import cli_errors


def _progress_printer(mode: str) -> tuple[Callable[[str, float, str], None], Callable[[], None]]:
    """(callback, close) for --progress jsonl|bar|none (auto = bar on a terminal, else none)."""
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "none"
    if mode == "jsonl":
        def cb(stage: str, fraction: float, message: str) -> None:
            rec = {"stage": stage, "fraction": round(float(fraction), 4), "message": message}
            if stage == "done":
                rec = {"stage": "done", "fraction": 1.0, "out": message}
            print(json.dumps(rec), flush=True)
        return cb, lambda: None
    if mode == "bar":
        from tqdm import tqdm

        bar = tqdm(total=100, file=sys.stderr, bar_format="{l_bar}{bar}| {elapsed}", leave=False)

        def cb(stage: str, fraction: float, message: str) -> None:
            bar.n = int(round(100 * fraction))
            bar.set_description_str(f"{stage}: {message}"[:60])
            bar.refresh()
        return cb, bar.close
    return (lambda stage, fraction, message: None), lambda: None


def _example_photo(name: str, folder: str, created: list[str]) -> str:
    """Save a bundled example photo (:mod:`engine.photo.examples`) to ``folder`` and return its
    path; the paths this call created (file, then folder) are appended to ``created``."""
    import os

    from PIL import Image

    from engine.photo.examples import example_image

    rgb = example_image(name)  # an unknown name is a UserError before anything is written
    path = os.path.join(folder, f"{name}.png")
    try:
        if not os.path.isdir(folder):
            os.makedirs(folder, exist_ok=True)
            created.append(folder)
        if not os.path.exists(path):
            created.insert(0, path)
        Image.fromarray(rgb).save(path)
    except OSError as exc:
        from engine.errors import UserError

        raise UserError(f"cannot save the example photo to {path}: {exc.strerror or exc}") from None
    return path


def _remove_created(paths: list[str]) -> None:
    """Undo :func:`_example_photo` after a failed run (a folder only if it is empty)."""
    for p in paths:
        try:
            os.rmdir(p) if os.path.isdir(p) else os.unlink(p)
        except OSError:
            pass


def _face_choice(text: str) -> int | str:
    """``--face``: a face index (0 = largest) or ``all``."""
    if text.strip().lower() == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a face index (0 = largest) or 'all', not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"face indices start at 0 (the largest face), not {value}")
    return value


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from engine.errors import UserError
    from engine.reconstruct import reconstruct

    photos = list(args.photo)
    if not photos and args.example is None:
        raise UserError("give a PHOTO or --example NAME (astronaut, grace_hopper)")
    if photos and args.example is not None:
        raise UserError("give either PHOTO or --example NAME, not both")
    if len(photos) > 1 or args.face == "all" or args.same_person or any(os.path.isdir(p) for p in photos):
        return _reconstruct_batch(args, photos)
    photo = photos[0] if photos else None
    created: list[str] = []  # the example photo (kept beside a result: params.json names it)
    cb, close = _progress_printer(args.progress)
    try:
        if args.example is not None:
            photo = _example_photo(args.example, os.path.join(os.path.dirname(os.path.abspath(args.out)) or ".",
                                                              "examples"), created)
        config = _fit_config(args)
        result = reconstruct(photo, args.out, model=args.model, device=args.device, face=args.face, progress=cb,
                             model_path=args.model_path, method=args.method, backend=args.backend,
                             checkpoint=args.checkpoint, init=args.init, config=config,
                             texture_size=args.texture_size, sessions=getattr(args, "sessions", None))
    except BaseException:
        _remove_created(created)
        raise
    finally:
        close()
    if result.params.get("warnings"):
        print("warning: " + "; ".join(result.params["warnings"]), file=sys.stderr)
    if args.progress != "jsonl":
        t = result.timings
        print(f"{result.out_dir}: {result.n_faces} face(s) found, reconstructed face {result.face_index}; "
              f"fit {t.get('fit', 0):.2f} s, total {t.get('total', 0):.2f} s", file=sys.stderr)
    return 0


def _fit_config(args: argparse.Namespace):
    """The ``--fit-option`` settings as an :class:`engine.fitting.FitConfig` (None without any),
    refused for a method that does not fit and for the schedule a hybrid sets itself."""
    if not args.fit_option:
        return None
    from engine.errors import UserError
    from engine.fitting import fit_config
    from engine.methods import get_method
    from engine.methods.hybrid import HYBRID_FIELDS, SCHEDULE_FIELDS

    kind = get_method(args.method).kind
    if kind == "learned":
        raise UserError(f"--fit-option sets the fit, and --method {args.method} does not fit "
                        "(use --method fit or hybrid)")
    config = fit_config(args.fit_option)
    overridden = set(SCHEDULE_FIELDS)
    given = {o.split("=", 1)[0].strip() for o in args.fit_option}
    if kind == "hybrid" and given & overridden:
        instead = sorted(HYBRID_FIELDS[k] for k in given & set(HYBRID_FIELDS))
        raise UserError(f"--method {args.method} sets {', '.join(sorted(given & overridden))} from its own "
                        "schedule (pose_iters is 0: the network gives the pose)"
                        + (f"; use --fit-option {', '.join(instead)} instead" if instead else ""))
    return config


def _reconstruct_batch(args: argparse.Namespace, photos: list[str]) -> int:
    """Several photos, folders of photos or ``--face all`` (:mod:`engine.batch`): one line per
    face on stderr, a summary, exit status 0 when every face was reconstructed, else 1."""
    from engine.batch import reconstruct_batch

    created: list[str] = []
    if args.example is not None:  # --example with --face all
        photos = [_example_photo(args.example, os.path.join(os.path.abspath(args.out), "examples"), created)]
    cb, close = _progress_printer(args.progress)

    def said(item) -> None:  # above a progress bar, when there is one
        from tqdm import tqdm

        where = f"face {item.face} -> {item.out}" if item.ok else f"failed: {item.error}"
        tqdm.write(f"{item.photo}: {where}" + (f" (warning: {'; '.join(item.warnings)})" if item.warnings else ""),
                   file=sys.stderr)

    try:
        report = reconstruct_batch(photos, args.out, face=args.face, progress=cb, on_item=said,
                                   sessions=getattr(args, "sessions", None), same_person=args.same_person,
                                   model=args.model, device=args.device, model_path=args.model_path,
                                   method=args.method, backend=args.backend, config=_fit_config(args),
                                   checkpoint=args.checkpoint, init=args.init, texture_size=args.texture_size)
    except BaseException:
        _remove_created(created)
        raise
    finally:
        close()
    failed = report.failed_photos
    print(f"{report.out_dir}: {len(report.done)} face(s) reconstructed from {report.photos} photo(s) in "
          f"{report.seconds:.1f} s" + (f"; {len(failed)} photo(s) failed" if failed else "")
          + f" (list: {report.json_path})", file=sys.stderr)
    return 1 if failed else 0


def cmd_animate(args: argparse.Namespace) -> int:
    from engine.video.cli import run

    cb, close = _progress_printer(args.progress)
    try:
        return run(args, cb)
    finally:
        close()


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.serve import serve

    return serve(build_parser().parse_args, idle_exit=args.idle_exit)


def cmd_methods(args: argparse.Namespace) -> int:
    from engine.methods import registry

    if args.json:
        rows = [{"name": s.name, "kind": s.kind, "label": s.label, "description": s.description, "needs": s.needs,
                 "aliases": list(s.aliases), "train_config": s.train_config,
                 "default_networks": {m: "engine/" + p for m, p in s.checkpoints.items()}}
                for s in registry.methods()]
        print(json.dumps(rows, indent=1))
    else:
        print(registry.table())
    return 0


def cmd_bake_detail(args: argparse.Namespace) -> int:
    from engine.errors import UserError
    from engine.export.detail import bake_detail_pose

    try:
        pose = json.loads(Path(args.pose).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read the pose file {args.pose}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UserError(f"the pose file {args.pose} is not JSON: {exc}") from None
    out = bake_detail_pose(args.result, pose, args.out, checkpoint=args.checkpoint)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from engine.methods import registry
    from engine.outputs import TEXTURE_SIZES

    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("methods", help="list the reconstruction methods and what each needs")
    m.add_argument("--json", action="store_true", help="machine-readable list")
    m.set_defaults(func=cmd_methods)
    learned = [s.name for s in registry.methods("learned")]
    r = sub.add_parser("reconstruct", help="reconstruct a 3-D head from a photo (or a batch of photos)",
                       description="Reconstruct a 3-D head (shape, expression, pose, camera, albedo, "
                                   "lighting) from one photo into an output folder.")
    r.add_argument("photo", nargs="*", help="the photo (JPEG, PNG, ...); several photos or folders of photos "
                   "make a batch (the model is loaded once)")
    r.add_argument("--out", required=True, help="output folder (written atomically); for a batch (several "
                   "photos, a folder, or --face all) the folder that receives one result folder per face and "
                   "batch.json, the list of what was done and what failed")
    r.add_argument("--model", default="open", choices=["open", "ict", "flame"])
    r.add_argument("--model-path", default=None, help="head-model file/folder (default: the model's own)")
    r.add_argument("--method", default="fit", choices=registry.names(include_aliases=True),
                   help="reconstruction method (python -m engine methods lists them): fit = analysis by "
                        f"synthesis; {', '.join(learned)} = a learned network; hybrid = a network's start + "
                        "a short fit ('learned' is an alias of mofa)")
    r.add_argument("--init", default=None, choices=learned, help="the learned method a hybrid starts from "
                   "(default: the first with a network for --model)")
    r.add_argument("--checkpoint", default=None, metavar="CKPT",
                   help="network (training or exported checkpoint) of a learned method or of a hybrid's "
                        "--init method; default: the method's committed network for --model")
    r.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    r.add_argument("--face", type=_face_choice, default=None,
                   help="which face when the photo shows several: 0 = largest (required then; "
                        "a photo with one face needs no --face), or 'all': every face, each into "
                        "its own folder OUT/<photo>_face<k>")
    r.add_argument("--same-person", action="store_true",
                   help="the photos (a batch) show one person: one identity for all of them, each photo keeping "
                        "its own expression, pose, light and texture")
    r.add_argument("--backend", default="default", help="face detector backend (see python -m engine.detect)")
    r.add_argument("--texture-size", type=int, default=1024, choices=TEXTURE_SIZES, metavar="TEXELS",
                   help="albedo.png side: 512, 1024 (default) or 2048 (the face gets ~55 %% of it: "
                        "2048 for large photos; slower)")
    r.add_argument("--progress", default="auto", choices=["auto", "bar", "jsonl", "none"])
    r.add_argument("--example", default=None, metavar="NAME",
                   help="use a bundled example photo instead of PHOTO (astronaut, grace_hopper); it is saved as "
                        "examples/NAME.png beside --out, kept with a result (params.json names it) and "
                        "removed again when the run fails")
    r.add_argument("--fit-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a fitting setting for fit and hybrid (a FitConfig field, engine/fitting/config.py; "
                        "docs/fitting.md says what each does), e.g. joint_iters=40; repeatable; "
                        "params.json records the changed ones")
    r.set_defaults(func=cmd_reconstruct)
    b = sub.add_parser("bake-detail", help="the exact detail displacement map of a pose (DECA detail)",
                       description="Decode a reconstruction's detail code (params.json 'detail') with the "
                                   "expression weights and jaw rotation of POSE into a 16-bit displacement "
                                   "PNG with the folder's displacement_scale_m.")
    b.add_argument("result", help="a reconstruction folder with a detail stage (params.json 'detail')")
    b.add_argument("--pose", required=True, help='JSON file: {"expression": {unit: weight}, "jaw": [rx, ry, rz]}')
    b.add_argument("--out", required=True, help="the PNG to write")
    b.add_argument("--checkpoint", default=None, help="the detail network (default: the one params.json names)")
    b.set_defaults(func=cmd_bake_detail)
    sv = sub.add_parser("serve", help="keep the engine running for a client that reconstructs again and again",
                        description="Read reconstruct requests as JSON lines on stdin and answer on stdout, "
                                    "keeping the model, method and detector loaded (protocol: engine/serve.py; "
                                    "the Blender add-on uses it).")
    sv.add_argument("--idle-exit", type=float, default=600.0, metavar="SECONDS",
                    help="exit after this many seconds without a request (default 600; 0 = never)")
    sv.set_defaults(func=cmd_serve)
    from engine.video.cli import DESCRIPTION, add_arguments

    a = sub.add_parser("animate", help="animate a head from a video (ARKit curves, head pose)", description=DESCRIPTION)
    add_arguments(a)
    a.set_defaults(func=cmd_animate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_errors():
        return int(args.func(args) or 0)


def _run_and_exit() -> None:
    """Exit without running native library teardown: MediaPipe's C++ graph logs a line to
    stderr when destroyed, which would follow (and spoil) our one-line error message."""
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _run_and_exit()
