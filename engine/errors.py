"""User-facing errors: every one the engine raises is defined here.

Anything caused by the user's input (a bad file, no face in the photo, a missing model
file, a bad training config) raises a subclass of :class:`UserError` with one sentence
that names the file and the reason. Command-line entry points catch it and print a single
line instead of a traceback; genuine bugs still surface as tracebacks. (The method
registry, which must import nothing from the engine, raises its own ``MethodError``;
:func:`engine.methods.get_method` turns it into a :class:`UserError`.)
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


class BackendUnavailableError(ModelFileError):
    """A named face-detector backend cannot run here (package or weights missing)."""


class OutputFolderError(UserError):
    """The output folder cannot be created or would overwrite something else."""


class ConfigError(UserError):
    """A training configuration file or override is invalid."""


class TrainingDiverged(UserError, RuntimeError):
    """Too many consecutive non-finite training steps (shown to CLI users as one ``error:`` line)."""


@contextmanager
def cli_errors(exit_code: int = 2) -> Iterator[None]:
    """Turn a :class:`UserError` into ``error: message`` on stderr and a non-zero exit."""
    try:
        yield
    except UserError as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(exit_code) from None
