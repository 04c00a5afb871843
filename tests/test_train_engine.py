"""The shared training engine on a tiny regression task: config, exact resume after a
kill (in-process and a real SIGKILL of the CLI), NaN guard, checkpoint atomicity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from engine.errors import ModelFileError
from engine.train import (ConfigError, MethodBundle, StepResult, Trainer, TrainingDiverged,
                          load_config)
from engine.train.state import atomic_save, latest_checkpoint, load_checkpoint_file

REPO = Path(__file__).resolve().parents[1]


class _Regression(Dataset):
    """y = A x + noise with per-index seeds (deterministic whatever the worker/order)."""

    def __init__(self, n: int, nan_at: tuple[int, ...] = ()) -> None:
        self.n, self.nan_at = n, set(nan_at)
        g = torch.Generator().manual_seed(0)
        self.A = torch.randn(3, 8, generator=g)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(1000 + i)
        x = torch.randn(8, generator=g)
        y = self.A @ x + 0.1 * torch.randn(3, generator=g)
        if i in self.nan_at:
            x = x * float("nan")
        return {"x": x, "y": y}


class _Tiny(nn.Module):
    """MLP with dropout (so the resume test also checks the torch RNG state)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
        self.delay = delay

    def training_step(self, batch):
        if self.delay:
            time.sleep(self.delay)
        pred = self.net(batch["x"])
        loss = ((pred - batch["y"]) ** 2).mean()
        return StepResult(loss=loss, scalars={"mse": loss.detach()})


def build_tiny(cfg) -> MethodBundle:
    """Factory used by the CLI test as ``method=test_train_engine:build_tiny``."""
    opts = cfg.model
    return MethodBundle(_Tiny(delay=float(opts.get("delay", 0.0))),
                        _Regression(int(opts.get("n", 40)), tuple(opts.get("nan_at", ()))),
                        _Regression(8))


def _cfg(tmp: Path, **over) -> list[str]:
    base = {"method": "test_train_engine:build_tiny", "run_dir": str(tmp), "device": "cpu",
            "batch_size": 4, "max_steps": 12, "log_every": 1, "ckpt_every": 4,
            "keep_checkpoints": 0, "progress": "off", "tensorboard": False,
            "data.num_workers": 0, "optim.lr": 0.01, "image_every": 0}
    base.update(over)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(autouse=True)
def _tests_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def test_config_overrides_and_errors(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("method: mofa\noptim:\n  lr: 1.0e-3\nmodel:\n  backbone: resnet18\n")
    cfg = load_config(cfg_file, ["optim.lr=5e-4", "data.image_size=64", "model.width=0.5",
                                 "amp=off", "optim.betas=[0.5, 0.9]"])
    assert cfg.optim.lr == 5e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.data.image_size == 64 and cfg.amp == "off"
    assert cfg.model == {"backbone": "resnet18", "width": 0.5}
    assert cfg.optim.betas == (0.5, 0.9)
    with pytest.raises(ConfigError, match="optim.lrr"):
        load_config(cfg_file, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(cfg_file, ["optim.lr"])
    with pytest.raises(ConfigError, match="max_steps"):
        load_config(None, ["max_steps=abc"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_resume_from_fresh_objects_reproduces_losses(tmp_path):
    full = Trainer(load_config(None, _cfg(tmp_path / "a")))
    ref = full.train()["history"]
    assert [s for s, _ in ref] == list(range(1, 13))
    assert ref[-1][1] < ref[0][1]  # it learns

    # A second run that "dies" after step 8: its checkpoints at 4 and 8 are on disk.
    run_b = tmp_path / "b"
    t1 = Trainer(load_config(None, _cfg(run_b)))
    t1.train()
    (run_b / "checkpoints" / "ckpt_00000008.pt").unlink()
    (run_b / "checkpoints" / "ckpt_00000012.pt").unlink()
    # Scramble the global RNGs, as a new process would have them.
    torch.manual_seed(999)
    t2 = Trainer(load_config(None, _cfg(run_b)))
    resumed = t2.resume()
    assert resumed is not None and resumed.name == "ckpt_00000004.pt" and t2.step == 4
    hist = t2.train()["history"]
    assert hist == ref[4:]  # bit-identical losses for steps 5..12
    for p, q in zip(full.method.parameters(), t2.method.parameters()):
        assert torch.equal(p, q)
    # metrics.jsonl keeps one line per step after the resume truncation
    steps = [json.loads(x)["step"] for x in (run_b / "metrics.jsonl").read_text().splitlines()
             if "loss_step" in x]
    assert steps == list(range(1, 13))
    assert (run_b / "final.pt").is_file()


def test_cli_sigkill_and_resume(tmp_path):
    """Kill the real CLI process with SIGKILL mid-run; the resumed run matches exactly."""
    env = dict(os.environ, PYTHONPATH=f"{Path(__file__).parent}{os.pathsep}{REPO}")
    cmd = [sys.executable, "-m", "engine.train", "--resume", "auto"]
    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "kill"
    over = {"max_steps": 30, "ckpt_every": 5, "model.delay": 0.05}
    subprocess.run(cmd + _cfg(ref_dir, **over), env=env, check=True, cwd=REPO,
                   capture_output=True, timeout=120)
    proc = subprocess.Popen(cmd + _cfg(kill_dir, **over), env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (kill_dir / "checkpoints" / "ckpt_00000010.pt").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ckpt = latest_checkpoint(kill_dir / "checkpoints")
    assert ckpt is not None and int(ckpt.stem.split("_")[1]) < 30, "the kill came too late"
    out = subprocess.run(cmd + _cfg(kill_dir, **over), env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "resumed from" in out.stderr

    def losses(d: Path) -> list[tuple[int, float]]:
        recs = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss_step"]) for r in recs if "loss_step" in r]

    assert losses(kill_dir) == losses(ref_dir)
    assert len(losses(ref_dir)) == 30


def test_nan_guard_skips_and_aborts(tmp_path):
    # Item 3 of the 40 is NaN: batches containing it are skipped, not applied.
    t = Trainer(load_config(None, _cfg(tmp_path / "a", **{"model.nan_at": "[3]", "max_steps": 20})))
    before = [p.detach().clone() for p in t.method.parameters()]
    summary = t.train()
    assert summary["skipped_steps"] == 2  # 20 steps of 4 = two passes over 40 items
    assert all(torch.isfinite(p).all() for p in t.method.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, t.method.parameters()))
    # Every item NaN: abort after max_bad_steps consecutive bad steps.
    t = Trainer(load_config(None, _cfg(tmp_path / "b", **{
        "model.nan_at": str(list(range(40))), "max_bad_steps": 3})))
    with pytest.raises(TrainingDiverged, match="3 consecutive"):
        t.train()
    assert t.step == 3


def test_atomic_checkpoint_and_corrupt_file(tmp_path):
    p = atomic_save({"format": "engine.method/1", "method": "x", "model": {"w": torch.ones(2)}},
                    tmp_path / "c.pt")
    assert load_checkpoint_file(p)["model"]["w"].sum() == 2
    assert [x.name for x in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind
    # a dictionary without our format tag is not a checkpoint of this engine
    untagged = atomic_save({"model": {"w": torch.ones(2)}}, tmp_path / "untagged.pt")
    with pytest.raises(ModelFileError, match="not a checkpoint of this engine"):
        load_checkpoint_file(untagged)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="bad.pt"):
        load_checkpoint_file(bad)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_checkpoint_file(tmp_path / "nope.pt")


@pytest.mark.slow
def test_torchrun_ddp_on_cpu(tmp_path):
    """Two gloo ranks through torchrun: DDP trains, rank 0 checkpoints both ranks' RNGs."""
    env = dict(os.environ, PYTHONPATH=f"{Path(__file__).parent}{os.pathsep}{REPO}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "engine.train", "--resume", "none"] + _cfg(tmp_path, max_steps=6, ckpt_every=3)
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    # the start of stderr too: a rank's native abort message comes before torchrun's summary
    assert out.returncode == 0, out.stderr[:2500] + "\n...\n" + out.stderr[-1500:]
    data = load_checkpoint_file(tmp_path / "checkpoints" / "ckpt_00000006.pt")
    assert data["world_size"] == 2 and len(data["rng"]) == 2 and data["step"] == 6
    assert not torch.equal(data["rng"][0]["torch"], data["rng"][1]["torch"])  # per-rank seeds
    assert (tmp_path / "final.pt").is_file()


def test_data_sets_render_with_their_own_cpu_head(tmp_path):
    """The method's head moves with it (to CUDA, or another dtype); the synthetic data sets keep
    rendering on the CPU with their own copy (on a GPU, a shared head made the generator mix
    devices: every CUDA training step on synthetic data failed)."""
    from engine.methods.mofa import Mofa

    cfg = load_config(None, ["batch_size=2", "data.image_size=64", "data.n_samples=4", "data.val_samples=2",
                             "model.backbone=resnet10", "model.width=0.25", f"run_dir={tmp_path}"])
    bundle = Mofa.build_for_training(cfg)
    assert bundle.train_set.head is not bundle.model.head
    bundle.model.to(torch.float64)  # stands in for .to("cuda"): the shared head would follow
    item = bundle.train_set[0]
    assert item["image"].dtype == torch.float32 and torch.isfinite(item["image"]).all()
    assert bundle.val_set[0]["image"].shape == (3, 64, 64)
