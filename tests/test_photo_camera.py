"""The photo camera's conversion (blender_addon/photo_camera.py) without Blender: Blender's
camera model with the converted settings projects like the engine's pinhole camera K [R | t].
(tests/test_blender_inside.py checks the same against Blender's own projection.)"""

import numpy as np
import pytest

from blender_addon.photo_camera import PhotoCameraError, camera_settings, project


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (512, 512), (4032, 3024)])
def test_blender_camera_projects_like_k_r_t(size):
    rng = np.random.default_rng(size[0] + size[1])
    W, H = size
    for _ in range(5):
        f = rng.uniform(0.6, 3.0) * max(W, H)
        K = np.array([[f, 0, rng.uniform(0.3, 0.7) * W], [0, f, rng.uniform(0.3, 0.7) * H], [0, 0, 1]])
        R, t = _rotation(rng), np.array([*rng.normal(0, 0.05, 2), rng.uniform(0.4, 2.0)])
        cam_pts = np.column_stack([rng.uniform(-0.1, 0.1, (50, 2)), rng.uniform(0.3, 1.0, 50)]) * [1, 1, t[2]]
        model_pts = (cam_pts - t) @ R  # points in front of the camera, in the model frame
        expected = cam_pts @ K.T
        s = camera_settings(K, R, t, size)
        assert s.resolution == size and s.sensor_fit == ("HORIZONTAL" if W >= H else "VERTICAL")
        assert np.abs(project(s, model_pts) - expected[:, :2] / expected[:, 2:]).max() < 1e-6
        # the camera's centre is the photographer's: -R^T t in the model frame
        assert np.allclose(s.camera_to_model[:3, 3], -R.T @ t)


def test_a_camera_that_cannot_be_one_is_refused():
    K, R, t = np.diag([800.0, 800.0, 1.0]), np.eye(3), np.array([0, 0, 1.0])
    with pytest.raises(PhotoCameraError, match="not usable"):
        camera_settings(np.zeros((3, 3)), R, t, (640, 480))
    with pytest.raises(PhotoCameraError, match="not usable"):
        camera_settings(K, R, t, (0, 480))
    with pytest.raises(PhotoCameraError, match="not a rotation"):
        camera_settings(K, 2.0 * R, t, (640, 480))
    with pytest.raises(PhotoCameraError, match="not a rotation"):
        camera_settings(K, np.diag([1.0, 1.0, -1.0]), t, (640, 480))  # a mirror
    assert camera_settings(K.ravel().tolist(), R.ravel().tolist(), t.tolist(), [640, 480]).lens_mm == \
        pytest.approx(800 * 36 / 640)  # flat lists, as the object's properties hold them
