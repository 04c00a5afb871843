"""Head models behind one interface (see docs/conventions.md and docs/head_models.md).

``load_head_model("open" | "ict" | "flame", path=None, device=None) -> HeadModel``.
"""

from __future__ import annotations

import torch

from engine.errors import ModelFileError
from engine.head.model import HeadModel, HeadOutput

MODEL_NAMES = ("open", "ict", "flame")

__all__ = ["HeadModel", "HeadOutput", "load_head_model", "MODEL_NAMES"]


def load_head_model(name: str = "open", path: str | None = None,
                    device: str | torch.device | None = None) -> HeadModel:
    """Load a head model by name; ``path`` overrides the model's default file location.

    open: built npz (made on first use); ict: a ``FaceXModel`` folder or the cached npz
    (default ``../shared/ict-facekit``); flame: a FLAME ``generic_model.pkl`` (required).
    """
    if name == "open":
        from engine.head.open_model import load_open
        model = load_open(path)
    elif name == "ict":
        from engine.head.ict import load_ict
        model = load_ict(path)
    elif name == "flame":
        from engine.head.flame import load_flame
        model = load_flame(path)
    else:
        raise ModelFileError(f"unknown head model {name!r}; choose one of {', '.join(MODEL_NAMES)}.")
    return model.to(device) if device is not None else model
