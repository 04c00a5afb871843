"""The closed-form light/albedo split (engine.fitting.appearance): the light-level prior keeps
skin tones apart instead of letting the lighting absorb every face's brightness (issue #17)."""

from __future__ import annotations

import torch

from engine.fitting.appearance import fit_appearance, solve_sh
from engine.losses.albedo import SkinColourPrior
from engine.render.shading import sh_basis


def _scene(tone: float, seed: int = 0):
    """Front-facing normals under one light: the same light for every tone; observed = tone × shading."""
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(800, 3, generator=g)
    n[:, 2] = n[:, 2].abs() + 0.5  # facing the camera (+z)
    n = n / n.norm(dim=-1, keepdim=True)
    basis = sh_basis(n)
    sh = torch.zeros(9, 3)
    sh[0], sh[3] = 2.4, 0.6  # ambient + a frontal component (raw SH coefficients)
    shading = (basis @ sh).clamp_min(0)
    albedo = torch.tensor([1.0, 0.74, 0.62]) * tone
    return basis, albedo * shading, shading


def _fit(basis, observed, level_weight: float):
    V = basis.shape[0]
    w = torch.ones(V)
    return fit_appearance(basis, observed, w, torch.ones(V, dtype=torch.bool), torch.full((V,), -1), None,
                          SkinColourPrior(), light_level=0.85, light_level_weight=level_weight)


def test_light_level_prior_keeps_skin_tones_apart():
    light, dark = _scene(0.75), _scene(0.25)
    # without the prior the lighting takes the brightness: both faces come back near one colour
    a0 = [_fit(b, o, 0.0).albedo.mean(0)[0] for b, o, _ in (light, dark)]
    assert float(a0[0] / a0[1]) < 1.3
    # with it the albedo keeps the 3:1 ratio of the two skins (same light, same shading level)
    a1 = [_fit(b, o, 1.0).albedo.mean(0)[0] for b, o, _ in (light, dark)]
    assert abs(float(a1[0] / a1[1]) - 3.0) < 0.3
    # and the mean shading over the solved vertices sits at the prior's level
    app = _fit(light[0], light[1], 1.0)
    assert abs(float((light[0] @ app.sh).mean()) - 0.85) < 0.1


def test_solve_sh_without_prior_is_unchanged_by_the_new_arguments():
    basis, observed, _ = _scene(0.5)
    albedo = torch.full_like(observed, 0.5)
    w = torch.ones(basis.shape[0])
    assert torch.equal(solve_sh(basis, albedo, observed, w), solve_sh(basis, albedo, observed, w, 1e-3, 0.3, 0.0))
