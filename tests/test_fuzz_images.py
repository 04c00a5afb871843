"""Fuzz the image loader and the face detector (#16, reliability goals).

600 seeded files (JPEG, PNG, WebP, TIFF, GIF, BMP in many modes; truncated, bit-flipped,
overwritten, absurd header sizes, duplicated chunks, appended garbage, see
tests/fuzz_images.py) go through ``load_image`` and, when they load, ``detect_faces`` in two
worker processes. Every file must give a valid Photo or one ImageError/UserError - never
another exception, never a hang (a file taking more than PER_FILE_TIMEOUT_S kills the worker
and counts as a failure), never memory above MEMORY_BOUND_MB over the worker's start, and
nothing on the worker's stderr (native decoder messages would spoil a CLI's one-line error).
A few files then go through the real command lines: exit 2 with one ``error:`` line, or a
valid result.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_images import make_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_FILES = 600
SEED = 16
WORKERS = 2
PER_FILE_TIMEOUT_S = 10.0
#: the workers decode with a 4 MP pixel limit (fast); 16 bytes per allowed pixel (Pillow's
#: buffer, the RGB copy, orientation and detection copies) plus slack
PIXEL_LIMIT = 4_000_000
MEMORY_BOUND_MB = 16 * PIXEL_LIMIT / 2**20 + 100


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, MPLCONFIGDIR=str(tmp / "mpl"), OMP_NUM_THREADS="1",
               FACERECON_MAX_IMAGE_PIXELS=str(PIXEL_LIMIT))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


class _Worker:
    """tests/fuzz_images.py over files [first, last) of a folder, restartable after a hang."""

    def __init__(self, folder: Path, first: int, last: int, tmp: Path) -> None:
        self.folder, self.next, self.last, self.tmp = folder, first, last, tmp
        self.current: int | None = None
        self.since = time.monotonic()
        self.stderr: list[str] = []
        self.ready_kb: list[int] = []  # peak RSS once the models were loaded, per start
        self.proc: subprocess.Popen | None = None
        self.buffer = b""

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fuzz_images.py"), str(self.folder),
                                      str(self.next), str(self.last)], cwd=self.tmp, env=_env(self.tmp),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buffer = b""
        self.since = time.monotonic()

    def finish(self) -> None:
        _, err = self.proc.communicate(timeout=60)
        self.stderr.append(err.decode("utf-8", "replace"))


def _run_corpus(folder: Path, n: int, tmp: Path) -> tuple[dict[int, dict], list[int], list[str], list[list[int]]]:
    """(record per file index, indices that hung, the workers' stderr, their peak RSS once ready)."""
    bounds = [round(n * w / WORKERS) for w in range(WORKERS + 1)]
    workers = [_Worker(folder, bounds[w], bounds[w + 1], tmp) for w in range(WORKERS)]
    records: dict[int, dict] = {}
    hung: list[int] = []
    sel = selectors.DefaultSelector()
    for w in workers:
        w.start()
        sel.register(w.proc.stdout, selectors.EVENT_READ, w)
    deadline = time.monotonic() + 600
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            w = key.data
            chunk = key.fileobj.read() or b""
            if not chunk and w.proc.poll() is not None:
                sel.unregister(key.fileobj)
                w.finish()
                continue
            w.buffer += chunk
            *lines, w.buffer = w.buffer.split(b"\n")
            for line in lines:
                rec = json.loads(line)
                if rec.get("ready"):
                    w.ready_kb.append(rec["maxrss_kb"])
                    w.since = time.monotonic()
                elif rec.get("start"):
                    w.current, w.since = rec["i"], time.monotonic()
                else:
                    records[rec["i"]] = rec
                    w.current, w.next = None, rec["i"] + 1
        for w in workers:
            if w.current is not None and time.monotonic() - w.since > PER_FILE_TIMEOUT_S:
                hung.append(w.current)
                sel.unregister(w.proc.stdout)
                w.proc.kill()
                w.finish()
                w.next, w.current = w.current + 1, None
                if w.next < w.last:
                    w.start()
                    sel.register(w.proc.stdout, selectors.EVENT_READ, w)
    return records, hung, [e for w in workers for e in w.stderr], [w.ready_kb for w in workers]


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    paths = make_corpus(tmp / "corpus", N_FILES, SEED)
    t = time.perf_counter()
    records, hung, stderr, ready_kb = _run_corpus(tmp / "corpus", len(paths), tmp)
    return {"paths": paths, "records": records, "hung": hung, "stderr": stderr, "ready_kb": ready_kb, "tmp": tmp,
            "seconds": time.perf_counter() - t}


def test_every_fuzzed_file_loads_or_fails_with_one_clear_error(fuzz_run):
    records, paths = fuzz_run["records"], fuzz_run["paths"]
    assert fuzz_run["hung"] == [], [paths[i].name for i in fuzz_run["hung"]]
    assert sorted(records) == list(range(len(paths)))  # every file answered
    bugs = [(r["file"], r["message"]) for r in records.values() if r["kind"] == "bug"]
    assert bugs == []
    kinds = {r["kind"] for r in records.values()}
    assert kinds <= {"photo", "image_error", "user_error"}
    # the corpus exercises both outcomes in every format
    for fmt in ("JPEG", "PNG", "WEBP", "TIFF", "GIF", "BMP"):
        got = {r["kind"] for r in records.values() if f"-{fmt}-" in r["file"]}
        assert {"photo", "image_error"} <= got, (fmt, got)
    for r in records.values():
        if r["kind"] != "photo":
            msg = r["message"]
            assert "\n" not in msg and msg.startswith("cannot read image ") and r["file"] in msg, msg
    assert sum(r["kind"] == "photo" and r.get("detect_error") is None for r in records.values()) > 100


def test_fuzzing_stays_quiet_fast_and_within_memory(fuzz_run):
    assert all(e == "" for e in fuzz_run["stderr"]), fuzz_run["stderr"]
    records = fuzz_run["records"].values()
    slowest = max(records, key=lambda r: r["seconds"])
    assert slowest["seconds"] < PER_FILE_TIMEOUT_S / 2, slowest
    bounds = [round(N_FILES * w / WORKERS) for w in range(WORKERS + 1)]
    for w in range(WORKERS):
        mine = [r for r in records if bounds[w] <= r["i"] < bounds[w + 1]]
        ready = fuzz_run["ready_kb"][w][0]  # models loaded, before the first file
        growth_mb = (max(r["maxrss_kb"] for r in mine) - ready) / 1024
        assert growth_mb < MEMORY_BOUND_MB, (w, growth_mb)


def test_command_lines_on_fuzzed_files(fuzz_run):
    """A few files through the real entry points: one ``error:`` line and exit 2, or a result."""
    records, paths, tmp = fuzz_run["records"], fuzz_run["paths"], fuzz_run["tmp"]
    failing = [paths[i] for i in sorted(records) if records[i]["kind"] == "image_error"]
    loading = [paths[i] for i in sorted(records) if records[i]["kind"] == "photo"
               and records[i].get("detect_error") is None]
    picks = [failing[k * len(failing) // 4] for k in range(4)]
    cmds = [[sys.executable, "-m", "engine", "reconstruct", str(p), "--out", str(tmp / f"out{k}"),
             "--progress", "none"] for k, p in enumerate(picks[:2])]
    cmds += [[sys.executable, "-m", "engine.detect", str(p)] for p in picks[2:] + loading[:1]]
    results = []
    for i in range(0, len(cmds), 2):  # two at a time (each mostly imports)
        pair = [subprocess.Popen(c, cwd=tmp, env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for c in cmds[i:i + 2]]
        results += [(p, *p.communicate(timeout=120)) for p in pair]
    for c, (p, out, err) in zip(cmds, results):
        photo = c[4] if c[3] == "reconstruct" else c[3]
        if photo in map(str, picks):
            assert p.returncode == 2 and err.count("\n") == 1 and err.startswith("error: cannot read image "), err
            assert Path(photo).name in err
        else:  # a file that loads: faces or "no face" (exit 1), never a traceback
            assert p.returncode in (0, 1), err
            assert err in ("", f"no face found in {photo}\n"), err
    assert not list(tmp.glob("out*")) and not list(tmp.glob(".out*"))


ODD_ARRAYS = {
    "one-row-of-pixels-tall": lambda: np.zeros((32, 40000, 3), np.uint8),
    "one-column-wide": lambda: np.full((40000, 32, 3), 200, np.uint8),
    "smallest-allowed": lambda: np.zeros((32, 32, 3), np.uint8),
    "too-small": lambda: np.zeros((31, 500, 3), np.uint8),
    "noise-strip": lambda: np.random.default_rng(0).integers(0, 255, (32, 2100, 3), dtype=np.uint8),
    "grey-2d": lambda: np.zeros((64, 64), np.uint8),
    "rgba": lambda: np.zeros((64, 64, 4), np.uint8),
    "two-channels": lambda: np.zeros((64, 64, 2), np.uint8),
    "float": lambda: np.zeros((64, 64, 3), np.float32),
    "bool": lambda: np.zeros((64, 64, 3), bool),
    "empty": lambda: np.zeros((0, 64, 3), np.uint8),
    "strided": lambda: np.zeros((200, 300, 3), np.uint8)[:, ::2],
    "fortran-order": lambda: np.asfortranarray(np.zeros((100, 120, 3), np.uint8)),
}


@pytest.mark.parametrize("name", sorted(ODD_ARRAYS))
def test_detector_on_odd_arrays_returns_faces_or_a_user_error(name):
    from engine.detect import detect_faces
    from engine.errors import UserError

    try:
        faces = detect_faces(ODD_ARRAYS[name]())
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("<array>")
    else:
        assert faces == []
