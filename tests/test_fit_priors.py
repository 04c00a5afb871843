"""Expression sparsity (ℓ1), reflectance symmetry and coarse-to-fine identity options of the fitter."""

import dataclasses

import pytest
import torch

from engine.fitting import FitConfig, fit_photo
from engine.fitting.appearance import symmetric_albedo
from engine.head import load_head_model
from engine.generator import render_sample


@pytest.fixture(scope="module")
def model():
    return load_head_model("open")


@pytest.fixture(scope="module")
def sample(model):
    return render_sample(model, 7)


def test_expression_l1_prior_makes_expressions_sparser(model, sample):
    lm = sample.landmarks2d.numpy()
    base = dataclasses.replace(FitConfig(), joint_iters=10)
    dense_fit = fit_photo(model, sample.image, lm, dataclasses.replace(base, w_expression_l1=0.0))
    sparse_fit = fit_photo(model, sample.image, lm, dataclasses.replace(base, w_expression_l1=1.0))
    l1_free = float(dense_fit.expression.abs().sum())
    l1_sparse = float(sparse_fit.expression.abs().sum())
    assert l1_sparse < 0.8 * l1_free
    assert int((sparse_fit.expression > 0.02).sum()) <= int((dense_fit.expression > 0.02).sum())


def test_landmark_stage_can_fit_leading_identity_modes_only(model, sample):
    cfg = dataclasses.replace(FitConfig(), joint_iters=0, landmark_identity_modes=5)
    fit = fit_photo(model, sample.image, sample.landmarks2d.numpy(), cfg)
    assert torch.count_nonzero(fit.identity[0, 5:]) == 0
    assert torch.count_nonzero(fit.identity[0, :5]) > 0


def test_symmetric_albedo_follows_the_better_seen_side():
    # vertices 0 <-> 1 and 2 <-> 3 are mirror partners, vertex 4 has none
    albedo = torch.tensor([[0.8, 0.6, 0.5], [0.4, 0.3, 0.2], [0.7, 0.5, 0.4], [0.5, 0.3, 0.2], [0.9, 0.9, 0.9]])
    mirror = torch.tensor([1, 0, 3, 2, -1])
    weights = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.5])
    sym = symmetric_albedo(albedo, weights, mirror)
    # equally seen partners meet halfway; an unseen vertex takes its partner's colour
    assert torch.allclose(sym[0], (albedo[0] + albedo[1]) / 2) and torch.allclose(sym[1], sym[0])
    assert torch.allclose(sym[3], albedo[2], atol=2e-3) and torch.allclose(sym[2], albedo[2], atol=2e-3)
    assert torch.equal(sym[4], albedo[4])
    assert torch.equal(symmetric_albedo(albedo, weights, mirror, strength=0.0), albedo)
    half = symmetric_albedo(albedo, weights, mirror, strength=0.5)
    assert torch.allclose(half, (albedo + sym) / 2)


def test_outputs_keep_the_per_vertex_albedo(model, sample):
    """The symmetry prior shapes the joint stage only: the returned albedo is the final
    per-vertex solve (brows, lips and one-sided blotches survive), so it is not symmetric."""
    fit = fit_photo(model, sample.image, sample.landmarks2d.numpy(), FitConfig())
    mirror = model.mirror
    vis, albedo = fit.visibility[0], fit.albedo[0]
    seen = (vis > 0.5) & (vis[mirror.clamp_min(0)] > 0.5) & (mirror >= 0)
    diff = (albedo[seen] - albedo[mirror[seen]]).abs().amax(-1)
    assert float(diff.max()) > 0.02
