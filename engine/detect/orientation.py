"""Faces rolled in the image plane: photos on their side or upside down.

Detectors and landmarkers are trained on roughly upright faces. MediaPipe copes with a face
on its side but, shown an upside-down face, often reports an *upright* one on it (eyes on
the eyes, mouth on the forehead), and a fit to those landmarks is a confident wrong answer.
Its confidence tells them apart, though: the same face turned upright always scored
higher than the upside-down reading (41 photos x 4 turns, none wrong). So each face found
is looked at again in a square crop turned by each quarter turn, the backend reports the
roll and confidence it sees (``Backend.face_rolls``), and the roll of the most confident
look wins. When it disagrees with the face's landmarks, the face is landmarked again in the
crop turned so that it is upright. When the upright photo shows no face at all, the three
turned copies are searched too. Landmarks are always returned in the original photo's
pixels.

``np.rot90(rgb, k)`` turns the picture ``k`` quarter turns counter-clockwise on screen; a
point ``(u, v)`` of an image ``W`` wide goes to ``(v, W - u)`` per turn (pixel edges at
integers, docs/conventions.md).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from engine.detect.backends.base import Backend
from engine.detect.result import FaceDetection, face_roll

#: sides of the check crops relative to the face box's longer side, and their size in pixels
CHECK_FACTORS = (2.0, 2.5)
CHECK_CROP_SIZE = 256
#: how strongly a look's confidence counts (see upright_roll)
SCORE_POWER = 8
#: two looks agree on a face's roll when they differ by less than this (degrees)
AGREE_DEG = 45.0


def rotate(rgb: np.ndarray, k: int) -> np.ndarray:
    """``rgb`` turned ``k`` quarter turns counter-clockwise (contiguous copy)."""
    return np.ascontiguousarray(np.rot90(rgb, k % 4))


def _turn_sizes(size: tuple[int, int], k: int) -> list[int]:
    """Widths of the image before each of ``k`` quarter turns of an image of ``size`` (W, H)."""
    w, h = size
    widths = []
    for _ in range(k % 4):
        widths.append(w)
        w, h = h, w
    return widths


def to_rotated(points: np.ndarray, k: int, size: tuple[int, int]) -> np.ndarray:
    """Points (N, 2+) of an image of ``size`` (W, H) -> the same points in ``rotate(img, k)``."""
    p = np.array(points, dtype=np.float64, copy=True)
    for w in _turn_sizes(size, k):
        p[:, 0], p[:, 1] = p[:, 1].copy(), w - p[:, 0]
    return p


def from_rotated(points: np.ndarray, k: int, size: tuple[int, int]) -> np.ndarray:
    """Points (N, 2+) of ``rotate(img, k)`` -> the same points in the image of ``size`` (W, H)."""
    p = np.array(points, dtype=np.float64, copy=True)
    for w in reversed(_turn_sizes(size, k)):
        p[:, 0], p[:, 1] = w - p[:, 1], p[:, 0].copy()
    return p


def angle_diff(a: float, b: float) -> float:
    """|a - b| in degrees, wrapped to [0, 180]."""
    return abs((a - b + 180.0) % 360.0 - 180.0)


def map_face(face: FaceDetection, fn: Callable[[np.ndarray], np.ndarray], depth_scale: float = 1.0) -> FaceDetection:
    """``face`` with every point mapped by ``fn`` ((N, 2) -> (N, 2)); the box becomes the
    bounds of its mapped corners; native depth (third column) is multiplied by ``depth_scale``."""
    x0, y0, x1, y1 = face.box
    corners = fn(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64))
    box = np.concatenate([corners.min(0), corners.max(0)])
    lm68 = None if face.landmarks68 is None else fn(np.asarray(face.landmarks68, np.float64)[:, :2])
    native = None
    if face.landmarks_native is not None:
        native = np.array(face.landmarks_native, dtype=np.float64, copy=True)
        native[:, :2] = fn(native[:, :2])
        if native.shape[1] > 2:
            native[:, 2:] *= depth_scale
    return FaceDetection(box=box, score=face.score, landmarks68=lm68, landmarks_native=native,
                         convention=face.convention, backend=face.backend)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / small if small > 0 else 0.0


def _check_crop(rgb: np.ndarray, centre: np.ndarray, side: float
                ) -> tuple[np.ndarray, Callable[[np.ndarray, int], np.ndarray], float] | None:
    """A CHECK_CROP_SIZE square crop of ``side`` photo pixels around ``centre``, the map from
    the pixels of its copy turned by ``k`` back to the photo's, and crop pixels per photo pixel."""
    import cv2

    if not (np.isfinite(side) and side > 0 and np.all(np.isfinite(centre))):
        return None
    S = CHECK_CROP_SIZE
    s = S / side
    origin = np.asarray(centre, np.float64) - side / 2.0
    # crop px = s * (photo px - origin); cv2 works on pixel centres, hence the 0.5s
    m = np.array([[s, 0, -s * origin[0] + 0.5 * s - 0.5], [0, s, -s * origin[1] + 0.5 * s - 0.5]])
    crop = cv2.warpAffine(np.ascontiguousarray(rgb), m, (S, S), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)

    def to_photo(p: np.ndarray, k: int) -> np.ndarray:
        return from_rotated(p, k, (S, S)) / s + origin

    return crop, to_photo, s


def _box_frame(box: np.ndarray) -> tuple[np.ndarray, float]:
    b = np.asarray(box, np.float64)
    return (b[:2] + b[2:]) / 2.0, float(max(b[2] - b[0], b[3] - b[1]))


def upright_roll(impl: Backend, rgb: np.ndarray, box: np.ndarray) -> tuple[float, np.ndarray] | None:
    """(roll in degrees, photo frame as :func:`face_roll`; face centre (2,) in photo pixels) of
    the face in ``box``, or None when no look sees a face near the crop's centre.

    Looks: the backend's ``face_rolls`` on crops of CHECK_FACTORS × the box side, each turned
    by 0-3 quarter turns. Each look's roll counts with its confidence to the power
    SCORE_POWER for every look that agrees with it (within AGREE_DEG); the roll with most
    weight wins. (A plain maximum of the confidence, or an unweighted vote, each erred on a
    few of 441 test looks; this weighting on none, see the module doc.)
    """
    centre, size = _box_frame(box)
    looks: list[tuple[float, float, np.ndarray]] = []
    for factor in CHECK_FACTORS:
        prepared = _check_crop(rgb, centre, factor * size)
        if prepared is None:
            return None
        crop, to_photo, _ = prepared
        mid = np.array([CHECK_CROP_SIZE / 2.0] * 2)
        for k in range(4):
            for roll, score, at in impl.face_rolls(rotate(crop, k)):
                at = np.asarray(at, np.float64)
                if np.linalg.norm(at - mid) > 0.25 * CHECK_CROP_SIZE:
                    continue  # a neighbour, not this face
                looks.append(((roll - 90.0 * k + 180.0) % 360.0 - 180.0, float(score), to_photo(at[None], k)[0]))
    if not looks:
        return None

    def weight(roll: float) -> float:
        return sum(sc ** SCORE_POWER for r, sc, _ in looks if angle_diff(r, roll) < AGREE_DEG)

    roll, _, at = max(looks, key=lambda lk: (weight(lk[0]), lk[1]))
    return roll, at


def _landmark_upright(impl: Backend, rgb: np.ndarray, face: FaceDetection, roll: float,
                      centre: np.ndarray) -> FaceDetection | None:
    """The face at ``centre`` landmarked again in a crop turned so that a face of ``roll`` is upright."""
    prepared = _check_crop(rgb, centre, CHECK_FACTORS[0] * _box_frame(face.box)[1])
    if prepared is None:
        return None
    crop, to_photo, s = prepared
    k = int(round(-roll / 90.0)) % 4
    mid = np.array([CHECK_CROP_SIZE / 2.0] * 2)
    found = [f for f in impl.detect(rotate(crop, k)) if f.landmarks68 is not None]
    if not found:
        return None
    best = min(found, key=lambda f: float(np.linalg.norm(f.landmarks68[:, :2].mean(0) - mid)))
    if np.linalg.norm(best.landmarks68[:, :2].mean(0) - mid) > 0.25 * CHECK_CROP_SIZE:
        return None
    mapped = map_face(best, lambda p: to_photo(p, k), 1.0 / s)
    return mapped if angle_diff(face_roll(mapped.landmarks68), roll) < AGREE_DEG else None


def settle_orientation(impl: Backend, rgb: np.ndarray, face: FaceDetection) -> FaceDetection:
    """``face`` as it is when it is roughly upright and its landmarks agree with
    :func:`upright_roll`; otherwise landmarked again in a crop turned so that it is upright
    (landmarkers are most precise there), or as it is when that fails."""
    if face.landmarks68 is None:
        return face
    found = upright_roll(impl, rgb, face.box)
    if found is None:
        return face
    roll, centre = found
    if abs(roll) < AGREE_DEG and angle_diff(roll, face_roll(face.landmarks68)) < AGREE_DEG:
        return face
    return _landmark_upright(impl, rgb, face, roll, centre) or face


def detect_any_orientation(impl: Backend, rgb: np.ndarray) -> list[FaceDetection]:
    """All faces of ``rgb`` (in its pixels) whatever their in-plane roll (see module doc)."""
    H, W = rgb.shape[:2]
    faces = impl.detect(rgb)
    if not any(f.landmarks68 is not None for f in faces):
        turned: list[tuple[float, FaceDetection]] = []
        for k in (1, 2, 3):
            for f in impl.detect(rotate(rgb, k)):
                if f.landmarks68 is not None:
                    turned.append((abs(face_roll(f.landmarks68)),
                                   map_face(f, lambda p, k=k: from_rotated(p, k, (W, H)))))
        # a face seen in several turns: keep the look in which it was most upright
        kept: list[FaceDetection] = []
        for _, f in sorted(turned, key=lambda t: (t[0], -t[1].score)):
            if not any(_overlap(f.box, o.box) > 0.5 for o in kept):
                kept.append(f)
        faces = kept + [f for f in faces if not any(_overlap(f.box, o.box) > 0.5 for o in kept)]
    # one result per face the backend reported (its own de-duplication stands)
    return [settle_orientation(impl, rgb, face) for face in faces]
