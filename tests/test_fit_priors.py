"""Expression sparsity (ℓ1) and coarse-to-fine identity options of the fitter."""

import dataclasses

import pytest
import torch

from engine.fitting import FitConfig, fit_photo
from engine.head import load_head_model
from engine.synthetic import render_sample


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
    assert torch.count_nonzero(fit.identity[5:]) == 0
    assert torch.count_nonzero(fit.identity[:5]) > 0
