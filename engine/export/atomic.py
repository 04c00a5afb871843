"""Atomic file writes: a reader never sees a half-written export."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def _chmod_default(path: str) -> None:
    """mkstemp creates 0600 files; give the result the usual umask-based mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write(path: str | Path, data: str | bytes | Callable[[BinaryIO], None], *, fsync: bool = False) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place; the
    temporary file is removed on any failure, so a reader sees the old file or the new one.

    ``data``: text (written with '\\n' line ends), bytes, or a function that writes into the
    open binary file (e.g. ``lambda fh: torch.save(obj, fh)``). ``fsync`` flushes the file
    and its folder to disk (checkpoints: a crash right after must not lose them).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if isinstance(data, str):
            with os.fdopen(fd, "w", newline="\n") as fh:
                fh.write(data)
                _flush(fh, fsync)
        else:
            with os.fdopen(fd, "wb") as fh:
                if callable(data):
                    data(fh)
                else:
                    fh.write(data)
                _flush(fh, fsync)
        _chmod_default(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if fsync:
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:  # some file systems do not allow fsync on directories
            pass
    return path


def _flush(fh, fsync: bool) -> None:
    if fsync:
        fh.flush()
        os.fsync(fh.fileno())
