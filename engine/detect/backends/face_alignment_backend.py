"""face-alignment (Bulat & Tzimiropoulos' FAN, S3FD detector): iBUG-68 natively.

Its weights are not in any registry package: face-alignment downloads them on first use
into torch's hub cache. We use them when they are there (or when a download works) and
otherwise say exactly which files to put where.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from pathlib import Path

import numpy as np

from engine.detect.backends.base import Backend
from engine.detect.result import FaceDetection
from engine.errors import ModelFileError

#: file name -> URL face-alignment 1.5.0 fetches it from
WEIGHT_FILES = {
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    "2DFAN4-11f355bf06.pth.tar":
        "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
}
ALLOW_DOWNLOAD_ENV = "FACERECON_ALLOW_DOWNLOAD"


def checkpoint_dir() -> Path:
    """Where torch (and so face-alignment) caches weights: $TORCH_HOME/hub/checkpoints,
    by default ~/.cache/torch/hub/checkpoints (honours $XDG_CACHE_HOME like torch does)."""
    torch_home = os.environ.get("TORCH_HOME")
    if not torch_home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        torch_home = os.path.join(xdg, "torch")
    return Path(torch_home) / "hub" / "checkpoints"


def missing_weights() -> list[str]:
    folder = checkpoint_dir()
    return [name for name in WEIGHT_FILES if not (folder / name).is_file()]


def missing_weights_message(missing: list[str]) -> str:
    folder = checkpoint_dir()
    urls = ", ".join(f"{n} from {WEIGHT_FILES[n]}" for n in missing)
    return (f"face-alignment weights {', '.join(missing)} are not in {folder}; download "
            f"{urls} and place them in that folder (or set TORCH_HOME to the folder above "
            f"hub/checkpoints), or allow downloading with {ALLOW_DOWNLOAD_ENV}=1")


class FaceAlignmentBackend(Backend):
    name = "face_alignment"
    convention = "ibug-68"

    def __init__(self, device: str = "cpu", allow_download: bool | None = None) -> None:
        self.device = device
        if allow_download is None:
            allow_download = os.environ.get(ALLOW_DOWNLOAD_ENV, "") not in ("", "0")
        self.allow_download = allow_download
        self._fa = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("face_alignment") is None:
            return ("the 'face_alignment' backend needs the face-alignment package "
                    "(pip install face-alignment==1.5.0 numba; keep torch pinned)")
        missing = missing_weights()
        if missing and os.environ.get(ALLOW_DOWNLOAD_ENV, "") in ("", "0"):
            return missing_weights_message(missing)
        return None

    def _model(self):
        if self._fa is not None:
            return self._fa
        if importlib.util.find_spec("face_alignment") is None:
            raise ModelFileError(self.unavailable_reason() or "face-alignment is not installed")
        missing = missing_weights()
        if missing and not self.allow_download:
            raise ModelFileError(missing_weights_message(missing))
        import face_alignment

        folder = checkpoint_dir()
        kwargs: dict = {"device": self.device, "flip_input": False, "face_detector": "sfd"}
        s3fd = folder / "s3fd-619a316812.pth"
        if s3fd.is_file():
            kwargs["face_detector_kwargs"] = {"path_to_detector": str(s3fd)}
        params = inspect.signature(face_alignment.FaceAlignment.__init__).parameters
        if "compile" in params:
            kwargs["compile"] = False   # torch.compile needs a compiler toolchain; eager is fine
        landmarks_type = getattr(face_alignment.LandmarksType, "TWO_D", None) or \
            getattr(face_alignment.LandmarksType, "_2D")
        try:
            self._fa = face_alignment.FaceAlignment(landmarks_type, **kwargs)
        except OSError as exc:   # URLError is an OSError: offline, or the server is gone
            raise ModelFileError(missing_weights_message(missing_weights() or list(WEIGHT_FILES))
                                 + f" (download failed: {exc})") from None
        return self._fa

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        import torch

        fa = self._model()
        with torch.inference_mode():
            out = fa.get_landmarks_from_image(np.ascontiguousarray(rgb), return_bboxes=True,
                                              return_landmark_score=True)
        landmarks, _, boxes = out
        faces = []
        for lm, bb in zip(landmarks or [], boxes or []):
            pts = np.asarray(lm, dtype=np.float64)[:, :2] + 0.5  # pixel indices -> edges
            faces.append(FaceDetection(box=np.asarray(bb[:4], dtype=np.float64),
                                       score=float(bb[4]) if len(bb) > 4 else 1.0,
                                       landmarks68=pts, landmarks_native=pts,
                                       convention=self.convention, backend=self.name))
        return faces
