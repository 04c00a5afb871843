"""Backend protocol: ``detect(rgb)`` returns faces in that array's pixel coordinates."""

from __future__ import annotations

import numpy as np

from engine.detect.result import FaceDetection


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


def square_box(box: np.ndarray, factor: float) -> np.ndarray:
    """A square of side ``factor`` × the box's longer side, same centre."""
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    half = factor * max(box[2] - box[0], box[3] - box[1]) / 2.0
    return np.array([cx - half, cy - half, cx + half, cy + half])
