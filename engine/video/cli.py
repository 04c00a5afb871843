"""``python -m engine animate VIDEO --out DIR``: arguments and the job (docs/video.md).

Importing this module is cheap (no PyTorch): ``engine/__main__.py`` builds its parser with
:func:`add_arguments` and runs :func:`run` with its progress printer.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

ProgressFn = Callable[[str, float, str], None]

__all__ = ["add_arguments", "run"]

DESCRIPTION = ("Animate a head from a video (mp4/mov/avi/webm) or a folder of images: one identity for the "
               "clip, per-frame ARKit expression weights, jaw, head pose and camera, smoothed; writes the head "
               "files once plus animation.json, a Live Link Face CSV and an animated GLB. Ctrl-C keeps the "
               "frames done so far.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``animate`` subcommand's options."""
    from engine.methods import registry

    learned = [s.name for s in registry.methods("learned")]
    p.add_argument("video", help="video file or folder of images (frames in natural name order)")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--model", default="open", choices=["open", "ict", "flame"])
    p.add_argument("--model-path", default=None, help="head-model file/folder (default: the model's own)")
    p.add_argument("--method", default="fit", choices=registry.names(include_aliases=True),
                   help="how key frames and restarts are estimated: fit, hybrid (a network + a short fit), or "
                        f"a learned method ({', '.join(learned)}; 'learned' = mofa), which then also runs on every "
                        "frame; fit and hybrid fit every frame from the previous one")
    p.add_argument("--init", default=None, choices=learned, help="the learned method a hybrid starts from")
    p.add_argument("--checkpoint", default=None, metavar="CKPT", help="network of a learned / hybrid method")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--face", type=int, default=None,
                   help="which person, among the faces of the first frame with a face (0 = largest); "
                        "required when that frame shows several")
    p.add_argument("--fps", type=float, default=None,
                   help="frames per second of the animation: a video is sampled at this rate (default: its "
                        "own); an image folder is a clip at this rate (default 30)")
    p.add_argument("--start", type=float, default=None, metavar="S", help="start time in seconds")
    p.add_argument("--end", type=float, default=None, metavar="E", help="end time in seconds (exclusive)")
    p.add_argument("--fov", type=float, default=None, metavar="DEG",
                   help="the camera's field of view over the frame's longer side, if known (default: a 20 degree guess; fit "
                        "and hybrid; a learned method predicts its own camera)")
    p.add_argument("--frame-steps", type=int, default=10, metavar="N",
                   help="landmark-fit steps per frame (fit and hybrid; default 10): 15 gave 13%% lower "
                        "expression errors for 11%% more time on synthetic clips (docs/video.md)")
    p.add_argument("--key-frames", type=int, default=8, metavar="K",
                   help="frames spread over the clip that estimate its one identity (default 8)")
    p.add_argument("--smooth", default="two-pass", choices=["two-pass", "causal", "off"],
                   help="One Euro filter on every curve: forwards and backwards averaged (no lag; default), "
                        "forwards only (what a live tracker does), or off (raw per-frame estimates)")
    p.add_argument("--min-cutoff", type=float, default=None, metavar="HZ",
                   help="One Euro cut-off at rest (default 0.5 Hz): lower = steadier still poses")
    p.add_argument("--beta", type=float, default=None,
                   help="One Euro speed coefficient (default 3.0): higher = less lag on fast motion")
    p.add_argument("--d-cutoff", type=float, default=None, metavar="HZ",
                   help="One Euro cut-off of the speed estimate (default 1.0 Hz)")
    p.add_argument("--backend", default="default", help="face detector backend (see python -m engine.detect)")
    p.add_argument("--progress", default="auto", choices=["auto", "bar", "jsonl", "none"])


def _ranges(indices: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7' (at most 8 ranges, then '…')."""
    parts: list[str] = []
    start = prev = None
    for i in indices + [None]:
        if start is not None and (i is None or i != prev + 1):
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = None
        if i is not None and start is None:
            start = i
        prev = i
    return ", ".join(parts[:8]) + (", ..." if len(parts) > 8 else "")


def run(args: argparse.Namespace, progress: ProgressFn) -> int:
    """The ``animate`` job; returns the exit status (130 when Ctrl-C cut the clip short)."""
    import dataclasses
    from dataclasses import asdict

    from engine.errors import UserError
    from engine.head import load_head_model
    from engine.methods import get_method
    from engine.reconstruct import resolve_device
    from engine.video.animate import AnimateConfig, estimate_clip, frame_fit_config, to_animation
    from engine.video.smooth import OneEuroConfig
    from engine.video.source import open_clip
    from engine.video.writer import write_animation_folder

    t_all = time.perf_counter()
    if args.key_frames < 1:
        raise UserError(f"--key-frames must be at least 1, got {args.key_frames}")
    if args.frame_steps < 1:
        raise UserError(f"--frame-steps must be at least 1, got {args.frame_steps}")
    if args.fov is not None and not 1.0 <= args.fov <= 170.0:
        raise UserError(f"--fov must be a field of view in degrees between 1 and 170, got {args.fov:g}")
    smoothing = None
    if args.smooth != "off":
        defaults = OneEuroConfig()
        smoothing = OneEuroConfig(
            min_cutoff=defaults.min_cutoff if args.min_cutoff is None else args.min_cutoff,
            beta=defaults.beta if args.beta is None else args.beta,
            d_cutoff=defaults.d_cutoff if args.d_cutoff is None else args.d_cutoff,
            two_pass=args.smooth == "two-pass").check()
    elif any(v is not None for v in (args.min_cutoff, args.beta, args.d_cutoff)):
        raise UserError("--min-cutoff/--beta/--d-cutoff set the smoothing, which --smooth off turns off")
    spec = get_method(args.method)
    device = resolve_device(args.device)
    progress("load", 0.0, f"opening {args.video}")
    clip = open_clip(args.video, args.fps, args.start, args.end)
    progress("model", 0.01, f"loading head model {args.model!r} and method {spec.name}")
    head = load_head_model(args.model, args.model_path, device=device)
    cfg = AnimateConfig(method=spec.name, init=args.init, checkpoint=args.checkpoint, key_frames=args.key_frames,
                        backend=args.backend, face=args.face, smoothing=smoothing)
    if args.fov is not None:
        cfg.fit = dataclasses.replace(cfg.fit, fov_deg=args.fov)
    cfg.frame_fit = frame_fit_config(cfg.fit, args.frame_steps)
    try:
        est = estimate_clip(clip, head, cfg, name=clip.path, progress=progress, device=device)
    except KeyboardInterrupt:
        print("interrupted before any frame was estimated; nothing written", file=sys.stderr)
        return 130
    track = est.track
    missing = [i for i, ok in zip(est.frames[:est.n_done if est.interrupted else None].tolist(),
                                  est.tracked[:est.n_done if est.interrupted else None]) if not ok]
    meta = {"model": head.name, "method": spec.name, "source": clip.path, "source_fps": clip.source_fps,
            "frame_size": list(clip.size), "identity": [round(float(x), 6) for x in est.identity],
            "key_frames": [int(est.frames[k]) for k in est.key_positions],
            "key_frame_weights": [round(float(w), 4) for w in est.key_weights],
            "smoothing": None if smoothing is None else {"filter": "one-euro", **asdict(smoothing)},
            "missing_frames": missing, "interrupted": est.interrupted,
            "faces_in_first_frame": track.first_frame_faces, "face_index": track.chosen, "detector": track.backend,
            "units": "time s; expression: the model's weights; pose: local axis-angle (rad, model axes); "
                     "head.rotation: axis-angle (rad, model axes) relative to the line of sight, "
                     "head.yaw_pitch_roll: R = R_Y(yaw) R_X(pitch) R_Z(roll) (rad); head.R/t: the camera's "
                     "extrinsics (X_cam = R X_model + t, metres, OpenCV axes); K: intrinsics (px)"}
    extra = {"init_method": est.init_method} if est.init_method else {}
    anim = to_animation(est, head, smoothing, clip.fps, meta)
    progress("write", 0.95, "writing the head and the animation")
    try:
        out, _ = write_animation_folder(args.out, head, est, anim, clip.path, spec.name, extra)
    except KeyboardInterrupt:
        print(f"interrupted while writing {args.out}; nothing written", file=sys.stderr)
        return 130
    progress("done", 1.0, str(out))
    n = anim.n_frames
    work = est.timings.get("track", 0) + est.timings.get("identity", 0) + est.timings.get("frames", 0)
    if est.interrupted:
        print(f"interrupted: kept the first {n} of {len(clip)} frames ({anim.times[0]:.2f}-{anim.times[-1]:.2f} s) "
              f"as a shorter animation in {out}", file=sys.stderr)
        return 130
    if args.progress != "jsonl":
        gaps = f"; no face in frames {_ranges(missing)}" if missing else ""
        print(f"{out}: {n} frames ({anim.times[0]:.2f}-{anim.times[-1]:.2f} s at {clip.fps:g} frames/s){gaps}; "
              f"{n / max(work, 1e-9):.1f} frames/s, total {time.perf_counter() - t_all:.1f} s", file=sys.stderr)
    return 0
