"""Expression-recovery benchmark (engine.eval.expressions): its faces carry the weights they
claim, its scores measure shrinkage the way they say, and the fit runs through it."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from engine.eval.__main__ import main
from engine.eval.expressions import PRESETS, evaluate_expressions, expression_jobs, expression_sample, format_report
from engine.face import FaceParams
from engine.head import load_head_model


@pytest.fixture(scope="module")
def model():
    return load_head_model("open")


def test_preset_faces_show_their_expression(model):
    jobs = [j for j in expression_jobs(model, n=0, neutral=0, presets=1) if j[0] == "preset:blink"]
    (kind, seed, cfg, weights, jaw), = jobs
    blink = expression_sample(model, seed, cfg, weights, jaw)
    neutral = expression_sample(model, seed, cfg)  # same face, no expression
    names = model.expression_names
    expr = blink.params.expression[0]
    assert expr[names.index("eyeBlinkLeft")] == 1.0 and expr[names.index("eyeBlinkRight")] == 1.0
    assert int((expr != 0).sum()) == 2 and not neutral.params.expression.any()
    # iBUG upper (37, 38 / 43, 44) and lower (41, 40 / 47, 46) eyelid points close up
    def gap(s):
        lm = s.landmarks2d
        return float((lm[[37, 38, 43, 44]] - lm[[41, 40, 47, 46]]).norm(dim=-1).mean())
    assert gap(blink) < 0.5 * gap(neutral)
    assert not np.array_equal(blink.image, neutral.image)
    smile = PRESETS["broad smile"]
    s = expression_sample(model, seed, cfg, *smile)
    jaw_i = model.joint_names.index("jaw")
    assert abs(float(s.params.pose[0, jaw_i, 0]) - smile[1]) < 1e-6


def test_jobs_are_disjoint_and_cover_every_kind(model):
    jobs = expression_jobs(model, n=5, seed=0, neutral=2, presets=2)
    kinds = [j[0] for j in jobs]
    assert kinds.count("strong") == 5 and kinds.count("neutral") == 2
    assert sum(k.startswith("preset:") for k in kinds) == 2 * len(PRESETS)
    seeds = [j[1] for j in jobs]
    assert len(set(seeds)) == len(seeds)
    # a tuning run on another seed range does not reuse the reported faces
    other = {j[1] for j in expression_jobs(model, n=5, seed=100, neutral=2, presets=2)}
    assert not other & set(seeds)


class _ScaledOracle:
    """Knows each rendered face's true expression (by image hash) and returns it times
    ``scale``: the scores must read that back as a slope of ``scale``."""

    name = "oracle"

    def __init__(self, model, truth: dict[str, FaceParams], scale: float) -> None:
        self.head, self.truth, self.scale = model, truth, scale

    def __call__(self, face, progress=None) -> FaceParams:
        gt = self.truth[hashlib.sha1(face.image.tobytes()).hexdigest()]
        return gt.replace(expression=self.scale * gt.expression)


def test_scores_read_back_a_known_shrinkage(model):
    kwargs = dict(n=24, seed=3, neutral=2, presets=1)
    truth = {}
    for kind, s, cfg, w, jaw in expression_jobs(model, **kwargs):
        sample = expression_sample(model, s, cfg, w, jaw)
        truth[hashlib.sha1(sample.image.tobytes()).hexdigest()] = sample.params
    rep = evaluate_expressions(model, _ScaledOracle(model, truth, 0.5), landmarks="gt", **kwargs)
    d = rep.summary()
    assert d["strong_faces"] == 24 and d["preset_faces"] == len(PRESETS) and d["neutral_faces"] == 2
    assert abs(d["strong_slope_active"] - 0.5) < 1e-6 and abs(d["preset_slope_active"] - 0.5) < 1e-6
    assert d["neutral_mean_activation"] == 0.0 and d["strong_mean_inactive"] == 0.0
    assert d["units_scored"] >= 1 and abs(d["corr_mean"] - 1.0) < 1e-6
    assert abs(d["jaw_corr"] - 1.0) < 1e-6 and d["jaw_mae_deg"] < 1e-4
    for u in rep.per_unit():
        if "mae_active" in u:
            assert abs(u["fitted_active"] - 0.5 * u["true_active"]) < 1e-6
            assert abs(u["mae_active"] - 0.5 * u["true_active"]) < 1e-6
    smile = rep.per_preset()["broad smile"]
    assert smile["mouthSmileLeft"] == pytest.approx([0.9, 0.45])
    assert smile["jaw (deg)"] == pytest.approx([np.degrees(0.12)] * 2, abs=1e-4)
    text = format_report(rep)
    assert "| broad smile | mouthSmileLeft 0.90 -> 0.45" in text


def test_cli_runs_the_fit(model, capsys):
    assert main(["expressions", "--n", "2", "--neutral", "1", "--presets", "1", "--landmarks", "gt", "--seed", "7",
                 "--json", "--quiet"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["method"] == "fit" and len(rep["faces"]) == 2 + len(PRESETS) + 1
    jaw_open = rep["names"].index("jawOpen")
    for f in rep["faces"]:
        fitted = np.array(f["fitted"])
        assert ((fitted >= -1e-6) & (fitted <= 1 + 1e-6)).all() and fitted[jaw_open] == 0.0
    assert "neutral_mean_activation" in rep["summary"] and "preset_slope_active" in rep["summary"]
