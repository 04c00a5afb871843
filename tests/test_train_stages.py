"""Staged training on tiny CPU models: init_from (training checkpoint, run folder, float16
export), frozen parameter groups (weights, BatchNorm statistics, eval mode, optimiser),
learning-rate groups on top of a method's own param_groups, exact resume of a staged run,
grouped (B, T, ...) batches, and the configuration errors of these keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from engine.train import ConfigError, MethodBundle, StepResult, Trainer, load_config
from engine.train.state import load_checkpoint_file
from engine.train.trainer import batch_counts, export_checkpoint, to_device


class _Regression(Dataset):
    """y = A x + noise, deterministic per index."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.A = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(1000 + i)
        x = torch.randn(8, generator=g)
        return {"x": x, "y": self.A @ x + 0.1 * torch.randn(3, generator=g)}


class _Net(nn.Module):
    """encoder.backbone (Linear, BatchNorm, ReLU, Dropout) + encoder.head + encoder.head_aux."""

    def __init__(self, hidden: int = 16, nan_after: int = -1) -> None:
        super().__init__()
        self.nan_after, self.calls = nan_after, 0  # nan_after >= 0: NaN losses after that many steps
        self.encoder = nn.Module()
        self.encoder.backbone = nn.Sequential(nn.Linear(8, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                              nn.Dropout(0.2))
        self.encoder.head = nn.Linear(hidden, 3)
        self.encoder.head_aux = nn.Linear(hidden, 1)  # "encoder.head" must not match it

    def training_step(self, batch):
        h = self.encoder.backbone(batch["x"])
        pred = self.encoder.head(h)
        aux = self.encoder.head_aux(h).squeeze(-1)
        loss = ((pred - batch["y"]) ** 2).mean() + 0.1 * (aux ** 2).mean()
        if self.training:
            self.calls += 1
            if 0 <= self.nan_after < self.calls:
                loss = loss * float("nan")
        bn_training = torch.tensor(float(self.encoder.backbone[1].training))
        return StepResult(loss=loss, scalars={"bn_training": bn_training})


class _NetWithGroups(_Net):
    """A method with its own param_groups: the heads at half the learning rate."""

    def param_groups(self, lr: float):
        heads = list(self.encoder.head.parameters()) + list(self.encoder.head_aux.parameters())
        return [{"params": list(self.encoder.backbone.parameters())},
                {"params": heads, "lr_scale": 0.5}]


def build_staged(cfg) -> MethodBundle:
    """``method=test_train_stages:build_staged``; ``model.hidden`` changes the layer widths."""
    cls = _NetWithGroups if cfg.model.get("method_groups") else _Net
    model = cls(int(cfg.model.get("hidden", 16)), int(cfg.model.get("nan_after", -1)))
    return MethodBundle(model, _Regression(32), _Regression(6))


def _over(run_dir: Path, **over) -> list[str]:
    base = {"method": "test_train_stages:build_staged", "run_dir": str(run_dir), "device": "cpu",
            "batch_size": 4, "max_steps": 8, "log_every": 1, "ckpt_every": 4, "keep_checkpoints": 0,
            "progress": "off", "tensorboard": False, "data.num_workers": 0, "optim.lr": 0.01,
            "image_every": 0}
    base.update(over)
    return [f"{k}={v}" for k, v in base.items()]


def _trainer(run_dir: Path, **over) -> Trainer:
    return Trainer(load_config(None, _over(run_dir, **over)))


@pytest.fixture(autouse=True)
def _tests_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> Path:
    """A finished first-stage run: checkpoints at steps 4 and 8 plus final.pt."""
    run = tmp_path_factory.mktemp("stage1")
    _trainer(run).train()
    return run


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_file(path)["model"]


def test_init_from_checkpoint_run_folder_and_half_export(stage1, tmp_path):
    ckpt4 = stage1 / "checkpoints" / "ckpt_00000004.pt"
    # (a) a training checkpoint: every tensor equal, nothing else taken from it
    t = _trainer(tmp_path / "a")
    report = t.init_from(ckpt4)
    assert report["loaded"] == report["total"] == len(t.method.state_dict())
    assert report["missing"] == report["unexpected"] == report["mismatched"] == 0
    for k, v in t.method.state_dict().items():
        assert torch.equal(v, _weights(ckpt4)[k]), k
    assert t.step == 0 and not t.optimizer.state

    # (b) a run folder: its newest checkpoint (step 8)
    t = _trainer(tmp_path / "b")
    assert t.init_from(stage1)["source"].endswith("ckpt_00000008.pt")
    ref = _weights(stage1 / "checkpoints" / "ckpt_00000008.pt")
    assert all(torch.equal(v, ref[k]) for k, v in t.method.state_dict().items())

    # (c) an exported float16 file: cast back to the parameters' float32
    half = export_checkpoint(load_checkpoint_file(stage1 / "final.pt"), tmp_path / "half.pt", half=True)
    stored = _weights(half)
    assert stored["encoder.head.weight"].dtype == torch.float16
    t = _trainer(tmp_path / "c")
    assert t.init_from(half)["format"] == "engine.method/1"
    for k, v in t.method.state_dict().items():
        assert v.dtype == ref[k].dtype and torch.equal(v, stored[k].to(v.dtype)), k


def test_init_from_in_a_run_reports_partial_matches(stage1, tmp_path):
    # hidden=12: weights and BatchNorm buffers change shape; BatchNorm's counter and the two
    # heads' biases ((3,) and (1,)) still match by name and shape
    t = _trainer(tmp_path / "p", init_from=stage1, **{"model.hidden": 12})
    summary = t.train()
    rep = summary["init_from"]
    assert rep["loaded"] == 3 and rep["mismatched"] == 8 and rep["missing"] == rep["unexpected"] == 0
    assert "encoder.backbone.0.weight (16, 8) vs (12, 8)" in rep["mismatched_keys"]
    records = [json.loads(x) for x in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    init = [r for r in records if "init/loaded" in r]
    assert len(init) == 1 and init[0]["init/mismatched"] == 8 and init[0]["step"] == 0
    assert summary["step"] == 8  # the step count starts at 0, not at the source's 8

    with pytest.raises(ConfigError, match=r"init_strict=true: shape-mismatched encoder\.backbone\.0\.weight"):
        _trainer(tmp_path / "s", init_from=stage1, init_strict="true", **{"model.hidden": 12}).train()


def test_init_from_several_sources_in_order(stage1, tmp_path):
    """init_from as a list: each source in order, a later one's tensors replacing an earlier
    one's (here: everything from stage 1's step 4, then the heads of a hidden=12 run, whose
    backbone does not fit and stays step 4's); one report per source in metrics.jsonl."""
    other = tmp_path / "other"
    _trainer(other, max_steps=4, **{"model.hidden": 12}).train()
    ckpt4 = stage1 / "checkpoints" / "ckpt_00000004.pt"
    t = _trainer(tmp_path / "m", init_from=f"[{ckpt4}, {other}]", max_steps=0)
    assert t.cfg.init_from == [str(ckpt4), str(other)]
    t.run_dir.mkdir(parents=True, exist_ok=True)
    for src in t.cfg.init_from:
        t.init_from(src)
    first, second = _weights(ckpt4), _weights(other / "checkpoints" / "ckpt_00000004.pt")
    state = t.method.state_dict()
    assert torch.equal(state["encoder.backbone.0.weight"], first["encoder.backbone.0.weight"])
    assert torch.equal(state["encoder.head.bias"], second["encoder.head.bias"])
    assert not torch.equal(first["encoder.head.bias"], second["encoder.head.bias"])

    run = _trainer(tmp_path / "r", init_from=f"[{ckpt4}, {other}]", max_steps=2)
    run.train()
    records = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["init/source"] for r in records if "init/source" in r] == \
        [str(ckpt4), str(other / "checkpoints" / "ckpt_00000004.pt")]
    with pytest.raises(ConfigError, match="init_from must be a path or a non-empty list"):
        _trainer(tmp_path / "e", init_from="[]")


def test_freeze_keeps_weights_stats_and_eval_mode(tmp_path):
    t = _trainer(tmp_path / "f", freeze="[encoder.backbone]", max_steps=6)
    backbone = t.method.encoder.backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    head_before = t.method.encoder.head.weight.detach().clone()
    in_optimiser = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimiser for p in backbone.parameters())
    assert all(not p.requires_grad for p in backbone.parameters())
    t.train()
    for k, v in backbone.state_dict().items():  # weights, running_mean/var, num_batches_tracked
        assert torch.equal(v, before[k]), k
    assert not torch.equal(t.method.encoder.head.weight, head_before)
    assert not backbone.training and not backbone[1].training and not backbone[3].training
    t.method.train()  # an explicit .train() leaves the frozen part in eval mode
    assert not backbone[1].training and t.method.encoder.head.training
    rec = [json.loads(x) for x in (tmp_path / "f" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/bn_training"] for r in rec if "loss_step" in r] == [0.0] * 6  # during the step


def test_lr_groups_refine_the_methods_groups(tmp_path):
    groups = "[{match: encoder.head, lr_scale: 10.0, weight_decay: 0.0}]"
    t = _trainer(tmp_path / "g", **{"optim.name": "adamw", "optim.weight_decay": 0.1,
                                    "optim.schedule": "constant", "optim.groups": groups})
    by_name = {g["name"]: g for g in t.optimizer.param_groups}
    assert set(by_name) == {"default", "encoder.head"}
    assert by_name["encoder.head"]["lr"] == pytest.approx(0.1) and by_name["encoder.head"]["weight_decay"] == 0.0
    assert by_name["default"]["lr"] == pytest.approx(0.01) and by_name["default"]["weight_decay"] == 0.1
    head = {id(p) for p in t.method.encoder.head.parameters()}
    assert {id(p) for p in by_name["encoder.head"]["params"]} == head  # head_aux is not "encoder.head"
    t.train()
    rec = [json.loads(x) for x in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()
           if "loss_step" in x][-1]
    assert rec["lr/encoder.head"] == pytest.approx(0.1) and rec["lr/default"] == pytest.approx(0.01)

    # with the method's own groups (heads at 0.5 x lr): config scales multiply them
    t = _trainer(tmp_path / "m", **{"model.method_groups": "true", "optim.schedule": "constant",
                                    "optim.groups": "[{match: encoder.head, lr_scale: 4.0}]"})
    lrs = {g["name"]: g["lr"] for g in t.optimizer.param_groups}
    assert lrs == pytest.approx({"default": 0.01, "group1": 0.005, "group1:encoder.head": 0.02})


def test_staged_run_resumes_bit_identically(stage1, tmp_path):
    over = {"init_from": stage1 / "checkpoints" / "ckpt_00000004.pt", "freeze": "[encoder.backbone.0]",
            "optim.groups": "[{match: encoder.head_aux, lr_scale: 3.0}]", "max_steps": 12}
    full = _trainer(tmp_path / "full", **over)
    ref = full.train()["history"]

    run = tmp_path / "cut"
    _trainer(run, **over).train()
    for s in (8, 12):
        (run / "checkpoints" / f"ckpt_{s:08d}.pt").unlink()
    torch.manual_seed(123)  # a new process would have other global RNG states
    t = _trainer(run, **over)
    assert t.resume() is not None and t.step == 4
    summary = t.train()
    assert summary["init_from"] is None  # the resumed run kept its own weights
    assert summary["history"] == ref[4:]
    for (n, p), q in zip(full.method.named_parameters(), t.method.parameters()):
        assert torch.equal(p, q), n
    for k, v in full.method.state_dict().items():
        assert torch.equal(v, t.method.state_dict()[k]), k
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert sum("init/loaded" in x for x in lines) == 1


class _Clips(Dataset):
    """Item i: ``image`` (T, 3, S, S) frames of one toy clip, ``target`` (T, 3), ``value``."""

    def __init__(self, n: int, frames: int = 3, size: int = 8) -> None:
        self.n, self.T, self.S = n, frames, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(50 + i)
        base = torch.rand(3, self.S, self.S, generator=g)
        img = base + 0.05 * torch.randn(self.T, 3, self.S, self.S, generator=g)
        return {"image": img, "target": img.mean(dim=(-1, -2)), "value": torch.tensor(float(i))}


class _ClipToy(nn.Module):
    """Per-frame encoder on (B*T, 3, S, S) plus a clip-consistency term over T."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(4, 3)

    def training_step(self, batch):
        x = batch["image"]
        B, T = x.shape[:2]
        f = self.conv(x.flatten(0, 1)).relu().mean((-1, -2))
        pred = self.fc(self.drop(f)).view(B, T, 3)
        fit = ((pred - batch["target"]) ** 2).mean()
        consistency = (pred - pred.mean(1, keepdim=True)).pow(2).mean()
        return StepResult(fit + 0.1 * consistency,
                          {"consistency": consistency.detach(), "value": batch["value"].mean()})


def build_clips(cfg) -> MethodBundle:
    return MethodBundle(_ClipToy(), _Clips(10), _Clips(5))


def test_grouped_batches_train_resume_and_count_images(tmp_path):
    over = {"method": "test_train_stages:build_clips", "batch_size": 2, "max_steps": 8}
    full = _trainer(tmp_path / "full", **over)
    summary = full.train()
    assert summary["images_seen"] == 8 * 2 * 3  # B*T images per step, not B items
    rec = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rec if "loss_step" in r]
    assert [r["images_seen"] for r in steps] == [6 * s for s in range(1, 9)]
    assert all(r["images_per_s"] > 0 for r in steps)
    # evaluation weights by items: 5 items in batches of 2, 2, 1 -> the exact mean of 0..4
    final = [r for r in rec if "val/value" in r][-1]
    assert final["val/value"] == pytest.approx(2.0)

    run = tmp_path / "cut"
    _trainer(run, **over).train()
    (run / "checkpoints" / "ckpt_00000008.pt").unlink()
    torch.manual_seed(7)
    t = _trainer(run, **over)
    assert t.resume() is not None and t.step == 4 and t.images_seen == 24
    resumed = t.train()
    assert resumed["history"] == summary["history"][4:] and resumed["images_seen"] == 48
    assert all(torch.equal(p, q) for p, q in zip(full.method.parameters(), t.method.parameters()))


def test_batch_counts_and_channels_last_on_grouped_tensors():
    batch = {"image": torch.rand(2, 3, 3, 16, 16), "landmarks": torch.rand(2, 3, 68, 2)}
    assert batch_counts(batch) == (2, 6)
    assert batch_counts({"x": torch.rand(5, 8)}) == (5, 5)
    assert batch_counts((torch.rand(4, 3, 16, 16), torch.rand(4))) == (4, 4)
    moved = to_device(batch, torch.device("cpu"), channels_last=True)
    assert torch.equal(moved["image"], batch["image"]) and torch.equal(moved["landmarks"], batch["landmarks"])
    flat = moved["image"].view(6, 3, 16, 16)  # a view, no copy
    assert flat.is_contiguous(memory_format=torch.channels_last)
    assert moved["landmarks"].is_contiguous()  # not image-like: left alone
    four = to_device(torch.rand(2, 3, 16, 16), torch.device("cpu"), channels_last=True)
    assert four.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("over, message", [
    ({"freeze": "[encoder.nothing]"}, "freeze prefix 'encoder.nothing' matches no parameter or module"),
    ({"freeze": "[encoder]"}, "leaves no trainable parameter"),
    ({"optim.groups": "[{match: encoder.head, lr_scal: 2}]"}, r"unknown config key\(s\) optim.groups\[0\].lr_scal"),
    ({"optim.groups": "[{match: decoder}]"}, r"optim.groups\[0\].match 'decoder' matches no trainable"),
    ({"optim.groups": "[{match: encoder.head, lr_scale: -1}]"}, r"optim.groups\[0\].lr_scale' must be a finite number > 0"),
    ({"freeze": "[encoder.head]", "optim.groups": "[{match: encoder.head}]"}, "matches no trainable"),
    ({"init_from": "/nonexistent/run"}, "init_from=/nonexistent/run does not exist"),
])
def test_bad_stage_configs(tmp_path, over, message):
    with pytest.raises(ConfigError, match=message) as err:
        _trainer(tmp_path, **over).train()
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_resume_with_another_group_layout_is_refused(stage1, tmp_path):
    import shutil

    shutil.copytree(stage1, tmp_path / "r")
    t = _trainer(tmp_path / "r", freeze="[encoder.backbone]")
    with pytest.raises(ConfigError, match="other optimiser groups .* use init_from="):
        t.resume()


def test_init_from_folder_without_checkpoints(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="folder without checkpoints"):
        _trainer(tmp_path / "r", init_from=tmp_path / "empty").train()
