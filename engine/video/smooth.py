"""Temporal smoothing of animation curves: the One Euro filter (Casiez, Roussel & Vogel, CHI 2012).

A first-order low-pass filter whose cut-off rises with the signal's speed:
``cutoff = min_cutoff + beta · |dx/dt|`` (the speed itself low-passed at ``d_cutoff``). Still
stretches get ``min_cutoff`` (strong smoothing: per-frame jitter goes), fast motion a high
cut-off (little lag). Curves are filtered independently per channel, with the real time
between samples (frames without a face are skipped, not zero-filled).

The whole clip is known, so by default the filter runs forwards *and* backwards and the two
are averaged (``two_pass``): the forward pass lags motion by about as much as the backward
pass leads it, so the average keeps the timing of fast moves (lip sync) — see
docs/video.md for jitter and lag measured both ways. ``two_pass=False`` is the causal
filter (what a live tracker can do).

Units: ``beta`` multiplies a speed in curve units per second, so curves of different units
are brought to comparable scales first (:data:`CURVE_SCALES`: blendshape weights as they
are, rotations as quaternion components, translations in decimetres).

Rotations are filtered as unit quaternions made sign-continuous (``q`` and ``-q`` are one
rotation; a sign flip between frames would otherwise be smoothed into a spin) and
renormalised afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.video.formats import quaternion_to_rotvec, rotvec_to_quaternion

__all__ = ["CURVE_SCALES", "OneEuroConfig", "continuous_quaternions", "one_euro", "smooth_rotvecs"]

#: Curve unit per filter unit: a translation of 0.1 m counts like a weight change of 1.
CURVE_SCALES = {"weights": 1.0, "rotation": 1.0, "translation": 0.1, "focal": 100.0}


@dataclass
class OneEuroConfig:
    """Filter parameters (``python -m engine animate --min-cutoff --beta --d-cutoff``).

    Defaults chosen on synthetic clips (seeds 1-3, ``benchmarks/video_benchmark.py sweep``;
    docs/video.md reports held-out seeds).
    """

    min_cutoff: float = 0.5  # Hz at rest: lower = smoother still poses, more lag at slow motion
    beta: float = 3.0  # cut-off increase per unit/s of speed: higher = less lag on fast motion
    d_cutoff: float = 1.0  # Hz, low-pass of the speed estimate
    two_pass: bool = True  # forward + backward average (zero lag offline); False = causal

    def check(self) -> "OneEuroConfig":
        from engine.errors import UserError

        for name in ("min_cutoff", "d_cutoff"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise UserError(f"--{name.replace('_', '-')} must be a positive frequency in Hz, got {v}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise UserError(f"--beta must be >= 0, got {self.beta}")
        return self


def _alpha(dt: np.ndarray | float, cutoff: np.ndarray | float) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / dt)


def _forward(values: np.ndarray, times: np.ndarray, cfg: OneEuroConfig) -> np.ndarray:
    out = np.empty_like(values)
    x_hat = values[0].copy()
    dx_hat = np.zeros_like(x_hat)
    out[0] = x_hat
    for i in range(1, len(values)):
        dt = max(float(times[i] - times[i - 1]), 1e-6)
        dx = (values[i] - x_hat) / dt
        dx_hat = dx_hat + _alpha(dt, cfg.d_cutoff) * (dx - dx_hat)
        a = _alpha(dt, cfg.min_cutoff + cfg.beta * np.abs(dx_hat))
        x_hat = x_hat + a * (values[i] - x_hat)
        out[i] = x_hat
    return out


def one_euro(values: np.ndarray, times: np.ndarray, cfg: OneEuroConfig | None = None,
             scale: float = 1.0) -> np.ndarray:
    """Filter ``values (T, C)`` (or ``(T,)``) sampled at ``times (T,)`` seconds, each column
    on its own; ``scale`` is the curve unit per filter unit (:data:`CURVE_SCALES`)."""
    cfg = cfg or OneEuroConfig()
    x = np.asarray(values, np.float64)
    flat = x.reshape(len(x), -1) / scale
    t = np.asarray(times, np.float64)
    if len(x) < 2:
        return x.copy()
    fwd = _forward(flat, t, cfg)
    if cfg.two_pass:
        bwd = _forward(flat[::-1], -t[::-1], cfg)[::-1]
        fwd = 0.5 * (fwd + bwd)
    return (fwd * scale).reshape(x.shape)


def continuous_quaternions(q: np.ndarray) -> np.ndarray:
    """Quaternions ``(T, ..., 4)`` with signs flipped along the first axis so that consecutive
    ones have a positive dot product (``q`` and ``-q`` are one rotation)."""
    out = np.array(q, np.float64, copy=True)
    for i in range(1, len(out)):
        flip = (out[i] * out[i - 1]).sum(-1, keepdims=True) < 0
        out[i] = np.where(flip, -out[i], out[i])
    return out


def smooth_rotvecs(rotvecs: np.ndarray, times: np.ndarray, cfg: OneEuroConfig | None = None) -> np.ndarray:
    """One Euro on rotations ``(T, ..., 3)`` axis-angle, through sign-continuous quaternions."""
    r = np.asarray(rotvecs, np.float64)
    T = len(r)
    q = continuous_quaternions(rotvec_to_quaternion(r.reshape(T, -1, 3)))  # (T, N, 4)
    qs = one_euro(q.reshape(T, -1), times, cfg, CURVE_SCALES["rotation"]).reshape(q.shape)
    return quaternion_to_rotvec(qs).reshape(r.shape)
