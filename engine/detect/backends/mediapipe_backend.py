"""MediaPipe (0.10.21 legacy solutions): full-range face detection, then face mesh on
each 1.8× crop. Weights ship inside the wheel, so this works offline.

Face mesh run on a whole group photo misses small faces; detecting first and meshing a
crop of each face finds them all (see docs/photo_intake.md).
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np

from engine.detect._quiet import quiet_native_stderr
from engine.detect.backends.base import Backend, square_box
from engine.detect.result import FaceDetection

CROP_FACTOR = 1.8
MESH_INPUT_MAX = 384   # crops are reduced to this before meshing (face mesh works at 192)


class MediaPipeBackend(Backend):
    name = "mediapipe"
    convention = "mediapipe-478"

    def __init__(self, min_score: float = 0.5, map_to_ibug: bool = True) -> None:
        self.min_score = min_score
        self.map_to_ibug = map_to_ibug
        self._detector = None
        self._mesh = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("mediapipe") is None:
            return ("the 'mediapipe' backend needs mediapipe==0.10.21 "
                    "(pip install --no-deps mediapipe==0.10.21 -r requirements-mediapipe.txt)")
        return None

    def _models(self):
        if self._detector is None:
            with quiet_native_stderr(), warnings.catch_warnings():
                # mediapipe imports matplotlib, whose pyparsing use warns on import
                warnings.simplefilter("ignore", DeprecationWarning)
                from mediapipe.python.solutions import face_detection, face_mesh

                self._detector = face_detection.FaceDetection(
                    model_selection=1, min_detection_confidence=self.min_score)
                self._mesh = face_mesh.FaceMesh(
                    static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                    min_detection_confidence=0.3)
        return self._detector, self._mesh

    def close(self) -> None:
        for m in (self._detector, self._mesh):
            if m is not None:
                m.close()
        self._detector = self._mesh = None

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        detector, _ = self._models()
        h, w = rgb.shape[:2]
        with quiet_native_stderr():
            result = detector.process(np.ascontiguousarray(rgb))
        faces: list[FaceDetection] = []
        for det in result.detections or []:
            rb = det.location_data.relative_bounding_box
            box = np.array([rb.xmin * w, rb.ymin * h, (rb.xmin + rb.width) * w,
                            (rb.ymin + rb.height) * h], dtype=np.float64)
            box = np.clip(box, [0, 0, 0, 0], [w, h, w, h])
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            native = self.mesh_in_box(rgb, box)
            lm68 = None
            if native is not None and self.map_to_ibug:
                from engine.detect.ibug68 import mediapipe_to_ibug68

                lm68 = mediapipe_to_ibug68(native[:, :2])
            faces.append(FaceDetection(box=box, score=float(det.score[0]), landmarks68=lm68,
                                       landmarks_native=native, convention=self.convention,
                                       backend=self.name))
        return faces

    def mesh_in_box(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """478 mesh points (x, y, depth) in ``rgb`` pixels for the face in ``box``, or None."""
        import cv2

        _, mesh = self._models()
        sq = square_box(box, CROP_FACTOR)
        side = sq[2] - sq[0]
        out = min(MESH_INPUT_MAX, max(64, int(round(side))))
        s = out / side
        # crop px = s * (photo px - sq origin); cv2 works on pixel centres, hence the 0.5s.
        m = np.array([[s, 0, -s * sq[0] + 0.5 * s - 0.5], [0, s, -s * sq[1] + 0.5 * s - 0.5]])
        crop = cv2.warpAffine(np.ascontiguousarray(rgb), m, (out, out),
                              flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        with quiet_native_stderr():
            res = mesh.process(crop)
        if not res.multi_face_landmarks:
            return None
        lms = res.multi_face_landmarks[0].landmark
        pts = np.array([[p.x, p.y, p.z] for p in lms], dtype=np.float64) * out
        pts[:, :2] = pts[:, :2] / s + sq[:2]
        pts[:, 2] = pts[:, 2] / s
        centre = pts[:, :2].mean(0)
        # The mesh must describe this detection, not a neighbour that entered the crop.
        if not (box[0] <= centre[0] <= box[2] and box[1] <= centre[1] <= box[3]):
            return None
        return pts
