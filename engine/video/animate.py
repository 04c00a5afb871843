"""Video in, one head and its animation out: the pipeline behind ``python -m engine animate``.

1. **Track** (:mod:`engine.video.track`): one pass over the clip finds the person in every
   frame (landmarks only; no frame is kept except a few candidate key frames).
2. **Identity** (:mod:`engine.video.identity`): ``key_frames`` frames spread over the clip
   are reconstructed on their own by the chosen method (any predictor of the registry:
   fit, hybrid, a network) and their identities combined into one for the clip.
3. **Per frame**: a second pass estimates expression, jaw, head pose and camera with that
   identity fixed. Fit and hybrid: a short landmark fit warm-started from the previous
   frame (:func:`repose`: its camera re-solved by PnP first; :func:`frame_fit_config`:
   identity fixed, no lighting/albedo stages); after a gap (or at the first frame) the
   method's own estimate restarts it, seen through the video camera guess
   (:func:`video_camera`). A learned method has no warm start: its network runs on each
   frame already during tracking (one pass over the video), and the clip's identity
   replaces the per-frame ones.
4. **Smooth** (:mod:`engine.video.smooth`): One Euro filter on every curve; frames without
   a face are filled by interpolation and flagged.

The head files are made from the most frontal key frame: its per-frame estimate (the clip's
identity) with the lighting and albedo of its key-frame reconstruction.

A ``KeyboardInterrupt`` during the per-frame estimates stops them: the frames done so far
make a valid, shorter animation (:attr:`ClipEstimate.interrupted`). Writing the output
folder is :mod:`engine.video.writer`'s.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from engine.face import FaceParams
from engine.fitting import FitConfig, fit_photo
from engine.head.model import HeadModel
from engine.methods import FaceObservation, build_predictor, get_method
from engine.render.camera import PerspectiveCamera
from engine.render.rotation import matrix_to_axis_angle
from engine.video.arkit import head_rotation
from engine.video.formats import Animation, quaternion_to_rotvec, rotvec_to_matrix, rotvec_to_quaternion
from engine.video.identity import combine_identities, key_frame_positions, landmark_rms
from engine.video.smooth import CURVE_SCALES, OneEuroConfig, continuous_quaternions, one_euro, smooth_rotvecs
from engine.video.track import FaceTrack, track_faces

ProgressFn = Callable[[str, float, str], None]

__all__ = ["AnimateConfig", "ClipEstimate", "VIDEO_FOV_DEG", "estimate_clip", "frame_fit_config", "repose",
           "to_animation", "video_camera", "video_fit_config"]


#: The fits' camera guess for video: a 20° field of view over the frame (photos: 40°). A
#: zooming camera (or a face coming closer) changes the face's size; with a long focal the
#: fit explains that by distance without the perspective change a short one adds, which
#: otherwise shows up as head pitch and jaw (still-photo pan/zoom clip: head pitch std
#: 0.87° -> 0.46°); synthetic clips are as accurate either way (docs/video.md).
VIDEO_FOV_DEG = 20.0


def video_fit_config(base: FitConfig | None = None) -> FitConfig:
    """The key frames' fit: the photo fit with the video camera guess (:data:`VIDEO_FOV_DEG`)."""
    return dataclasses.replace(base or FitConfig(), fov_deg=VIDEO_FOV_DEG)


#: Expression priors of the warm-started per-frame fit: the photo fit's former ones (ℓ1 0.3,
#: Tikhonov 2/68, no reweighting). The photo fit's weaker, reweighted priors (docs/fitting.md,
#: "Expression recovery") made frames 2.2x slower and their expressions worse here (synthetic
#: clips, seeds 1-3, smoothed: 0.397 -> 0.471 mm; without the reweighting 0.377 mm but 3x the
#: jitter); with these 0.330 mm (docs/video.md).
FRAME_EXPRESSION_PRIORS = {"w_expression_l1": 0.3, "w_expression": 2.0 / 68.0, "expression_reweight_eps": 0.0}


def frame_fit_config(base: FitConfig | None = None, steps: int = 10) -> FitConfig:
    """The warm-started per-frame fit: identity fixed, no pose-only steps (:func:`repose` has
    placed the head), ``steps`` landmark steps (with the default Levenberg–Marquardt landmark
    stage, any ``steps`` > 0 means one converged solve), no lighting/albedo/photometric stages
    (docs/video.md: three quarters of the time, and 50 % larger expression errors), and the
    expression priors :data:`FRAME_EXPRESSION_PRIORS`."""
    return dataclasses.replace(base or video_fit_config(), fix_identity=True, appearance=False, pose_iters=0,
                               shape_iters=steps, **FRAME_EXPRESSION_PRIORS)


@dataclass
class AnimateConfig:
    """What ``python -m engine animate`` decides (see its ``--help``)."""

    method: str = "fit"
    init: str | None = None  # a hybrid's learned method
    checkpoint: str | None = None
    key_frames: int = 8
    fit: FitConfig = field(default_factory=video_fit_config)  # key frames (fit / hybrid)
    frame_fit: FitConfig = field(default_factory=frame_fit_config)  # every frame (fit / hybrid)
    restart_gap: int = 3  # a gap of more missing frames than this restarts the warm start
    repose: bool = True  # re-solve each frame's camera by PnP before its warm-started fit (:func:`repose`)
    backend: str = "default"
    face: int | None = None
    smoothing: OneEuroConfig | None = field(default_factory=OneEuroConfig)


@dataclass
class ClipEstimate:
    """Per-frame estimates of one clip before smoothing (time-first arrays; rows of frames
    without a face or not reached hold NaN / identity rotations and ``tracked`` False)."""

    times: np.ndarray  # (T,) seconds
    frames: np.ndarray  # (T,) source frame indices
    tracked: np.ndarray  # (T,) bool: a face was found and estimated
    expression: np.ndarray  # (T, K_exp)
    pose: np.ndarray  # (T, J, 3)
    R: np.ndarray  # (T, 3, 3)
    t: np.ndarray  # (T, 3)
    K: np.ndarray  # (T, 3, 3)
    identity: np.ndarray  # (K_id,) the clip's
    key_positions: list[int]
    key_identities: np.ndarray  # (n_keys, K_id)
    key_weights: np.ndarray  # (n_keys,)
    key_errors: np.ndarray  # (n_keys,) landmark RMS / inter-ocular
    head_estimate: FaceParams | None = None  # the most frontal key frame (clip identity, its fit's albedo)
    head_rgb: np.ndarray | None = None
    head_position: int = -1
    track: FaceTrack | None = None
    init_method: str | None = None  # a hybrid's learned method
    interrupted: bool = False  # Ctrl-C: only the first ``n_done`` frames were estimated
    n_done: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(len(self.times))


def _observation(rgb: np.ndarray, face: Any) -> FaceObservation:
    return FaceObservation.from_detection(rgb, face.detection())


@torch.no_grad()
def repose(head: HeadModel, prev: FaceParams, obs: FaceObservation) -> FaceParams:
    """``prev`` with its camera re-solved for this frame's points (PnP, closed form): the
    previous frame's identity, expression and jaw, the dense detector points where the head
    model embeds them (else iBUG-68 without the jawline). A warm-started fit moves the head in
    small steps; a face that moved, turned or was zoomed on between frames would otherwise be
    explained by expression and head rotation until the translation caught up."""
    from engine.fitting.camera_init import solve_pnp
    from engine.head.dense_landmarks import load_dense_embedding

    p = prev.to(head.template.device)
    verts = head(p.identity, p.expression, p.pose).vertices
    dense = None
    if obs.native is not None and obs.convention:
        dense = load_dense_embedding(head, obs.convention)
        if dense is not None and int(dense.indices.max()) >= len(obs.native):
            dense = None
    if dense is not None:
        pts3 = dense.points(head, verts)[0].cpu().double().numpy()
        pts2 = np.asarray(obs.native, np.float64)[dense.indices.cpu().numpy(), :2]
        weights = None
    else:
        pts3 = head.landmarks(verts)[0].cpu().double().numpy()
        pts2 = np.asarray(obs.landmarks68, np.float64)[:, :2]
        weights = np.where(np.arange(68) < 17, 0.0, 1.0)
    cam = prev.camera
    K = cam.K[0].double().cpu().numpy()
    R, t = solve_pnp(pts3, pts2, K, weights=weights)
    f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)[None]  # noqa: E731
    return prev.replace(camera=PerspectiveCamera(cam.K.float().cpu(), f32(R), f32(t), tuple(obs.image.shape[:2])))


def _frontal_angle(R: np.ndarray, t: np.ndarray) -> float:
    Rh = head_rotation(R[None], t[None])[0]
    return float(np.degrees(np.arccos(np.clip((np.trace(Rh) - 1) / 2, -1, 1))))


def video_camera(head: HeadModel, est: FaceParams, obs: FaceObservation, fit: FitConfig) -> FaceParams:
    """``est`` seen through the video camera guess (:data:`VIDEO_FOV_DEG` or ``--fov``) instead of
    its own intrinsics, posed anew (:func:`repose`): a network's camera follows its crop, and
    a short focal length turns a zoom into head pitch and jaw."""
    from engine.fitting.camera_init import guess_intrinsics

    H, W = obs.image.shape[:2]
    K = guess_intrinsics((W, H), np.asarray(obs.landmarks68, np.float64)[:, :2], fit.fov_deg, fit.min_distance_m)
    cam = est.camera
    K_t = torch.as_tensor(K, dtype=torch.float32)[None]
    return repose(head, est.replace(camera=PerspectiveCamera(K_t, cam.R.float().cpu(), cam.t.float().cpu(), (H, W))),
                  obs)


def _store(out: "ClipEstimate", k: int, est: FaceParams) -> None:
    cam = est.camera
    out.expression[k] = est.expression[0].numpy()
    out.pose[k] = est.pose[0].numpy() if est.pose.numel() else 0.0
    out.R[k], out.t[k], out.K[k] = cam.R[0].numpy(), cam.t[0].numpy(), cam.K[0].numpy()
    out.tracked[k] = True
    out.n_done = k + 1


def estimate_clip(frames: Sequence[Any], head: HeadModel, cfg: AnimateConfig | None = None, name: str = "the clip",
                  progress: ProgressFn | None = None, device: str | torch.device = "cpu") -> ClipEstimate:
    """Track, key frames, identity, per-frame estimates (module docstring). ``frames`` is
    re-iterable (a :class:`engine.video.source.Clip` or a list of objects with ``index``,
    ``time``, ``rgb``). Fit and hybrid read it twice (tracking, then the per-frame fits);
    a learned method once (its network runs on each frame as it is tracked, and the clip's
    identity replaces the per-frame ones afterwards)."""
    cfg = cfg or AnimateConfig()
    report = progress or (lambda stage, fraction, message: None)
    spec = get_method(cfg.method)
    learned = spec.kind == "learned"
    timings: dict[str, float] = {}
    n_total = len(frames)
    predictor = build_predictor(spec.name, head, device=device, checkpoint=cfg.checkpoint, init=cfg.init,
                                config=None if learned else cfg.fit)

    # ---- pass 1: track (a learned method also estimates); keep candidate key frames (4 per key frame)
    t0 = time.perf_counter()
    candidates = set(np.round(np.linspace(0, max(n_total - 1, 0), max(4 * cfg.key_frames, 1))).astype(int).tolist())
    kept: dict[int, np.ndarray] = {}
    first_seen: list[int] = []
    current: dict[str, np.ndarray] = {}
    estimates: dict[int, FaceParams] = {}  # learned: every tracked frame's estimate, albedo dropped but for candidates

    def frames_keeping():
        for k, frame in enumerate(frames):
            current["rgb"] = frame.rgb
            if k in candidates or not first_seen:
                kept[k] = frame.rgb
            yield frame

    def on_track(k: int, face: Any) -> None:
        if face is not None and not first_seen:
            first_seen.append(k)
        if k not in candidates and (not first_seen or first_seen[0] != k):
            kept.pop(k, None)
        if learned and face is not None:
            est = predictor(_observation(current["rgb"], face))
            estimates[k] = est if k in kept else est.replace(albedo=None, visibility=None)
        if learned or k % 10 == 0:
            stage, span = ("frames", 0.85) if learned else ("track", 0.23)
            report(stage, 0.02 + span * (k + 1) / max(n_total, 1), f"{'estimating' if learned else 'tracking'} "
                   f"frame {k + 1}/{n_total}")

    track = track_faces(frames_keeping(), cfg.backend, cfg.face, name, on_frame=on_track)
    if track.interrupted and not learned:
        raise KeyboardInterrupt  # no frame estimated yet
    timings["track"] = time.perf_counter() - t0
    tracked = track.tracked
    T = len(track.faces)

    # ---- key frames and the clip's identity
    t0 = time.perf_counter()
    usable = np.zeros(T, bool)
    for k in kept:
        usable[k] = k < T and tracked[k]
    keys = key_frame_positions(usable, cfg.key_frames)
    key_est: dict[int, FaceParams] = {}
    idents, errors = [], []
    for n, k in enumerate(keys):
        report("identity", 0.88 if learned else 0.25 + 0.15 * n / len(keys),
               f"key frame {n + 1}/{len(keys)} (frame {track.indices[k]})")
        est = estimates[k] if learned else predictor(_observation(kept[k], track.faces[k]))
        key_est[k] = est
        idents.append(est.identity[0].numpy())
        errors.append(landmark_rms(head, est, track.faces[k].landmarks68))
    identity, weights = combine_identities(np.stack(idents), np.array(errors), head.identity_std.cpu().numpy())
    ident_t = torch.tensor(identity, dtype=torch.float32)[None]
    timings["identity"] = time.perf_counter() - t0
    kept = {k: v for k, v in kept.items() if k in key_est}

    K_exp, J = head.n_expression, head.n_joints
    out = ClipEstimate(
        times=np.array(track.times), frames=np.array(track.indices), tracked=np.zeros(T, bool),
        expression=np.full((T, K_exp), np.nan), pose=np.zeros((T, J, 3)), R=np.tile(np.eye(3), (T, 1, 1)),
        t=np.full((T, 3), np.nan), K=np.tile(np.eye(3), (T, 1, 1)), identity=identity, key_positions=keys,
        key_identities=np.stack(idents), key_weights=weights, key_errors=np.array(errors), track=track)
    if spec.kind == "hybrid":
        out.init_method = predictor.init.name
    best_angle = float("inf")
    best: tuple[int, np.ndarray, FaceParams] | None = None

    def consider_for_head(k: int, rgb: np.ndarray, est: FaceParams) -> None:
        """Head files: the most frontal key frame, with its reconstruction's lighting and albedo."""
        nonlocal best_angle, best
        angle = _frontal_angle(out.R[k], out.t[k])
        if angle < best_angle:
            key = key_est[k]
            best_angle, best = angle, (k, rgb, est.replace(identity=ident_t, sh=key.sh, albedo=key.albedo,
                                                           visibility=key.visibility, timings=dict(key.timings)))

    if learned:  # ---- the network's frames, with the clip's identity
        for k, est in sorted(estimates.items()):
            if k >= T:  # Ctrl-C came between the estimate and the end of its frame
                continue
            _store(out, k, est)
            if k in key_est:
                consider_for_head(k, kept[k], est)
        out.interrupted = track.interrupted
        timings["frames"] = 0.0  # inside "track"
    else:  # ---- pass 2: every frame fitted with the clip's identity, from the previous one
        t0 = time.perf_counter()
        prev: FaceParams | None = None
        last_k = -10**9
        try:
            for k, frame in enumerate(frames):
                if k >= T:
                    break
                face = track.faces[k]
                if face is None:
                    continue
                obs = _observation(frame.rgb, face)
                if prev is None or k - last_k > cfg.restart_gap + 1:
                    start = key_est[k] if k in key_est else predictor(obs)
                    prev = video_camera(head, start.replace(identity=ident_t), obs, cfg.fit)
                elif cfg.repose:
                    prev = repose(head, prev, obs)
                est = fit_photo(head, obs.image, obs.landmarks68, cfg.frame_fit, native=obs.native,
                                native_convention=obs.convention, init=prev)
                prev = est
                last_k = k
                _store(out, k, est)
                if k in key_est:
                    consider_for_head(k, frame.rgb, est)
                report("frames", 0.4 + 0.5 * (k + 1) / max(T, 1), f"frame {k + 1}/{T}")
        except KeyboardInterrupt:
            out.interrupted = True
        timings["frames"] = time.perf_counter() - t0
    if best is None:  # interrupted before the first frame (always a key frame) was estimated
        raise KeyboardInterrupt
    k, rgb, est = best
    out.head_estimate, out.head_rgb, out.head_position = est, rgb, k
    out.timings = timings
    return out


# ---------------------------------------------------------------------------- smoothing -> Animation
def _interp_rows(values: np.ndarray, times: np.ndarray, have: np.ndarray) -> np.ndarray:
    """Fill rows without data by linear interpolation in time (ends hold the nearest value)."""
    out = np.array(values, np.float64, copy=True)
    flat = out.reshape(len(out), -1)
    src = np.nonzero(have)[0]
    for c in range(flat.shape[1]):
        flat[:, c] = np.interp(times, times[src], flat[src, c])
    return flat.reshape(out.shape)


def _rotvecs_of(R: np.ndarray) -> np.ndarray:
    return matrix_to_axis_angle(torch.as_tensor(R, dtype=torch.float64)).numpy()


def to_animation(est: ClipEstimate, head: HeadModel, smoothing: OneEuroConfig | None, fps: float,
                 meta: dict[str, Any] | None = None) -> Animation:
    """Smoothed (or raw, ``smoothing=None``) curves of the estimated frames as an
    :class:`Animation`; an interrupted clip ends at its last estimated frame, frames without a
    face in between are interpolated (``tracked`` False)."""
    end = est.n_done if est.interrupted else est.n_frames
    have = est.tracked[:end]
    times = est.times[:end]
    rows = np.nonzero(have)[0]
    tt = times[rows]
    expr = est.expression[:end][rows]
    pose = est.pose[:end][rows]
    rot = _rotvecs_of(est.R[:end][rows])
    trans = est.t[:end][rows]
    focal = est.K[:end][rows][:, [0, 1, 0, 1], [0, 1, 2, 2]]  # fx, fy, cx, cy
    if smoothing is not None and len(rows) > 1:
        expr = one_euro(expr, tt, smoothing, CURVE_SCALES["weights"])
        pose = smooth_rotvecs(pose, tt, smoothing)
        rot = smooth_rotvecs(rot, tt, smoothing)
        trans = one_euro(trans, tt, smoothing, CURVE_SCALES["translation"])
        focal = one_euro(focal, tt, smoothing, CURVE_SCALES["focal"])
    rng = head.expression_range.cpu().numpy()
    expr = np.clip(expr, rng[:, 0], rng[:, 1])

    def fill(a: np.ndarray) -> np.ndarray:
        full = np.zeros((end,) + a.shape[1:])
        full[rows] = a
        return _interp_rows(full, times, have)

    def fill_rot(rv: np.ndarray) -> np.ndarray:  # through sign-continuous quaternions
        return quaternion_to_rotvec(fill(continuous_quaternions(rotvec_to_quaternion(rv))))

    expr, pose, rot, trans, focal = fill(expr), fill_rot(pose), fill_rot(rot), fill(trans), fill(focal)
    R = rotvec_to_matrix(rot)
    K = np.zeros((end, 3, 3))
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = focal[:, 0], focal[:, 1], focal[:, 2], focal[:, 3], 1
    joints = {name: pose[:, j] for j, name in enumerate(head.joint_names)}
    return Animation(fps=float(fps), times=times, names=list(head.expression_names), weights=expr, joints=joints,
                     head_rotation=_rotvecs_of(head_rotation(R, trans)), tracked=have.copy(),
                     frames=est.frames[:end].copy(), camera={"R": R, "t": trans, "K": K}, meta=dict(meta or {}))
