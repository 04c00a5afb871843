"""DECA's coarse stage (issue #14, part 1): the registered method ``deca`` and its loss terms
(eye closure, identity, shape consistency), a tiny training run and the checkpoint round trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.losses.terms import TERMS, LossInputs, identity_distance, swap_group_identities
from engine.methods import build_predictor, get_method, registry

ROOT = Path(__file__).resolve().parents[1]
S = 64  # crop size of the tests' networks


@pytest.fixture(scope="module")
def deca():
    from engine.methods.deca import Deca, DecaConfig

    torch.manual_seed(0)
    return Deca(DecaConfig(backbone="resnet10", width=0.25, image_size=S, visibility_size=32)).eval()


def _face_recognition_net():
    from engine.encoders import load_face_recognition_net
    from engine.errors import ModelFileError

    try:
        return load_face_recognition_net()
    except ModelFileError as exc:
        pytest.skip(f"identity network not installed: {exc}")


def _blink(deca, params, amount: float):
    """``params`` with both eyes closed by ``amount`` (ARKit eyeBlinkLeft/Right)."""
    names = deca.head.expression_names
    expr = params.expression.clone()
    expr[:, [names.index("eyeBlinkLeft"), names.index("eyeBlinkRight")]] = amount
    return params.replace(expression=expr)


def test_deca_is_registered_for_training_and_inference():
    from engine.methods.deca import Deca

    spec = get_method("deca")
    assert spec.kind == "learned" and spec.trainable and spec.train_config == "train/configs/deca_coarse.yaml"
    assert (ROOT / spec.train_config).is_file() and (ROOT / "train/configs/deca_coarse_stage2.yaml").is_file()
    assert registry.load_entry(spec) is Deca and "deca" in registry.names()
    helptext = subprocess.run([sys.executable, "-m", "engine", "reconstruct", "--help"], capture_output=True,
                              text=True, cwd=ROOT, check=True).stdout
    assert "deca" in helptext
    listed = subprocess.run([sys.executable, "-m", "engine", "methods"], capture_output=True, text=True, cwd=ROOT,
                            check=True).stdout
    assert "deca_coarse.yaml" in listed


def test_eye_closure_matches_eyelid_gaps(deca):
    code = deca.layout.zeros(1)
    opened = deca.decode(code)
    closed = _blink(deca, opened, 1.0)
    target_closed = deca.decoder(closed).landmarks2d.detach()

    def loss(params, target):
        dec = deca.decoder(params)
        return TERMS["eye_closure"](LossInputs(dec, landmarks=target, landmark_scale=float(S)))

    assert float(loss(closed, target_closed)) == pytest.approx(0.0, abs=1e-7)  # equal eyelids: zero
    open_err = float(loss(opened, target_closed))
    half_err = float(loss(_blink(deca, opened, 0.5), target_closed))
    assert open_err > half_err > 0.0  # closing the model's eyes towards closed targets lowers it
    # and the gradient on the blink units points towards closing them
    expr = opened.expression.clone().requires_grad_(True)
    loss(opened.replace(expression=expr), target_closed).sum().backward()
    names = deca.head.expression_names
    assert float(expr.grad[0, names.index("eyeBlinkLeft")]) < 0 and float(expr.grad[0, names.index("eyeBlinkRight")]) < 0
    # landmarks the detector did not see leave their pairs out
    w = torch.ones(68)
    w[[37, 38, 43, 44]] = 0.0
    dec = deca.decoder(opened)
    assert float(TERMS["eye_closure"](LossInputs(dec, landmarks=target_closed, landmark_weights=w))) == 0.0


def _synthetic(seed: int, size: int = S):
    from engine.generator import SyntheticConfig, render_sample
    from engine.head import load_head_model

    s = render_sample(load_head_model("open"), seed, SyntheticConfig(image_size=size))
    return torch.from_numpy(s.image).permute(2, 0, 1).float()[None] / 255.0, s.landmarks2d.float()[None]


def test_identity_loss_zero_for_same_face_larger_for_another_and_reaches_the_render():
    net = _face_recognition_net()
    img_a, lm_a = _synthetic(0, 150)
    img_b, lm_b = _synthetic(7, 150)
    same = float(identity_distance(img_a, img_a, lm_a, net))
    assert same == pytest.approx(0.0, abs=1e-5)
    other = float(identity_distance(img_b, img_a, lm_a, net))  # another face, chips from the target landmarks
    # the generator's faces look alike to dlib (descriptor distances 0.3-0.5, below its 0.6
    # same-person threshold; 1 - cos 0.02-0.07 between seeds), so the margin is modest
    assert other > 0.01 and other > 1000 * max(same, 1e-6)
    render = img_b.clone().requires_grad_(True)
    identity_distance(render, img_a, lm_a, net).sum().backward()
    assert render.grad is not None and float(render.grad.abs().sum()) > 0
    assert net.fc.weight.grad is None  # the network stays frozen


def test_identity_term_back_propagates_into_the_decoded_face(deca):
    net = _face_recognition_net()
    img, lm = _synthetic(3)
    params = deca.decode(deca.layout.zeros(1))
    sh = params.sh.clone().requires_grad_(True)
    dec = deca.decoder(params.replace(sh=sh))
    value = TERMS["identity"](LossInputs(dec, landmarks=lm, image=img, identity_net=net))
    assert value.shape == (1,) and 0.0 < float(value) < 2.0
    value.sum().backward()
    assert float(sh.grad.abs().sum()) > 0


def test_identity_term_is_switched_off_when_the_network_file_is_missing(capsys, tmp_path):
    from engine.methods.deca import Deca, DecaConfig

    model = Deca(DecaConfig(backbone="resnet10", width=0.25, image_size=S, visibility_size=32,
                            identity_model_path=str(tmp_path / "missing.dat"),
                            losses={"identity": 0.2}))
    assert model.identity_network(torch.device("cpu")) is None
    assert model.losses["identity"] == 0.0
    assert "identity loss switched off" in capsys.readouterr().err
    img, lm = _synthetic(1)
    batch = {"image": img, "landmarks": lm, "landmarks_valid": torch.ones(1, 68, dtype=torch.bool)}
    result = model.train().training_step(batch)
    assert torch.isfinite(result.loss) and "identity" not in result.scalars


def _pair_inputs(deca, identity):
    img0, lm0 = _synthetic(2)
    img1, lm1 = _synthetic(5)
    images, landmarks = torch.cat([img0, img1]), torch.cat([lm0, lm1])
    params = deca.decode(deca.layout.zeros(2))
    params = params.replace(identity=identity)
    dec = deca.decoder(params)
    weights = {"photometric": 1.92, "landmark": 300.0}
    inputs = LossInputs(dec, observed=dec.sample(images), photo_weights=deca.visibility(dec).float(),
                        landmarks=landmarks, landmark_scale=float(S), image=images, group_size=2,
                        consistency_weights=weights)
    unswapped = sum(w * TERMS[k](inputs) for k, w in weights.items())
    return TERMS["shape_consistency"](inputs), unswapped


def test_shape_consistency_swaps_identity_codes_within_pairs(deca):
    ident = torch.zeros(2, deca.head.n_identity)
    ident[:, :3] = torch.tensor([1.0, -0.5, 0.8]) * deca.head.identity_std[:3]
    swapped, unswapped = _pair_inputs(deca, ident)  # same code within the pair: swapping changes nothing
    assert torch.allclose(swapped, unswapped, rtol=1e-5, atol=1e-6)
    ident[1, :3] = torch.tensor([-2.0, 1.5, -1.0]) * deca.head.identity_std[:3]
    swapped, unswapped = _pair_inputs(deca, ident)
    assert not torch.allclose(swapped, unswapped, rtol=1e-3)
    codes = torch.arange(8.0).reshape(4, 2)
    assert swap_group_identities(codes, 2).tolist() == [[2, 3], [0, 1], [6, 7], [4, 5]]
    with pytest.raises(ValueError, match="views_per_identity"):
        swap_group_identities(codes, 1)


def _train(tmp_path, overrides):
    from engine.train import Trainer, load_config

    cfg = load_config(ROOT / "train/configs/deca_coarse_stage2.yaml",
                      ["init_from=", f"run_dir={tmp_path / 'run'}", "max_steps=3", "batch_size=2",
                       f"data.image_size={S}", "data.n_samples=4", "data.val_samples=2", "data.num_workers=0",
                       "progress=off", "tensorboard=false", "image_every=0", "log_every=1", "ckpt_every=3",
                       "eval_every=0", "model.visibility_size=32"] + overrides)
    trainer = Trainer(cfg)
    try:
        return trainer.train()
    finally:
        trainer.close()


def test_tiny_training_run_checkpoint_load_and_predict(tmp_path):
    from engine.generator import SyntheticConfig, render_sample
    from engine.head import load_head_model
    from engine.methods.base import FaceObservation
    from engine.methods.deca import Deca

    summary = _train(tmp_path, [])  # pairs of views, identity + shape consistency on
    final = tmp_path / "run" / "final.pt"
    assert summary["step"] == 3 and final.is_file()
    import json

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = {k for r in records for k in r}
    assert {"train/shape_consistency", "train/eye_closure", "train/landmark", "train/photometric"} <= logged
    net = Deca.load(final)
    assert net.cfg.image_size == S and net.layout.n_pose == 3 and not net.training
    # round trip: the loaded network is the trained one
    state = torch.load(final, weights_only=True)["model"]
    for k, v in net.state_dict().items():
        assert torch.equal(v.float(), state[k].float()), k
    head = load_head_model("open")
    sample = render_sample(head, 11, SyntheticConfig(image_size=128))
    predictor = build_predictor("deca", head, checkpoint=final)
    out = predictor(FaceObservation(sample.image, sample.landmarks2d.numpy()))
    assert out.identity.shape == (1, head.n_identity) and out.pose.shape == (1, head.n_joints, 3)
    assert out.camera.image_size == (128, 128) and out.albedo.shape == (1, head.n_vertices, 3)
    assert np.isfinite(out.camera.t.numpy()).all()
    again = Deca.load(final).predict_photo(sample.image, sample.landmarks2d.numpy())
    assert torch.allclose(again.identity, out.identity) and torch.allclose(again.camera.R, out.camera.R)
    with pytest.raises(Exception, match="not a deca checkpoint.*'mofa'"):
        Deca.load(ROOT / "engine" / "assets" / "mofa_open_default.pt")


def test_shape_consistency_needs_pairs_of_views(tmp_path):
    from engine.train import ConfigError

    with pytest.raises(ConfigError, match="views_per_identity: 2"):
        _train(tmp_path, ["data.views_per_identity=1"])
