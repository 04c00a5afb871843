"""The landmark stage by orthant-wise Levenberg–Marquardt (FitConfig.landmark_solver = "lm"):
the solver on small problems with known answers, the exact Jacobian against autodiff, and the
stage against the Adam schedule on the same energy."""

import dataclasses

import pytest
import torch
from torch.func import jacfwd

from engine.errors import ConfigError
from engine.face import FaceParams
from engine.fitting import FitConfig, fit_config
from engine.fitting.fitter import PhotoFit, _pose_tensor
from engine.fitting.optim import orthant_levenberg_marquardt
from engine.generator import render_sample
from engine.head import load_head_model
from engine.render.camera import PerspectiveCamera
from engine.render.rotation import axis_angle_to_matrix


def _quadratic(A: torch.Tensor, b: torch.Tensor):
    def energy(x):
        return float(((A @ x - b) ** 2).sum())

    def system(x):
        return 2 * A.T @ (A @ x - b), 2 * A.T @ A

    return energy, system


def _ista(A, b, l1, lower, upper, iters=20000):
    """Projected proximal gradient (the slow, sure reference)."""
    step = 1.0 / (2 * torch.linalg.matrix_norm(A, 2) ** 2)
    x = torch.zeros(A.shape[1], dtype=A.dtype)
    for _ in range(iters):
        z = x - step * 2 * A.T @ (A @ x - b)
        x = torch.sign(z) * (z.abs() - step * l1).clamp_min(0)
        x = torch.minimum(torch.maximum(x, lower), upper)
    return x


def test_orthant_lm_solves_a_bounded_lasso_exactly():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(30, 8, generator=g, dtype=torch.float64)
    b = torch.randn(30, generator=g, dtype=torch.float64)
    l1 = torch.tensor([0.0, 0.0, 3.0, 3.0, 3.0, 30.0, 30.0, 0.0], dtype=torch.float64)
    lower = torch.tensor([-1e9, -1e9, 0.0, 0.0, -1e9, -1e9, -1e9, -0.05], dtype=torch.float64)
    upper = torch.full((8,), 1e9, dtype=torch.float64)
    energy, system = _quadratic(A, b)
    free = torch.ones(8, dtype=torch.bool)
    x, info = orthant_levenberg_marquardt(torch.zeros(8, dtype=torch.float64), energy, system, free, l1,
                                          iters=100, tol=1e-14, lower=lower, upper=upper)
    ref = _ista(A, b, l1, lower, upper)
    assert torch.allclose(x, ref, atol=1e-5), (x, ref)
    assert torch.equal(x == 0, ref.abs() < 1e-9)  # the zeros are exact
    assert (x >= lower).all() and info.steps < 40


def test_orthant_lm_keeps_held_coordinates_and_bounds():
    A = torch.eye(2, dtype=torch.float64)
    energy, system = _quadratic(A, torch.tensor([-1.0, 2.0], dtype=torch.float64))
    x, _ = orthant_levenberg_marquardt(torch.tensor([0.5, 0.5], dtype=torch.float64), energy, system,
                                       torch.ones(2, dtype=torch.bool), lower=torch.zeros(2, dtype=torch.float64),
                                       upper=torch.ones(2, dtype=torch.float64), iters=50, tol=1e-14)
    assert torch.allclose(x, torch.tensor([0.0, 1.0], dtype=torch.float64))
    y, _ = orthant_levenberg_marquardt(torch.tensor([0.5, 0.5], dtype=torch.float64), energy, system,
                                       torch.tensor([False, True]), iters=50, tol=1e-14)
    assert float(y[0]) == 0.5 and abs(float(y[1]) - 2.0) < 1e-9


def test_orthant_lm_leaves_a_flat_energy_alone():
    theta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    x, info = orthant_levenberg_marquardt(theta, lambda t: 1.0, lambda t: (torch.zeros(2, dtype=torch.float64),
                                                                        torch.zeros(2, 2, dtype=torch.float64)),
                                          torch.ones(2, dtype=torch.bool))
    assert torch.equal(x, theta) and info.steps == 0


@pytest.fixture(scope="module")
def case():
    """The open head and one synthetic face with its true landmarks."""
    head = load_head_model("open")
    return head, render_sample(head, 7)


def _started_fit(model, sample, **changes) -> PhotoFit:
    fit = PhotoFit(model, sample.image, sample.landmarks2d.numpy(), dataclasses.replace(FitConfig(), **changes))
    fit.camera()
    return fit


def test_gauss_newton_system_is_the_exact_gradient_and_jacobian(case):
    """At a shaped, expressive face with the jaw open, the system's gradient equals autograd's
    and its 2JᵀJ equals the one from the autodiff Jacobian of the landmark residuals."""
    model, sample = case
    fit = _started_fit(model, sample)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        fit.beta.copy_(torch.randn(fit.beta.shape, generator=g) * 0.7)
        fit.psi.copy_(torch.rand(fit.psi.shape, generator=g) * 0.4)
        fit.jaw[0, 0] = 0.2
    grad, H = fit._lm_system(priors=True)
    energy = fit._landmark_energy(priors=True, l1=False).sum()
    exact = torch.cat([t[0] for t in torch.autograd.grad(energy, fit._leaves())])
    assert float((grad - exact).norm() / exact.norm()) < 2e-3

    sizes = [3, 3, model.n_identity, model.n_expression, 3]
    w = fit.lmk_w / fit.lmk_w.sum()
    scale = (w.sqrt() / fit.lmk_sigma)[:, None]

    def residuals(theta):
        rvec, tvec, beta, psi, jaw = [p[None] for p in torch.split(theta, sizes)]
        cam = PerspectiveCamera(fit.K_work[None], axis_angle_to_matrix(rvec), tvec, fit.size)
        params = FaceParams(identity=beta, expression=psi * fit.exp_mask, camera=cam, sh=fit.sh,
                            pose=_pose_tensor(model, jaw * fit.jaw_mask, fit.cache.jaw_index))
        dec = fit.sub_decoder(params)
        return ((dec.project(dec.points(fit.sub_tri, fit.lmk_bary))[0] - fit.target[0]) * scale).reshape(-1)

    J = jacfwd(residuals)(fit._flat())
    _, H_lm = fit._lm_system(priors=False)
    ref = 2 * J.T @ J
    shape = slice(6, 6 + model.n_identity + model.n_expression)  # the analytic columns: exact
    assert float((H_lm[shape, shape] - ref[shape, shape]).norm() / ref[shape, shape].norm()) < 1e-4
    assert float((H_lm - ref).norm() / ref.norm()) < 1e-3  # camera and jaw by differences


def test_lm_landmark_stage_reaches_a_lower_energy_than_adam(case):
    """Same energy (landmarks, priors, plain ℓ1; no reweighting): Levenberg–Marquardt ends
    lower than the Adam schedule, with unused units exactly at zero."""
    model, sample = case
    adam = _started_fit(model, sample, expression_reweight_iters=0, landmark_solver="adam")
    lm = _started_fit(model, sample, expression_reweight_iters=0, landmark_solver="lm")
    adam.landmarks()
    lm.landmarks()

    def energy(fit):
        with torch.no_grad():
            return float(fit._landmark_energy(priors=True).sum())

    assert energy(lm) < energy(adam)
    assert int((lm.psi == 0).sum()) > model.n_expression // 2
    assert int((adam.psi == 0).sum()) < int((lm.psi == 0).sum())


def test_landmark_solver_is_checked():
    with pytest.raises(ConfigError, match="landmark_solver"):
        fit_config(["landmark_solver=newton"])
    assert fit_config(["landmark_solver=lm"]).landmark_solver == "lm"


def test_init_with_guessed_intrinsics_projects_the_head_where_the_init_did():
    """FitConfig.init_intrinsics = "guess" (the hybrid's): the init's translation moves so
    that under the guessed K the model origin lands on the same pixel, at the same scale."""
    import numpy as np

    from engine.fitting.fitter import _with_intrinsics

    K = np.array([[900.0, 0, 120], [0, 900.0, 130], [0, 0, 1]])
    K_new = np.array([[400.0, 0, 128], [0, 400.0, 128], [0, 0, 1]])
    t = np.array([0.03, -0.02, 1.5])
    t2 = _with_intrinsics(K, t, K_new)
    p, p2 = K @ t, K_new @ t2
    assert np.allclose(p[:2] / p[2], p2[:2] / p2[2])
    assert np.isclose(K[0, 0] / t[2], K_new[0, 0] / t2[2])  # pixels per metre at the head
    for field in ("init_intrinsics", "hybrid_intrinsics"):
        with pytest.raises(ConfigError, match=field):
            FitConfig(**{field: "exif"})
