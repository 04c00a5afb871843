"""MoFA encoder/decoder: zero-initialised head = mean face, centred, ambient-lit; depth LR
group; reflectance basis; training lowers the loss; checkpoints round-trip for inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.encoders import CodeLayout, MofaEncoder, build_backbone
from engine.face import FaceDecoder
from engine.methods.mofa import Mofa, MofaConfig
from engine.train import Trainer, load_config

SMALL = ["device=cpu", "batch_size=2", "data.image_size=48", "data.n_samples=4", "data.val_samples=2",
         "data.num_workers=0", "model.backbone=resnet10", "model.width=0.25", "model.visibility_size=32",
         "progress=off", "tensorboard=false", "image_every=0", "log_every=1", "optim.lr=3e-3",
         "optim.schedule=constant"]


@pytest.fixture(scope="module")
def head():
    from engine.head import load_head_model

    return load_head_model("open")


def test_backbone_shapes_and_width():
    for name in ("resnet10", "resnet18", "resnet34"):
        net = build_backbone(name, width=0.25)
        assert net(torch.rand(2, 3, 64, 64)).shape == (2, net.out_features)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg")


def test_zero_init_gives_mean_face_centred_ambient(head):
    from engine.render import frontal_rotation

    model = Mofa(MofaConfig(backbone="resnet10", width=0.25, image_size=64), head=head).eval()
    code = model.encode(torch.rand(3, 3, 64, 64))
    for v in code.as_dict().values():
        assert torch.count_nonzero(v) == 0
    params = model.decode(code)
    dec = model.decoder(params)
    assert torch.allclose(dec.vertices, head.template.expand(3, -1, -1), atol=1e-6)
    centre = dec.landmarks2d.mean(1)
    assert torch.allclose(centre, torch.full_like(centre, 32.0), atol=0.1)  # perspective: mean of projections
    assert torch.allclose(dec.shading, torch.ones_like(dec.shading), atol=1e-5)  # ambient only
    assert torch.allclose(dec.albedo, model.reflectance.mean.expand_as(dec.albedo))
    assert torch.allclose(params.camera.t[:, 2], torch.full((3,), 0.9) - (frontal_rotation() @ head.landmarks(
        head.template[None])[0].mean(0))[2], atol=1e-6)


def test_param_groups_depth_rate_and_reflectance_basis(head):
    model = Mofa(MofaConfig(backbone="resnet10", width=0.25, image_size=48, depth_lr_scale=0.1), head=head)
    groups = model.param_groups(1e-3)
    assert groups[1]["lr_scale"] == 0.1 and len(groups[1]["params"]) == 2
    n_total = sum(p.numel() for p in model.encoder.parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == n_total
    basis = model.reflectance.basis  # (K, V), row k scaled by its prior std
    assert torch.allclose(basis[0], basis[0].mean().expand_as(basis[0]), atol=1e-4)  # constant mode
    assert torch.allclose(basis[0].abs().mean(), torch.tensor(0.15), atol=1e-3)
    # the depth head is the translation z slot of the code
    enc = model.encoder
    with torch.no_grad():
        enc.head_depth.bias.fill_(1.0)
    code = enc(torch.rand(1, 3, 48, 48))
    assert code.translation[0].tolist() == [0.0, 0.0, 1.0]


def test_training_lowers_loss_and_checkpoint_roundtrip(tmp_path):
    cfg = load_config(None, SMALL + [f"run_dir={tmp_path}", "max_steps=12", "ckpt_every=12",
                                     "model.losses.landmark=0.5"])
    tr = Trainer(cfg)
    hist = tr.train()["history"]
    first, last = hist[0][1], sum(h[1] for h in hist[-3:]) / 3
    assert last < first, hist
    model = Mofa.load(tmp_path / "final.pt")
    imgs = torch.stack([tr.train_set[i]["image"] for i in range(2)])
    tr.method.eval()
    with torch.no_grad():
        a = tr.method.predict(imgs)
        b = model.predict(imgs)
    assert torch.allclose(a.reflectance, b.reflectance, atol=1e-5)
    assert torch.allclose(a.identity, b.identity, atol=1e-5) and torch.allclose(a.sh, b.sh, atol=1e-5)
    # exported weights do not carry the head model
    data = torch.load(tmp_path / "final.pt", weights_only=False)
    assert not any(k.startswith("head.") for k in data["model"])


def test_code_layout_split_roundtrip():
    L = CodeLayout(5, 4, 3)
    vec = torch.arange(2 * L.dim, dtype=torch.float32).reshape(2, L.dim)
    c = L.split(vec)
    assert c.reflectance.shape == (2, 3, 3) and c.sh.shape == (2, 9, 3)
    flat = torch.cat([c.identity, c.expression, c.reflectance.flatten(1), c.rotation, c.translation,
                      c.sh.flatten(1)], 1)
    assert torch.equal(flat, vec)
    enc = MofaEncoder(L, "resnet10", 0.25)
    assert enc.eval()(torch.rand(1, 3, 32, 32)).identity.shape == (1, 5)


def test_predict_photo_maps_crop_camera_to_photo(head):
    """A zero-init model puts the mean face at the crop centre, mapped back into the photo."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    lm = np.stack([np.linspace(70, 110, 68), np.linspace(40, 80, 68)], 1)
    model = Mofa(MofaConfig(backbone="resnet10", width=0.25, image_size=48), head=head).eval()
    est = model.predict_photo(rgb, lm)
    centre = FaceDecoder(head)(est).landmarks2d[0].mean(0)
    assert torch.allclose(centre, torch.tensor([90.0, 60.0]), atol=0.5)
    assert est.image_size == (120, 160) and est.albedo.shape == (1, head.n_vertices, 3)


def test_clip_batches_train_as_independent_frames(head):
    """A (B, T, ...) clip batch is folded into B·T images by MoFA's training step."""
    model = Mofa(MofaConfig(backbone="resnet10", width=0.25, image_size=48), head=head)
    frames = torch.rand(2, 3, 3, 48, 48)
    lm = torch.rand(2, 3, 68, 2) * 48
    res = model.training_step({"image": frames, "landmarks": lm, "landmarks_valid": torch.ones(2, 3, 68, dtype=torch.bool),
                               "clip": torch.tensor([5, 6])})
    assert res.outputs["params"].batch_size == 6 and torch.isfinite(res.loss)
    flat = model.training_step({"image": frames.reshape(6, 3, 48, 48), "landmarks": lm.reshape(6, 68, 2)})
    assert torch.allclose(res.loss, flat.loss)
