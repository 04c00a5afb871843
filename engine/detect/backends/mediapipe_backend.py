"""MediaPipe (0.10.21 legacy solutions): full-range and short-range face detection, then
face mesh on each 1.8× crop. Weights ship inside the wheel, so this works offline.

The full-range model (``model_selection=1``) is trained for faces up to 5 m away and misses
faces that fill most of the frame or are cut by its border (tight crops, selfies: 9 of 50
synthetic renders); the short-range model (``model_selection=0``) finds those. A
short-range-only hit counts only if the face mesh confirms it, as for tiles.

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
TILE = 512             # tile side for the small-face pass on large images


class MediaPipeBackend(Backend):
    name = "mediapipe"
    convention = "mediapipe-478"

    def __init__(self, min_score: float = 0.5, map_to_ibug: bool = True) -> None:
        self.min_score = min_score
        self.map_to_ibug = map_to_ibug
        self._detector = None
        self._near_detector = None
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
                self._near_detector = face_detection.FaceDetection(
                    model_selection=0, min_detection_confidence=self.min_score)
                self._mesh = face_mesh.FaceMesh(
                    static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                    min_detection_confidence=0.3)
                # A graph opens its calculators on MediaPipe's worker threads *after* the
                # constructor returns, and they log then (absl's "WARNING: All log messages
                # before absl::InitializeLog()", "W0000 ... inference_feedback_manager",
                # XNNPACK's "INFO: Created ... delegate"): in about one run of five such a
                # line landed outside the silenced block, e.g. after our one-line error.
                # A frame through each graph returns only once every calculator is open,
                # so all of that is written while fd 2 is still redirected.
                blank = np.zeros((64, 64, 3), np.uint8)
                for graph in (self._detector, self._near_detector, self._mesh):
                    graph.process(blank)
        return self._detector, self._mesh

    def close(self) -> None:
        with quiet_native_stderr():
            for m in (self._detector, self._near_detector, self._mesh):
                if m is not None:
                    m.close()
        self._detector = self._near_detector = self._mesh = None

    def _boxes(self, rgb: np.ndarray, x0: int = 0, y0: int = 0,
               near: bool = False) -> list[tuple[np.ndarray, float]]:
        self._models()
        detector = self._near_detector if near else self._detector
        h, w = rgb.shape[:2]
        with quiet_native_stderr():
            result = detector.process(np.ascontiguousarray(rgb))
        out = []
        for det in result.detections or []:
            rb = det.location_data.relative_bounding_box
            box = np.array([rb.xmin * w, rb.ymin * h, (rb.xmin + rb.width) * w,
                            (rb.ymin + rb.height) * h], dtype=np.float64)
            box = np.clip(box, [0, 0, 0, 0], [w, h, w, h]) + [x0, y0, x0, y0]
            if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                out.append((box, float(det.score[0])))
        return out

    def face_rolls(self, rgb: np.ndarray) -> list[tuple[float, float, np.ndarray]]:
        """Roll, score and centre of each face from the short-range detector's keypoints
        (eyes, nose tip, mouth): one model for every call, so scores compare between turned
        copies of a crop. Seen upside down it often still reports an upright face, but with a
        clearly lower score than for the same face turned upright (see engine.detect.orientation)."""
        self._models()
        h, w = rgb.shape[:2]
        with quiet_native_stderr():
            result = self._near_detector.process(np.ascontiguousarray(rgb))
        out = []
        for det in result.detections or []:
            kp = np.array([[p.x * w, p.y * h] for p in det.location_data.relative_keypoints[:4]], np.float64)
            if len(kp) < 4:
                continue
            down = kp[3] - kp[:2].mean(0)  # mouth centre - between the eyes
            out.append((float(np.degrees(np.arctan2(down[0], down[1]))), float(det.score[0]), kp.mean(0)))
        return out

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        h, w = rgb.shape[:2]
        found = [(b, sc, False) for b, sc in self._boxes(rgb)]
        if max(h, w) > TILE * 1.5:
            # The detector sees the whole image at 192 px, so faces under ~1/12 of the
            # image side vanish; overlapping tiles find them (group photos).
            stride = int(TILE * 0.75)
            for ty in range(0, max(h - TILE, 0) + stride, stride):
                for tx in range(0, max(w - TILE, 0) + stride, stride):
                    tile = rgb[ty:ty + TILE, tx:tx + TILE]
                    if min(tile.shape[:2]) >= TILE // 2:
                        found += [(b, sc, True) for b, sc in self._boxes(tile, tx, ty)]
        kept = _nms(found, 0.3)
        # Short-range pass for faces that fill the frame: adds only faces that the
        # full-range passes did not find (their boxes win), each mesh-confirmed below.
        for box, score, _ in _nms([(b, sc, True) for b, sc in self._boxes(rgb, near=True)], 0.3):
            if not any(_same_face(box, k, 0.3) for k, _, _ in kept):
                kept.append((box, score, True))
        faces: list[FaceDetection] = []
        for box, score, confirm in kept:
            native = self.mesh_in_box(rgb, box)
            if confirm and native is None:
                # Zoomed-in tiles and the short-range model raise false positives on
                # textures (e.g. a space suit); such a detection counts only if the face
                # mesh confirms it.
                continue
            lm68 = None
            if native is not None and self.map_to_ibug:
                from engine.detect.ibug68 import mediapipe_to_ibug68

                lm68 = mediapipe_to_ibug68(native[:, :2])
            faces.append(FaceDetection(box=box, score=score, landmarks68=lm68,
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


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _nms(found: list[tuple[np.ndarray, float, bool]], thresh: float) -> list[tuple[np.ndarray, float, bool]]:
    """Keep the best-scoring box of each overlapping group (also a box mostly inside a
    kept one, as when a tile cuts a face in half)."""
    kept: list[tuple[np.ndarray, float, bool]] = []
    for box, score, from_tile in sorted(found, key=lambda f: -f[1]):
        if not any(_same_face(box, k, thresh) for k, _, _ in kept):
            kept.append((box, score, from_tile))
    return kept


def _same_face(box: np.ndarray, k: np.ndarray, thresh: float) -> bool:
    """IoU over ``thresh``, or ``box`` mostly (60 %) inside ``k``."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    ix = max(0.0, min(box[2], k[2]) - max(box[0], k[0]))
    iy = max(0.0, min(box[3], k[3]) - max(box[1], k[1]))
    return _iou(box, k) > thresh or ix * iy > 0.6 * area
