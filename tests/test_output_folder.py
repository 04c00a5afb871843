"""The reconstruction output folder: our marker, user files never deleted, symlinks, umask,
temporaries of killed or interrupted runs (issue #16, items 2 and 4)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.export.atomic import (MARKER_FORMAT, MARKER_NAME, MARKER_VERSION, OutputFolderError,
                                  atomic_output_folder, check_output_folder, remove_stale_temporaries)

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, MPLCONFIGDIR=str(tmp / "mpl"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _write_output(folder: Path, text: str = "new") -> None:
    with atomic_output_folder(folder) as tmp:
        (tmp / "params.json").write_text(json.dumps({"run": text}))
        (tmp / "head.obj").write_text("v 0 0 0\n")


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_marker_names_format_version_and_files(tmp_path):
    out = tmp_path / "out"
    _write_output(out)
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker["format"] == MARKER_FORMAT and marker["version"] == MARKER_VERSION
    assert marker["files"] == ["head.obj", "params.json"] and marker["state"] == "complete"
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER_NAME, "head.obj", "params.json"])
    _write_output(out, "second")  # our own folder is replaced
    assert json.loads((out / "params.json").read_text()) == {"run": "second"}
    assert _hidden(tmp_path) == []


def test_a_file_the_user_saved_in_an_output_folder_is_never_deleted(tmp_path):
    out = tmp_path / "out"
    _write_output(out, "first")
    (out / "scene.blend").write_bytes(b"BLENDER-v405 my work")
    with pytest.raises(OutputFolderError, match=r"did not write \(scene\.blend\)"):
        check_output_folder(out)
    with pytest.raises(OutputFolderError, match="scene.blend"):
        _write_output(out, "second")
    assert (out / "scene.blend").read_bytes() == b"BLENDER-v405 my work"
    assert json.loads((out / "params.json").read_text()) == {"run": "first"}
    assert _hidden(tmp_path) == []


def test_a_folder_without_our_marker_is_recognised_only_by_our_file_names(tmp_path):
    legacy = tmp_path / "legacy"  # written by an engine before the marker
    legacy.mkdir()
    for name in ("params.json", "head.obj", "head.glb"):
        (legacy / name).write_text("old")
    _write_output(legacy)
    assert (legacy / MARKER_NAME).is_file() and (legacy / "head.glb").exists() is False
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "params.json").write_text("{}")
    (mixed / "thesis.tex").write_text("precious")
    with pytest.raises(OutputFolderError, match="thesis.tex"):
        _write_output(mixed)
    assert (mixed / "thesis.tex").read_text() == "precious"
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("x")
    with pytest.raises(OutputFolderError, match="not a previous reconstruction"):
        check_output_folder(home)
    future = tmp_path / "future"
    future.mkdir()
    (future / MARKER_NAME).write_text(json.dumps({"format": MARKER_FORMAT, "version": MARKER_VERSION + 1,
                                                  "files": []}))
    with pytest.raises(OutputFolderError, match="newer engine"):
        check_output_folder(future)


def test_a_file_saved_into_the_folder_during_the_run_is_kept(tmp_path):
    out = tmp_path / "out"
    _write_output(out, "first")
    with pytest.raises(OutputFolderError, match="notes.txt"):
        with atomic_output_folder(out) as tmp:
            (tmp / "params.json").write_text("{}")
            (out / "notes.txt").write_text("written while the fit ran")
    assert (out / "notes.txt").read_text() == "written while the fit ran"
    assert _hidden(tmp_path) == []


def test_file_in_the_way_and_unwritable_parent_are_refused_up_front(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputFolderError, match="is a file"):
        check_output_folder(tmp_path / "afile")
    with pytest.raises(OutputFolderError, match="cannot create output folder"):
        check_output_folder(tmp_path / "afile" / "out")
    assert check_output_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # a check creates nothing


def test_symlinked_out_keeps_working_and_leaves_no_links(tmp_path):
    real = tmp_path / "real"
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)  # dangling until the first run
    _write_output(link, "first")
    _write_output(link, "second")
    assert link.is_symlink() and os.path.realpath(link) == str(real)
    assert json.loads((link / "params.json").read_text()) == {"run": "second"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_folders_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        _write_output(tmp_path / "out")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "params.json").stat().st_mode) == 0o644


def _run_writer(tmp_path: Path, out: Path, end: str) -> subprocess.Popen:
    """A process inside ``atomic_output_folder(out)`` (under ``cli_errors``) that has written a
    file and then waits; ``end`` is what it does next ("sleep" or "kill")."""
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        from engine.errors import cli_errors
        from engine.export.atomic import atomic_output_folder
        with cli_errors():
            with atomic_output_folder({str(out)!r}) as tmp:
                (tmp / "head.glb").write_bytes(b"x" * 100000)
                print("ready", flush=True)
                if {end!r} == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("sig,code,line", [(signal.SIGTERM, 143, "error: terminated"),
                                           (signal.SIGINT, 130, "error: interrupted")])
def test_sigterm_and_ctrl_c_while_writing_remove_the_temporary(tmp_path, sig, code, line):
    out = tmp_path / "out"
    proc = _run_writer(tmp_path, out, "sleep")
    assert len(_hidden(tmp_path)) == 1  # the temporary exists while the block runs
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and err == line + "\n", err
    assert not out.exists() and _hidden(tmp_path) == []


def test_a_killed_runs_temporary_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    proc = _run_writer(tmp_path, out, "kill")
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    left = _hidden(tmp_path)
    assert len(left) == 1 and left[0].startswith(".out.tmp-")
    # not ours: a look-alike without our marker, and a temporary of a live process (this one)
    (tmp_path / ".out.tmp-1-abcdef12").mkdir()
    live = tmp_path / f".out.tmp-{os.getpid()}-abcdef12"
    live.mkdir()
    (live / MARKER_NAME).write_text(json.dumps({"format": MARKER_FORMAT, "version": 1, "state": "writing",
                                                "pid": os.getpid()}))
    _write_output(out)
    assert _hidden(tmp_path) == sorted([".out.tmp-1-abcdef12", live.name])
    assert (out / "params.json").is_file()


def test_a_killed_swap_gives_the_previous_output_back(tmp_path):
    """Killed between moving the old folder aside and moving the new one in: the next run
    restores the old folder first (it is the user's last good result)."""
    out = tmp_path / "out"
    _write_output(out, "first")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead_pid = proc.pid
    proc.kill()
    proc.wait()
    aside = tmp_path / f".out.old-{dead_pid}-0123abcd"
    os.rename(out, aside)
    assert remove_stale_temporaries(out) == []
    assert json.loads((out / "params.json").read_text()) == {"run": "first"} and _hidden(tmp_path) == []


def test_reconstruct_checks_the_output_folder_before_the_fit(tmp_path, astronaut_png):
    from engine.reconstruct import reconstruct

    out = tmp_path / "out"
    out.mkdir()
    (out / "params.json").write_text("{}")
    (out / "scene.blend").write_bytes(b"work")
    stages = []
    t = time.perf_counter()
    with pytest.raises(OutputFolderError, match="scene.blend"):
        reconstruct(astronaut_png, out, progress=lambda s, f, m: stages.append(s))
    assert stages == [] and time.perf_counter() - t < 20
    assert (out / "scene.blend").read_bytes() == b"work"


def test_cli_ctrl_c_during_the_fit_is_one_line_and_leaves_nothing(tmp_path, astronaut_png):
    proc = subprocess.Popen([sys.executable, "-m", "engine", "reconstruct", str(astronaut_png), "--out",
                             str(tmp_path / "out"), "--progress", "jsonl"], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for raw in proc.stdout:
        if json.loads(raw)["stage"] in ("landmarks", "refine", "joint"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err == "error: interrupted\n", err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "mpl") == []
