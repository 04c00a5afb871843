"""Run ``python -m engine reconstruct`` (or ``animate``, ``bake-detail``) without blocking Blender.

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
from typing import Any

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


#: The engine's variable for a writable folder (engine/head/build/open_head.py): the built
#: open head model goes there instead of into the extension's own folder.
DATA_DIR_ENV = "FACERECON_DATA_DIR"


def child_env(choice: EngineChoice, data_dir: str | os.PathLike[str] = "") -> dict[str, str]:
    """Environment for the engine child: bundled engine first on PYTHONPATH, and ``data_dir``
    (the add-on's user folder) as the place for any file the engine writes for itself."""
    env = dict(os.environ)
    if data_dir:
        env[DATA_DIR_ENV] = str(data_dir)
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


class _FolderRequest:
    """A request whose job writes an output folder with ``head.glb`` (reconstruct, animate)."""

    start_message = "starting the engine"

    def prepare(self, out_dir: Path) -> None:
        """Write what the child reads before it starts (nothing: the engine makes ``out_dir``)."""

    def exit_ok(self, code: int) -> bool:
        """Whether the child's exit status means it wrote its result."""
        return code == 0

    def output_problem(self, out_dir: Path) -> str | None:
        """Why a child that exited with an ``exit_ok`` status did not produce the result (or None)."""
        if (out_dir / "head.glb").is_file():
            return None
        return f"The engine finished but wrote no head.glb into {out_dir}."


def batch_items(out_dir: str | os.PathLike[str]) -> list[dict] | None:
    """The ``items`` of a batch's ``batch.json`` (engine/batch.py: one per face, ``out`` the
    face's folder or ``error`` why not), each done one's ``folder`` added: where it is now,
    inside ``out_dir`` (``out`` is where the engine wrote it: the batch folder may have moved
    since, e.g. computed on another machine); None when the folder has none or it is unreadable."""
    try:
        data = json.loads((Path(out_dir) / "batch.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    items = [dict(i) for i in items if isinstance(i, dict)]
    for i in items:
        if i.get("out"):
            name = str(i.get("name") or Path(str(i["out"])).name)
            i["folder"] = Path(out_dir) / (f"{name}_face{i.get('face')}" if data.get("face") == "all" else name)
    return items


@dataclass
class ReconstructRequest(_FolderRequest):
    """Arguments of ``python -m engine reconstruct`` (see docs/conventions.md)."""

    photo: str
    model: str = "open"
    model_path: str = ""
    method: str = "fit"
    device: str = "cpu"
    face: int | str = 0  # 0: the largest face (always passed: the engine refuses to guess between several);
    # "all": every face, a batch (docs/conventions.md, "Batches"): out_dir gets one folder per face + batch.json
    fit_options: tuple[str, ...] = ()  # KEY=VALUE settings of the fit (fit and hybrid only)
    texture_size: int = 1024  # albedo.png side (engine.outputs.TEXTURE_SIZES)
    # more photos (files or folders) of the same person: a batch with --same-person, whose
    # ``photo``'s folder is the head (docs/fitting.md, "One person, several photos")
    more_photos: tuple[str, ...] = ()

    @property
    def all_faces(self) -> bool:
        return self.face == "all"

    @property
    def batch(self) -> bool:
        """The engine writes a batch folder (batch.json, a folder per face)."""
        return self.all_faces or bool(self.more_photos)

    def head_folders(self, out_dir: Path) -> list[Path]:
        """The result folders to import from a finished job's ``out_dir``: the folder itself, or
        for a batch every face's (``--face all``) or the photo's own (more photos)."""
        if not self.batch:
            return [Path(out_dir)]
        items = [i for i in batch_items(out_dir) or [] if i.get("out")]
        if self.more_photos:
            items = [i for i in items if Path(str(i.get("photo"))) == Path(self.photo)][:1]
        return [i["folder"] for i in items]

    def server_argv(self, out_dir: str) -> list[str]:
        """The request for a kept engine (``python -m engine serve``): the command line after ``-m engine``."""
        return self.arguments(out_dir)[2:]

    def exit_ok(self, code: int) -> bool:
        """A batch exits 1 when some faces failed: the others are still there to import."""
        return code == 0 or (self.batch and code == 1)

    def output_problem(self, out_dir: Path) -> str | None:
        if not self.batch:
            return super().output_problem(out_dir)
        items = batch_items(out_dir)
        if items is None:
            return f"The engine finished but wrote no batch.json into {out_dir}."
        if not self.head_folders(out_dir):
            mine = [i for i in items if not self.more_photos or Path(str(i.get("photo"))) == Path(self.photo)]
            errors = [str(i["error"]) for i in mine if i.get("error")]
            return errors[0] if errors else "The engine reconstructed no face."
        return None

    def arguments(self, out_dir: str) -> list[str]:
        args = ["-m", "engine", "reconstruct", self.photo, *self.more_photos, "--out", out_dir,
                "--model", self.model, "--method", self.method, "--device", self.device,
                "--progress", "jsonl"]
        if self.more_photos:
            args.append("--same-person")
        if self.texture_size != 1024:  # (an engine from before the option takes the default)
            args += ["--texture-size", str(self.texture_size)]
        if self.model_path:
            args += ["--model-path", self.model_path]
        for option in self.fit_options:
            args += ["--fit-option", option]
        args += ["--face", str(self.face)]
        return args

    def input_problem(self) -> str | None:
        """Why the job cannot start (one sentence), or None."""
        if not Path(self.photo).is_file():
            return f"The photo '{self.photo}' does not exist."
        missing = [p for p in self.more_photos if not Path(p).exists()]
        if missing:
            return f"The more photos '{missing[0]}' do not exist."
        if self.more_photos and self.all_faces:
            return "More photos of one person and All faces cannot go together: choose one face, or clear More photos."
        return None


@dataclass
class AnimateRequest(_FolderRequest):
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
    smooth: str = "two-pass"  # the One Euro filter: two-pass, causal or off
    min_cutoff: float = 0.0  # its cut-off at rest in Hz (lower = steadier); 0: the engine's default

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
        if self.smooth != "two-pass":
            args += ["--smooth", self.smooth]
        if self.min_cutoff > 0:
            args += ["--min-cutoff", f"{self.min_cutoff:g}"]
        return args

    def input_problem(self) -> str | None:
        return None if Path(self.video).exists() else f"The video '{self.video}' does not exist."


@dataclass
class BakeDetailRequest:
    """Arguments of ``python -m engine bake-detail RESULT_DIR --pose POSE.json --out FILE.png``:
    the detail network's displacement map for one pose of an imported head (docs/blender_addon.md,
    "Animated detail"). ``pose`` is ``{"expression": {shape key: value, ...}, "jaw": [rx, ry, rz]}``
    (the jaw joint's axis-angle rotation in model axes, radians); the job writes it to
    ``out_dir/pose.json`` and the engine writes the 16-bit map to ``out_dir/detail_pose.png``."""

    result_dir: str
    pose: dict

    POSE_FILE = "pose.json"
    MAP_FILE = "detail_pose.png"
    start_message = "baking the detail map for this pose"

    def arguments(self, out_dir: str) -> list[str]:
        out = Path(out_dir)
        return ["-m", "engine", "bake-detail", self.result_dir, "--pose", str(out / self.POSE_FILE),
                "--out", str(out / self.MAP_FILE)]

    def input_problem(self) -> str | None:
        if not (Path(self.result_dir) / "params.json").is_file():
            return (f"The head's result folder '{self.result_dir}' is gone (or has no params.json); "
                    "import the folder again to bake its detail.")
        return None

    def prepare(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / self.POSE_FILE).write_text(json.dumps(self.pose), encoding="utf-8")

    def exit_ok(self, code: int) -> bool:
        return code == 0

    def output_problem(self, out_dir: Path) -> str | None:
        if (out_dir / self.MAP_FILE).is_file():
            return None
        return f"The engine finished but wrote no detail map {out_dir / self.MAP_FILE}."


def _pump(stream, tag: str, q: "queue.Queue[tuple[str, str | None]]") -> None:
    """Reader thread: forward lines of a child's pipe to the queue (None = closed)."""
    try:
        for line in iter(stream.readline, ""):
            q.put((tag, line.rstrip("\n")))
    finally:
        q.put((tag, None))


class EngineWorker:
    """``python -m engine serve`` (engine/serve.py) kept between jobs, so that a reconstruction
    does not pay for starting Python, PyTorch, the model and the detector each time (~1.6 s
    of 2.4 s on a 2-core CPU). One job at a time (``busy``); its lines arrive in ``queue``
    as ``(tag, line)`` like a job's own child's; it exits by itself after 10 idle minutes."""

    IDLE_EXIT_S = 600

    def __init__(self, python: str, env: dict[str, str]) -> None:
        self.key = (python, tuple(sorted(env.items())))
        self.queue: queue.Queue = queue.Queue()
        self.busy = False
        self._next_id = 0
        self.proc = subprocess.Popen(
            [python, "-m", "engine", "serve", "--idle-exit", str(self.IDLE_EXIT_S)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            errors="replace", bufsize=1, env=env, cwd=tempfile.gettempdir())
        for stream, tag in ((self.proc.stdout, "out"), (self.proc.stderr, "err")):
            threading.Thread(target=_pump, args=(stream, tag, self.queue), daemon=True).start()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, argv: list[str]) -> int:
        """Write one request; returns its id (OSError when the worker is gone)."""
        self._next_id += 1
        self.proc.stdin.write(json.dumps({"id": self._next_id, "argv": argv}) + "\n")
        self.proc.stdin.flush()
        return self._next_id

    def take(self, request_id: int, timeout: float | None = None) -> tuple[str, Any] | None:
        """The next line of the worker's answer to ``request_id``, read as the protocol says
        (engine/serve.py): ``("err", line)``, ``("event", line)`` (a progress line),
        ``("end", event)``, or ``("gone", None)`` when its stdout closed; None when nothing came
        (within ``timeout`` seconds; None: do not wait). Lines that are not this request's (the
        ``ready`` line, an abandoned request's end, stray prints) are skipped."""
        while True:
            try:
                tag, line = self.queue.get(timeout=timeout) if timeout else self.queue.get_nowait()
            except queue.Empty:
                return None
            if line is None:
                if tag == "out":
                    return "gone", None
                continue
            if tag == "err":
                return "err", line
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict) or "ready" in event:
                continue
            if "end" in event:
                if event["end"] == request_id:
                    return "end", event
                continue
            return "event", line

    def stop(self) -> None:
        _terminate(self.proc)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass


def _terminate(proc: subprocess.Popen) -> None:
    """End a child that still runs: SIGTERM (it removes its temporary folder), SIGKILL after 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_WORKER: EngineWorker | None = None


def shared_worker(python: str, env: dict[str, str]) -> EngineWorker:
    """The kept engine for this interpreter and environment, started (again) when needed."""
    global _WORKER
    if _WORKER is not None and (not _WORKER.alive() or _WORKER.key != (python, tuple(sorted(env.items())))):
        if not _WORKER.busy:
            _WORKER.stop()
        _WORKER = None
    if _WORKER is None:
        _WORKER = EngineWorker(python, env)
    return _WORKER


def claim_worker(python: str, env: dict[str, str], argv: list[str]) -> tuple[EngineWorker, int] | None:
    """Send ``argv`` to the kept engine (started when needed; once more with a fresh one when the
    write fails, e.g. it had just left after its idle time) and mark it busy: (worker, request
    id), or None when it is busy with another job or cannot be reached."""
    for _ in range(2):
        try:
            worker = shared_worker(python, env)
            if worker.busy:
                return None
            while not worker.queue.empty():  # what the last job left (its last stderr lines)
                worker.queue.get_nowait()
            rid = worker.send(argv)
        except OSError:
            stop_worker()
            continue
        worker.busy = True
        return worker, rid
    return None


def stop_worker() -> None:
    """Stop the kept engine (the add-on is disabled or updated; a job is cancelled)."""
    global _WORKER
    if _WORKER is not None:
        _WORKER.stop()
        _WORKER = None


class EngineJob:
    """One engine command in a child process: ``start`` → ``poll`` … → ``state``.

    ``poll`` never blocks; reader threads turn the child's stdout (JSON progress lines)
    and stderr into a queue. On success ``out_dir`` holds the output (the folder of
    reconstruct/animate; for bake-detail the pose and the map written into it); on failure
    ``error`` holds one sentence for the user. ``cleanup`` removes the temporary folder.
    ``keep``: a reconstruction goes to the kept engine (:class:`EngineWorker`) instead of a
    child of its own (when that one is busy with another job, a child of its own after all).
    """

    def __init__(self, request: ReconstructRequest | AnimateRequest | BakeDetailRequest, choice: EngineChoice,
                 work_dir: str | None = None, data_dir: str | os.PathLike[str] = "", keep: bool = False):
        self.request = request
        self.choice = choice
        self.keep = keep and hasattr(request, "server_argv")
        self._worker: EngineWorker | None = None
        self._request_id = 0
        self._heard = False  # a line of this job came from the worker
        self._resent = False  # the job was sent again to a fresh worker
        self.data_dir = str(data_dir or "")
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
            self.request.prepare(self.out_dir)
        except OSError as exc:
            self._fail(f"Could not write the engine's input into {self.out_dir}: {exc.strerror or exc}")
            return
        if self.keep and self._to_worker():
            return
        try:
            self._proc = subprocess.Popen(
                self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                text=True, encoding="utf-8", errors="replace", bufsize=1,
                env=child_env(self.choice, self.data_dir),
                cwd=str(self._work),
            )
        except OSError as exc:
            self._fail(f"Could not start the engine Python '{self.choice.python}': {exc}")
            return
        self.state = RUNNING
        self.stage, self.message = "start", self.request.start_message
        for stream, tag in ((self._proc.stdout, "out"), (self._proc.stderr, "err")):
            threading.Thread(target=_pump, args=(stream, tag, self._queue), daemon=True).start()
            self._open_streams += 1

    def _to_worker(self) -> bool:
        """Send the request to the kept engine; False when it is busy or cannot start (then the
        job runs in a child of its own)."""
        claimed = claim_worker(self.choice.python, child_env(self.choice, self.data_dir),
                               self.request.server_argv(str(self.out_dir)))
        if claimed is None:
            return False
        (self._worker, self._request_id), self._heard = claimed, False
        self.state = RUNNING
        self.stage, self.message = "start", self.request.start_message
        return True

    def _poll_worker(self) -> str:
        worker = self._worker
        while (item := worker.take(self._request_id)) is not None:
            kind, value = item
            if kind == "gone":  # the worker's pipe closed
                return self._worker_gone()
            if kind == "err":
                if value.strip():
                    self._stderr.append(value)
            elif kind == "end":
                worker.busy = False
                self._worker = None
                self._stderr += end_error_lines(value)
                status = value.get("status")
                self._finish(status if isinstance(status, int) else 1)
                return self.state
            else:
                self._heard = True
                self._progress_line(value)
        if not worker.alive() and worker.queue.empty():
            return self._worker_gone()
        return self.state

    def _worker_gone(self) -> str:
        """The kept engine stopped during this job: before it said anything about it (it had
        just left after its idle time), start a fresh one and send the job again; otherwise
        the job fails with what the engine said last."""
        worker, self._worker = self._worker, None
        worker.busy = False
        stop_worker()
        if not self._heard and not self._resent:
            self._resent = True
            if self._to_worker():
                return self.state
        tail = self._stderr[-1].strip() if self._stderr else "no message"
        self._fail(f"The engine stopped unexpectedly: {tail}")
        return self.state

    def poll(self) -> str:
        """Consume pending output without blocking; returns the (possibly new) state."""
        if self.state != RUNNING:
            return self.state
        if self._worker is not None:
            return self._poll_worker()
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
        """Stop the child (Esc in the UI) and forget its output (a kept engine is stopped:
        the next job starts a fresh one)."""
        if self._worker is not None:
            if self._worker is _WORKER:
                stop_worker()
            else:
                self._worker.stop()
            self._worker = None
        if self._proc is not None:
            _terminate(self._proc)
        if self.state in (RUNNING, "new"):
            self.state = CANCELLED
            self.message = "cancelled"
        self.cleanup()

    def cleanup(self) -> None:
        # the pipes, once both reader threads reported their end (not while one may still read)
        if self._proc is not None and self._proc.poll() is not None and self._open_streams == 0:
            for stream in (self._proc.stdout, self._proc.stderr):
                if stream is not None and not stream.closed:
                    try:
                        stream.close()
                    except OSError:  # a reader thread may still hold it
                        pass
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
        ok = self.request.exit_ok(code)
        problem = self.request.output_problem(self.out_dir) if ok else None
        if ok and problem is None:
            self.state, self.fraction, self.message = DONE, 1.0, "done"
            return
        errors = [ln[len("error:"):].strip() for ln in self._stderr if ln.startswith("error:")]
        if errors:
            self._fail(errors[-1])
        elif ok:
            self._fail(problem)
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


def reconstruct_available(choice: EngineChoice, timeout: float = 60.0, data_dir: str = "") -> tuple[bool, str]:
    """Whether ``python -m engine reconstruct --help`` works in the chosen interpreter."""
    if not choice.ok:
        return False, choice.reason
    try:
        proc = subprocess.run([choice.python, "-m", "engine", "reconstruct", "--help"], capture_output=True,
                              text=True, timeout=timeout, env=child_env(choice, data_dir),
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"could not run {choice.python}: {exc}"
    if proc.returncode == 0:
        return True, "available"
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return False, f"not available ({tail})"


def check_engine(choice: EngineChoice, model: str = "open", model_path: str = "",
                 timeout: float = 120.0, data_dir: str = "") -> list[tuple[bool, str]]:
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
                              capture_output=True, text=True, timeout=timeout,
                              env=child_env(choice, data_dir))
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
        ok, why = reconstruct_available(choice, data_dir=data_dir)
        lines.append((ok, "engine reconstruct: " + why))
        lines.append(("model" in info, f"head model {info['model']}" if "model" in info
                      else f"head model '{model}' not usable: {info.get('model_error')}"))
    else:
        lines.append((False, f"engine not importable: {info.get('engine_error')}"))
    return lines


@dataclass
class FoundFaces:
    """What :func:`find_faces` saw: the faces' boxes (largest first, so list index = the
    ``--face`` number), the numbered preview PNG and where each number is drawn on it
    (``labels``: index, box and label rectangles in preview pixels), or an error sentence."""

    faces: list[dict]
    preview: str | None
    error: str | None = None
    labels: list[dict] = field(default_factory=list)


def end_error_lines(end: dict) -> list[str]:
    """The ``error: …`` line of a kept engine's end line (engine/serve.py), for the request's
    stderr: the engine printed it on stderr too, but that pipe may not have been read yet when
    the end line (stdout) comes — a slow machine showed "face detection failed: no output"."""
    return [f"error: {end['error']}"] if end.get("error") else []


def _detect_on_worker(choice: EngineChoice, argv: list[str], data_dir: str,
                      timeout: float) -> subprocess.CompletedProcess | None:
    """``python -m engine.detect ARGV`` answered by the kept engine (blocking, as *Find Faces*
    is): its exit status, printed output and stderr; None when the kept engine is busy with a
    job or could not answer (then a child of its own runs it)."""
    claimed = claim_worker(choice.python, child_env(choice, data_dir), ["detect", *argv])
    if claimed is None:
        return None
    worker, rid = claimed
    stderr: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            item = worker.take(rid, timeout=0.1)
            if item is None:
                if not worker.alive():
                    break
                continue
            kind, value = item
            if kind == "gone":
                break
            if kind == "err":
                stderr.append(value)
            elif kind == "end":
                worker.busy = False
                return subprocess.CompletedProcess(argv, int(value.get("status") or 0),
                                                   str(value.get("output") or ""),
                                                   "\n".join(stderr + end_error_lines(value)))
    finally:
        if worker.busy:  # no answer in time, or the engine left: start afresh next time
            worker.busy = False
            stop_worker()
    return None


def find_faces(choice: EngineChoice, photo: str, preview: str | os.PathLike[str], data_dir: str = "",
               timeout: float = 120.0, keep: bool = False) -> FoundFaces:
    """Run ``python -m engine.detect PHOTO --json --numbered PREVIEW`` (the same detector and
    order as ``engine reconstruct``): the faces and a preview with each one's number.
    ``keep``: ask the kept engine (:class:`EngineWorker`, started when there is none, so that
    the reconstruction that follows finds it warm)."""
    if not choice.ok:
        return FoundFaces([], None, choice.reason)
    if not Path(photo).is_file():
        return FoundFaces([], None, f"The photo '{photo}' does not exist.")
    Path(preview).parent.mkdir(parents=True, exist_ok=True)
    argv = [photo, "--json", "--numbered", str(preview)]
    proc = _detect_on_worker(choice, argv, data_dir, timeout) if keep else None
    if proc is None:
        try:
            proc = subprocess.run([choice.python, "-m", "engine.detect", *argv], capture_output=True, text=True,
                                  timeout=timeout, env=child_env(choice, data_dir), stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return FoundFaces([], None, f"could not run {choice.python}: {exc}")
    errors = [ln[len("error:"):].strip() for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    if proc.returncode not in (0, 1) or errors:
        tail = errors[-1] if errors else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return FoundFaces([], None, f"face detection failed: {tail}")
    try:
        doc = json.loads(proc.stdout[proc.stdout.find("{"):])
    except ValueError:
        return FoundFaces([], None, "face detection printed no result")
    shown = str(preview) if Path(preview).is_file() else None
    labels = list(doc.get("numbered", {}).get("labels", [])) if shown else []
    return FoundFaces(list(doc.get("faces", [])), shown, None, labels)
