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
    # the face's width runs along the image axis nearer its eye line (a 90°-rolled face is
    # as wide along y as an upright one along x)
    across = 1 if abs(math.sin(eye_line_angle(landmarks))) > math.sqrt(0.5) else 0
    face_px = max(face_px, float(np.ptp(landmarks[:, across])), 1.0)
    distance = f * FACE_WIDTH_M / face_px
    if distance < min_distance_m:
        f = min_distance_m * face_px / FACE_WIDTH_M
    return np.array([[f, 0.0, W / 2.0], [0.0, f, H / 2.0], [0.0, 0.0, 1.0]])


def eye_line_angle(landmarks68: np.ndarray) -> float:
    """In-plane angle (radians) of the line from iBUG-68's image-left eye (36-41) to the other
    (42-47): 0 for an upright face, ±π for an upside-down one, ±π/2 for a face on its side."""
    lm = np.asarray(landmarks68, dtype=np.float64)[:, :2]
    d = lm[42:48].mean(0) - lm[36:42].mean(0)
    return float(math.atan2(d[1], d[0]))


def in_plane_roll(points3d: np.ndarray, points2d: np.ndarray) -> float:
    """The in-plane rotation (radians, image x towards image y) that best turns the model
    points as a frontal camera sees them onto the photo's points (2-D Procrustes over all
    correspondences, so it works for any landmark set: 68 points or a dense one)."""
    a = np.asarray(points3d, np.float64)[:, :2] * np.array([1.0, -1.0])  # frontal view: y down
    b = np.asarray(points2d, np.float64)[:, :2]
    a = a - a.mean(0)
    b = b - b.mean(0)
    cross = float(np.sum(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]))
    dot = float(np.sum(a * b))
    return math.atan2(cross, dot)


def _frontal_start(pts3: np.ndarray, pts2: np.ndarray, K: np.ndarray, roll: float) -> tuple[np.ndarray, np.ndarray]:
    """R0, t0: the face frontal to the camera, turned by ``roll`` about the optical axis, at the
    distance implied by the landmark spread."""
    f = K[0, 0]
    spread3 = np.linalg.norm(pts3 - pts3.mean(0), axis=1).mean()
    spread2 = np.linalg.norm(pts2 - pts2.mean(0), axis=1).mean()
    z = f * spread3 / max(spread2, 1e-6)
    R0 = np.diag([1.0, -1.0, -1.0])
    if roll:
        c, s = math.cos(roll), math.sin(roll)
        R0 = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ R0
    c2 = pts2.mean(0)
    c3 = R0 @ pts3.mean(0)
    t0 = np.array([(c2[0] - K[0, 2]) * z / f, (c2[1] - K[1, 2]) * z / f, z]) - c3 * np.array([1, 1, 0])
    return R0, t0


def _refine(pts3: np.ndarray, pts2: np.ndarray, K: np.ndarray, R0: np.ndarray,
            t0: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Levenberg-Marquardt from (R0, t0): (R, t, RMS reprojection error in px); the start
    itself when the solver fails or returns a face turned away from / behind the camera."""
    import cv2

    rvec0, _ = cv2.Rodrigues(R0)
    ok, rvec, tvec = cv2.solvePnP(pts3, pts2, K, None, rvec=rvec0.copy(), tvec=t0.reshape(3, 1).copy(),
                                  useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    R, t = R0, t0
    if ok:
        R_, _ = cv2.Rodrigues(rvec)
        t_ = tvec.reshape(3)
        # the face normal (+Z model) must point towards the camera (negative camera z)
        if t_[2] > 0 and (R_ @ np.array([0.0, 0.0, 1.0]))[2] <= 0.2:
            R, t = R_, t_
    cam = pts3 @ R.T + t
    proj = cam[:, :2] / np.maximum(cam[:, 2:], 1e-9) * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
    return R, t, float(np.sqrt(np.mean(np.sum((proj - pts2) ** 2, axis=1))))


def solve_pnp(points3d: np.ndarray, points2d: np.ndarray, K: np.ndarray,
              weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Model-frame 3-D landmarks + pixel 2-D landmarks -> (R (3,3), t (3,)) OpenCV extrinsics.

    Starts from a frontal guess at the distance implied by the landmark spread and refines
    with Levenberg-Marquardt (cv2.SOLVEPNP_ITERATIVE). A face rolled in the image plane
    (a photo on its side or upside down) also starts from the frontal guess turned by the
    roll the landmarks show (:func:`in_plane_roll`): from an upright start the solver
    stops in a mirror-like minimum with the head's eyes on the mouth. The start whose
    solution reprojects clearly better wins; the upright one on a tie, so upright photos
    keep exactly their former solution. Falls back to the start if the solver returns a
    face that points away from the camera or sits behind it.
    Pixel coordinates follow our edge convention; OpenCV's projection of a 3-D point is
    the same continuous mapping, so no half-pixel shift is needed.
    """
    pts3 = np.ascontiguousarray(points3d, dtype=np.float64)
    pts2 = np.ascontiguousarray(points2d, dtype=np.float64)
    if weights is not None:
        keep = weights > 0
        pts3, pts2 = pts3[keep], pts2[keep]
    R, t, err = _refine(pts3, pts2, K, *_frontal_start(pts3, pts2, K, 0.0))
    roll = in_plane_roll(pts3, pts2)
    if abs(roll) > math.radians(20.0):
        R_r, t_r, err_r = _refine(pts3, pts2, K, *_frontal_start(pts3, pts2, K, roll))
        if err_r < 0.8 * err:
            return R_r, t_r
    return R, t
