"""The committed default MoFA checkpoint (engine/assets/mofa_open_default.pt) loads, is small,
and beats the zero code (mean face, centred) on held-out synthetic faces."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CKPT = Path(__file__).resolve().parents[1] / "engine" / "assets" / "mofa_open_default.pt"


@pytest.fixture(scope="module")
def models():
    if not CKPT.is_file():
        pytest.skip(f"{CKPT} is absent (train it: see docs/training.md, 'Default checkpoint')")
    from engine.errors import ModelFileError
    from engine.methods.mofa import Mofa, load_checkpoint

    torch.set_num_threads(1)
    try:
        trained = load_checkpoint(CKPT)
    except ModelFileError as exc:  # the open head model file is built at setup
        pytest.skip(f"cannot load the checkpoint's head model: {exc}")
    return trained, Mofa(trained.cfg, head=trained.head).eval()


def test_default_checkpoint_is_small_and_inference_only(models):
    trained, _ = models
    assert CKPT.stat().st_size < 10 * 2**20
    assert trained.cfg.head_model == "open" and not trained.training


@pytest.mark.parametrize("seed", [3, 17])
def test_default_checkpoint_beats_the_zero_code(models, seed):
    from engine.eval.synthetic import score_fit
    from engine.methods.mofa import predict_photo
    from engine.synthetic import render_sample

    trained, untrained = models
    s = render_sample(trained.head, seed)  # evaluation seeds: disjoint from the corpus (>= 1234e7)
    lm = s.landmarks2d.numpy()
    _, photo_t, lmk_t = score_fit(trained.head, s, predict_photo(trained, s.image, lm))
    _, photo_0, lmk_0 = score_fit(trained.head, s, predict_photo(untrained, s.image, lm))
    assert lmk_t < 0.8 * lmk_0, (lmk_t, lmk_0)
    assert photo_t < photo_0, (photo_t, photo_0)
