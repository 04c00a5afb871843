"""``python -m engine serve``: the engine kept running for a client that reconstructs again
and again (the Blender add-on), so that Python, PyTorch, the head model, the method and the
face detector are loaded once instead of once per photo (~1.6 s of a 2.4 s reconstruction
on a 2-core CPU: ``python benchmarks/batch_benchmark.py``).

Protocol, one JSON object per line (UTF-8):

* the server starts with ``{"ready": true, "pid": N}`` on stdout;
* the client writes a request on stdin: ``{"id": 7, "argv": ["reconstruct", "PHOTO", "--out",
  "DIR", ...]}`` — ``argv`` is what follows ``python -m engine`` on a command line (the
  ``reconstruct`` command: one photo or a batch, docs/conventions.md), or ``["detect", ...]``
  with the arguments of ``python -m engine.detect`` (what that prints comes back as the end
  line's ``"output"``: the Blender panel's *Find Faces*);
* the server runs it as that command runs, with ``--progress jsonl``: its progress lines on
  stdout (the last one ``{"stage": "done", "out": ...}``), its messages on stderr (a user
  error as one ``error: ...`` line), then ends it with ``{"end": 7, "status": S, "error":
  E}``: ``S`` is the command's exit status (0 done, 1 a batch with failed photos, 2 a user
  error), ``E`` the error's sentence or null. One request at a time, in order.

The two most recently used (model, method, options) combinations stay loaded. The server
exits at the end of its input, after ``--idle-exit`` seconds without a request (default
600, 0 = never; the memory goes back to the system), and on SIGTERM / Ctrl-C — then the
output folder being written is removed, as the command does (exit status 143 / 130).
"""

from __future__ import annotations

import contextlib
import io
import json
import queue
import sys
import threading
import traceback
from typing import Any, Callable, TextIO

from engine.errors import UserError

COMMANDS = ("reconstruct", "detect")


def _say(out: TextIO, record: dict[str, Any]) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def _lines(stream: TextIO) -> "queue.Queue[str | None]":
    """The stream's lines through a queue (None at its end), read by a daemon thread, so that
    the server can wait for a request with a timeout."""
    q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, name="requests", daemon=True).start()
    return q


def _detect(argv: list[str]) -> tuple[int, str | None, str]:
    """``python -m engine.detect ARGV`` in this process: (exit status, its error sentence or
    None, what it printed on stdout)."""
    from engine.detect.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 2
    print(err.getvalue(), file=sys.stderr, end="", flush=True)
    errors = [ln[len("error:"):].strip() for ln in err.getvalue().splitlines() if ln.startswith("error:")]
    return int(status or 0), errors[-1] if errors else None, out.getvalue()


def handle(request: str, parse: Callable[[list[str]], Any], sessions: Any) -> tuple[Any, int, str | None, str | None]:
    """Run one request line: (its id, exit status, error sentence or None, the printed output of
    a ``detect`` or None). Never raises but for KeyboardInterrupt / SIGTERM."""
    rid = None
    try:
        try:
            data = json.loads(request)
        except ValueError:
            raise UserError("a request must be one JSON object per line") from None
        if not isinstance(data, dict):
            raise UserError("a request must be a JSON object with 'id' and 'argv'")
        rid, argv = data.get("id"), data.get("argv")
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) or not argv:
            raise UserError("'argv' must be a non-empty list of strings")
        if argv[0] not in COMMANDS:
            raise UserError(f"the server runs {', '.join(COMMANDS)}, not {argv[0]!r}")
        if argv[0] == "detect":
            return (rid, *_detect(argv[1:]))
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
                args = parse([*argv, "--progress", "jsonl"])
        except SystemExit as exc:  # --help (printed to stderr), or argparse's usage and "prog: error: why"
            if exc.code in (0, None):
                print(said.getvalue(), file=sys.stderr, end="", flush=True)
                return rid, 0, None, None
            why = said.getvalue().strip().splitlines()
            raise UserError(why[-1].split("error: ", 1)[-1] if why else "invalid arguments") from None
        args.sessions = sessions
        return rid, int(args.func(args) or 0), None, None
    except UserError as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr, flush=True)
        return rid, 2, message, None
    except Exception as exc:  # a bug on one request: say so, keep serving
        traceback.print_exc(file=sys.stderr)
        message = f"internal error: {type(exc).__name__}: {exc}"
        print(f"error: {message}", file=sys.stderr, flush=True)
        return rid, 1, message, None


def serve(parse: Callable[[list[str]], Any], stdin: TextIO | None = None, stdout: TextIO | None = None,
          idle_exit: float = 600.0, cache_size: int = 2) -> int:
    """Serve requests until the input ends or ``idle_exit`` seconds pass without one (module doc);
    ``parse`` turns ``argv`` into the command's namespace (``engine.__main__``'s parser)."""
    import os

    from engine.reconstruct import SessionCache

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    sessions = SessionCache(cache_size)
    requests = _lines(stdin)
    _say(stdout, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            line = requests.get(timeout=idle_exit if idle_exit > 0 else None)
        except queue.Empty:
            print(f"engine serve: no request for {idle_exit:g} s, exiting", file=sys.stderr, flush=True)
            return 0
        if line is None:
            return 0
        if not line.strip():
            continue
        rid, status, error, output = handle(line, parse, sessions)
        _say(stdout, {"end": rid, "status": status, "error": error, **({} if output is None else {"output": output})})
