"""Reproducibility and crash safety: seeding, RNG state capture, atomic checkpoints.

A checkpoint holds everything needed to continue a run bit-for-bit: model, optimiser,
grad scaler, LR scheduler, the step/epoch/batch position of the data stream and every
random generator (python, numpy, torch CPU and CUDA). It is written to a temporary file
in the same folder, fsync'ed and renamed over the target, so a kill at any moment leaves
either the old or the new file, never a truncated one.

Checkpoints are read with ``torch.load(weights_only=True)``: a file can only hold tensors
and plain data (dicts, lists, tuples, numbers, strings), never objects whose unpickling
runs code. The generator states are therefore stored as tensors and numbers (python's
Mersenne-Twister words and numpy's key as int64 tensors), not as numpy arrays.
"""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any, Sequence

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


def _python_state_to_plain(state: tuple) -> dict[str, Any]:
    version, words, gauss = state
    return {"version": int(version), "words": torch.tensor(words, dtype=torch.int64),
            "gauss": gauss}


def _python_state_from_plain(state: Any) -> tuple:
    if isinstance(state, tuple):  # checkpoints written before the plain format
        return state
    words = tuple(int(x) for x in state["words"].cpu().tolist())
    return (int(state["version"]), words, state["gauss"])


def _numpy_state_to_plain(state: tuple) -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = state
    return {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _numpy_state_from_plain(state: Any) -> tuple:
    if isinstance(state, tuple):  # checkpoints written before the plain format
        return state
    keys = state["keys"].cpu().numpy().astype(np.uint32)
    return (state["kind"], keys, int(state["pos"]), int(state["has_gauss"]), float(state["gauss"]))


def rng_state() -> dict[str, Any]:
    """All global random generator states, as tensors and plain numbers (loadable with
    ``torch.load(weights_only=True)``)."""
    state: dict[str, Any] = {
        "python": _python_state_to_plain(random.getstate()),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states captured by :func:`rng_state` (or by older checkpoints,
    which stored python's and numpy's own tuples)."""
    random.setstate(_python_state_from_plain(state["python"]))
    np.random.set_state(_numpy_state_from_plain(state["numpy"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically and durably (:func:`engine.export.atomic.atomic_write`
    with fsync of the file and its folder)."""
    from engine.export.atomic import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda fh: torch.save(obj, fh), fsync=True)


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


TRAIN_FORMAT = "engine.train/1"
EXPORT_FORMAT = "engine.method/1"
FORMAT_KEYS = {
    TRAIN_FORMAT: ("method", "config", "model", "optimizer", "scheduler", "scaler", "step",
                   "epoch", "batch_in_epoch", "bad_streak", "skipped", "world_size", "rng"),
    EXPORT_FORMAT: ("method", "model"),
}
_KIND_FORMAT = {"train": TRAIN_FORMAT, "export": EXPORT_FORMAT}


def _legacy_numpy_globals() -> list:
    """What a training checkpoint written before the plain RNG format needs to load: numpy's
    MT19937 key array (ndarray reconstruction, no other code)."""
    try:
        from numpy.core.multiarray import _reconstruct
    except ImportError:  # numpy 2
        from numpy._core.multiarray import _reconstruct  # type: ignore[no-redef]
    found = [np.ndarray, np.dtype, _reconstruct]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None and hasattr(dtypes, "UInt32DType"):
        found.append(dtypes.UInt32DType)
    return found


def _short(exc: BaseException, limit: int = 90) -> str:
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_refusal(exc: BaseException) -> bool:
    """torch's weights-only unpickler refused an object (as opposed to a corrupt file)."""
    return "Weights only load failed" in str(exc)


def _refused(p: Path, exc: BaseException) -> ModelFileError:
    m = re.search(r"GLOBAL (\S+)", str(exc)) or re.search(r"got <class '([^']+)'>", str(exc))
    what = f" ({m.group(1)})" if m else ""
    return ModelFileError(f"{p} is not a checkpoint of this engine: it holds disallowed "
                          f"objects{what} and was not loaded")


def load_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu",
                         kinds: Sequence[str] = ("train", "export")) -> dict:
    """Read a checkpoint of this engine safely (``weights_only=True``) and check its format.

    ``kinds`` lists what the caller accepts: ``train`` (``engine.train/1``, a full training
    checkpoint) and/or ``export`` (``engine.method/1``, an inference file). Anything else
    (an unreadable file, a pickle holding objects other than tensors and plain data, a
    dictionary without our format tag or its keys) is a :class:`ModelFileError`.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"checkpoint {p} does not exist")
    try:
        try:
            data = torch.load(p, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            if not _is_refusal(exc):
                raise
            # Training checkpoints written before the RNG states were stored as tensors hold
            # one numpy array (numpy's generator key): allow numpy's array reconstruction,
            # nothing else, and only for a training checkpoint.
            try:
                with torch.serialization.safe_globals(_legacy_numpy_globals()):
                    data = torch.load(p, map_location=map_location, weights_only=True)
            except pickle.UnpicklingError as exc2:
                if _is_refusal(exc2):
                    raise _refused(p, exc) from None
                raise
            if not isinstance(data, dict) or data.get("format") != TRAIN_FORMAT:
                raise _refused(p, exc) from None
    except ModelFileError:
        raise
    except Exception as exc:  # corrupt zip, not a pickle, truncated file
        raise ModelFileError(f"checkpoint {p} could not be read: not a torch checkpoint, or a "
                             f"truncated one ({type(exc).__name__}: {_short(exc)})") from None
    return check_checkpoint(data, p, kinds)


def check_checkpoint(data: Any, path: str | Path, kinds: Sequence[str] = ("train", "export")) -> dict:
    """``data`` if it is a checkpoint dictionary of an accepted kind, else a ModelFileError."""
    p = Path(path)
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt not in FORMAT_KEYS:
        raise ModelFileError(f"{p} is not a checkpoint of this engine (no 'format' of "
                             f"{TRAIN_FORMAT} or {EXPORT_FORMAT})")
    missing = [k for k in FORMAT_KEYS[fmt] if k not in data]
    model = data.get("model")
    if missing or not isinstance(model, dict) or not all(
            isinstance(k, str) and torch.is_tensor(v) for k, v in model.items()):
        what = f"lacks {', '.join(missing)}" if missing else "has no weights dictionary"
        raise ModelFileError(f"{p} is not a complete {fmt} checkpoint (it {what})")
    accepted = [_KIND_FORMAT[k] for k in kinds]
    if fmt not in accepted:
        if fmt == EXPORT_FORMAT:
            raise ModelFileError(f"{p} is an exported model ({fmt}), not a training checkpoint; "
                                 f"to start a new run from its weights use init_from={p}")
        raise ModelFileError(f"{p} is a {fmt} checkpoint; expected {' or '.join(accepted)}")
    return data
