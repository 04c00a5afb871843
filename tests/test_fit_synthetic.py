"""The fitter recovers a synthetic face rendered with known parameters (tiny protocol)."""

import numpy as np
import pytest
import torch

from engine.eval.synthetic import evaluate_synthetic, umeyama
from engine.fitting import FitConfig, fit_photo
from engine.fitting.camera_init import solve_pnp
from engine.head import load_head_model
from engine.face import FaceDecoder
from engine.generator import render_sample, sample_params


@pytest.fixture(scope="module")
def model():
    return load_head_model("open")


def test_umeyama_recovers_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    a = 0.3
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    dst = 1.7 * src @ R.T + np.array([1.0, -2.0, 0.5])
    s, R2, t = umeyama(src, dst)
    assert abs(s - 1.7) < 1e-9 and np.allclose(R2, R) and np.allclose(t, [1.0, -2.0, 0.5])


def test_sampler_is_deterministic(model):
    a, b = render_sample(model, 3), render_sample(model, 3)
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, render_sample(model, 4).image)
    assert a.image.shape == (224, 224, 3) and a.face_mask.sum() > 2000


def test_pnp_recovers_ground_truth_pose(model):
    s = render_sample(model, 5)
    with torch.no_grad():
        lm3 = model.landmarks(s.vertices[None])[0].numpy()
    cam = s.params.camera
    R, t = solve_pnp(lm3, s.landmarks2d.numpy(), cam.K[0].numpy().astype(np.float64))
    assert np.abs(R - cam.R[0].numpy()).max() < 1e-3
    assert np.abs(t - cam.t[0].numpy()).max() < 1e-3


def test_fit_beats_the_mean_face_on_ground_truth_landmarks(model):
    """Four faces (seeds 1-4): the fitted geometry's mean error is well below the mean face's
    (measured with the open model's build 3: 1.75 vs 2.48 mm, 0.70; one face, seed 1, lies
    1.43 mm from the mean face and the fit cannot gain there, so the bound is on the mean)."""
    face = model.regions["face_skin"]
    fitted, mean_face, lmk = [], [], []
    for seed in range(1, 5):
        s = render_sample(model, seed)
        fit = fit_photo(model, s.image, s.landmarks2d.numpy(), FitConfig())
        gt = s.vertices[face].numpy().astype(np.float64)

        def err(v):
            sc, R, t = umeyama(v[face].numpy().astype(np.float64), gt)
            return np.linalg.norm(sc * v[face].numpy() @ R.T + t - gt, axis=1).mean() * 1000

        decoded = FaceDecoder(model)(fit)
        mean_face.append(err(model.template))
        fitted.append(err(decoded.vertices[0]))
        assert fitted[-1] < 3.0, (seed, fitted[-1])
        lmk.append(float((decoded.landmarks2d[0] - s.landmarks2d).norm(dim=-1).mean()))
        assert lmk[-1] < 2.0, (seed, lmk[-1])  # seed 2: 1.69 px (one-sided albedo blotches vs the symmetry prior)
        assert fit.visibility.shape == (1, model.n_vertices) and 0.2 < float(fit.visibility.mean()) < 0.8
        assert fit.camera.image_size == (224, 224) and fit.landmarks.shape == (1, 68, 2)
        assert set(fit.timings) == {"camera", "landmarks", "appearance", "refine"}
    assert np.mean(fitted) < 0.85 * np.mean(mean_face), (fitted, mean_face)
    assert np.mean(lmk) < 1.5, lmk


def test_eval_protocol_tiny_run(model):
    rep = evaluate_synthetic(model, n=1, seed=0, sources=("gt",))
    summ = rep.summary()["gt"]
    assert summ["faces"] == 1
    assert summ["geometric_mm_median"] < 3.0
    assert summ["photometric_median"] < 0.05
    assert summ["landmark_px_median"] < 1.5
    assert rep.by_yaw() == {}  # the basic generator records no head yaw


def test_eval_protocol_on_the_realistic_generator_reports_by_yaw(model):
    """``--generator realistic``: whole photo-like frames, scored the same way; each face's
    head yaw comes from the generator and the summary groups the faces by |yaw|."""
    from engine.data.synthetic import generator_config
    from engine.eval.synthetic import YAW_BANDS

    synth = generator_config("realistic", 224, {"face_fraction": [0.5, 0.8], "wide_pose_probability": 0.0})
    rep = evaluate_synthetic(model, n=2, seed=3, sources=("gt",), synth=synth,
                             config=FitConfig(joint_iters=5))
    assert len(rep.scores) == 2 and all(s.true_yaw_deg is not None for s in rep.scores)
    bands = rep.by_yaw()["gt"]
    assert sum(b["faces"] for b in bands) == 2
    for b in bands:
        assert (b["lo"], b["hi"]) in YAW_BANDS and b["detector_misses"] == 0
        inside = [s for s in rep.scores if b["lo"] <= abs(s.true_yaw_deg) < b["hi"]]
        assert b["geometric_mm_median"] == pytest.approx(float(np.median([s.geometric_mm for s in inside])))
    assert rep.to_dict()["by_yaw"] == rep.by_yaw()


def test_sample_params_ranges(model):
    p = sample_params(model, 11)
    assert (p["expression"] >= 0).all() and (p["expression"] <= 0.6 + 1e-6).all()
    if "jawOpen" in model.expression_names and "jaw" in model.joint_names:
        assert p["expression"][model.expression_names.index("jawOpen")] == 0
    assert p["t"][2] > 0.5
