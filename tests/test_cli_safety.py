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


def test_fit_options_on_the_command_line(tmp_path):
    """``reconstruct --fit-option KEY=VALUE`` sets FitConfig fields (typed like a training
    config), records the changed ones in params.json, and refuses unknown keys, wrong types
    and learned methods in one line, leaving nothing behind."""
    import json

    from engine.errors import ConfigError
    from engine.fitting import FitConfig, changed_fields, fit_config

    cfg = fit_config(["joint_iters=2", "w_photo=150", "use_dense=false"])
    assert (cfg.joint_iters, cfg.w_photo, cfg.use_dense) == (2, 150.0, False)
    assert changed_fields(cfg) == {"joint_iters": 2, "w_photo": 150.0, "use_dense": False}
    assert changed_fields(FitConfig()) == {} and fit_config([]) == FitConfig()
    assert fit_config(["shape_iters=5"], base=cfg).joint_iters == 2  # on top of another config
    with pytest.raises(ConfigError):
        fit_config(["joint_iters=two"])

    for bad, says in ((["--fit-option", "bogus=1"], "bogus"), (["--fit-option", "joint_iters=abc"], "joint_iters"),
                      (["--fit-option", "joint_iters=2", "--method", "mofa"], "--method mofa"),
                      (["--fit-option", "joint_iters=2", "--method", "hybrid"], "hybrid_joint_iters")):
        r = _cli(tmp_path, "reconstruct", "--example", "astronaut", "--out", str(tmp_path / "out"), "--progress",
                 "none", *bad)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "mpl") == []

    r = _cli(tmp_path, "reconstruct", "--example", "astronaut", "--out", str(tmp_path / "ok"), "--progress", "none",
             "--fit-option", "joint_iters=2", "--fit-option", "ibug_uncovered_weight=1")
    assert r.returncode == 0, r.stderr
    params = json.loads((tmp_path / "ok" / "params.json").read_text())
    assert params["fit_options"] == {"joint_iters": 2, "ibug_uncovered_weight": 1.0}
