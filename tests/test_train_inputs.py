"""Training inputs are validated and safe: checkpoints never run code (weights_only, in the
zip and the legacy format, through the library and the CLI), RNG states load without
numpy objects, older checkpoints still load, bad config values are one error line,
divergence is one error line, and images that went bad after indexing are counted."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from engine.errors import ModelFileError
from engine.train import MethodBundle, StepResult, Trainer, load_config
from engine.train.__main__ import main
from engine.train.state import atomic_save, load_checkpoint_file, rng_state, set_rng_state

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = REPO / "engine" / "assets" / "mofa_open_default.pt"


class _Payload:
    """Unpickling this object calls ``os.mkdir(marker)``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _evil(path: Path, marker: Path, legacy: bool = False) -> Path:
    data = {"format": "engine.train/1", "method": "x", "model": {"w": torch.ones(2)},
            "payload": _Payload(marker)}
    torch.save(data, path, _use_new_zipfile_serialization=not legacy)
    return path


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=f"{Path(__file__).parent}{os.pathsep}{REPO}", OMP_NUM_THREADS="1")


def _cli_over(run_dir: Path, **over) -> list[str]:
    base = {"method": "test_train_stages:build_staged", "run_dir": str(run_dir), "device": "cpu",
            "batch_size": 4, "max_steps": 4, "log_every": 1, "ckpt_every": 4, "keep_checkpoints": 0,
            "progress": "off", "tensorboard": False, "data.num_workers": 0, "optim.lr": 0.01,
            "image_every": 0}
    base.update(over)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(autouse=True)
def _tests_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_malicious_file_is_refused(tmp_path, legacy):
    # control: the payload is live - a plain unpickling runs it
    control = _evil(tmp_path / "control.pt", tmp_path / "control_marker", legacy)
    torch.load(control, weights_only=False)
    assert (tmp_path / "control_marker").exists()

    marker = tmp_path / "marker"
    evil = _evil(tmp_path / "e.pt", marker, legacy)
    with pytest.raises(ModelFileError) as err:
        load_checkpoint_file(evil)
    msg = str(err.value)
    assert not marker.exists()
    assert "\n" not in msg and len(msg) < 200, msg
    assert str(evil) in msg and "not a checkpoint of this engine" in msg and "disallowed" in msg
    assert "posix.mkdir" in msg


def test_cli_export_and_resume_refuse_malicious_files(tmp_path, capsys):
    marker = tmp_path / "marker"
    # a real process: python -m engine.train export EVIL OUT
    evil = _evil(tmp_path / "legacy.pt", marker, legacy=True)
    out = tmp_path / "out.pt"
    proc = subprocess.run([sys.executable, "-m", "engine.train", "export", str(evil), str(out)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert f"{evil} is not a checkpoint of this engine" in lines[0] and "disallowed" in lines[0]
    assert not out.exists() and not marker.exists() and proc.stdout == ""
    # the same entry point in this process: export and --resume with a zip-format file
    evil = _evil(tmp_path / "zip.pt", marker)
    run = tmp_path / "run"
    for argv in (["export", str(evil), str(out)], ["--resume", str(evil)] + _cli_over(run)):
        with pytest.raises(SystemExit) as ex:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert ex.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
        assert f"{evil} is not a checkpoint of this engine" in err[0]
        assert not marker.exists() and not out.exists() and not (run / "checkpoints").exists()


def test_export_rejects_files_that_are_not_our_checkpoints(tmp_path, capsys):
    cases = {
        "untagged.pt": ({"model": {"w": torch.ones(2)}}, "not a checkpoint of this engine"),
        "partial.pt": ({"format": "engine.train/1", "method": "x", "model": {"w": torch.ones(2)}},
                       "not a complete engine.train/1 checkpoint (it lacks config, optimizer"),
        "list.pt": ([torch.ones(2)], "not a checkpoint of this engine"),
        "noweights.pt": ({"format": "engine.method/1", "method": "x", "model": {"w": [1, 2]}},
                         "has no weights dictionary"),
    }
    for name, (obj, message) in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(SystemExit) as ex:
            main(["export", str(tmp_path / name), str(tmp_path / "out.pt")])
        err = capsys.readouterr().err.strip().splitlines()
        assert ex.value.code == 2 and len(err) == 1 and message in err[0], err
        assert not (tmp_path / "out.pt").exists()
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "text.pt"), str(tmp_path / "out.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not be read" in err[0]


def test_rng_state_is_plain_data_and_roundtrips(tmp_path):
    random.gauss(0, 1)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = rng_state()
    path = atomic_save({"rng": state}, tmp_path / "rng.pt")
    loaded = torch.load(path, weights_only=True)["rng"]  # no allow-list needed
    draws = (random.random(), random.gauss(0, 1), np.random.randn(), np.random.rand(), torch.rand(3))
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    set_rng_state(loaded)
    again = (random.random(), random.gauss(0, 1), np.random.randn(), np.random.rand(), torch.rand(3))
    assert draws[:4] == again[:4] and torch.equal(draws[4], again[4])


def test_older_checkpoints_still_load(tmp_path):
    if DEFAULT_CKPT.is_file():  # the committed exported file (float16 weights)
        data = load_checkpoint_file(DEFAULT_CKPT, kinds=("export",))
        assert data["format"] == "engine.method/1" and data["method"] == "mofa"
        assert torch.load(DEFAULT_CKPT, weights_only=True)["step"] == data["step"]

    # A training checkpoint as the engine wrote it before: numpy's state as a tuple with
    # an ndarray, python's as random.getstate(). It resumes bit-for-bit.
    from test_train_stages import _over

    cfg = load_config(None, _over(tmp_path / "ref"))
    ref = Trainer(cfg).train()["history"]
    run = tmp_path / "old"
    Trainer(load_config(None, _over(run))).train()
    (run / "checkpoints" / "ckpt_00000008.pt").unlink()
    ck = run / "checkpoints" / "ckpt_00000004.pt"
    data = torch.load(ck, weights_only=True)
    r = data["rng"][0]
    r["python"] = (r["python"]["version"], tuple(r["python"]["words"].tolist()), r["python"]["gauss"])
    n = r["numpy"]
    r["numpy"] = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    for key in ("images_seen", "skipped_images"):
        del data[key]
    torch.save(data, ck)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(ck, weights_only=True)  # needs numpy's array reconstruction
    t = Trainer(load_config(None, _over(run)))
    assert t.resume() == ck and t.step == 4
    assert t.train()["history"] == ref[4:]

    # that narrow allowance is for training checkpoints only
    odd = {"format": "engine.method/1", "method": "x", "model": {"w": torch.ones(1)},
           "extra": np.zeros(3, np.uint32)}
    torch.save(odd, tmp_path / "odd.pt")
    with pytest.raises(ModelFileError, match="disallowed objects"):
        load_checkpoint_file(tmp_path / "odd.pt")


BAD_VALUES = [
    ("batch_size=0", "'batch_size' must be an integer >= 1"),
    ("batch_size=2.5", "'batch_size' must be of type int"),
    ("max_steps=-5", "'max_steps' must be an integer >= 0 (0 = nothing to train)"),
    ("optim.lr=nan", "'optim.lr' must be a finite number > 0"),
    ("optim.lr=inf", "'optim.lr' must be a finite number > 0"),
    ("optim.lr=0", "'optim.lr' must be a finite number > 0"),
    ("optim.lr=-1e-3", "'optim.lr' must be a finite number > 0"),
    ("optim.weight_decay=-0.1", "'optim.weight_decay' must be a finite number >= 0"),
    ("optim.weight_decay=inf", "'optim.weight_decay' must be a finite number >= 0"),
    ("optim.grad_clip=-1", "'optim.grad_clip' must be a finite number >= 0"),
    ("optim.warmup_steps=-1", "'optim.warmup_steps' must be an integer >= 0"),
    ("optim.min_lr_ratio=1.5", "'optim.min_lr_ratio' must be a finite number in [0, 1]"),
    ("optim.betas=[0.9, 1.0]", "'optim.betas[1]' must be a finite number in [0, 1)"),
    ("optim.name=rmsprop", "'optim.name' must be one of adam, adamw, sgd"),
    ("optim.schedule=linear", "'optim.schedule' must be one of constant, cosine"),
    ("log_every=0", "'log_every' must be an integer >= 1"),
    ("ckpt_every=-1", "'ckpt_every' must be an integer >= 0"),
    ("keep_checkpoints=-2", "'keep_checkpoints' must be an integer >= 0"),
    ("max_bad_steps=0", "'max_bad_steps' must be an integer >= 1"),
    ("data.num_workers=-1", "'data.num_workers' must be an integer >= 0"),
    ("data.image_size=8", "'data.image_size' must be an integer >= 16"),
    ("data.n_samples=-1", "'data.n_samples' must be an integer >= 0"),
    ("data.val_samples=-1", "'data.val_samples' must be an integer >= 0"),
    ("amp=fp8", "'amp' must be one of auto, off, bf16, fp16"),
    ("device=gpu", "'device' must be auto, cpu, cuda or cuda:N"),
    ("freeze=encoder", "'freeze' must be a list"),
]


@pytest.fixture
def cfg_file(tmp_path) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text("method: test_train_stages:build_staged\ndevice: cpu\nprogress: 'off'\n"
                 f"tensorboard: false\nrun_dir: {tmp_path / 'run'}\ndata:\n  num_workers: 0\n")
    return p


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_config_values_are_one_error_line(cfg_file, capsys, override, message):
    with pytest.raises(SystemExit) as ex:
        main(["--config", str(cfg_file), override])
    err = capsys.readouterr().err.strip().splitlines()
    assert ex.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: config key ") and message in err[0], err[0]
    assert not (cfg_file.parent / "run").exists()


def test_bad_config_value_in_a_real_process_and_max_steps_zero(cfg_file):
    proc = subprocess.run([sys.executable, "-m", "engine.train", "--config", str(cfg_file), "batch_size=0"],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: config key 'batch_size' must be an integer >= 1 (items per process and step), got 0"]
    assert main(["--config", str(cfg_file), "max_steps=0"]) == 0
    assert not (cfg_file.parent / "run").exists()


def test_divergence_is_one_error_line(tmp_path, capsys):
    # two good steps (checkpoints 1 and 2), then NaN losses: abort after 3 bad steps
    with pytest.raises(SystemExit) as ex:
        main(["--resume", "auto"] + _cli_over(tmp_path, **{"model.nan_after": 2, "max_steps": 20,
                                                           "max_bad_steps": 3, "ckpt_every": 1}))
    err = capsys.readouterr().err.strip().splitlines()
    assert ex.value.code == 2 and err[-1].startswith("error: training diverged: 3 consecutive"), err
    assert all(x.startswith("warning: non-finite") for x in err[:-1]) and len(err) == 4
    assert "check the data for NaN/inf" in err[-1] and "lower optim.lr" in err[-1]
    assert f"--resume {tmp_path / 'checkpoints' / 'ckpt_00000002.pt'}" in err[-1]
    rec = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rec[-1] == {"step": 5, "diverged": True, "skipped_steps": 3}
    # no good step at all: nothing to resume from
    with pytest.raises(SystemExit):
        main(["--resume", "none"] + _cli_over(tmp_path / "b", **{"model.nan_after": 0,
                                                                 "max_bad_steps": 2}))
    assert "then restart the run with a lower optim.lr" in capsys.readouterr().err


def test_resume_with_a_new_learning_rate_uses_it(tmp_path, capsys):
    over = {"optim.schedule": "constant", "ckpt_every": 2}
    assert main(["--resume", "auto"] + _cli_over(tmp_path, **over)) == 0
    assert main(["--resume", "auto"] + _cli_over(tmp_path, **over, **{"optim.lr": 1e-3,
                                                                       "max_steps": 6})) == 0
    assert "resumed from" in capsys.readouterr().err
    rec = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if "loss_step" in x]
    assert [r["step"] for r in rec] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in rec] == pytest.approx([0.01] * 4 + [1e-3] * 2)


class _Pixels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))

    def training_step(self, batch):
        img = batch["image"]
        loss = ((img.mean((-1, -2)) - self.w) ** 2).mean()
        return StepResult(loss=loss)


def build_folder_toy(cfg) -> MethodBundle:
    from engine.data import ImageFolderFaces

    return MethodBundle(_Pixels(), ImageFolderFaces(cfg.data.root, cfg.data.image_size))


@pytest.mark.parametrize("workers", [0, 1])
def test_images_unreadable_after_indexing_are_counted(tmp_path, capsys, workers):
    from engine.data.folders import INDEX_NAME

    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    lm = np.stack(np.meshgrid(np.linspace(30, 70, 17), np.linspace(30, 70, 4)), -1).reshape(-1, 2)[:68]
    names = [f"f{i}.png" for i in range(5)]
    for n in names:
        Image.fromarray(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)).save(root / n)
    np.savez(root / INDEX_NAME, paths=np.array(names), landmarks=np.array([lm] * 5, np.float32),
             status=np.array(["ok"] * 5))
    (root / "f2.png").write_bytes(b"\x89PNG truncated after indexing")
    run = tmp_path / "run"
    # one batch = the 5 items of an epoch, so each of the 2 steps meets the broken file once
    assert main(["--resume", "none", "method=test_train_inputs:build_folder_toy", f"run_dir={run}",
                 "device=cpu", "batch_size=5", "max_steps=2", "log_every=1", "ckpt_every=0",
                 "progress=off", "tensorboard=false", "image_every=0", f"data.root={root}",
                 "data.image_size=16", f"data.num_workers={workers}"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["skipped_images"] == 2
    assert "2 training image(s) could not be read" in out.err
    rec = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "loss_step" in x]
    assert [r["data/skipped_images"] for r in rec] == [1, 2]


def test_every_shipped_config_loads_and_validates():
    """train/configs/*.yaml: each parses into a validated TrainConfig (keys, ranges, data options)."""
    from pathlib import Path

    from engine.train.config import load_config

    configs = sorted((Path(__file__).resolve().parents[1] / "train" / "configs").glob("*.yaml"))
    assert len(configs) >= 5
    for path in configs:
        cfg = load_config(path)
        assert cfg.max_steps > 0 and cfg.data.image_size > 0, path
