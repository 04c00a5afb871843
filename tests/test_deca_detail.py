"""DECA's detail stage (issue #14): the detail networks, the displacement bound, the detail
normals in the render, the detail terms (consistency swap), the animated detail maps in the
output folder and ``python -m engine bake-detail``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.encoders.detail import DetailDecoder, expression_detail_maps
from engine.losses.terms import TERMS, LossInputs

ROOT = Path(__file__).resolve().parents[1]
S = 64  # crop size of the tests' networks
M = 32  # detail map size of the tests' networks


@pytest.fixture(scope="module")
def deca():
    from engine.methods.deca import Deca, DecaConfig

    torch.manual_seed(0)
    cfg = DecaConfig(backbone="resnet10", width=0.25, image_size=S, visibility_size=32, detail=True,
                     detail_uv_size=M, losses={"detail_photometric": 1.0, "detail_consistency": 1.0})
    return Deca(cfg).eval()


def _randomise(decoder: DetailDecoder, scale: float = 1.0, seed: int = 0) -> DetailDecoder:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in decoder.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return decoder


def test_displacement_is_bounded_and_starts_at_zero():
    dec = DetailDecoder(16, 52, uv_size=32, max_m=0.002)
    code, expr = torch.randn(3, 16), torch.rand(3, 52)
    assert torch.equal(dec(code, expr), torch.zeros(3, 1, 32, 32))  # zero-initialised output
    _randomise(dec, scale=5.0)
    d = dec(code * 100, expr, torch.randn(3, 3))
    assert d.shape == (3, 1, 32, 32)
    assert d.abs().max() <= 0.002 and d.abs().max() > 0.0019  # saturates at the bound, never beyond
    with pytest.raises(ValueError, match="power of two"):
        DetailDecoder(16, 52, uv_size=48)


def _lit_face(deca):
    """The network's face of a random crop at 128 px, without detail, under a directional
    light (so that the shading depends on the normals)."""
    torch.manual_seed(1)
    params = deca.decode(deca.encode(torch.rand(1, 3, S, S))).replace(displacement=None, detail_code=None)
    sh = params.sh.clone()
    sh[:, 1:4] += torch.tensor([1.5, 1.0, 1.2])[:, None]
    return params.replace(camera=params.camera.resized((128, 128)), sh=sh)


def test_detail_normals_shade_the_render_and_zero_detail_leaves_it(deca):
    from engine.face import FaceDecoder

    params = _lit_face(deca)
    dec = FaceDecoder(deca.head, deca.reflectance)
    plain = dec(params).render(antialias=False).image
    flat = dec(params.replace(displacement=torch.zeros(1, 1, M, M))).render(antialias=False).image
    assert (flat - plain).abs().max() < 0.03  # zero detail: the dense normals are the coarse surface's
    rows = torch.arange(M, dtype=torch.float32)
    stripes = (torch.sin(rows * 2.5) * 0.0008)[None, None, :, None].expand(1, 1, M, M).clone()
    lined = dec(params.replace(displacement=stripes)).render(antialias=False).image
    assert (lined - plain).abs().mean() > 4 * (flat - plain).abs().mean()


def test_detail_consistency_swaps_codes_within_pairs(deca):
    torch.manual_seed(2)
    _randomise(deca.detail_decoder, scale=0.05, seed=3)
    try:
        images = torch.rand(4, 3, S, S)
        code = deca.encode(images)
        code.detail = torch.randn(4, deca.cfg.detail_code)
        params = deca.decode(code)
        params = params.replace(expression=torch.zeros_like(params.expression))
        params = params.replace(displacement=deca.decode_detail(code.detail, params.expression, params.pose))

        def terms(p):
            x = LossInputs(deca.decoder(p), image=images, group_size=2, detail_decoder=deca.decode_detail,
                           detail_region=deca.head.regions["face_skin"])
            return TERMS["detail_photometric"](x), TERMS["detail_consistency"](x)

        photo, swapped = terms(params)
        assert not torch.allclose(photo, swapped)
        same = code.detail.reshape(2, 2, -1)[:, :1].expand(-1, 2, -1).reshape(4, -1)  # equal codes in each pair
        params_same = params.replace(displacement=deca.decode_detail(same, params.expression, params.pose),
                                     detail_code=same)
        photo_s, swapped_s = terms(params_same)
        assert torch.allclose(photo_s, swapped_s, atol=1e-6)
        with pytest.raises(ValueError, match="views_per_identity"):
            TERMS["detail_consistency"](LossInputs(deca.decoder(params), image=images, group_size=1,
                                                   detail_decoder=deca.decode_detail))
    finally:
        torch.nn.init.zeros_(deca.detail_decoder.out.weight)


@torch.no_grad()
def test_expression_detail_maps_are_the_decoder_differences():
    torch.manual_seed(4)
    dec = _randomise(DetailDecoder(8, 6, uv_size=16, max_m=0.002), scale=0.3, seed=5)
    code = torch.randn(1, 8)
    names = [f"u{k}" for k in range(6)]
    neutral, units, jaw = expression_detail_maps(dec, code, names, jaw_rad=0.3, top=3)
    assert torch.allclose(neutral, dec(code, torch.zeros(1, 6)))
    assert len(units) == 3
    scores = {}
    for k, n in enumerate(names):
        e = torch.zeros(1, 6)
        e[0, k] = 1.0
        delta = dec(code, e) - neutral
        scores[n] = float(delta.abs().mean())
        if n in units:
            assert torch.allclose(units[n], delta, rtol=1e-3, atol=1e-8)
    assert set(units) == set(sorted(scores, key=scores.get, reverse=True)[:3])  # the largest deltas
    assert torch.allclose(jaw, dec(code, torch.zeros(1, 6), torch.tensor([[0.3, 0.0, 0.0]])) - neutral,
                          rtol=1e-4, atol=1e-8)


def test_detail_terms_need_the_detail_stage():
    from engine.errors import ConfigError
    from engine.methods.deca import Deca, DecaConfig

    with pytest.raises(ConfigError, match="detail: true"):
        Deca(DecaConfig(backbone="resnet10", width=0.25, image_size=S, losses={"detail_photometric": 1.0}))


def _train(tmp_path: Path) -> Path:
    from engine.train import Trainer, load_config

    cfg = load_config(ROOT / "train/configs/deca_detail.yaml",
                      [f"run_dir={tmp_path / 'run'}", "max_steps=2", "batch_size=2", f"data.image_size={S}",
                       "data.n_samples=4", "data.val_samples=2", "data.num_workers=0", "data.options={}",
                       "progress=off", "tensorboard=false", "image_every=0", "log_every=1", "ckpt_every=2",
                       "eval_every=0", "model.visibility_size=32", "model.width=0.25", f"model.detail_uv_size={M}",
                       "init_from=", "freeze=[]", "data.views_per_identity=2",
                       "model.losses.detail_gt=0", "model.losses.detail_gt_l2=0"])  # basic faces: no true detail
    trainer = Trainer(cfg)
    try:
        trainer.train()
    finally:
        trainer.close()
    return tmp_path / "run" / "final.pt"


def test_tiny_detail_run_writes_animated_detail_and_bakes_poses(tmp_path):
    from engine.export.detail import decode_displacement_png, whole_layout
    from engine.methods.deca import Deca
    from engine.reconstruct import reconstruct

    final = _train(tmp_path)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = {k for r in records for k in r}
    assert {"train/detail_photometric", "train/detail_consistency", "train/detail_regularisation"} <= logged
    net = Deca.load(final)
    assert net.detail_decoder.uv_size == M
    _randomise(net.detail_decoder, scale=0.05, seed=6)  # an untrained decoder displaces nothing: give it detail
    torch.save({**torch.load(final, weights_only=True), "model": net.state_dict()}, final)

    from PIL import Image
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    result = reconstruct(str(photo), tmp_path / "out", method="deca", checkpoint=str(final))
    out = result.out_dir
    est = result.estimate  # the photo-frame estimate keeps the map, its UV window and its code
    assert est.displacement.shape == (1, 1, M, M) and est.detail_code.shape == (1, 128)
    assert est.displacement_window is not None and est.displacement_window.shape == (1, 4)
    params = json.loads((out / "params.json").read_text())
    detail, scale = params["detail"], params["displacement_scale_m"]
    assert scale > 0 and detail["checkpoint"] == str(final.absolute()) and len(detail["code"]) == 128
    assert 1 <= len(detail["units"]) <= 8 and detail["jaw"] is None  # predict_jaw false: no jaw map
    marker = json.loads((out / ".facerecon-output.json").read_text())
    assert set(detail["units"].values()) <= set(marker["files"])

    # the written maps are the network's (its UV window placed into the whole layout, then
    # carried into the files' export layout): neutral and one unit's delta, to one grey step
    from engine.export.uv_pack import export_layout, to_export_layout
    from engine.head.teeth import with_teeth
    from engine.texture import uv_layout

    net = Deca.load(final)
    files_model = with_teeth(net.head)  # the files' mesh: the model and its teeth
    code = torch.tensor(detail["code"])[None]
    E = net.head.n_expression
    window = tuple(float(x) for x in net.detail_window)
    assert window[2] - window[0] < 0.5  # the open head's face: a small square of its layout

    def whole(m):
        full, size = whole_layout(m.detach(), window)
        return to_export_layout(full, files_model)[0, 0].numpy(), size

    neutral, size = whole(net.detail_decoder(code, torch.zeros(1, E)))
    assert detail["uv_size"] == size and size % 64 == 0 and size * (window[2] - window[0]) >= M
    texels = uv_layout(export_layout(files_model), size).covered
    written = decode_displacement_png(out / "displacement.png", scale)
    assert written.shape == (size, size) and np.abs(written - neutral)[texels].max() <= 1.01 * scale
    assert np.abs(written[texels]).max() > 10 * scale  # the randomised decoder gave it detail
    unit, rel = next(iter(detail["units"].items()))
    e = torch.zeros(1, E)
    e[0, net.head.expression_names.index(unit)] = 1.0
    delta = whole(net.detail_decoder(code, e))[0] - neutral
    assert np.abs(decode_displacement_png(out / rel, scale) - delta)[texels].max() <= 2.01 * scale

    # bake-detail: the exact map of a pose, through the CLI
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps({"expression": {unit: 0.7, "browInnerUp": 0.2}, "jaw": [0.1, 0, 0]}))
    baked = tmp_path / "baked.png"
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "engine", "bake-detail", str(out), "--pose", str(pose),
                           "--out", str(baked)], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(baked)
    e = torch.zeros(1, E)
    e[0, net.head.expression_names.index(unit)] += 0.7
    e[0, net.head.expression_names.index("browInnerUp")] += 0.2
    want = whole(net.detail_decoder(code, e, torch.tensor([[0.1, 0.0, 0.0]])))[0]
    assert np.abs(decode_displacement_png(baked, scale) - want)[texels].max() <= 1.01 * scale
    # bad input: one line, exit 2
    pose.write_text(json.dumps({"expression": {"notAUnit": 1}}))
    proc = subprocess.run([sys.executable, "-m", "engine", "bake-detail", str(out), "--pose", str(pose),
                           "--out", str(baked)], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "notAUnit" in proc.stderr


def test_uv_window_maps_round_trip_and_shade_the_face_only(deca):
    from engine.face import FaceDecoder
    from engine.render.uv import full_to_window, window_to_full

    window = tuple(float(x) for x in deca.detail_window)
    u = (torch.arange(512, dtype=torch.float32) + 0.5) / 512
    smooth = (torch.sin(u * 20)[None, :] * torch.cos(u * 13)[:, None])[None, None]  # a smooth whole-layout map
    back = window_to_full(full_to_window(smooth, window, 256), window, 512)
    c0, c1 = int(window[0] * 512) + 3, int(min(window[2], 1.0) * 512) - 3
    r0, r1 = int((1 - window[3]) * 512) + 3, int((1 - window[1]) * 512) - 3
    assert (back - smooth)[..., r0:r1, c0:c1].abs().max() < 0.01  # there and back inside the window
    assert back[..., :, : int(window[0] * 512) - 1].abs().max() == 0  # nothing outside it
    # a windowed stripe map shades the head and leaves the background alone
    params = _lit_face(deca)
    dec = FaceDecoder(deca.head, deca.reflectance)
    plain = dec(params).render(antialias=False)
    rows = torch.arange(M, dtype=torch.float32)
    stripes = (torch.sin(rows * 2.5) * 0.0008)[None, None, :, None].expand(1, 1, M, M).clone()
    lined = dec(params.replace(displacement=stripes, displacement_window=deca.window_batch(1))).render(antialias=False)
    diff = (lined.image - plain.image).abs().sum(1)[0].detach()
    assert diff[plain.mask[0, 0] > 0].mean() > 0.02
    background = (plain.mask[0, 0] == 0) & (lined.mask[0, 0] == 0)  # (the vertices move a little too)
    assert diff[background].max() < 1e-6


def test_committed_network_gives_animated_detail_without_a_checkpoint():
    """``--method deca`` on the open model runs the committed network (MoFA's coarse network
    and a trained detail stage): the estimate has a detail map over the face window, and the
    per-unit deltas of the smile (the units it learnt best) are not zero."""
    from engine.generator.realistic import RealisticConfig, render_realistic
    from engine.head import load_head_model
    from engine.methods import build_predictor, registry
    from engine.methods.base import FaceObservation

    head = load_head_model("open")
    assert registry.default_checkpoint(registry.get("deca"), "open") is not None
    predictor = build_predictor("deca", head)
    sample = render_realistic(head, 900001, RealisticConfig(image_size=224, face_fraction=(0.5, 0.7),
                                                            wide_pose_probability=0.0))
    est = predictor(FaceObservation(sample.image, sample.landmarks2d.numpy()))
    assert est.displacement is not None and est.displacement_window is not None
    assert est.displacement.abs().max() < predictor.network.cfg.detail_max_m
    maps = predictor.detail_maps(est)
    assert maps is not None and 1 <= len(maps.units) <= 8 and maps.window is not None
    smile = [maps.units[u] for u in ("mouthSmileLeft", "mouthSmileRight") if u in maps.units]
    assert smile and all(float(m.abs().max()) > 1e-5 for m in smile)  # > 0.01 mm somewhere


def test_detail_condition_truth_decodes_the_detail_with_the_true_expression(deca):
    """``detail_condition: truth``: in a training step the detail decoder takes the batch's
    true expression and jaw; ``predicted`` (and inference) the network's own."""
    import dataclasses

    _randomise(deca.detail_decoder, scale=0.05, seed=7)
    try:
        code = deca.encode(torch.rand(2, 3, S, S))
        batch = {"gt_expression": torch.rand(2, deca.head.n_expression),
                 "gt_pose": torch.zeros(2, deca.head.n_joints, 3)}
        predicted = deca.decode_for_training(code, batch)
        assert torch.equal(predicted.displacement, deca.decode(code).displacement)  # the default: predicted
        deca.cfg = dataclasses.replace(deca.cfg, detail_condition="truth")
        truth = deca.decode_for_training(code, batch)
        want = deca.decode_detail(code.detail, batch["gt_expression"], batch["gt_pose"])
        assert torch.allclose(truth.displacement, want) and not torch.allclose(truth.displacement, predicted.displacement)
        assert torch.equal(deca.decode_for_training(code, {}).displacement, predicted.displacement)  # no truth: predicted
    finally:
        deca.cfg = dataclasses.replace(deca.cfg, detail_condition="predicted")
        torch.nn.init.zeros_(deca.detail_decoder.out.weight)
