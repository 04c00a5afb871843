"""The GPU path (issue #18): the same results on CUDA as on the CPU.

Marked ``cuda`` and skipped where PyTorch sees no GPU (CI, most sessions). On a CUDA machine
``benchmarks/gpu_check.sh`` runs them first. ``FACERECON_TEST_DEVICE=cpu`` runs the same code
paths with the CPU as the "device" (the comparisons are then trivial, but every line runs),
which is how they are checked on machines without a GPU.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

DEVICE = os.environ.get("FACERECON_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="no CUDA GPU (set FACERECON_TEST_DEVICE=cpu to run the code paths on the CPU)"),
]


@pytest.fixture(scope="module")
def heads():
    from engine.head import load_head_model

    cpu = load_head_model("open")
    return cpu, load_head_model("open", device=DEVICE)


@pytest.fixture(scope="module")
def sample(heads):
    from engine.generator import render_sample

    return render_sample(heads[0], 11)


def test_renderer_forward_and_backward_agree(heads, sample):
    """Rasterised, SH-shaded, antialiased render of a face and its gradients w.r.t. vertices
    and lighting: CUDA vs CPU."""
    from engine.face import FaceDecoder

    out = {}
    for name, head in zip(("cpu", "dev"), heads):
        p = sample.params.to(head.template.device)
        p = p.replace(identity=p.identity.clone().requires_grad_(True), sh=p.sh.clone().requires_grad_(True))
        img = FaceDecoder(head)(p).render(antialias=True).image
        (img * torch.linspace(0, 1, img.numel(), device=img.device).reshape(img.shape)).sum().backward()
        out[name] = (img.detach().cpu(), p.identity.grad.cpu(), p.sh.grad.cpu())
    (ic, gic, gsc), (idv, gid, gsd) = out["cpu"], out["dev"]
    assert (ic - idv).abs().max() < 2e-3  # a few boundary pixels may flip between triangles
    assert (ic - idv).abs().mean() < 1e-5
    assert torch.allclose(gic, gid, rtol=2e-2, atol=1e-3 * gic.abs().max())
    assert torch.allclose(gsc, gsd, rtol=2e-2, atol=1e-3 * gsc.abs().max())


def test_fit_on_the_device_matches_the_cpu(heads, sample):
    """A fit with ground-truth landmarks: same geometry within 0.2 mm, same landmarks within 0.3 px."""
    from engine.eval.synthetic import score_fit
    from engine.fitting import FitConfig, fit_photo

    cpu, dev = heads
    cfg = FitConfig()
    lm = sample.landmarks2d.numpy()
    a = fit_photo(cpu, sample.image, lm, cfg)
    b = fit_photo(dev, sample.image, lm, cfg)
    ga, _, la = score_fit(cpu, sample, a)
    gb, _, lb = score_fit(cpu, sample, b.cpu())
    assert abs(ga - gb) < 0.2 and abs(la - lb) < 0.3, (ga, gb, la, lb)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_training_steps_with_mixed_precision(tmp_path, amp):
    """MoFA steps with bf16 autocast and with fp16 + GradScaler: finite losses, weights move."""
    from engine.train import Trainer, load_config

    if DEVICE == "cpu" and amp == "fp16":
        pytest.skip("fp16 + GradScaler is CUDA-only")
    cfg = load_config(None, [f"device={DEVICE}", f"amp={amp}", "batch_size=4", "max_steps=4", "data.image_size=64",
                             "data.n_samples=8", "data.val_samples=2", "data.num_workers=0", "model.backbone=resnet10",
                             "model.width=0.25", "model.visibility_size=32", f"run_dir={tmp_path}", "progress=off",
                             "tensorboard=false", "image_every=0", "log_every=1", "ckpt_every=4"])
    trainer = Trainer(cfg)
    before = {k: v.detach().clone() for k, v in trainer.method.encoder.state_dict().items()}
    summary = trainer.train()
    trainer.close()
    assert summary["skipped_steps"] <= 1  # fp16's first step may overflow while the scale settles
    assert all(np.isfinite(loss) for _, loss in summary["history"])
    after = trainer.method.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_checkpoint_saved_on_the_device_resumes_on_the_cpu(tmp_path):
    from engine.train import Trainer, load_config

    base = ["batch_size=2", "data.image_size=48", "data.n_samples=8", "data.val_samples=2", "data.num_workers=0",
            "model.backbone=resnet10", "model.width=0.25", "model.visibility_size=32", f"run_dir={tmp_path}",
            "progress=off", "tensorboard=false", "image_every=0", "log_every=1", "ckpt_every=2", "amp=off"]
    t1 = Trainer(load_config(None, base + [f"device={DEVICE}", "max_steps=2"]))
    t1.train()
    t1.close()
    saved = {k: v.detach().cpu() for k, v in t1.method.state_dict().items()}
    t2 = Trainer(load_config(None, base + ["device=cpu", "max_steps=4"]))
    assert t2.resume() is not None and t2.step == 2
    loaded = t2.method.state_dict()
    assert all(torch.equal(saved[k], loaded[k].cpu()) for k in saved)
    summary = t2.train()
    t2.close()
    assert summary["step"] == 4 and all(np.isfinite(loss) for _, loss in summary["history"])


def test_learned_network_predicts_the_same_codes(heads):
    from pathlib import Path

    from engine.methods.mofa import Mofa

    ckpt = Path(__file__).resolve().parents[1] / "engine" / "assets" / "mofa_open_default.pt"
    if not ckpt.is_file():
        pytest.skip(f"{ckpt} is absent")
    cpu = Mofa.load(ckpt, "cpu")
    dev = Mofa.load(ckpt, DEVICE)
    x = torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = cpu.encode(x).as_dict(), dev.encode(x.to(DEVICE)).as_dict()
    for k in a:
        assert torch.allclose(a[k], b[k].cpu(), atol=2e-3, rtol=1e-2), k
    fa = cpu.predict(x)
    fb = dataclasses.replace(dev.predict(x.to(DEVICE))).cpu()
    assert torch.allclose(fa.camera.t, fb.camera.t, atol=1e-3)
