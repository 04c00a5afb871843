"""One method registry: what `python -m engine methods` lists is what reconstruct, the
evaluation CLI, the trainer and the Blender panel accept; a new learned method plugs into all
of them through one module (here written to a temporary folder and registered at run time)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import UserError
from engine.methods import build_predictor, get_method, registry

ROOT = Path(__file__).resolve().parents[1]


def test_registry_lists_fit_hybrid_mofa_deca_without_importing_them():
    names = registry.names()
    assert names[:4] == ["fit", "hybrid", "mofa", "deca"]
    assert get_method("learned").name == "mofa"  # alias kept for earlier scripts and .blend files
    mofa = get_method("mofa")
    assert mofa.kind == "learned" and mofa.trainable and mofa.train_config == "train/configs/mofa.yaml"
    with pytest.raises(UserError, match="unknown method 'nope'; choose one of fit, hybrid, mofa, deca"):
        get_method("nope")
    # the registry file needs neither torch nor the engine package (Blender's Python has neither)
    code = ("import sys, importlib.util as u; s = u.spec_from_file_location('r', sys.argv[1]); "
            "m = u.module_from_spec(s); sys.modules['r'] = m; s.loader.exec_module(m); "
            "print(','.join(x.name for x in m.methods())); print('torch' in sys.modules, 'engine' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "engine" / "methods" / "registry.py")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [",".join(names), "False", "False"]


def test_cli_and_blender_menu_come_from_the_registry():
    from blender_addon.runner import load_method_registry

    proc = subprocess.run([sys.executable, "-m", "engine", "methods", "--json"], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    listed = [m["name"] for m in json.loads(proc.stdout)]
    assert listed == registry.names()
    assert [m.name for m in load_method_registry(ROOT).methods()] == listed
    helptext = subprocess.run([sys.executable, "-m", "engine", "reconstruct", "--help"], capture_output=True,
                              text=True, cwd=ROOT, check=True).stdout
    assert "{" + ",".join(registry.names(include_aliases=True)) + "}" in " ".join(helptext.split())


_TINY_METHOD = '''
"""A deliberately small learned method: a 2-layer CNN predicting pose, translation and 4
identity modes, decoded by the shared decoder with a constant skin albedo."""
from dataclasses import dataclass, field

import torch
from torch import nn

from engine.face import FaceParams
from engine.losses.terms import LossInputs, weighted_sum
from engine.methods.base import LearnedMethod, flatten_groups
from engine.render import PerspectiveCamera, axis_angle_to_matrix, frontal_rotation
from engine.train.method import StepResult


@dataclass
class TinyConfig:
    head_model: str = "open"
    head_model_path: str = ""
    image_size: int = 48
    losses: dict = field(default_factory=lambda: {"photometric": 1.0, "landmark": 50.0, "identity_prior": 1e-3})


class Tiny(LearnedMethod):
    name, config_class = "tiny", TinyConfig

    def __init__(self, cfg, head=None):
        super().__init__(cfg, head)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out = nn.Linear(8, 10)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def encode(self, images):
        return self.out(self.net(images))

    def decode(self, code):
        B, head, S = code.shape[0], self.head, self.cfg.image_size
        ident = code.new_zeros(B, head.n_identity)
        ident[:, :4] = code[:, :4] * head.identity_std[:4]
        R = frontal_rotation(device=code.device) @ axis_angle_to_matrix(code[:, 4:7])
        t = torch.tensor([0.0, 0.0, 0.9], device=code.device) + code[:, 7:10] * 0.1
        K = torch.tensor([[3.375 * S, 0, S / 2], [0, 3.375 * S, S / 2], [0, 0, 1.0]], device=code.device)
        sh = code.new_zeros(B, 9, 3)
        sh[:, 0] = 1.0 / 0.886227
        return FaceParams(identity=ident, expression=code.new_zeros(B, head.n_expression),
                          pose=code.new_zeros(B, head.n_joints, 3), camera=PerspectiveCamera(K.expand(B, 3, 3), R, t, (S, S)),
                          sh=sh, albedo=code.new_tensor([0.6, 0.45, 0.4]).expand(B, head.n_vertices, 3))

    def training_step(self, batch):
        batch = flatten_groups(batch)
        params = self.decode(self.encode(batch["image"]))
        dec = self.decoder(params)
        inputs = LossInputs(dec, observed=dec.sample(batch["image"]), photo_weights=self.visibility(dec),
                            landmarks=batch["landmarks"], landmark_scale=float(self.cfg.image_size))
        total, terms = weighted_sum(self.cfg.losses, inputs)
        return StepResult(total.mean(), {k: v.mean().detach() for k, v in terms.items()},
                          {"params": params.detach(), "images": batch["image"]})
'''


@pytest.fixture()
def tiny_method(tmp_path, monkeypatch):
    (tmp_path / "tiny_method.py").write_text(textwrap.dedent(_TINY_METHOD))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = registry.MethodSpec(name="tiny", kind="learned", label="Tiny", description="test method",
                               module="tiny_method", entry="Tiny", needs="a checkpoint")
    registry.register(spec)
    yield spec
    registry._REGISTERED.pop("tiny", None)


def test_a_new_learned_method_trains_and_reconstructs_through_the_registry(tiny_method, tmp_path, astronaut_png):
    from engine.head import load_head_model
    from engine.reconstruct import reconstruct
    from engine.train import Trainer, load_config

    assert "tiny" in registry.names()
    cfg = load_config(None, ["method=tiny", f"run_dir={tmp_path / 'run'}", "device=cpu", "batch_size=2",
                             "max_steps=3", "data.image_size=48", "data.n_samples=4", "data.val_samples=2",
                             "data.num_workers=0", "progress=off", "tensorboard=false", "image_every=0",
                             "log_every=1", "ckpt_every=3"])
    trainer = Trainer(cfg)
    summary = trainer.train()
    trainer.close()
    assert summary["step"] == 3 and (tmp_path / "run" / "final.pt").is_file()
    head = load_head_model("open")
    learned = build_predictor("tiny", head, checkpoint=tmp_path / "run" / "final.pt")
    assert learned.name == "tiny"
    res = reconstruct(astronaut_png, tmp_path / "out", method="hybrid", init="tiny",
                      checkpoint=tmp_path / "run" / "final.pt")
    assert res.params["method"] == "hybrid" and res.params["init_method"] == "tiny"
    assert {"network", "refine"} <= set(res.estimate.timings)
    with pytest.raises(UserError, match="not a tiny checkpoint.*'mofa'"):
        build_predictor("tiny", head, checkpoint=ROOT / "engine" / "assets" / "mofa_open_default.pt")
    with pytest.raises(UserError, match="needs --checkpoint"):
        build_predictor("tiny", head)


def test_the_fit_and_hybrid_are_not_trainable(tmp_path):
    from engine.train import ConfigError, Trainer, load_config

    with pytest.raises(ConfigError, match="'fit' \\(fit\\) has nothing to train; trainable methods: mofa, deca"):
        Trainer(load_config(None, ["method=fit", f"run_dir={tmp_path}", "device=cpu"]))
    with pytest.raises(ConfigError, match="unknown method 'nope'; trainable methods: mofa, deca"):
        Trainer(load_config(None, ["method=nope", f"run_dir={tmp_path}", "device=cpu"]))


def test_hybrid_schedule_replaces_the_fits_stages_with_its_own():
    """The hybrid skips the PnP start and pose-only stage and takes its own landmark,
    reweighted-ℓ1 and joint step counts; the fit's own counts stay for the fit."""
    from engine.fitting import FitConfig
    from engine.fitting import changed_fields
    from engine.methods.hybrid import SCHEDULE_FIELDS, hybrid_config

    base = FitConfig(hybrid_shape_iters=3, hybrid_reweight_iters=4, hybrid_joint_iters=5)
    cfg = hybrid_config(base)
    assert (cfg.pose_iters, cfg.shape_iters, cfg.expression_reweight_iters, cfg.joint_iters) == (0, 3, 4, 5)
    # the hybrid guesses its intrinsics as the fit does; a plain fit from an init keeps the init's
    assert (base.init_intrinsics, cfg.init_intrinsics) == ("init", "guess")
    assert hybrid_config(FitConfig(hybrid_intrinsics="init")).init_intrinsics == "init"
    assert (base.shape_iters, base.expression_reweight_iters, base.joint_iters) == (40, 20, 30)
    # SCHEDULE_FIELDS (what `reconstruct --fit-option` refuses for a hybrid) is what it replaces
    assert set(changed_fields(cfg)) - set(changed_fields(base)) == set(SCHEDULE_FIELDS)


def test_a_lost_detector_leaves_the_hybrid_with_its_networks_geometry():
    """Landmarks that disagree with the learned start by more than ``hybrid_lost_landmarks``
    of their box (a detector lost on a profile or an occluded face) are not followed: the
    hybrid keeps the start's shape, expression and pose and fits the appearance only; with
    landmarks that agree it fits as before. The disagreement is reported in its losses."""
    from engine.face import FaceDecoder
    from engine.generator import SyntheticConfig, render_sample
    from engine.head import load_head_model
    from engine.methods import build_predictor
    from engine.methods.base import FaceObservation
    from engine.methods.hybrid import landmark_disagreement

    model = load_head_model("open")
    hybrid = build_predictor("hybrid", model)
    sample = render_sample(model, 3, SyntheticConfig(image_size=224))
    good = FaceObservation(sample.image, sample.landmarks2d.numpy())
    lm = good.landmarks68
    centre = lm.mean(0)
    turned = lm.copy()  # each point where its mirror partner is (left for right): a lost detector
    turned[:, 0] = 2.0 * centre[0] - lm[:, 0]
    lost = FaceObservation(sample.image, turned)
    assert landmark_disagreement(hybrid.init(good), model, lm) < 0.08
    start = hybrid.init(lost)  # (the network's crop follows the landmarks)
    assert landmark_disagreement(start, model, turned) > 0.12

    followed, kept = hybrid(good), hybrid(lost)
    assert followed.losses["landmarks_lost"] == 0.0 and kept.losses["landmarks_lost"] == 1.0
    assert kept.losses["landmark_disagreement"] > 0.12
    assert torch.allclose(kept.identity, start.identity, atol=1e-5)
    assert torch.allclose(kept.expression, start.expression, atol=1e-5)
    assert not torch.equal(followed.identity, hybrid.init(good).identity)
    # the geometry is the start's: the same landmarks in the photo (the camera's intrinsics are
    # guessed anew, its translation moved so the head projects to the same place)
    a = FaceDecoder(model)(kept).landmarks2d[0]
    b = FaceDecoder(model)(start).landmarks2d[0]
    assert (a - b).norm(dim=-1).median() < 1.5
    assert kept.albedo is not None  # the appearance was fitted
