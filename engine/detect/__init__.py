"""Face detection and landmarks behind one result type.

``detect_faces(photo, backend="default") -> list[FaceDetection]`` (largest first,
original-image pixels, iBUG-68 landmarks mapped where the backend's own set differs);
``list_backends()`` says which backends run here and why not. CLI:
``python -m engine.detect PHOTO [--backend NAME] [--out overlay.png] [--json]``.
"""

from engine.detect.api import (
    DEFAULT_BACKEND,
    BackendUnavailableError,
    detect_face,
    detect_faces,
    get_backend,
    list_backends,
    resolve_backend_name,
)
from engine.detect.ibug68 import mediapipe_to_ibug68
from engine.detect.result import IBUG68, FaceDetection, inter_ocular

__all__ = [
    "DEFAULT_BACKEND", "BackendUnavailableError", "detect_face", "detect_faces", "get_backend",
    "list_backends", "resolve_backend_name", "mediapipe_to_ibug68", "IBUG68", "FaceDetection",
    "inter_ocular",
]
