"""``Crop.camera_to_image``: a camera predicted in a turned crop, as a camera of the photo (#16
item 3, for the learned method's crop of a rolled face)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.photo import align_crop


def _project(K: np.ndarray, R: np.ndarray, t: np.ndarray, X: np.ndarray) -> np.ndarray:
    cam = X @ R.T + t
    p = cam @ K.T
    return p[:, :2] / p[:, 2:]


@pytest.mark.parametrize("rotation", [None, 0.3, math.pi / 2, math.pi, -2.0])
def test_crop_camera_projects_like_the_photo_camera(rotation):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    crop = align_crop(photo, np.array([120.0, 80.0, 260.0, 230.0]), size=224, rotation=rotation)
    K_crop = np.array([[750.0, 0, 112.0], [0, 750.0, 112.0], [0, 0, 1]])
    a = 0.4
    R = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]]) @ np.diag([1.0, -1, -1])
    t = np.array([0.01, -0.02, 0.9])
    X = rng.normal(0, 0.08, (50, 3))
    K, R_roll = crop.camera_to_image(K_crop)
    in_photo = crop.to_image(_project(K_crop, R, t, X))
    assert np.allclose(_project(K, R_roll @ R, R_roll @ t, X), in_photo, atol=1e-6)
    assert K[0, 1] == 0 and K[1, 0] == 0 and math.isclose(K[0, 0], K[1, 1]) and np.allclose(K[2], [0, 0, 1])
    assert np.allclose(R_roll @ R_roll.T, np.eye(3)) and np.isclose(np.linalg.det(R_roll), 1)
    if rotation is None:
        assert np.allclose(R_roll, np.eye(3))
