"""Behaviour of the shared loss terms (photometric ℓ2,1, landmarks, priors, albedo)."""

import math

import torch

from engine.losses import (
    SkinColourPrior,
    albedo_smoothness,
    albedo_symmetry,
    landmark_loss,
    landmark_weights_68,
    mesh_edges,
    mirror_vertex_map,
    photometric_l21,
    range_penalty,
    skin_colour_prior,
    tikhonov,
)


def test_photometric_is_mean_l2_norm_over_visible_only():
    rendered = torch.zeros(1, 4, 3)
    observed = torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0], [10.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    visible = torch.tensor([[True, True, False, True]])
    value = photometric_l21(rendered, observed, visible, eps=0.0)
    assert math.isclose(value.item(), (5.0 + 1.0 + 0.0) / 3.0, rel_tol=1e-6)


def test_photometric_is_robust_linear_in_outlier_size():
    """An ℓ2,1 term grows linearly with one outlier's size (a squared loss would grow 4x)."""
    base = torch.zeros(1, 10, 3)
    obs1, obs2 = base.clone(), base.clone()
    obs1[0, 0, 0] = 1.0
    obs2[0, 0, 0] = 2.0
    vis = torch.ones(1, 10)
    l1 = photometric_l21(base, obs1, vis, eps=0.0)
    l2 = photometric_l21(base, obs2, vis, eps=0.0)
    assert math.isclose((l2 / l1).item(), 2.0, rel_tol=1e-5)


def test_photometric_gradient_finite_at_zero_residual_and_nothing_visible():
    r = torch.zeros(2, 5, 3, requires_grad=True)
    vis = torch.zeros(2, 5)
    vis[0] = 1
    loss = photometric_l21(r, torch.zeros(2, 5, 3), vis).sum()
    loss.backward()
    assert torch.isfinite(r.grad).all()
    assert photometric_l21(r, torch.ones(2, 5, 3), vis)[1].item() == 0.0


def test_landmark_loss_weights_and_scale():
    pred = torch.zeros(1, 68, 2)
    tgt = torch.zeros(1, 68, 2)
    tgt[0, 0] = torch.tensor([3.0, 4.0])  # jaw point, distance 5
    w = landmark_weights_68(jaw=0.0)
    assert landmark_loss(pred, tgt, w).item() == 0.0
    full = landmark_loss(pred, tgt)
    assert math.isclose(full.item(), 25.0 / 68.0, rel_tol=1e-6)
    scaled = landmark_loss(pred, tgt, scale=torch.tensor([5.0]))
    assert math.isclose(scaled.item(), 1.0 / 68.0, rel_tol=1e-6)


def test_tikhonov_and_range_penalty():
    c = torch.tensor([[2.0, -3.0]])
    assert tikhonov(c).item() == 13.0
    assert math.isclose(tikhonov(c, torch.tensor([2.0, 3.0])).item(), 2.0)
    bounds = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert range_penalty(torch.tensor([[0.5, 0.2]]), bounds).item() == 0.0
    assert math.isclose(range_penalty(torch.tensor([[1.5, -0.5]]), bounds).item(), 0.5)


def _mirror_strip():
    # a symmetric 2x3 grid in x (−1, 0, 1) plus an asymmetric extra vertex
    xs = [-0.01, 0.0, 0.01]
    verts = [[x, y, 0.0] for y in (0.0, 0.01) for x in xs] + [[0.02, 0.05, 0.0]]
    faces = torch.tensor([[0, 1, 4], [0, 4, 3], [1, 2, 5], [1, 5, 4]])
    return torch.tensor(verts), faces


def test_mirror_map_and_symmetry():
    verts, faces = _mirror_strip()
    m = mirror_vertex_map(verts, tolerance=1e-4)
    assert m.tolist() == [2, 1, 0, 5, 4, 3, -1]
    alb = torch.rand(1, 7, 3)
    sym = alb.clone()
    sym[0, 2] = sym[0, 0]
    sym[0, 5] = sym[0, 3]
    sym[0, 6] = 5.0  # vertex without a mirror is ignored
    assert albedo_symmetry(sym, m).item() < 1e-12
    assert albedo_symmetry(alb, m).item() > 0


def test_smoothness_zero_for_constant_and_edges_unique():
    verts, faces = _mirror_strip()
    e = mesh_edges(faces)
    assert e.shape == (9, 2)
    assert (e[:, 0] < e[:, 1]).all()
    const = torch.full((2, 7, 3), 0.4)
    assert torch.all(albedo_smoothness(const, e) == 0)
    noisy = const + torch.randn(2, 7, 3)
    assert torch.all(albedo_smoothness(noisy, e) > 0)


def test_skin_prior_prefers_skin_tones_over_saturated_colours():
    prior = SkinColourPrior()
    light = torch.tensor([[[0.80, 0.62, 0.54]]])
    dark = torch.tensor([[[0.36, 0.24, 0.19]]])
    green = torch.tensor([[[0.2, 0.7, 0.2]]])
    mean = torch.tensor([prior.mean])[None]
    assert skin_colour_prior(mean, prior).item() < 1e-10
    # light and dark skin lie along the prior's long axis: far cheaper than a green "skin"
    assert skin_colour_prior(light, prior).item() < 4.0
    assert skin_colour_prior(dark, prior).item() < 4.0
    assert skin_colour_prior(green, prior).item() > 20.0


def test_light_level_term_pulls_the_mean_shading_to_the_level():
    """light_level: zero when the visible skin's mean shading is the level, the squared gap
    otherwise; its gradient moves the ambient SH term towards the level (so the albedo keeps
    the photo's brightness instead of the light taking it)."""
    from engine.face import FaceDecoder, FaceParams
    from engine.head import load_head_model
    from engine.losses.terms import TERMS, LossInputs
    from engine.render import PerspectiveCamera, frontal_rotation
    from engine.render.shading import SH_CONSTANTS

    head = load_head_model("open")
    K = torch.tensor([[[400.0, 0, 64], [0, 400.0, 64], [0, 0, 1]]])
    cam = PerspectiveCamera(K, frontal_rotation()[None], torch.tensor([[0.0, 0.0, 0.9]]), (128, 128))
    dc = torch.tensor(0.6 / SH_CONSTANTS[0], requires_grad=True)
    sh = torch.zeros(1, 9, 3)
    sh = sh + torch.nn.functional.pad(dc.expand(1, 1, 3), (0, 0, 0, 8))
    dec = FaceDecoder(head)(FaceParams(identity=torch.zeros(1, head.n_identity),
                                       expression=torch.zeros(1, head.n_expression),
                                       pose=torch.zeros(1, head.n_joints, 3), camera=cam, sh=sh))
    w = head.regions["face_skin"].float()[None]
    term = TERMS["light_level"]
    assert abs(float(term(LossInputs(dec, photo_weights=w, light_level=0.6)))) < 1e-8  # ambient 0.6 everywhere
    value = term(LossInputs(dec, photo_weights=w, light_level=0.85))
    assert math.isclose(float(value), 0.25**2, rel_tol=1e-4)
    value.sum().backward()
    assert float(dc.grad) < 0  # raise the light towards the level
