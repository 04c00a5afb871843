"""Silence native log spam (MediaPipe's glog/TFLite lines) around a call."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null while native code runs.

    MediaPipe writes INFO/WARNING lines from C++ threads straight to fd 2, ignoring
    GLOG_minloglevel once loaded; Python exceptions still propagate normally.
    Set FACERECON_VERBOSE=1 to keep them.
    """
    if os.environ.get("FACERECON_VERBOSE"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
