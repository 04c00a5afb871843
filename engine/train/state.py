"""Reproducibility and crash safety: seeding, RNG state capture, atomic checkpoints.

A checkpoint holds everything needed to continue a run bit-for-bit: model, optimiser,
grad scaler, LR scheduler, the step/epoch/batch position of the data stream and every
random generator (python, numpy, torch CPU and CUDA). It is written to a temporary file
in the same folder, fsync'ed and renamed over the target, so a kill at any moment leaves
either the old or the new file, never a truncated one.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import ModelFileError

CKPT_PATTERN = re.compile(r"^ckpt_(\d{8})\.pt$")


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python, numpy and torch (CPU + CUDA) with ``seed + rank``; returns that seed.

    Each DDP rank gets its own offset so augmentations and dropout differ across ranks
    while the run stays reproducible.
    """
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(s)
    return s


def rng_state() -> dict[str, Any]:
    """All global random generator states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states captured by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (tmp file + fsync + rename + dir fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some file systems do not allow fsync on directories
        pass
    return path


def checkpoint_path(ckpt_dir: str | Path, step: int) -> Path:
    return Path(ckpt_dir) / f"ckpt_{step:08d}.pt"


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Checkpoints in ``ckpt_dir`` sorted by step (oldest first)."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := CKPT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(ckpt_dir)
    return ckpts[-1] if ckpts else None


def prune_checkpoints(ckpt_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep <= 0 keeps everything)."""
    if keep <= 0:
        return
    for p in list_checkpoints(ckpt_dir)[:-keep]:
        p.unlink(missing_ok=True)


def load_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint dictionary, turning unreadable files into a :class:`ModelFileError`."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"checkpoint {p} does not exist")
    try:
        data = torch.load(p, map_location=map_location, weights_only=False)
    except Exception as exc:  # corrupt zip, wrong format, truncated file
        raise ModelFileError(f"checkpoint {p} could not be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or "model" not in data:
        raise ModelFileError(f"checkpoint {p} is not a training checkpoint of this engine")
    return data
