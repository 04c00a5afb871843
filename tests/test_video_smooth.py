"""One Euro smoothing of animation curves: still stretches lose their noise, motion keeps its
timing (two-pass), rotations are filtered without sign flips; the jitter/lag measures."""

from __future__ import annotations

import numpy as np
import pytest

from engine.video.evaluate import jitter, lag_frames
from engine.video.formats import rotvec_to_quaternion
from engine.video.smooth import OneEuroConfig, continuous_quaternions, one_euro, smooth_rotvecs


def _hold_move_hold(n: int = 150, fps: float = 30.0):
    """Still at 0.1, a fast cosine move to 0.8 over 10 frames, still again; truth and noisy."""
    t = np.arange(n) / fps
    truth = np.full(n, 0.1)
    a, b = 60, 70
    truth[a:b] = 0.1 + 0.7 * (0.5 - 0.5 * np.cos(np.pi * (np.arange(a, b) - a) / (b - a)))
    truth[b:] = 0.8
    still = np.ones(n, bool)
    still[a - 1:b + 1] = False
    noisy = truth + np.random.default_rng(0).normal(0, 0.02, n)
    return t, truth, noisy, still


def test_one_euro_removes_jitter_on_still_stretches_and_keeps_fast_moves():
    t, truth, noisy, still = _hold_move_hold()
    smooth = one_euro(noisy[:, None], t, OneEuroConfig())[:, 0]
    assert jitter(noisy[:, None], still) / jitter(smooth[:, None], still) > 5.0
    # the fast move is followed: error on the moving frames stays near the noise level
    moving = ~still
    assert np.abs(smooth - truth)[moving].mean() < 0.05
    assert np.abs(smooth - truth).mean() < np.abs(noisy - truth).mean()


def test_two_pass_has_no_lag_the_causal_filter_has():
    t, truth, noisy, still = _hold_move_hold()
    two = one_euro(noisy, t, OneEuroConfig(min_cutoff=0.5, beta=0.0))
    causal = one_euro(noisy, t, OneEuroConfig(min_cutoff=0.5, beta=0.0, two_pass=False))
    assert lag_frames(two, truth, ~still) == 0
    assert lag_frames(causal, truth, ~still) >= 2
    # beta > 0 lets the causal filter follow fast motion sooner
    fast = one_euro(noisy, t, OneEuroConfig(min_cutoff=0.5, beta=5.0, two_pass=False))
    assert np.abs(fast - truth)[~still].mean() < np.abs(causal - truth)[~still].mean()


def test_filter_uses_real_time_steps_and_keeps_shapes():
    t = np.array([0.0, 0.1, 0.2, 1.2, 1.3])  # a gap of one second
    x = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    cfg = OneEuroConfig(min_cutoff=1.0, beta=0.0, two_pass=False)
    y = one_euro(x, t, cfg)
    assert y.shape == x.shape
    # after a one-second gap the filter follows a step much further than after 0.1 s:
    # alpha = 1 / (1 + 1 / (2 pi f_c dt))
    y_short = one_euro(x, np.arange(5) * 0.1, cfg)
    assert y[3, 0] == pytest.approx(1 / (1 + 1 / (2 * np.pi))) and y_short[3, 0] == pytest.approx(
        1 / (1 + 1 / (0.2 * np.pi)))
    assert one_euro(x[:1], t[:1]).tolist() == x[:1].tolist()  # one sample: unchanged


def test_rotations_are_smoothed_through_sign_continuous_quaternions():
    T = 60
    t = np.arange(T) / 30.0
    axis = np.array([0.0, 1.0, 0.0])
    angles = np.full(T, np.pi - 0.02)  # near π: axis-angle flips between ±axis with noise
    angles += np.random.default_rng(1).normal(0, 0.01, T)
    rv = axis[None] * angles[:, None]
    rv[::2] = -axis[None] * (2 * np.pi - angles[::2, None])  # the same rotations, other sign
    q = rotvec_to_quaternion(rv)
    qc = continuous_quaternions(q)
    assert (np.sum(qc[1:] * qc[:-1], -1) > 0).all()
    sm = smooth_rotvecs(rv, t)
    # every smoothed rotation is still about the y axis, at an angle near π - 0.02
    qs = rotvec_to_quaternion(sm)
    assert np.abs(np.abs(qs[:, 2]) - np.sin((np.pi - 0.02) / 2)).max() < 0.01
    # batched joints (T, J, 3)
    assert smooth_rotvecs(np.stack([rv, rv * 0], 1), t).shape == (T, 2, 3)


def test_bad_filter_parameters_are_user_errors():
    from engine.errors import UserError

    with pytest.raises(UserError, match="min-cutoff"):
        OneEuroConfig(min_cutoff=0).check()
    with pytest.raises(UserError, match="beta"):
        OneEuroConfig(beta=-1).check()
