"""Skin-tone benchmark (engine.eval.skin): its scores read back a known compression of tones."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from engine.eval.cycles import tone_agreement
from engine.eval.skin import evaluate_skin, format_report, skin_config
from engine.face import FaceParams
from engine.generator.realistic import render_realistic
from engine.head import load_head_model


class _ToneOracle:
    """Knows each rendered face's true albedo (by image hash) and returns ``mean + scale ·
    (albedo − mean)``: the benchmark must read ``scale`` back as the slope."""

    name = "oracle"

    def __init__(self, model, truth: dict[str, FaceParams], scale: float, mean: float = 0.45) -> None:
        self.head, self.truth, self.scale, self.mean = model, truth, scale, mean

    def __call__(self, face, progress=None) -> FaceParams:
        gt = self.truth[hashlib.sha1(face.image.tobytes()).hexdigest()]
        return gt.replace(albedo=self.mean + self.scale * (gt.albedo - self.mean))


def test_scores_read_back_a_known_tone_compression():
    model = load_head_model("open")
    n, seed = 5, 7
    truth = {}
    for k in range(n):
        sample = render_realistic(model, seed + k, skin_config())
        truth[hashlib.sha1(sample.image.tobytes()).hexdigest()] = sample.params
    exact = evaluate_skin(model, _ToneOracle(model, truth, 1.0), n=n, seed=seed).summary()
    assert exact["faces"] == n and exact["spearman"] == pytest.approx(1.0) and exact["slope"] == pytest.approx(1.0)
    assert exact["mean_abs_error"] < 1e-6
    # luma (Rec. 709 weights summing to 1) and the median are affine-equivariant: slope exactly 0.3
    rep = evaluate_skin(model, _ToneOracle(model, truth, 0.3), n=n, seed=seed)
    d = rep.summary()
    assert d["spearman"] == pytest.approx(1.0) and abs(d["slope"] - 0.3) < 1e-6
    assert "Spearman 1.000" in format_report(rep)


def test_tone_agreement():
    t = np.array([0.2, 0.4, 0.6, 0.8])
    assert tone_agreement(t, 0.5 * t + 0.1) == pytest.approx((1.0, 0.5))
    rho, slope = tone_agreement(t[:2], t[:2])
    assert np.isnan(rho) and slope == pytest.approx(1.0)


def test_fit_options_are_typed_and_checked(capsys):
    from engine.eval.__main__ import _fit_config, main

    cfg = _fit_config(["light_level_weight=0", "hybrid_joint_iters=12"])
    assert cfg.light_level_weight == 0.0 and cfg.hybrid_joint_iters == 12
    assert _fit_config([]) is None
    for bad, message in (("light_level=abc", "must be of type float"), ("nonsense=1", "unknown config key"),
                         ("novalue", "must look like key=value")):
        with pytest.raises(SystemExit) as exc:
            main(["skin", "--n", "1", "--fit-option", bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_hybrid_takes_the_learned_starts_light_level():
    """FitConfig.light_level_from_init: with a learned start, the light-level prior pulls
    towards the start's own mean shading, so a start that sees a brighter light gives a darker
    albedo; with the option off the start's light is not used at all."""
    import dataclasses

    from engine.eval.cycles import face_luminance
    from engine.eval.cycles_set import face_region
    from engine.fitting import FitConfig, fit_photo
    from engine.methods.hybrid import hybrid_config

    model = load_head_model("open")
    sample = render_realistic(model, 11, skin_config())
    start = sample.params.replace(displacement=None)
    region = face_region(model)
    lm = sample.landmarks2d.numpy()

    def skin(cfg, sh_scale):
        init = start.replace(sh=start.sh * sh_scale)
        fitted = fit_photo(model, sample.image, lm, cfg, init=init)
        return face_luminance(fitted.albedo[0].numpy(), region)

    base = dataclasses.replace(hybrid_config(FitConfig()), joint_iters=0, expression_reweight_iters=0)
    on = dataclasses.replace(base, light_level_from_init=True)
    off = dataclasses.replace(base, light_level_from_init=False)
    assert skin(on, 2.0) < 0.85 * skin(on, 1.0)
    assert skin(off, 2.0) == pytest.approx(skin(off, 1.0), abs=1e-6)
