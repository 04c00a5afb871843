"""Backend protocol: ``detect(rgb)`` returns faces in that array's pixel coordinates."""

from __future__ import annotations

import numpy as np

from engine.detect.result import FaceDetection, face_roll


class Backend:
    """A face detector + landmarker. Subclasses load their models lazily, once."""

    name: str = ""
    #: the convention of ``landmarks_native``
    convention: str = ""

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when usable here; otherwise one sentence saying what to install or place."""
        return None

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        raise NotImplementedError

    def face_rolls(self, rgb: np.ndarray) -> list[tuple[float, float, np.ndarray]]:
        """(roll in degrees as :func:`engine.detect.result.face_roll`, confidence, centre (2,)
        in ``rgb`` pixels) of each face in ``rgb``: which way up a face is
        (:mod:`engine.detect.orientation` compares the confidences of turned copies of one
        crop, so they must be comparable between such calls). Default: from :meth:`detect`."""
        return [(face_roll(f.landmarks68), float(f.score), np.asarray(f.landmarks68, np.float64)[:, :2].mean(0))
                for f in self.detect(rgb) if f.landmarks68 is not None]


def square_box(box: np.ndarray, factor: float) -> np.ndarray:
    """A square of side ``factor`` × the box's longer side, same centre."""
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    half = factor * max(box[2] - box[0], box[3] - box[1]) / 2.0
    return np.array([cx - half, cy - half, cx + half, cy + half])
