"""The synthetic face generator: faces with known parameters (MoFA's ground-truth protocol,
and training data; the datasets that serve them to the trainer are in :mod:`engine.data`).

:func:`sample_params` draws identity, expression, jaw, head pose, camera, SH lighting,
per-vertex albedo and a background from a seeded generator; :func:`render_sample` decodes
them with :class:`engine.face.FaceDecoder` and renders the image with the project's
rasteriser (per-vertex colour = albedo × SH shading, Gouraud) and returns it with its
ground truth as :class:`engine.face.FaceParams` plus what scoring needs (landmarks,
vertices, masks).
:func:`render_clip` renders a short "video" of one synthetic person: identity, albedo,
camera and background fixed, head pose, expression, jaw and lighting moving smoothly
between two key frames (for cross-frame consistency losses and tests);
:func:`render_identity_views` renders K independent photos of one person (same identity
and albedo, everything else new: for identity/shape-consistency losses).
Same seed, same faces, on any machine.

Cost (2 shared CPU cores, one thread): ~0.05 s per face at 96-224 px, split between the
sampler (albedo field, background) and the rasteriser; the template-only parts of the
albedo (brow/lip/eye masks) are computed once per head model and cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from engine.face import Decoded, FaceDecoder, FaceParams
from engine.head.model import HeadModel
from engine.losses.albedo import SkinColourPrior
from engine.render.camera import PerspectiveCamera, frontal_rotation
from engine.render.rotation import euler_to_matrix
from engine.render.shading import SH_CONSTANTS, sh_basis

_BAND_FACTOR = torch.tensor([1.0, 2 / 3, 2 / 3, 2 / 3, 0.25, 0.25, 0.25, 0.25, 0.25])


@dataclass
class SyntheticConfig:
    """Ranges of the sampler (MoFA-like: moderate pose, sparse expressions)."""

    image_size: int = 224
    identity_clip: float = 2.5  # in prior std
    n_expressions: tuple[int, int] = (0, 3)  # how many ARKit units are active
    expression_max: float = 0.6
    jaw_max_rad: float = 0.25
    yaw_deg: float = 30.0
    pitch_deg: float = 20.0
    roll_deg: float = 10.0
    distance_m: tuple[float, float] = (0.6, 1.2)
    face_fraction: tuple[float, float] = (0.45, 0.6)  # face width / image width
    centre_jitter: float = 0.05  # of the image size
    noise_std: float = 0.01  # sensor noise on [0, 1] colours


@dataclass
class SyntheticSample:
    """One rendered face and its ground truth (CPU tensors, image uint8).

    ``params`` is the ground truth as :class:`engine.face.FaceParams` (batch of one: camera
    ``K, R, t`` of the ``S × S`` image, raw SH, per-vertex albedo); the rest is what scoring
    needs: posed model-frame ``vertices (V, 3)``, projected iBUG-68 ``landmarks2d (68, 2)``
    and the face-skin pixel mask.
    """

    image: np.ndarray  # (S, S, 3) uint8
    params: FaceParams
    vertices: torch.Tensor  # (V, 3) posed, model frame
    landmarks2d: torch.Tensor  # (68, 2) px
    face_mask: np.ndarray  # (S, S) bool, face-skin pixels
    seed: int


def directional_sh(direction: torch.Tensor, intensity: float) -> torch.Tensor:
    """Raw SH coefficients (9,) of a distant light of radiance ``intensity`` from ``direction``
    (view frame), in the basis of :func:`engine.render.shading.sh_basis`."""
    d = direction / direction.norm()
    return intensity * sh_basis(d) / _BAND_FACTOR


_ALBEDO_CACHE: dict[int, dict[str, np.ndarray]] = {}


def _albedo_masks(model: HeadModel) -> dict[str, np.ndarray]:
    """Template-only pieces of the albedo (computed once per model): vertices, regions,
    brow blending weights, lip and iris masks (they do not depend on the face's seed)."""
    key = id(model)
    hit = _ALBEDO_CACHE.get(key)
    if hit is not None and hit["_model"] is model:
        return hit
    from matplotlib.path import Path as _Path

    X = model.template.detach().cpu().numpy()
    regions = {k: v.cpu().numpy() for k, v in model.regions.items()}
    with torch.no_grad():
        lm = model.landmarks(model.template[None])[0].cpu().numpy()
    skin = regions["face_skin"]
    brows = []
    for a, b in [(i, i + 1) for i in range(17, 21)] + [(i, i + 1) for i in range(22, 26)]:
        p, q = lm[a], lm[b]
        tt = np.clip(((X - p) @ (q - p)) / max((q - p) @ (q - p), 1e-12), 0, 1)
        d = np.linalg.norm(X - (p + tt[:, None] * (q - p)), axis=1)
        brows.append(np.clip(1.5 - d / 0.004, 0, 1)[:, None] * skin[:, None])
    lips = np.concatenate([lm[48:60], lm[48:49]])
    inside = _Path(lips[:, :2]).contains_points(X[:, :2]) & (X[:, 2] > lm[48:60, 2].min() - 0.01) & skin
    irises = []
    for c in (lm[36:42].mean(0), lm[42:48].mean(0)):
        r = np.linalg.norm(X[:, :2] - c[:2], axis=1)
        irises.append((r < 0.0065, r < 0.003))
    out = {"_model": model, "X": X, "regions": regions, "brows": brows, "lips": inside, "irises": irises,
           "front": regions["eyes"] & (X[:, 2] > 0.008),
           "scalp": regions["scalp_neck"] & (X[:, 1] > 0.03)}
    _ALBEDO_CACHE.clear()  # one model at a time is the common case; keeps memory bounded
    _ALBEDO_CACHE[key] = out
    return out


def _skin_albedo(model: HeadModel, rng: np.random.Generator) -> torch.Tensor:
    """Smooth random skin field on the template, darker hair on the scalp, white eyes."""
    m = _albedo_masks(model)
    X, regions = m["X"], m["regions"]
    prior = SkinColourPrior()
    axis = np.asarray(prior.axis) / np.linalg.norm(prior.axis)
    base = np.asarray(prior.mean) + axis * rng.uniform(-0.25, 0.2)
    base = base + rng.normal(0, 0.015, 3)
    field = np.zeros((X.shape[0], 3))
    for _ in range(4):  # a few random low-frequency waves (blotches, redness)
        k = rng.normal(0, 40.0, 3)
        phase = rng.uniform(0, 2 * np.pi)
        amp = rng.normal(0, 0.025, 3)
        field += np.sin(X @ k + phase)[:, None] * amp
    alb = np.clip(base + field, 0.05, 0.95)
    # facial features a detector looks for: brows, lips (from the landmark embedding)
    hair = np.clip(rng.uniform(0.05, 0.45) * np.array([1.0, 0.8, 0.6]), 0, 1)
    for w in m["brows"]:
        alb = alb * (1 - w) + w * (0.6 * hair + 0.4 * alb * 0.5)
    inside = m["lips"]
    alb[inside] = alb[inside] * np.array([0.95, 0.6, 0.65])
    front = m["front"]
    alb_eyes = np.tile(np.array([0.8, 0.78, 0.76]), (X.shape[0], 1))
    for iris, pupil in m["irises"]:
        alb_eyes[iris] = rng.uniform(0.1, 0.35) * np.array([1.0, 0.8, 0.6])
        alb_eyes[pupil] = 0.05
    alb[regions["eyes"]] = np.where(front[regions["eyes"]][:, None], alb_eyes[regions["eyes"]], 0.75)
    alb[regions["mouth_interior"]] = np.array([0.45, 0.2, 0.2])
    alb[m["scalp"]] = hair
    return torch.tensor(alb, dtype=torch.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random background: smooth noise, a colour gradient or a patch of a bundled photo."""
    import cv2

    kind = rng.integers(0, 3)
    if kind == 0:
        small = rng.uniform(0, 1, (6, 6, 3)).astype(np.float32)
        return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    if kind == 1:
        a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        ang = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        w = (np.cos(ang) * xx + np.sin(ang) * yy)
        w = (w - w.min()) / max(np.ptp(w), 1e-6)
        return (a * (1 - w[..., None]) + b * w[..., None]).astype(np.float32)
    try:
        from skimage import data

        img = getattr(data, ["coffee", "chelsea", "rocket", "astronaut"][rng.integers(0, 4)])()
    except Exception:  # noqa: BLE001 - data not bundled: fall back to noise
        return rng.uniform(0, 1, (size, size, 3)).astype(np.float32)
    h, w = img.shape[:2]
    side = int(rng.integers(min(h, w) // 4, min(h, w)))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    patch = img[y0:y0 + side, x0:x0 + side]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _draw_expression(model: HeadModel, rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """Sparse ARKit expression (K_exp,) and joint pose (J, 3) with an optional open jaw."""
    K_exp = model.n_expression
    expr = np.zeros(K_exp)
    names = model.expression_names
    allowed = [i for i, n in enumerate(names) if n != "jawOpen"] if "jaw" in model.joint_names else list(range(K_exp))
    n_active = int(rng.integers(cfg.n_expressions[0], cfg.n_expressions[1] + 1))
    for i in rng.choice(allowed, size=n_active, replace=False):
        lo, hi = model.expression_range[i].tolist()
        expr[i] = np.clip(rng.uniform(0, cfg.expression_max), lo, hi)
    pose = np.zeros((model.n_joints, 3))
    if "jaw" in model.joint_names:
        pose[model.joint_names.index("jaw"), 0] = rng.uniform(0, cfg.jaw_max_rad) * (rng.uniform() < 0.6)
    return expr, pose


def _draw_angles(rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    """Head (pitch, yaw, roll) in radians, XYZ Euler order."""
    return np.radians([rng.uniform(-cfg.pitch_deg, cfg.pitch_deg), rng.uniform(-cfg.yaw_deg, cfg.yaw_deg),
                       rng.uniform(-cfg.roll_deg, cfg.roll_deg)])


def _draw_light(rng: np.random.Generator) -> torch.Tensor:
    """Raw SH (9, 3): ambient + one directional light from the frontal hemisphere, slight tint."""
    sh = torch.zeros(9, 3)
    amb = rng.uniform(0.55, 0.9)
    tint = 1.0 + rng.normal(0, 0.05, 3)
    direction = torch.tensor([rng.uniform(-1, 1), rng.uniform(-0.3, 1), rng.uniform(0.3, 1.0)], dtype=torch.float32)
    coeffs = directional_sh(direction, rng.uniform(0.2, 0.7))
    sh[0] += amb / SH_CONSTANTS[0]
    sh += coeffs[:, None]
    return sh * torch.tensor(tint, dtype=torch.float32)[None]


def _rotation(angles: np.ndarray) -> torch.Tensor:
    return frontal_rotation() @ euler_to_matrix(torch.tensor(angles, dtype=torch.float32), "XYZ")


def _aim(model: HeadModel, ident: np.ndarray, expr: np.ndarray, pose: np.ndarray, R: torch.Tensor,
         aim: torch.Tensor) -> torch.Tensor:
    """Translation that puts the face's landmark centroid at camera-frame point ``aim``."""
    with torch.no_grad():
        out = model(torch.tensor(ident, dtype=torch.float32)[None], torch.tensor(expr, dtype=torch.float32)[None],
                    torch.tensor(pose, dtype=torch.float32)[None] if model.n_joints else None)
        centre = model.landmarks(out.vertices)[0].mean(0).cpu()
    return aim - R @ centre


def sample_params(model: HeadModel, seed: int, config: SyntheticConfig | None = None) -> dict:
    """Ground-truth parameters of face ``seed`` (deterministic)."""
    return _draw_params(model, np.random.default_rng(seed), config or SyntheticConfig())


def _draw_params(model: HeadModel, rng: np.random.Generator, cfg: SyntheticConfig) -> dict:
    S = cfg.image_size
    K_id = model.n_identity
    ident = np.clip(rng.normal(0, 1, K_id), -cfg.identity_clip, cfg.identity_clip) * model.identity_std.cpu().numpy()
    expr, pose = _draw_expression(model, rng, cfg)
    angles = _draw_angles(rng, cfg)
    R = _rotation(angles)
    d = rng.uniform(*cfg.distance_m)
    frac = rng.uniform(*cfg.face_fraction)
    f = frac * S * d / 0.14
    K = torch.tensor([[f, 0, S / 2], [0, f, S / 2], [0, 0, 1]], dtype=torch.float32)
    # put the landmark centroid near the optical axis, with jitter
    jitter = rng.uniform(-cfg.centre_jitter, cfg.centre_jitter, 2) * S
    aim = torch.tensor([jitter[0] * d / f, jitter[1] * d / f, d], dtype=torch.float32)
    t = _aim(model, ident, expr, pose, R, aim)
    sh = _draw_light(rng)
    return {
        "identity": torch.tensor(ident, dtype=torch.float32), "expression": torch.tensor(expr, dtype=torch.float32),
        "pose": torch.tensor(pose, dtype=torch.float32), "R": R, "t": t, "K": K, "sh": sh,
        "albedo": _skin_albedo(model, rng), "background": _background(rng, S),
        "noise": rng.normal(0, cfg.noise_std, (S, S, 3)).astype(np.float32),
        "angles": torch.tensor(angles, dtype=torch.float32), "aim": aim,
    }


def face_params(model: HeadModel, p: dict, image_size: int) -> FaceParams:
    """The ground truth of a parameter draw (:func:`sample_params`) as FaceParams (batch of one)."""
    S = image_size
    camera = PerspectiveCamera(p["K"][None], p["R"][None], p["t"][None], (S, S))
    return FaceParams(identity=p["identity"][None], expression=p["expression"][None], pose=p["pose"][None],
                      camera=camera, sh=p["sh"][None], albedo=p["albedo"][None])


def render_colours(decoded: Decoded, colours: torch.Tensor, region: torch.Tensor | None = None,
                   background: torch.Tensor | float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Rasterise pre-shaded per-vertex ``colours (B, V, 3)`` of decoded faces (Gouraud, no
    antialiasing): (rgb (B, H, W, 3), coverage (B, H, W) bool, region pixels (B, H, W) bool
    or None) — the synthetic image formation, also used to score reconstructions."""
    out = decoded.render(colours=colours, region=region, antialias=False, background=background)
    cover = out.fragments.mask
    reg = (out.region[:, 0] > 0.99) & cover if region is not None else None
    return out.image.permute(0, 2, 3, 1), cover, reg


def vertex_colours(decoded: Decoded) -> torch.Tensor:
    """``albedo × max(shading, 0)`` per vertex ``(B, V, 3)`` (the generator's colour model)."""
    return decoded.albedo * decoded.shading.clamp_min(0.0)


def render_params(model: HeadModel, p: dict, cfg: SyntheticConfig, seed: int) -> SyntheticSample:
    """Render one parameter draw (the dict of :func:`sample_params`, possibly edited: e.g. a
    video frame's expression and pose) with its ground truth; ``seed`` is recorded."""
    S = cfg.image_size
    params = face_params(model, p, S)
    dec = FaceDecoder(model)(params)
    bg = torch.from_numpy(p["background"]).permute(2, 0, 1)[None]
    rgb, _, face = render_colours(dec, vertex_colours(dec), model.regions["face_skin"], background=bg)
    img = rgb[0].cpu().numpy() + p["noise"]
    return SyntheticSample(
        image=(np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), params=params.cpu(),
        vertices=dec.vertices[0].cpu(), landmarks2d=dec.landmarks2d[0].cpu(), face_mask=face[0].cpu().numpy(),
        seed=seed)


@torch.no_grad()
def render_sample(model: HeadModel, seed: int, config: SyntheticConfig | None = None) -> SyntheticSample:
    """Render synthetic face ``seed`` with its ground truth."""
    cfg = config or SyntheticConfig()
    return render_params(model, sample_params(model, seed, cfg), cfg, seed)


def identity_view_params(model: HeadModel, seed: int, n_views: int,
                         config: SyntheticConfig | None = None) -> list[dict]:
    """Parameters of ``n_views`` independent photos of one synthetic person (K views per
    identity, e.g. for DECA's shape consistency): view 0 is exactly ``sample_params(seed)``;
    the others keep its identity and albedo and draw expression, jaw, head pose, camera,
    light, background and noise anew (from generators seeded ``[seed, 2, view]``)."""
    cfg = config or SyntheticConfig()
    if n_views < 1:
        raise ValueError("an identity group needs at least one view")
    p0 = sample_params(model, seed, cfg)
    views = [p0]
    ident = p0["identity"].double().numpy()
    for j in range(1, n_views):
        p = _draw_params(model, np.random.default_rng([seed, 2, j]), cfg)
        p.update(identity=p0["identity"], albedo=p0["albedo"],
                 t=_aim(model, ident, p["expression"].double().numpy(), p["pose"].double().numpy(), p["R"], p["aim"]))
        views.append(p)
    return views


@torch.no_grad()
def render_identity_views(model: HeadModel, seed: int, n_views: int,
                          config: SyntheticConfig | None = None) -> list[SyntheticSample]:
    """Render :func:`identity_view_params`: ``n_views`` photos of one person; view 0 equals
    ``render_sample(model, seed)``."""
    cfg = config or SyntheticConfig()
    return [render_params(model, p, cfg, seed) for p in identity_view_params(model, seed, n_views, cfg)]


@dataclass
class ClipConfig:
    """How far a clip moves between its two key frames (the rest comes from SyntheticConfig)."""

    yaw_span_deg: float = 25.0  # end key frame = start ± up to this (clipped to the sampler's range)
    pitch_span_deg: float = 12.0
    roll_span_deg: float = 8.0
    light_change: float = 0.5  # 0 = same light in every frame, 1 = an independent end light


def clip_frame_params(model: HeadModel, seed: int, n_frames: int, config: SyntheticConfig | None = None,
                      clip: ClipConfig | None = None) -> list[dict]:
    """Per-frame parameters of clip ``seed``: frame 0 is exactly ``sample_params(seed)``; an
    end key frame (new expression and jaw, head rotated by up to the clip spans, another
    light) is drawn from a second generator, and frames ease between the two (cosine
    schedule). Identity, albedo, intrinsics, camera distance, the image point the face is
    aimed at and the background stay fixed; sensor noise is new in every frame."""
    cfg = config or SyntheticConfig()
    ccfg = clip or ClipConfig()
    if n_frames < 1:
        raise ValueError("a clip needs at least one frame")
    p0 = sample_params(model, seed, cfg)
    rng = np.random.default_rng([seed, 1])
    expr1, pose1 = _draw_expression(model, rng, cfg)
    span = np.radians([ccfg.pitch_span_deg, ccfg.yaw_span_deg, ccfg.roll_span_deg])
    lim = np.radians([cfg.pitch_deg, cfg.yaw_deg, cfg.roll_deg])
    a0 = p0["angles"].double().numpy()
    a1 = np.clip(a0 + rng.uniform(-1, 1, 3) * span, -lim, lim)
    sh1 = p0["sh"] + ccfg.light_change * (_draw_light(rng) - p0["sh"])
    e0, q0 = p0["expression"].double().numpy(), p0["pose"].double().numpy()
    ident = p0["identity"].double().numpy()
    S = cfg.image_size
    frames = []
    for k in range(n_frames):
        w = 0.5 - 0.5 * math.cos(math.pi * k / (n_frames - 1)) if n_frames > 1 else 0.0
        angles = (1 - w) * a0 + w * a1
        expr = (1 - w) * e0 + w * expr1
        pose = (1 - w) * q0 + w * pose1
        R = _rotation(angles)
        p = dict(p0)
        p.update(expression=torch.tensor(expr, dtype=torch.float32), pose=torch.tensor(pose, dtype=torch.float32),
                 angles=torch.tensor(angles, dtype=torch.float32), R=R,
                 t=_aim(model, ident, expr, pose, R, p0["aim"]), sh=(1 - w) * p0["sh"] + w * sh1)
        if k > 0:
            p["noise"] = rng.normal(0, cfg.noise_std, (S, S, 3)).astype(np.float32)
        frames.append(p)
    return frames


@torch.no_grad()
def render_clip(model: HeadModel, seed: int, n_frames: int, config: SyntheticConfig | None = None,
                clip: ClipConfig | None = None) -> list[SyntheticSample]:
    """Render clip ``seed``: ``n_frames`` images of one synthetic person (see
    :func:`clip_frame_params`); frame 0 equals ``render_sample(model, seed)``."""
    cfg = config or SyntheticConfig()
    return [render_params(model, p, cfg, seed) for p in clip_frame_params(model, seed, n_frames, cfg, clip)]
