"""Atomic file writes: a reader never sees a half-written export."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _chmod_default(path: str) -> None:
    """mkstemp creates 0600 files; give the result the usual umask-based mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text with '\\n' line ends, or bytes) to a temporary file beside
    ``path`` and rename it into place; the temporary file is removed on any failure."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if isinstance(data, str):
            with os.fdopen(fd, "w", newline="\n") as fh:
                fh.write(data)
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        _chmod_default(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
