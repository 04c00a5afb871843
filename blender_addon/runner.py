"""Run ``python -m engine reconstruct`` (or ``animate``) without blocking Blender.

PyTorch is far too large to bundle in the extension, so the engine always runs in a
child process: Blender's own interpreter when it can import torch, otherwise the external
Python set in the add-on preferences (e.g. the project's ``.venv``). A child process keeps
the UI responsive, can be cancelled at any moment and cannot crash Blender. The engine copy
bundled in the extension is put first on the child's ``PYTHONPATH`` so add-on and engine
always agree on the output-folder contract (docs/conventions.md).

Nothing here imports ``bpy``: :class:`EngineJob` is driven by the modal operator's timer
(``poll``) and by scripts/tests directly (``wait``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ADDON_DIR = Path(__file__).resolve().parent

#: ``engine`` as the child should import it, plus a short description of where it is.
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"


def engine_root() -> Path | None:
    """Directory that holds the ``engine`` package: the extension's bundled copy
    (``<addon>/engine``) or, when running from the repository checkout, the repo root."""
    for root in (ADDON_DIR, ADDON_DIR.parent):
        if (root / "engine" / "__init__.py").is_file():
            return root
    return None


def load_method_registry(root: Path | None = None):
    """The engine's method registry (``engine/methods/registry.py``) loaded on its own: it
    needs neither PyTorch nor the engine package, so Blender's Python can read the method
    list the engine uses (``python -m engine methods``). None when no engine is found."""
    root = root if root is not None else engine_root()
    if root is None or not (root / "engine" / "methods" / "registry.py").is_file():
        return None
    name = "_facerecon_method_registry"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(root / "engine" / "methods" / "registry.py"):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, root / "engine" / "methods" / "registry.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def repo_venv_python() -> Path | None:
    """``.venv`` interpreter of the repository checkout the add-on runs from, if any."""
    root = ADDON_DIR.parent
    for rel in (".venv/bin/python", ".venv/Scripts/python.exe"):
        candidate = root / rel
        if candidate.is_file() and (root / "engine").is_dir():
            return candidate
    return None


def blender_has_torch() -> bool:
    """True when the interpreter we run in (Blender's Python) can import torch."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


@dataclass
class EngineChoice:
    """Which interpreter runs the engine, and why (shown in the UI)."""

    python: str | None
    reason: str
    extra_paths: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.python is not None


def choose_python(mode: str = "AUTO", external_python: str = "") -> EngineChoice:
    """Pick the engine interpreter.

    ``mode``: ``AUTO`` (Blender's Python if it has torch, else the external one, else a
    ``.venv`` next to the checkout), ``BLENDER`` or ``EXTERNAL``.
    """
    external_python = (external_python or "").strip()
    if mode in ("AUTO", "BLENDER") and blender_has_torch():
        spec = importlib.util.find_spec("torch")
        # torch may live in a folder Blender adds to sys.path at runtime (user modules,
        # extension wheels); the child only sees it when passed on PYTHONPATH.
        extra = []
        if spec is not None and spec.origin:
            extra.append(str(Path(spec.origin).resolve().parent.parent))
        return EngineChoice(sys.executable, "Blender's Python has PyTorch", extra)
    if mode == "BLENDER":
        return EngineChoice(None, "Blender's Python cannot import torch (install PyTorch into it, "
                                  "or switch the engine to an external Python in the add-on preferences)")
    if external_python:
        path = Path(os.path.expanduser(external_python))
        if path.is_file() and os.access(path, os.X_OK):
            return EngineChoice(str(path), f"external Python {path}")
        return EngineChoice(None, f"the external Python '{external_python}' set in the add-on "
                                  "preferences does not exist or is not executable")
    if mode == "AUTO":
        venv = repo_venv_python()
        if venv is not None:
            return EngineChoice(str(venv), f"the checkout's virtual environment {venv}")
    return EngineChoice(None, "no engine available: Blender's Python has no PyTorch and no external "
                              "Python is set (Preferences > Add-ons > Face Reconstruction > Python executable)")


def child_env(choice: EngineChoice) -> dict[str, str]:
    """Environment for the engine child: bundled engine first on PYTHONPATH."""
    env = dict(os.environ)
    paths = []
    root = engine_root()
    if root is not None:
        paths.append(str(root))
    paths.extend(choice.extra_paths)
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    # Blender sets PYTHONHOME/PYTHONNOUSERSITE for its own interpreter; a foreign
    # interpreter must not inherit them.
    if choice.python != sys.executable:
        env.pop("PYTHONHOME", None)
        env.pop("PYTHONNOUSERSITE", None)
    return env


@dataclass
class ReconstructRequest:
    """Arguments of ``python -m engine reconstruct`` (see docs/conventions.md)."""

    photo: str
    model: str = "open"
    model_path: str = ""
    method: str = "fit"
    device: str = "cpu"
    face: int = 0  # 0: the largest face (always passed: the engine refuses to guess between several)

    def arguments(self, out_dir: str) -> list[str]:
        args = ["-m", "engine", "reconstruct", self.photo, "--out", out_dir,
                "--model", self.model, "--method", self.method, "--device", self.device,
                "--progress", "jsonl"]
        if self.model_path:
            args += ["--model-path", self.model_path]
        args += ["--face", str(self.face)]
        return args

    def input_problem(self) -> str | None:
        """Why the job cannot start (one sentence), or None."""
        return None if Path(self.photo).is_file() else f"The photo '{self.photo}' does not exist."


@dataclass
class AnimateRequest:
    """Arguments of ``python -m engine animate`` (docs/video.md)."""

    video: str  # a video file or a folder of images
    model: str = "open"
    model_path: str = ""
    method: str = "fit"
    device: str = "cpu"
    face: int = 0  # among the faces of the first frame with a face; 0 = the largest
    fps: float = 0.0  # 0: the video's own rate (30 for image folders)
    start: float = 0.0
    end: float = 0.0  # 0: to the end

    def arguments(self, out_dir: str) -> list[str]:
        args = ["-m", "engine", "animate", self.video, "--out", out_dir, "--model", self.model,
                "--method", self.method, "--device", self.device, "--progress", "jsonl", "--face", str(self.face)]
        if self.model_path:
            args += ["--model-path", self.model_path]
        if self.fps > 0:
            args += ["--fps", f"{self.fps:g}"]
        if self.start > 0:
            args += ["--start", f"{self.start:g}"]
        if self.end > 0:
            args += ["--end", f"{self.end:g}"]
        return args

    def input_problem(self) -> str | None:
        return None if Path(self.video).exists() else f"The video '{self.video}' does not exist."


def _pump(stream, tag: str, q: "queue.Queue[tuple[str, str | None]]") -> None:
    """Reader thread: forward lines of a child's pipe to the queue (None = closed)."""
    try:
        for line in iter(stream.readline, ""):
            q.put((tag, line.rstrip("\n")))
    finally:
        q.put((tag, None))


class EngineJob:
    """One reconstruction in a child process: ``start`` → ``poll`` … → ``state``.

    ``poll`` never blocks; reader threads turn the child's stdout (JSON progress lines)
    and stderr into a queue. On success ``out_dir`` holds the output folder; on failure
    ``error`` holds one sentence for the user. ``cleanup`` removes the temporary folder.
    """

    def __init__(self, request: ReconstructRequest | AnimateRequest, choice: EngineChoice,
                 work_dir: str | None = None):
        self.request = request
        self.choice = choice
        self.state = "new"
        self.fraction = 0.0
        self.stage = ""
        self.message = ""
        self.error: str | None = None
        self._work = Path(work_dir or tempfile.mkdtemp(prefix="facerecon_"))
        self.out_dir = self._work / "result"
        self._proc: subprocess.Popen | None = None
        self._queue: queue.Queue = queue.Queue()
        self._open_streams = 0
        self._stderr: list[str] = []
        self._done_event = False
        self.started_at = 0.0

    # -- lifecycle -----------------------------------------------------------------
    def command(self) -> list[str]:
        if not self.choice.ok:
            raise RuntimeError(self.choice.reason)
        return [self.choice.python, *self.request.arguments(str(self.out_dir))]

    def start(self) -> None:
        """Launch the child; a missing interpreter or photo turns into ``FAILED``."""
        self.started_at = time.monotonic()
        if not self.choice.ok:
            self._fail(self.choice.reason)
            return
        problem = self.request.input_problem()
        if problem:
            self._fail(problem)
            return
        if engine_root() is None:
            self._fail("The engine is not bundled with this add-on (no 'engine' folder next to it).")
            return
        try:
            self._proc = subprocess.Popen(
                self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                text=True, encoding="utf-8", errors="replace", bufsize=1, env=child_env(self.choice),
                cwd=str(self._work),
            )
        except OSError as exc:
            self._fail(f"Could not start the engine Python '{self.choice.python}': {exc}")
            return
        self.state = RUNNING
        self.stage, self.message = "start", "starting the engine"
        for stream, tag in ((self._proc.stdout, "out"), (self._proc.stderr, "err")):
            threading.Thread(target=_pump, args=(stream, tag, self._queue), daemon=True).start()
            self._open_streams += 1

    def poll(self) -> str:
        """Consume pending output without blocking; returns the (possibly new) state."""
        if self.state != RUNNING:
            return self.state
        while True:
            try:
                tag, line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._open_streams -= 1
            elif tag == "out":
                self._progress_line(line)
            elif line.strip():
                self._stderr.append(line)
        if self._open_streams == 0 and self._proc is not None and self._proc.poll() is not None:
            self._finish(self._proc.returncode)
        return self.state

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> str:
        """Block until the job ends (scripts, tests, the operator's ``execute``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() == RUNNING:
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                self._fail(f"The engine did not finish within {timeout:.0f} s.")
                break
            time.sleep(interval)
        return self.state

    def cancel(self) -> None:
        """Stop the child (Esc in the UI) and forget its output."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self.state in (RUNNING, "new"):
            self.state = CANCELLED
            self.message = "cancelled"
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self._work, ignore_errors=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at if self.started_at else 0.0

    # -- internals -----------------------------------------------------------------
    def _progress_line(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return  # stray print from a library; progress lines are JSON objects
        if not isinstance(event, dict):
            return
        self.stage = str(event.get("stage", self.stage))
        if "fraction" in event:
            try:
                self.fraction = min(max(float(event["fraction"]), 0.0), 1.0)
            except (TypeError, ValueError):
                pass
        self.message = str(event.get("message", self.stage))
        if self.stage == "done":
            self._done_event = True
            if event.get("out"):
                self.out_dir = Path(event["out"])

    def _finish(self, code: int) -> None:
        if code == 0 and self.out_dir.is_dir() and (self.out_dir / "head.glb").is_file():
            self.state, self.fraction, self.message = DONE, 1.0, "done"
            return
        errors = [ln[len("error:"):].strip() for ln in self._stderr if ln.startswith("error:")]
        if errors:
            self._fail(errors[-1])
        elif code == 0:
            self._fail(f"The engine finished but wrote no head.glb into {self.out_dir}.")
        else:
            tail = self._stderr[-1].strip() if self._stderr else "no message"
            self._fail(f"The engine failed (exit status {code}): {tail}")

    def _fail(self, message: str) -> None:
        self.state = FAILED
        self.error = message
        self.message = message

    @property
    def stderr_text(self) -> str:
        return "\n".join(self._stderr)


_CHECK_SCRIPT = r"""
import json, sys
info = {"python": sys.executable, "version": sys.version.split()[0]}
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda"] = bool(torch.cuda.is_available())
except Exception as exc:
    info["torch_error"] = f"{type(exc).__name__}: {exc}"
try:
    import engine
    info["engine"] = getattr(engine, "__file__", "?")
    model, path = sys.argv[1], sys.argv[2]
    try:
        from engine.head import load_head_model
        m = load_head_model(model, path or None)
        info["model"] = f"{model}: {int(m.template.shape[0])} vertices, {len(m.expression_names)} expressions"
    except Exception as exc:
        info["model_error"] = f"{type(exc).__name__}: {exc}"
except Exception as exc:
    info["engine_error"] = f"{type(exc).__name__}: {exc}"
print("FACERECON_CHECK " + json.dumps(info))
"""


def reconstruct_available(choice: EngineChoice, timeout: float = 60.0) -> tuple[bool, str]:
    """Whether ``python -m engine reconstruct --help`` works in the chosen interpreter."""
    if not choice.ok:
        return False, choice.reason
    try:
        proc = subprocess.run([choice.python, "-m", "engine", "reconstruct", "--help"], capture_output=True,
                              text=True, timeout=timeout, env=child_env(choice), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"could not run {choice.python}: {exc}"
    if proc.returncode == 0:
        return True, "available"
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return False, f"not available ({tail})"


def check_engine(choice: EngineChoice, model: str = "open", model_path: str = "",
                 timeout: float = 120.0) -> list[tuple[bool, str]]:
    """What works and what is missing, as ``(ok, sentence)`` lines for the UI."""
    lines: list[tuple[bool, str]] = []
    lines.append((blender_has_torch(), "PyTorch in Blender's Python: "
                  + ("yes" if blender_has_torch() else "no (an external Python is needed)")))
    root = engine_root()
    lines.append((root is not None, f"bundled engine: {root / 'engine' if root else 'missing'}"))
    if not choice.ok:
        lines.append((False, choice.reason))
        return lines
    lines.append((True, f"engine Python: {choice.python} ({choice.reason})"))
    try:
        proc = subprocess.run([choice.python, "-c", _CHECK_SCRIPT, model, model_path],
                              capture_output=True, text=True, timeout=timeout, env=child_env(choice))
    except (OSError, subprocess.TimeoutExpired) as exc:
        lines.append((False, f"could not run {choice.python}: {exc}"))
        return lines
    payload = [ln for ln in proc.stdout.splitlines() if ln.startswith("FACERECON_CHECK ")]
    if not payload:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        lines.append((False, f"{choice.python} failed to run the check: {tail}"))
        return lines
    info = json.loads(payload[-1][len("FACERECON_CHECK "):])
    if "torch" in info:
        lines.append((True, f"PyTorch {info['torch']} (CUDA {'available' if info['cuda'] else 'not available'})"))
    else:
        lines.append((False, f"PyTorch missing in {choice.python}: {info.get('torch_error')}"))
    if "engine" in info:
        lines.append((True, f"engine importable from {info['engine']}"))
        ok, why = reconstruct_available(choice)
        lines.append((ok, "engine reconstruct: " + why))
        lines.append(("model" in info, f"head model {info['model']}" if "model" in info
                      else f"head model '{model}' not usable: {info.get('model_error')}"))
    else:
        lines.append((False, f"engine not importable: {info.get('engine_error')}"))
    return lines
