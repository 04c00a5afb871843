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


class Interrupted(KeyboardInterrupt):
    """SIGTERM turned into an exception (see :func:`cli_errors`), so that ``with`` blocks and
    ``finally`` clauses clean up as they do for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextmanager
def cli_errors(exit_code: int = 2) -> Iterator[None]:
    """Turn a :class:`UserError` into ``error: message`` on stderr and a non-zero exit.

    Ctrl-C (SIGINT) and SIGTERM end the command with one line too (``error: interrupted``
    / ``error: terminated``; exit status 130 / 143, as a shell reports signals) instead of
    a traceback; SIGTERM is raised as :class:`Interrupted` while the block runs (when this
    is the main thread and nobody else handles SIGTERM), so temporary files are removed.
    """
    import signal
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                previous = signal.signal(signal.SIGTERM, _raise_interrupted)
        except (ValueError, OSError, AttributeError):
            previous = None
    try:
        yield
    except UserError as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(exit_code) from None
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", int(signal.SIGINT))
        word = "terminated" if signum == signal.SIGTERM else "interrupted"
        print(f"error: {word}", file=sys.stderr)
        raise SystemExit(128 + int(signum)) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
