"""PnP start for faces rolled in the image plane (#16 item 3): a photo on its side or upside
down gives the true head pose, not a mirror-like minimum with the eyes on the mouth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.fitting.camera_init import eye_line_angle, guess_intrinsics, in_plane_roll, solve_pnp


def _rot(axis: str, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


@pytest.fixture(scope="module")
def landmarks3d() -> np.ndarray:
    from engine.head import load_head_model

    model = load_head_model("open")
    return model.landmarks(model.template[None])[0].numpy().astype(np.float64)


def _project(pts3: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
    cam = pts3 @ R.T + t
    return cam[:, :2] / cam[:, 2:] * K[0, 0] + K[:2, 2]


@pytest.mark.parametrize("roll_deg", [0, 35, 90, 135, 180, -150, 270])
@pytest.mark.parametrize("yaw_deg", [0, 25])
def test_pnp_recovers_rolled_heads(landmarks3d, roll_deg, yaw_deg):
    K = np.array([[900.0, 0, 320], [0, 900.0, 240], [0, 0, 1]])
    R_true = _rot("z", math.radians(roll_deg)) @ np.diag([1.0, -1.0, -1.0]) @ _rot("y", math.radians(yaw_deg)) \
        @ _rot("x", math.radians(8))
    t_true = np.array([0.03, -0.02, 0.7])
    px = _project(landmarks3d, R_true, t_true, K)
    R, t = solve_pnp(landmarks3d, px, K, weights=np.where(np.arange(68) < 17, 0.0, 1.0))
    angle = math.degrees(math.acos(np.clip((np.trace(R.T @ R_true) - 1) / 2, -1, 1)))
    assert angle < 1.0 and np.allclose(t, t_true, atol=5e-3), (angle, t)
    # the head's eyes are above its mouth along the photo's rotated "up"
    up = np.array([math.sin(math.radians(roll_deg)), -math.cos(math.radians(roll_deg))])
    fitted = _project(landmarks3d, R, t, K)
    assert (fitted[36:48].mean(0) - fitted[48:68].mean(0)) @ up > 0


def test_roll_estimates(landmarks3d):
    K = np.array([[900.0, 0, 320], [0, 900.0, 240], [0, 0, 1]])
    for roll_deg in (0, 60, 180, -100):
        R = _rot("z", math.radians(roll_deg)) @ np.diag([1.0, -1.0, -1.0])
        px = _project(landmarks3d, R, np.array([0, 0, 0.6]), K)
        assert _angle_diff(math.degrees(in_plane_roll(landmarks3d, px)), roll_deg) < 0.5
        assert _angle_diff(math.degrees(eye_line_angle(px)), roll_deg) < 3


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def test_focal_guess_does_not_depend_on_a_quarter_turn(landmarks3d):
    K = np.array([[900.0, 0, 300], [0, 900.0, 300], [0, 0, 1]])
    px = _project(landmarks3d, np.diag([1.0, -1.0, -1.0]), np.array([0, 0, 0.5]), K)
    turned = np.stack([px[:, 1], 600 - px[:, 0]], 1)  # np.rot90 of a 600x600 photo
    a = guess_intrinsics((600, 600), px, 30.0, 0.9)
    b = guess_intrinsics((600, 600), turned, 30.0, 0.9)
    assert np.allclose(a, b)
