"""Follow one person's face through a clip.

The first frame with a face picks the person (``face`` = index among that frame's faces,
0 = largest, as ``reconstruct --face``; several faces without ``face`` is a user error).
After that, each frame is tracked from the previous one:

* with the MediaPipe backend, the face mesh runs on a crop around the previous frame's
  landmarks (``MediaPipeBackend.mesh_in_box``: ~15 ms instead of a full detection), and
  the result is kept when its box overlaps the previous box (IoU ≥ ``min_iou``);
* otherwise (mesh lost, the face jumped, another backend) the frame is detected anew and
  the face whose box overlaps the last known box most (IoU ≥ ``min_iou``) is taken, so
  other people in the frame are never picked up; when none overlaps, the person is taken
  back only if the clip started with a single face and exactly one face is in view
  (re-entering the frame);
* frames without the person are reported (``FaceTrack.missing``), not errors; a clip with
  no face at all is a :class:`engine.errors.NoFaceError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from engine.detect import FaceDetection, detect_faces, get_backend
from engine.detect.backends.mediapipe_backend import _iou as box_iou  # the one IoU of boxes
from engine.errors import NoFaceError, UserError

__all__ = ["FaceTrack", "TrackedFace", "box_iou", "track_faces"]


@dataclass
class TrackedFace:
    """The followed person in one frame (landmarks in the frame's pixels)."""

    landmarks68: np.ndarray  # (68, 2)
    native: np.ndarray | None  # (N, 2+) detector points
    convention: str | None
    box: np.ndarray  # (4,) x0, y0, x1, y1
    redetected: bool  # found by a full detection (first frame, re-acquired) rather than tracked

    def detection(self) -> FaceDetection:
        return FaceDetection(box=self.box, score=1.0, landmarks68=self.landmarks68, landmarks_native=self.native,
                             convention=self.convention or "ibug-68", backend="track")


@dataclass
class FaceTrack:
    """Per sampled frame: the followed face or None; plus what the first frame showed."""

    faces: list[TrackedFace | None] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)  # source frame index of each entry
    times: list[float] = field(default_factory=list)
    first_frame_faces: int = 0
    chosen: int = 0
    backend: str = ""
    interrupted: bool = False  # Ctrl-C: the frames so far (the caller decides what to keep)

    @property
    def tracked(self) -> np.ndarray:
        return np.array([f is not None for f in self.faces], dtype=bool)

    @property
    def missing(self) -> list[int]:
        """Source frame indices with no face for the person."""
        return [i for i, f in zip(self.indices, self.faces) if f is None]


def _landmark_box(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, np.float64)[:, :2]
    return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])


def _from_detection(det: FaceDetection, redetected: bool) -> TrackedFace:
    pts = det.landmarks_native if det.landmarks_native is not None else det.landmarks68
    return TrackedFace(np.asarray(det.landmarks68, np.float64)[:, :2],
                       None if det.landmarks_native is None else np.asarray(det.landmarks_native, np.float32),
                       det.convention, _landmark_box(pts), redetected)


class _Follower:
    """Tracking state between frames (see the module docstring)."""

    def __init__(self, backend: Any, face: int | None, name: str, min_iou: float) -> None:
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        self.face, self.name, self.min_iou = face, name, min_iou
        self.last: TrackedFace | None = None
        self.first_faces = 0
        self.chosen = 0

    def _with_landmarks(self, rgb: np.ndarray) -> list[FaceDetection]:
        return [f for f in detect_faces(rgb, self.backend) if f.landmarks68 is not None]

    def first(self, rgb: np.ndarray, index: int, time: float) -> TrackedFace | None:
        from engine.reconstruct import select_face

        faces = self._with_landmarks(rgb)
        if not faces:
            return None
        if self.face is None and len(faces) > 1:
            raise UserError(f"{self.name}: the first frame with a face (frame {index}, {time:.2f} s) shows "
                            f"{len(faces)} faces; choose the person with --face N (0 = largest, "
                            f"{len(faces) - 1} = smallest)")
        self.chosen, det = select_face(faces, self.face, f"{self.name} (frame {index}, {time:.2f} s)")
        self.first_faces = len(faces)
        return _from_detection(det, True)

    def step(self, rgb: np.ndarray) -> TrackedFace | None:
        last = self.last
        assert last is not None
        mesh = getattr(self.backend, "mesh_in_box", None)
        if mesh is not None and last.native is not None:
            native = mesh(rgb, last.box)
            if native is not None:
                box = _landmark_box(native)
                if box_iou(box, last.box) >= self.min_iou:
                    from engine.detect.ibug68 import mediapipe_to_ibug68

                    return TrackedFace(mediapipe_to_ibug68(native[:, :2]), native.astype(np.float32),
                                       last.convention, box, False)
        faces = self._with_landmarks(rgb)
        if not faces:
            return None
        boxes = [_landmark_box(f.landmarks_native if f.landmarks_native is not None else f.landmarks68)
                 for f in faces]
        ious = [box_iou(b, last.box) for b in boxes]
        best = int(np.argmax(ious))
        if ious[best] >= self.min_iou:
            return _from_detection(faces[best], True)
        if self.first_faces == 1 and len(faces) == 1:
            return _from_detection(faces[0], True)
        return None


def track_faces(frames: Iterable[Any], backend: str | Any = "default", face: int | None = None,
                name: str = "the clip", min_iou: float = 0.3,
                on_frame: Callable[[int, TrackedFace | None], None] | None = None) -> FaceTrack:
    """Follow one person through ``frames`` (objects with ``index``, ``time``, ``rgb``, e.g.
    :class:`engine.video.source.Frame`); ``on_frame(k, face)`` is called after each one
    (a frame counts once it returns).

    A ``KeyboardInterrupt`` ends the track at the frames done (``FaceTrack.interrupted``);
    before the person was found it propagates."""
    follow = _Follower(backend, face, name, min_iou)
    track = FaceTrack(backend=getattr(follow.backend, "name", str(backend)))
    try:
        for k, frame in enumerate(frames):
            found = follow.first(frame.rgb, frame.index, frame.time) if follow.last is None else follow.step(frame.rgb)
            if found is not None:
                follow.last = found
            if on_frame is not None:
                on_frame(k, found)
            track.faces.append(found)
            track.indices.append(int(frame.index))
            track.times.append(float(frame.time))
    except KeyboardInterrupt:
        if follow.last is None:
            raise
        track.interrupted = True
    if follow.last is None:
        raise NoFaceError(f"no face found in any frame of {name}")
    track.first_frame_faces, track.chosen = follow.first_faces, follow.chosen
    return track
