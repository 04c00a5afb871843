"""--method learned|hybrid with a tiny MoFA checkpoint made here, and the fit overlay."""

from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelFileError, UserError
from engine.outputs import fit_overlay
from engine.reconstruct import reconstruct


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised small MoFA saved with the trainer's own export function."""
    from engine.methods.mofa import Mofa, MofaConfig
    from engine.train.trainer import export_checkpoint

    model = Mofa(MofaConfig(backbone="resnet10", width=0.25, image_size=48))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    export_checkpoint({"model": model.state_dict(), "method": "mofa", "export": model.export_config()}, path)
    return path


def test_learned_and_hybrid_write_the_folder(tiny_checkpoint, astronaut_png, tmp_path):
    learned = reconstruct(astronaut_png, tmp_path / "learned", method="learned", checkpoint=tiny_checkpoint)
    assert learned.params["method"] == "mofa" and (tmp_path / "learned" / "head.glb").is_file()
    assert "network" in learned.estimate.timings and "refine" not in learned.estimate.timings
    hybrid = reconstruct(astronaut_png, tmp_path / "hybrid", method="hybrid", checkpoint=tiny_checkpoint)
    assert hybrid.params["method"] == "hybrid" and hybrid.params["init_method"] == "mofa"
    assert {"network", "refine"} <= set(hybrid.estimate.timings)
    # the short fit moves the untrained network's mean face towards the detected landmarks
    def lmk_err(res):
        p = res.params
        return np.linalg.norm(np.array(p["landmarks68_image_px"]) - np.array(p["landmarks68_detected_px"]), axis=1).mean()
    assert lmk_err(hybrid) < lmk_err(learned)


def test_learned_needs_a_usable_checkpoint(astronaut_png, tmp_path, flame_pkl):
    # No committed network for ICT: the error names the missing option before any work starts.
    with pytest.raises(UserError, match="--checkpoint.*no default network for head model 'flame'"):
        reconstruct(astronaut_png, tmp_path / "a", model="flame", model_path=flame_pkl, method="learned")
    bad = tmp_path / "not_a_checkpoint.pt"
    bad.write_text("hello")
    with pytest.raises(ModelFileError, match="not_a_checkpoint.pt"):
        reconstruct(astronaut_png, tmp_path / "b", method="hybrid", checkpoint=bad)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_fit_overlay_draws_geometry_and_both_landmark_sets():
    photo = np.full((120, 160, 3), 30, np.uint8)
    grey = np.zeros((120, 160))
    mask = np.zeros((120, 160), bool)
    mask[20:100, 40:120] = True
    grey[mask] = 0.8
    out = fit_overlay(photo, grey, mask, np.array([[50.5, 60.5]]), np.array([[110.5, 60.5]]))
    assert out[70, 80].mean() > 100 and out[10, 150].mean() < 40  # grey geometry only inside the mask
    g, r = out[60, 50].astype(int), out[60, 110].astype(int)
    assert g[1] > 150 and g[0] < 100  # detected: green
    assert r[0] > 150 and r[1] < 100  # model: red


def test_open_model_defaults_to_the_committed_network():
    from engine.methods import get_method, learned_network, registry

    default = registry.default_checkpoint(get_method("mofa"), "open")
    if default is None:
        pytest.skip("engine/assets/mofa_open_default.pt is absent (train it: docs/training.md)")
    network = learned_network("learned", "open")
    assert network.head.name == "open" and network.name == "mofa"


def test_checkpoint_with_the_fit_is_an_error(astronaut_png, tmp_path, tiny_checkpoint):
    with pytest.raises(UserError, match="--checkpoint is for learned and hybrid methods"):
        reconstruct(astronaut_png, tmp_path / "c", method="fit", checkpoint=tiny_checkpoint)
    assert not (tmp_path / "c").exists()
