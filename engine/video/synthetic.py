"""Clips with ground truth for the video pipeline, built on :mod:`engine.generator`.

:func:`long_clip_params` makes a clip of one synthetic person that *holds* a pose and
expression, then moves to the next, and so on: ``n_keys`` key poses are
:func:`engine.generator.identity_view_params` (the same identity and albedo, each with its
own expression, jaw and head rotation); between holds the face eases (cosine) to the next
key. Camera, lighting, background and the image point the head is aimed at stay those of
view 0; sensor noise is new in every frame. ``still`` marks frames whose ground truth does
not change around them (the jitter measure of docs/video.md uses those).

:func:`pan_zoom_frames` turns one still photo into a video whose virtual camera pans and
zooms over it (the expression and head pose must come out constant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from engine.generator import SyntheticConfig, SyntheticSample, identity_view_params, render_params
from engine.head.model import HeadModel
from engine.render.camera import frontal_rotation
from engine.render.rotation import euler_to_matrix

__all__ = ["LongClipConfig", "LongClip", "long_clip_params", "render_long_clip", "pan_zoom_frames"]


@dataclass
class LongClipConfig:
    """Timing of a clip: ``n_keys`` key poses, each held then left for the next."""

    n_frames: int = 150
    n_keys: int = 5
    hold_fraction: float = 0.5  # share of each key's segment spent still
    fps: float = 30.0


@dataclass
class LongClip:
    """Rendered frames and their truth (per frame ``params``/``samples``), ``still (T,)``."""

    samples: list[SyntheticSample]
    params: list[dict]
    still: np.ndarray
    fps: float

    @property
    def times(self) -> np.ndarray:
        return np.arange(len(self.samples)) / self.fps


def _schedule(cfg: LongClipConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: key a, key b, blend w in [0, 1] (a -> b), and the 'still' mask."""
    n, k = cfg.n_frames, cfg.n_keys
    seg = n / k
    a = np.zeros(n, np.int64)
    w = np.zeros(n)
    for i in range(n):
        s = min(int(i / seg), k - 1)
        u = (i - s * seg) / seg  # position in the segment
        a[i] = s
        if s < k - 1 and u > cfg.hold_fraction:
            w[i] = 0.5 - 0.5 * math.cos(math.pi * (u - cfg.hold_fraction) / (1 - cfg.hold_fraction))
    b = np.minimum(a + 1, k - 1)
    value = a + w  # monotone "where in the key sequence": still where it does not change
    d = np.diff(value)
    moving = np.zeros(n, bool)
    moving[1:] |= np.abs(d) > 1e-12
    moving[:-1] |= np.abs(d) > 1e-12
    return a, b, w, ~moving


def long_clip_params(model: HeadModel, seed: int, cfg: LongClipConfig | None = None,
                     config: SyntheticConfig | None = None) -> tuple[list[dict], np.ndarray]:
    """Per-frame parameter dicts (as :func:`engine.generator.sample_params`) and the still mask."""
    cfg = cfg or LongClipConfig()
    scfg = config or SyntheticConfig()
    if cfg.n_frames < 2 or cfg.n_keys < 1:
        raise ValueError("a clip needs at least two frames and one key pose")
    keys = identity_view_params(model, seed, cfg.n_keys, scfg)
    p0 = keys[0]
    a, b, w, still = _schedule(cfg)
    with torch.no_grad():  # neutral face's landmark centre: the point kept at the aimed pixel
        centre = model.landmarks(model(p0["identity"][None]).vertices)[0].mean(0).cpu()
    rng = np.random.default_rng([seed, 3])
    S = scfg.image_size
    frames = []
    for i in range(cfg.n_frames):
        pa, pb, wi = keys[a[i]], keys[b[i]], float(w[i])
        angles = (1 - wi) * pa["angles"] + wi * pb["angles"]
        R = frontal_rotation() @ euler_to_matrix(angles, "XYZ")
        p = dict(p0)
        p.update(expression=(1 - wi) * pa["expression"] + wi * pb["expression"],
                 pose=(1 - wi) * pa["pose"] + wi * pb["pose"], angles=angles, R=R, t=p0["aim"] - R @ centre)
        if i > 0:
            p["noise"] = rng.normal(0, scfg.noise_std, (S, S, 3)).astype(np.float32)
        frames.append(p)
    return frames, still


@torch.no_grad()
def render_long_clip(model: HeadModel, seed: int, cfg: LongClipConfig | None = None,
                     config: SyntheticConfig | None = None) -> LongClip:
    """Render :func:`long_clip_params` (about 0.05 s per frame at 224 px on one core)."""
    cfg = cfg or LongClipConfig()
    scfg = config or SyntheticConfig()
    params, still = long_clip_params(model, seed, cfg, scfg)
    return LongClip([render_params(model, p, scfg, seed) for p in params], params, still, cfg.fps)


def pan_zoom_frames(rgb: np.ndarray, n_frames: int, size: tuple[int, int] = (640, 480), pan: float = 0.2,
                    zoom: float = 1.6, cycles: float = 1.0,
                    centre: tuple[float, float] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """A still photo filmed by a camera that pans and zooms: ``n_frames`` RGB frames of ``size``
    (W, H) and each frame's 2x3 affine map from photo to frame pixels.

    The view starts covering the photo's height, zooms in smoothly up to ``zoom``× and back,
    while the point ``centre`` of the photo (default its middle; e.g. the face) moves away
    from the view's centre by up to ``pan`` × the view's width left/right and half that
    up/down (``cycles`` sine periods over the clip); outside the photo the frame is grey."""
    import cv2

    H0, W0 = rgb.shape[:2]
    W, H = size
    px, py = centre if centre is not None else (W0 / 2, H0 / 2)
    out, maps = [], []
    base = min(W0 / W, H0 / H)  # photo px per frame px when the view covers the photo
    for i in range(n_frames):
        u = i / max(n_frames - 1, 1)
        z = 1.0 + (zoom - 1.0) * 0.5 * (1 - math.cos(2 * math.pi * cycles * u))
        s = base / z  # photo px per frame px
        cx = px + pan * W * s * math.sin(2 * math.pi * cycles * u)
        cy = py + 0.5 * pan * H * s * math.sin(4 * math.pi * cycles * u)
        # frame px = (photo px - centre) / s + frame centre
        A = np.array([[1 / s, 0, W / 2 - cx / s], [0, 1 / s, H / 2 - cy / s]])
        out.append(cv2.warpAffine(np.ascontiguousarray(rgb), A, (W, H), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128)))
        maps.append(A)
    return out, np.stack(maps)
