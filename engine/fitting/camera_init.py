"""Closed-form camera initialisation: a guessed focal length, then PnP on landmarks."""

from __future__ import annotations

import math

import numpy as np

# Typical distance between iBUG jaw points 0 and 16 on an adult face (metres).
FACE_WIDTH_M = 0.14


def guess_intrinsics(image_size: tuple[int, int], landmarks: np.ndarray, fov_deg: float,
                     min_distance_m: float) -> np.ndarray:
    """K (3, 3) for a photo of ``image_size`` (W, H): fixed FOV over the longer side, raised
    so the face (from its landmark width) is at least ``min_distance_m`` away."""
    W, H = image_size
    f = 0.5 * max(W, H) / math.tan(math.radians(fov_deg) / 2.0)
    face_px = float(np.linalg.norm(landmarks[16] - landmarks[0]))
    face_px = max(face_px, float(np.ptp(landmarks[:, 0])), 1.0)
    distance = f * FACE_WIDTH_M / face_px
    if distance < min_distance_m:
        f = min_distance_m * face_px / FACE_WIDTH_M
    return np.array([[f, 0.0, W / 2.0], [0.0, f, H / 2.0], [0.0, 0.0, 1.0]])


def solve_pnp(points3d: np.ndarray, points2d: np.ndarray, K: np.ndarray,
              weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Model-frame 3-D landmarks + pixel 2-D landmarks -> (R (3,3), t (3,)) OpenCV extrinsics.

    Starts from a frontal guess at the distance implied by the landmark spread and refines
    with Levenberg-Marquardt (cv2.SOLVEPNP_ITERATIVE). Falls back to the frontal guess if
    the solver returns a face that points away from the camera or sits behind it.
    Pixel coordinates follow our edge convention; OpenCV's projection of a 3-D point is
    the same continuous mapping, so no half-pixel shift is needed.
    """
    import cv2

    pts3 = np.ascontiguousarray(points3d, dtype=np.float64)
    pts2 = np.ascontiguousarray(points2d, dtype=np.float64)
    if weights is not None:
        keep = weights > 0
        pts3, pts2 = pts3[keep], pts2[keep]
    f = K[0, 0]
    spread3 = np.linalg.norm(pts3 - pts3.mean(0), axis=1).mean()
    spread2 = np.linalg.norm(pts2 - pts2.mean(0), axis=1).mean()
    z = f * spread3 / max(spread2, 1e-6)
    R0 = np.diag([1.0, -1.0, -1.0])
    c2 = pts2.mean(0)
    c3 = R0 @ pts3.mean(0)
    t0 = np.array([(c2[0] - K[0, 2]) * z / f, (c2[1] - K[1, 2]) * z / f, z]) - c3 * np.array([1, 1, 0])
    rvec0, _ = cv2.Rodrigues(R0)
    ok, rvec, tvec = cv2.solvePnP(pts3, pts2, K, None, rvec=rvec0.copy(), tvec=t0.reshape(3, 1).copy(),
                                  useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return R0, t0
    R, _ = cv2.Rodrigues(rvec)
    t = tvec.reshape(3)
    # the face normal (+Z model) must point towards the camera (negative camera z)
    if t[2] <= 0 or (R @ np.array([0.0, 0.0, 1.0]))[2] > 0.2:
        return R0, t0
    return R, t
