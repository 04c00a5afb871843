"""Dense (MediaPipe-478) landmark term and fitting from an initial result."""

import dataclasses

import numpy as np
import pytest
import torch

from engine.eval.synthetic import geometric_error_mm
from engine.fitting import FitConfig, fit_photo
from engine.head import load_head_model
from engine.head.dense_landmarks import load_dense_embedding
from engine.synthetic import render_sample


@pytest.fixture(scope="module")
def model():
    return load_head_model("open")


def test_dense_embedding_loads_for_the_open_model(model):
    emb = load_dense_embedding(model, "mediapipe-478")
    assert emb is not None and 300 < len(emb) < 478
    idx = emb.indices.numpy()
    assert len(set(idx.tolist())) == len(idx) and idx.max() < 468  # iris points are dropped
    assert torch.allclose(emb.bary.sum(1), torch.ones(len(emb)), atol=1e-4) and (emb.bary >= 0).all()
    assert (emb.spread_m > 0).all() and float(emb.spread_m.max()) <= 4e-3
    assert load_dense_embedding(model, "ibug-68") is None


def test_fit_uses_exact_dense_points(model):
    """Exact 'detected' dense points (the embedding projected from the ground truth) and
    iBUG-68 at 10 % share: the fit beats the mean face and reproduces the landmarks."""
    s = render_sample(model, 2)
    emb = load_dense_embedding(model, "mediapipe-478")
    with torch.no_grad():
        pts = emb.points(model, s.vertices[None])[0] @ s.R.T + s.t
    uv = (pts[:, :2] / pts[:, 2:3]) * torch.stack([s.K[0, 0], s.K[1, 1]]) + torch.stack([s.K[0, 2], s.K[1, 2]])
    native = np.full((478, 2), -1000.0)  # points the embedding does not use are never read
    native[emb.indices.numpy()] = uv.numpy()
    # Without the expression sparsity prior: it is tuned for detector noise, and with exact
    # points it makes identity absorb part of the true expression (docs/fitting.md).
    exact = dataclasses.replace(FitConfig(), w_expression_l1=0.0)
    fit = fit_photo(model, s.image, s.landmarks2d.numpy(), exact, native=native,
                    native_convention="mediapipe-478")
    base = geometric_error_mm(model, model.template, s.vertices)
    assert geometric_error_mm(model, fit.vertices, s.vertices) < 0.9 * base
    lm = fit.project(model.landmarks(fit.vertices[None])[0])
    assert (lm - s.landmarks2d).norm(dim=-1).mean() < 1.5
    # a 468-point mesh (no irises) would still be usable; too few points falls back to iBUG-68
    short = fit_photo(model, s.image, s.landmarks2d.numpy(), dataclasses.replace(FitConfig(), joint_iters=0),
                      native=native[:10], native_convention="mediapipe-478")
    assert torch.isfinite(short.vertices).all()


def test_init_result_is_kept_without_iterations(model):
    s = render_sample(model, 3)
    cfg = FitConfig()
    first = fit_photo(model, s.image, s.landmarks2d.numpy(), cfg)
    frozen = dataclasses.replace(cfg, pose_iters=0, shape_iters=0, joint_iters=0)
    again = fit_photo(model, s.image, s.landmarks2d.numpy(), frozen, init=first)
    assert torch.allclose(again.R, first.R, atol=1e-5) and torch.allclose(again.t, first.t, atol=1e-6)
    assert torch.allclose(again.identity, first.identity) and torch.allclose(again.K, first.K)
    assert torch.allclose(again.vertices, first.vertices, atol=1e-6)
