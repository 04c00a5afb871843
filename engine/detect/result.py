"""One result type for every face detector / landmark backend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IBUG68 = "ibug-68"


@dataclass
class FaceDetection:
    """A face in a photo, in original-image pixels (edges at integers, see conventions).

    ``landmarks68`` is (68, 2) in iBUG-68 order (native, or mapped from the backend's own
    set) or None when the backend gave none; ``landmarks_native`` keeps the backend's own
    points ((N, 2) or (N, 3); MediaPipe's third column is depth in the same pixel units,
    larger = farther) and ``convention`` names them, e.g. ``"mediapipe-478"``.
    """

    box: np.ndarray                      # (4,) float64 x0, y0, x1, y1
    score: float
    landmarks68: np.ndarray | None
    landmarks_native: np.ndarray | None
    convention: str
    backend: str

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def scaled(self, factor: float) -> "FaceDetection":
        """The same face with all coordinates multiplied by ``factor`` (edge convention)."""
        native = None
        if self.landmarks_native is not None:
            native = self.landmarks_native.astype(np.float64) * factor
        return FaceDetection(
            box=self.box * factor,
            score=self.score,
            landmarks68=None if self.landmarks68 is None else self.landmarks68 * factor,
            landmarks_native=native,
            convention=self.convention,
            backend=self.backend,
        )

    def to_dict(self, native: bool = False) -> dict:
        """JSON-friendly dict (native points only on request: 478 points are bulky)."""
        out = {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "backend": self.backend,
            "convention": self.convention,
            "landmarks68": None if self.landmarks68 is None
            else np.round(self.landmarks68[:, :2], 2).tolist(),
        }
        if native and self.landmarks_native is not None:
            out["landmarks_native"] = np.round(self.landmarks_native, 2).tolist()
        return out


def inter_ocular(landmarks68: np.ndarray) -> float:
    """Distance between the outer eye corners (iBUG 36 and 45), the usual normaliser."""
    lm = np.asarray(landmarks68)
    return float(np.linalg.norm(lm[36, :2] - lm[45, :2]))


def face_roll(landmarks68: np.ndarray) -> float:
    """In-plane roll of a face in degrees from its iBUG-68 points: 0 upright, +90 when the
    picture of an upright face was turned a quarter turn counter-clockwise (the chin points
    to the right), ±180 upside down. Uses the eyes-to-mouth direction, which (unlike the
    eye line) tells an upright face from an upside-down one."""
    lm = np.asarray(landmarks68, dtype=np.float64)[:, :2]
    down = lm[48:68].mean(0) - lm[36:48].mean(0)
    return float(np.degrees(np.arctan2(down[0], down[1])))


def sort_largest_first(faces: list[FaceDetection]) -> list[FaceDetection]:
    return sorted(faces, key=lambda f: (-f.area, -f.score))
