"""Detection backends, by name."""

from engine.detect.backends.base import Backend
from engine.detect.backends.dlib_backend import DlibBackend
from engine.detect.backends.face_alignment_backend import FaceAlignmentBackend
from engine.detect.backends.mediapipe_backend import MediaPipeBackend

BACKENDS: dict[str, type[Backend]] = {
    MediaPipeBackend.name: MediaPipeBackend,
    DlibBackend.name: DlibBackend,
    FaceAlignmentBackend.name: FaceAlignmentBackend,
}

__all__ = ["BACKENDS", "Backend", "DlibBackend", "FaceAlignmentBackend", "MediaPipeBackend"]
