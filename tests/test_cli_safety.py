"""Small user-facing fixes of issue #16, item 7: flags that conflict, hints that name the
right flag, and ``--example`` leaving nothing behind when the run fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ModelFileError

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, MPLCONFIGDIR=str(tmp / "mpl"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)


def test_cli_example_photo_is_removed_when_the_run_fails(tmp_path):
    r = _cli(tmp_path, "reconstruct", "--example", "astronaut", "--out", str(tmp_path / "out"),
             "--model", "flame", "--progress", "none")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--model-path" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "mpl") == []


def test_model_file_hints_name_the_flag_of_each_command():
    from engine.head import load_head_model

    with pytest.raises(ModelFileError) as info:
        load_head_model("flame")
    assert "--model-path (python -m engine reconstruct)" in str(info.value)
    with pytest.raises(ModelFileError) as info:
        load_head_model("ict", "/nonexistent/ict")
    assert "--model-path (python -m engine reconstruct)" in str(info.value)
