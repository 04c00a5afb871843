"""User-facing errors.

Anything caused by the user's input (a bad file, no face in the photo, a missing model
file) raises a subclass of :class:`UserError` with one sentence that names the file and
the reason. Command-line entry points catch it and print a single line instead of a
traceback; genuine bugs still surface as tracebacks.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class UserError(Exception):
    """An error the user can fix; its message is shown as-is on one line."""


class ImageError(UserError):
    """A photo could not be read or used."""


class NoFaceError(UserError):
    """No face was found in a photo."""


class ModelFileError(UserError):
    """A head-model or checkpoint file is missing, corrupt or of the wrong kind."""


@contextmanager
def cli_errors(exit_code: int = 2) -> Iterator[None]:
    """Turn a :class:`UserError` into ``error: message`` on stderr and a non-zero exit."""
    try:
        yield
    except UserError as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(exit_code) from None
