"""Video → animation figures (not a test; prints figures for docs/video.md).

    python benchmarks/video_benchmark.py synthetic [--seeds 10 11 12] [--frames 150] [--method fit]
    python benchmarks/video_benchmark.py still [--method fit] [--frames 300]
    python benchmarks/video_benchmark.py speed [--methods mofa hybrid] [--frames 90] [--device cpu]
    python benchmarks/video_benchmark.py sweep --cache DIR   # smoothing parameters on cached raw curves
    python benchmarks/video_benchmark.py arkit                # the model's jaw / eye conversions
  options of synthetic/still/speed: --fov DEG --frame-steps N --frame-joint-iters J --no-repose

``synthetic``: clips of one synthetic person with ground truth (:mod:`engine.video.synthetic`,
224 px, holds and moves between 5 key poses) through the whole pipeline (MediaPipe tracking,
key frames, per-frame estimates); per frame the expression error (mm of face-skin vertices,
:func:`engine.video.evaluate.expression_error_mm`) and weight error, the jaw and head
rotation errors, and the jitter (mean |second difference| of the 52 weights over frames
whose truth is still) and lag, raw and smoothed; the identity error (neutral face-skin
vertices, mm) of each key frame alone and of the combined identity. ``--cache DIR`` keeps
the raw curves so ``sweep`` can re-smooth them.

``still``: the astronaut photo (scikit-image) panned and zoomed into a 10-s, 640×480, 30 fps
video; std over frames of each ARKit weight and of the head's yaw/pitch/roll relative to the
line of sight (which removes the virtual camera's motion).

``speed``: frames per second of the whole per-clip work (tracking + key frames + per-frame
estimates; model loading and writing files excluded, reported apart) on the 640×480 video;
wall and CPU time of this process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ARKIT_REPORT = ("jawOpen", "mouthSmileLeft", "eyeBlinkLeft", "browInnerUp")


def _frames(images: list[np.ndarray], fps: float) -> list:
    from engine.video.source import Frame

    return [Frame(i, i / fps, img) for i, img in enumerate(images)]


def _run(frames: list, head, method: str, key_frames: int, device: str = "cpu", args=None):
    """The pipeline on ``frames`` with the schedule options of ``args`` (--fov, --frame-steps,
    --frame-joint-iters, --no-repose)."""
    from engine.video.animate import AnimateConfig, estimate_clip, frame_fit_config

    cfg = AnimateConfig(method=method, key_frames=key_frames)
    if args is not None:
        if args.fov is not None:
            cfg.fit = dataclasses.replace(cfg.fit, fov_deg=args.fov)
        if getattr(args, "fit_option", None):
            from engine.fitting import fit_config

            cfg.fit = fit_config(args.fit_option, base=cfg.fit)
        cfg.frame_fit = frame_fit_config(cfg.fit, args.frame_steps)
        if args.frame_joint_iters:  # the photometric stages too (appearance + joint refinement)
            cfg.frame_fit = dataclasses.replace(cfg.frame_fit, appearance=True, joint_iters=args.frame_joint_iters)
        cfg.repose = not args.no_repose
    t, c = time.perf_counter(), time.process_time()
    est = estimate_clip(frames, head, cfg, device=device)
    return est, time.perf_counter() - t, time.process_time() - c


def _neutral_error_mm(head, a: np.ndarray, b: np.ndarray) -> float:
    with torch.no_grad():
        skin = head.regions["face_skin"]
        va = head(torch.tensor(a, dtype=torch.float32)[None]).vertices[0, skin]
        vb = head(torch.tensor(b, dtype=torch.float32)[None]).vertices[0, skin]
        va, vb = va - va.mean(0), vb - vb.mean(0)
        return float((va - vb).norm(dim=-1).mean() * 1000)


def _scores(head, anim, truth: dict, still: np.ndarray) -> dict:
    from engine.video.evaluate import expression_error_mm, jitter, lag_frames, rotation_error_deg, weight_error
    from engine.video.formats import rotvec_to_matrix

    T = anim.n_frames
    pose = np.stack([anim.joints[n] for n in head.joint_names], 1)
    em = expression_error_mm(head, truth["identity"], anim.weights, pose, truth["expression"][:T], truth["pose"][:T])
    jaw = head.joint_names.index("jaw")
    jaw_err = rotation_error_deg(rotvec_to_matrix(pose[:, jaw]), rotvec_to_matrix(truth["pose"][:T, jaw]))
    rot = rotation_error_deg(rotvec_to_matrix(anim.head_rotation), truth["head"][:T])
    moving = ~still[:T]
    # lag: of the face's motion (expression + jaw on a subset of face-skin vertices, true identity)
    with torch.no_grad():
        f = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        ident = f(truth["identity"])[None].expand(T, -1)
        sub = torch.nonzero(head.regions["face_skin"])[::25, 0]
        v_est = head(ident, f(anim.weights), f(pose)).vertices[:, sub].reshape(T, -1).numpy()
        v_gt = head(ident, f(truth["expression"][:T]), f(truth["pose"][:T])).vertices[:, sub].reshape(T, -1).numpy()
    return {"expr_mm": float(em.mean()), "weight_mae": float(weight_error(anim.weights, truth["expression"][:T]).mean()),
            "jaw_deg": float(jaw_err.mean()), "head_deg": float(rot.mean()),
            "jitter": jitter(anim.weights, still[:T]), "jitter_truth": jitter(truth["expression"][:T], still[:T]),
            "lag": lag_frames(v_est, v_gt, moving)}


def _truth(head, clip) -> dict:
    from engine.video.arkit import head_rotation

    R = np.stack([p["R"].numpy() for p in clip.params]).astype(np.float64)
    t = np.stack([p["t"].numpy() for p in clip.params]).astype(np.float64)
    return {"identity": clip.params[0]["identity"].numpy(),
            "expression": np.stack([p["expression"].numpy() for p in clip.params]),
            "pose": np.stack([p["pose"].numpy() for p in clip.params]), "head": head_rotation(R, t)}


def cmd_synthetic(args) -> None:
    from engine.generator import SyntheticConfig
    from engine.head import load_head_model
    from engine.video.animate import to_animation
    from engine.video.smooth import OneEuroConfig
    from engine.video.synthetic import LongClipConfig, render_long_clip

    head = load_head_model(args.model)
    rows = []
    cache = Path(args.cache) if args.cache else None
    for seed in args.seeds:
        clip = render_long_clip(head, seed, LongClipConfig(n_frames=args.frames, n_keys=5), SyntheticConfig())
        truth = _truth(head, clip)
        est, wall, cpu = _run(_frames([s.image for s in clip.samples], clip.fps), head, args.method, args.key_frames,
                              args=args)
        raw = to_animation(est, head, None, clip.fps)
        smooth = to_animation(est, head, OneEuroConfig(), clip.fps)
        causal = to_animation(est, head, OneEuroConfig(two_pass=False), clip.fps)
        r, s, c = (_scores(head, a, truth, clip.still) for a in (raw, smooth, causal))
        key_err = [_neutral_error_mm(head, k, truth["identity"]) for k in est.key_identities]
        id_err = _neutral_error_mm(head, est.identity, truth["identity"])
        row = {"seed": seed, "frames": raw.n_frames, "tracked": int(est.tracked.sum()), "raw": r, "smooth": s,
               "causal": c, "key_id_mm": float(np.mean(key_err)), "clip_id_mm": id_err, "s_per_frame": wall / raw.n_frames,
               "cpu_per_frame": cpu / raw.n_frames}
        rows.append(row)
        print(json.dumps(row))
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            np.savez(cache / f"seed{seed}.npz", times=est.times, tracked=est.tracked, expression=est.expression,
                     pose=est.pose, R=est.R, t=est.t, K=est.K, still=clip.still, fps=clip.fps,
                     **{f"truth_{k}": v for k, v in truth.items()})
    _summary(rows)


def _summary(rows: list[dict]) -> None:
    print(f"\n{len(rows)} clips ({', '.join(str(r['seed']) for r in rows)}), {rows[0]['frames']} frames each")
    print(f"{'':10s} {'expr mm':>8s} {'weights':>8s} {'jaw deg':>8s} {'head deg':>8s} {'jitter':>8s} {'lag fr':>7s}")
    for key in ("raw", "smooth", "causal"):
        m = {k: np.mean([r[key][k] for r in rows]) for k in rows[0][key]}
        print(f"{key:10s} {m['expr_mm']:8.3f} {m['weight_mae']:8.4f} {m['jaw_deg']:8.2f} {m['head_deg']:8.2f} "
              f"{m['jitter']:8.5f} {m['lag']:7.2f}")
    raw_jitter = np.mean([r["raw"]["jitter"] for r in rows])
    smooth_jitter = np.mean([r["smooth"]["jitter"] for r in rows])
    # a converged per-frame solve gives still frames identical estimates: no jitter to divide
    ratio = f"{raw_jitter / smooth_jitter:.1f}x" if smooth_jitter > 0 else "– (none on still frames)"
    err = np.mean([r["smooth"]["expr_mm"] for r in rows]) / np.mean([r["raw"]["expr_mm"] for r in rows])
    print(f"jitter raw/smoothed {ratio}; expression error smoothed/raw {err:.3f}x; truth jitter "
          f"{np.mean([r['raw']['jitter_truth'] for r in rows]):.5f}")
    print(f"identity error (neutral face skin): one key frame {np.mean([r['key_id_mm'] for r in rows]):.2f} mm, "
          f"combined {np.mean([r['clip_id_mm'] for r in rows]):.2f} mm")
    print(f"{np.mean([r['s_per_frame'] for r in rows]):.3f} s per frame wall, "
          f"{np.mean([r['cpu_per_frame'] for r in rows]):.3f} s CPU (whole clip work / frames)")


def cmd_sweep(args) -> None:
    """Re-smooth cached raw curves with a grid of One Euro parameters."""
    from engine.head import load_head_model
    from engine.video.animate import ClipEstimate, to_animation
    from engine.video.smooth import OneEuroConfig

    head = load_head_model(args.model)
    clips = []
    for f in sorted(Path(args.cache).glob("seed*.npz")):
        d = np.load(f)
        est = ClipEstimate(times=d["times"], frames=np.arange(len(d["times"])), tracked=d["tracked"],
                           expression=d["expression"], pose=d["pose"], R=d["R"], t=d["t"], K=d["K"],
                           identity=d["truth_identity"], key_positions=[], key_identities=np.zeros((0,)),
                           key_weights=np.zeros(0), key_errors=np.zeros(0))
        truth = {k[6:]: d[k] for k in d.files if k.startswith("truth_")}
        clips.append((est, truth, d["still"], float(d["fps"])))
    base = [_scores(head, to_animation(e, head, None, fps), tr, st) for e, tr, st, fps in clips]
    jr, er = np.mean([b["jitter"] for b in base]), np.mean([b["expr_mm"] for b in base])
    print(f"raw: jitter {jr:.5f}, expr {er:.3f} mm ({len(clips)} clips)")
    print(f"{'min_cutoff':>10s} {'beta':>6s} {'2pass':>5s} {'jit x':>6s} {'expr x':>7s} {'head deg':>8s} {'lag':>5s}")
    for two in (True, False):
        for mc in args.min_cutoffs:
            for beta in args.betas:
                cfg = OneEuroConfig(min_cutoff=mc, beta=beta, two_pass=two)
                s = [_scores(head, to_animation(e, head, cfg, fps), tr, st) for e, tr, st, fps in clips]
                print(f"{mc:10.2f} {beta:6.2f} {str(two):>5s} {jr / np.mean([x['jitter'] for x in s]):6.1f} "
                      f"{np.mean([x['expr_mm'] for x in s]) / er:7.3f} {np.mean([x['head_deg'] for x in s]):8.2f} "
                      f"{np.mean([x['lag'] for x in s]):5.1f}")


def _still_video(path: Path, n_frames: int) -> Path:
    """The astronaut photo panned and zoomed around her face (640x480, 30 fps, mp4v)."""
    import cv2
    from skimage import data

    from engine.detect import detect_faces
    from engine.video.synthetic import pan_zoom_frames

    photo = data.astronaut()
    box = detect_faces(photo)[0].box
    frames, _ = pan_zoom_frames(photo, n_frames, (640, 480), centre=((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for f in frames:
        w.write(np.ascontiguousarray(f[:, :, ::-1]))
    w.release()
    return path


def cmd_still(args) -> None:
    from engine.head import load_head_model
    from engine.head.arkit import ARKIT_NAMES
    from engine.video.animate import to_animation
    from engine.video.arkit import ArkitRig
    from engine.video.formats import rotvec_to_matrix, yaw_pitch_roll
    from engine.video.smooth import OneEuroConfig
    from engine.video.source import open_clip

    head = load_head_model(args.model)
    rig = ArkitRig.from_head(head)
    with tempfile.TemporaryDirectory() as tmp:
        clip = open_clip(_still_video(Path(tmp) / "still.mp4", args.frames))
        est, wall, cpu = _run(clip, head, args.method, args.key_frames, args=args)
        for label, sm in (("raw", None), ("smoothed", OneEuroConfig())):
            anim = to_animation(est, head, sm, clip.fps)
            pose = np.stack([anim.joints[n] for n in head.joint_names], 1)
            arkit = rig.arkit_weights(anim.weights, pose)
            std = arkit.std(0)
            ypr = np.degrees(yaw_pitch_roll(rotvec_to_matrix(anim.head_rotation)))
            worst = np.argsort(-std)[:3]
            print(f"{label:9s} {anim.n_frames} frames ({int(anim.tracked.sum())} with a face): ARKit weight std "
                  f"max {std.max():.4f} ({', '.join(f'{ARKIT_NAMES[i]} {std[i]:.4f}' for i in worst)}), "
                  f"mean {std.mean():.4f}; head yaw/pitch/roll std {ypr.std(0).round(3).tolist()} deg "
                  f"(mean {ypr.mean(0).round(1).tolist()} deg); relative to the optical axis instead (camera "
                  f"motion kept): std {np.degrees(yaw_pitch_roll(np.diag([1.0, -1, -1]) @ anim.camera['R'])).std(0).round(3).tolist()} deg")
        print(f"{wall / anim.n_frames:.3f} s per frame wall, {cpu / anim.n_frames:.3f} s CPU")


def cmd_speed(args) -> None:
    from engine.head import load_head_model
    from engine.video.source import open_clip

    head = load_head_model(args.model, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        clip = open_clip(_still_video(Path(tmp) / "still.mp4", args.frames))
        for method in args.methods:
            _run(open_clip(clip.path, end=0.3), head, method, 2, args.device, args)  # warm-up (models, caches)
            est, wall, cpu = _run(clip, head, method, args.key_frames, args.device, args)
            n = len(clip)
            t = est.timings
            what = "track + network" if t["frames"] == 0 else "track"
            print(f"{method:7s} {n} frames 640x480: {n / wall:.2f} frames/s wall ({n / cpu:.2f} by CPU time); "
                  f"{what} {t['track']:.1f} s, {args.key_frames} key frames {t['identity']:.1f} s, "
                  f"per-frame fits {t['frames']:.1f} s [torch threads {torch.get_num_threads()}, "
                  f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}]")
            if args.json:
                record = {"bench": "video", "method": method, "device": args.device, "frames": n,
                          "width": 640, "height": 480, "frames_per_s": round(n / wall, 3),
                          "frames_per_cpu_s": round(n / cpu, 3), "torch_threads": torch.get_num_threads()}
                with open(args.json, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")


def cmd_arkit(args) -> None:
    """The head model's ARKit conversions (engine/video/arkit.py)."""
    from engine.head import load_head_model
    from engine.video.arkit import ArkitRig

    rig = ArkitRig.from_head(load_head_model(args.model))
    print(f"{args.model}: jawOpen = 1 <-> jaw {rig.jaw_rad_per_weight:.3f} rad ({np.degrees(rig.jaw_rad_per_weight):.1f} deg); "
          f"missing ARKit units: {rig.missing or 'none'}")
    for name, w in rig.eye_rad_per_weight.items():
        print(f"  {name:18s} turns the gaze by {np.degrees(np.linalg.norm(w)):5.1f} deg about {np.round(w / np.linalg.norm(w), 3).tolist()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synthetic")
    s.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12])
    s.add_argument("--frames", type=int, default=150)
    s.add_argument("--cache", default=None)
    w = sub.add_parser("sweep")
    w.add_argument("--cache", required=True)
    w.add_argument("--min-cutoffs", type=float, nargs="+", default=[0.3, 0.5, 1.0, 2.0])
    w.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.3, 1.0, 3.0])
    st = sub.add_parser("still")
    st.add_argument("--frames", type=int, default=300)
    sp = sub.add_parser("speed")
    sp.add_argument("--methods", nargs="+", default=["mofa", "hybrid"])
    sp.add_argument("--frames", type=int, default=90)
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--json", default=None, metavar="FILE",
                    help="append one JSON record per method (benchmarks/gpu_table.py reads them)")
    for p in (s, st, sp):
        p.add_argument("--method", default="fit")
        p.add_argument("--key-frames", type=int, default=8)
        p.add_argument("--fov", type=float, default=None, help="the camera guess of the fits (default: animate's)")
        p.add_argument("--frame-steps", type=int, default=10, help="landmark steps per frame (animate's default 10)")
        p.add_argument("--fit-option", action="append", default=[], metavar="KEY=VALUE",
                       help="a FitConfig field for the key frames and every frame, e.g. landmark_solver=adam; repeatable")
        p.add_argument("--frame-joint-iters", type=int, default=0,
                       help="add the photometric stages to each frame's fit with this many joint steps (default 0)")
        p.add_argument("--no-repose", action="store_true", help="warm start without the per-frame PnP")
    for p in (s, w, st, sp):
        p.add_argument("--model", default="open")
    ar = sub.add_parser("arkit")
    ar.add_argument("--model", default="open")
    args = ap.parse_args()
    {"synthetic": cmd_synthetic, "sweep": cmd_sweep, "still": cmd_still, "speed": cmd_speed,
     "arkit": cmd_arkit}[args.cmd](args)


if __name__ == "__main__":
    main()
