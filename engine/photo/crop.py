"""Similarity-aligned square crops that remember how they map back to the photo."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# iBUG-68 index groups used to place a crop.
_LEFT_EYE = slice(36, 42)   # the subject's right eye (image left in a frontal photo)
_RIGHT_EYE = slice(42, 48)
_MOUTH_CORNERS = (48, 54)


@dataclass(frozen=True)
class Crop:
    """A square crop and the 2x3 similarity ``matrix`` with ``crop_px = matrix @ [u, v, 1]``.

    Pixel coordinates follow docs/conventions.md (pixel edges at integers) in both the
    photo and the crop, so ``to_image(to_crop(p)) == p`` exactly up to float error.
    """

    image: np.ndarray          # (size, size, 3) uint8
    matrix: np.ndarray         # (2, 3) float64, crop_from_image
    inverse: np.ndarray        # (2, 3) float64, image_from_crop
    size: int

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Photo pixels (N, 2) -> crop pixels (N, 2)."""
        return _apply(self.matrix, points)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels (N, 2) -> photo pixels (N, 2)."""
        return _apply(self.inverse, points)

    def resized(self, size: int) -> "Crop":
        """The same crop at ``size`` pixels (area-averaged when smaller): the same photo
        region, as :func:`align_crop` with this ``size`` would cut it up to resampling."""
        import cv2

        k = size / float(self.size)
        interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
        return Crop(image=cv2.resize(self.image, (size, size), interpolation=interp), matrix=self.matrix * k,
                    inverse=self.inverse @ np.diag([1.0 / k, 1.0 / k, 1.0]), size=size)

    @property
    def scale(self) -> float:
        """Crop pixels per photo pixel."""
        return float(np.hypot(self.matrix[0, 0], self.matrix[1, 0]))

    @property
    def rotation(self) -> float:
        """In-plane rotation applied to the photo, radians (counter-clockwise on screen)."""
        return float(np.arctan2(self.matrix[1, 0], self.matrix[0, 0]))

    def camera_to_image(self, K_crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A pinhole camera of the crop as one of the photo: ``(K, R_roll)``.

        For a camera ``K_crop`` (square pixels, no skew) with extrinsics ``R, t`` in crop
        pixels, the photo's camera is ``K`` with ``R_roll @ R, R_roll @ t``: the crop's
        scale and shift go into ``K`` and its in-plane rotation (a crop made with
        ``rotation=`` or ``rotate=True``) into ``R_roll``, a turn about the optical axis.
        Without rotation ``R_roll`` is the identity and ``K = inv(A) @ K_crop``.
        """
        K_crop = np.asarray(K_crop, dtype=np.float64)
        a = np.vstack([self.inverse, [0.0, 0.0, 1.0]]) @ K_crop  # = K @ R_roll
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        r2 = np.array([[c, s], [-s, c]])  # image_from_crop's rotation
        R_roll = np.eye(3)
        R_roll[:2, :2] = r2
        K = a @ R_roll.T
        K[np.abs(K) < 1e-12] = 0.0
        return K, R_roll


def _apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    flat = pts.reshape(-1, pts.shape[-1])[:, :2]
    out = flat @ m[:, :2].T + m[:, 2]
    return out.reshape(pts.shape[:-1] + (2,))


def _invert(m: np.ndarray) -> np.ndarray:
    a = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(a)[:2]


def face_frame(landmarks68: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Centre, size and in-plane angle (eye line, radians) of a face from iBUG-68 points.

    Centre is the middle of the landmark extent; size is the larger of that extent and
    3× the eye-to-mouth distance, which stays stable for profiles and closed jaws.
    """
    lm = np.asarray(landmarks68, dtype=np.float64)[:, :2]
    eye_l = lm[_LEFT_EYE].mean(0)
    eye_r = lm[_RIGHT_EYE].mean(0)
    mouth = lm[list(_MOUTH_CORNERS)].mean(0)
    eye_mid = 0.5 * (eye_l + eye_r)
    angle = float(np.arctan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0]))
    centre = 0.5 * (lm.min(0) + lm.max(0))
    extent = float(np.max(lm.max(0) - lm.min(0)))
    size = max(extent, 3.0 * float(np.linalg.norm(mouth - eye_mid)))
    return centre, size, angle


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
    """The bounding box ``(x0, y0, x1, y1)`` of points (N, 2+): with :func:`align_crop` it
    gives an axis-aligned crop around them (the fitter's working crop, texture sources)."""
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
    lo, hi = lm.min(0), lm.max(0)
    return np.array([lo[0], lo[1], hi[0], hi[1]])


def crop_matrix(centre: np.ndarray, side: float, size: int, angle: float = 0.0) -> np.ndarray:
    """Similarity mapping a ``side``-pixel square centred at ``centre`` (rotated by
    ``angle``) onto a ``size``×``size`` crop."""
    s = size / float(side)
    c, si = np.cos(-angle), np.sin(-angle)
    rot = np.array([[c, -si], [si, c]]) * s
    t = np.array([size / 2.0, size / 2.0]) - rot @ np.asarray(centre, dtype=np.float64)
    return np.hstack([rot, t[:, None]])


def align_crop(
    rgb: np.ndarray,
    landmarks_or_box: np.ndarray,
    size: int = 224,
    scale: float = 1.25,
    rotate: bool = False,
    rotation: float | None = None,
    border: str = "replicate",
) -> Crop:
    """Crop a face to ``size``×``size`` with a similarity transform (no shear).

    ``landmarks_or_box`` is iBUG-68 points (68, 2+) or a box ``(x0, y0, x1, y1)``.
    ``scale`` is the crop side relative to the face size (landmark extent or box side).
    The crop keeps the head's in-plane roll by default (pose-preserving, as MoFA/DECA
    expect); ``rotate=True`` levels the eyes, and ``rotation`` (radians, counter-clockwise
    in the photo) sets an explicit roll to remove, e.g. from a head-pose estimate.
    Outside the photo the border is ``replicate``d (or ``constant`` black).
    """
    import cv2

    arr = np.asarray(landmarks_or_box, dtype=np.float64)
    if arr.shape == (4,):
        x0, y0, x1, y1 = arr
        centre = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
        side = max(x1 - x0, y1 - y0)
        angle = 0.0
    elif arr.ndim == 2 and arr.shape[0] == 68:
        centre, side, angle = face_frame(arr)
        if not rotate:
            angle = 0.0
    else:
        raise ValueError(f"expected 68 landmarks or a 4-value box, got shape {arr.shape}")
    if rotation is not None:
        angle = float(rotation)
    if side <= 0:
        raise ValueError("face size must be positive")
    m = crop_matrix(centre, side * scale, size, angle)
    # cv2 maps pixel centres (integer coords); ours are edges, so shift by half a pixel.
    shift_in = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    shift_out = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
    m_cv = (shift_out @ np.vstack([m, [0, 0, 1]]) @ shift_in)[:2]
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    src = np.ascontiguousarray(rgb)
    s = float(np.hypot(m[0, 0], m[1, 0]))
    if s < 0.5:
        # Bilinear warping aliases when shrinking a lot: area-average first (exact scale).
        f = 2.0 * s
        h, w = src.shape[:2]
        nw, nh = max(1, round(w * f)), max(1, round(h * f))
        src = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_AREA)
        pre = np.diag([w / nw, h / nh, 1.0])  # small px -> photo px (edge convention)
        m_cv = (shift_out @ np.vstack([m, [0, 0, 1]]) @ pre @ shift_in)[:2]
    image = cv2.warpAffine(src, m_cv, (size, size), flags=cv2.INTER_LINEAR, borderMode=mode)
    return Crop(image=image, matrix=m, inverse=_invert(m), size=size)
