"""The fitter's per-model caches go with their model (found by benchmarks/soak.py: keyed by
id(), every reconstruct() - which loads a fresh model - kept a few MB for good, 509 -> 809 MB
RSS over 100 runs, and a new model could inherit a collected model's id and its cache)."""

from __future__ import annotations

import gc
import weakref

import numpy as np


def _submodels() -> list:
    from engine.fitting import fitter

    return [sub for v in list(fitter._SUBMODELS.values()) for sub in (v.values() if isinstance(v, dict) else [v])]


def test_fit_caches_do_not_outlive_their_model():
    from engine.fitting import FitConfig, fit_photo, fitter
    from engine.head import load_head_model
    from engine.generator import render_sample

    sample = render_sample(load_head_model("open"), 3)
    cfg = FitConfig(pose_iters=2, shape_iters=2, joint_iters=1)
    for _ in range(3):
        earlier = _submodels()
        model = load_head_model("open")
        fit_photo(model, sample.image, sample.landmarks2d.numpy(), cfg)
        new_subs = [s for s in _submodels() if all(s is not e for e in earlier)]
        cached = [weakref.ref(model), weakref.ref(fitter.model_cache(model)), *map(weakref.ref, new_subs)]
        assert len(new_subs) == 1  # the fit's landmark submodel
        del model, new_subs, earlier
        gc.collect()
        assert all(ref() is None for ref in cached)  # nothing kept once the model is gone


def test_each_model_gets_its_own_cache():
    from engine.fitting import fitter
    from engine.head import load_head_model

    a, b = load_head_model("open"), load_head_model("open")
    assert fitter.model_cache(a) is fitter.model_cache(a)
    assert fitter.model_cache(a) is not fitter.model_cache(b)
    assert np.array_equal(fitter.model_cache(a).mirror.numpy(), fitter.model_cache(b).mirror.numpy())
