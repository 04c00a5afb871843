"""reconstruct end to end with every head model: ICT (../shared) and FLAME (a synthetic file
in FLAME's layout), for the fit and for a learned network + hybrid with a tiny checkpoint.

Regression: ``--model ict`` and ``--model flame`` used to end in ``KeyError: 'skin'`` on
every photo (the fitter's contour term read a region only the open model had).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelFileError
from engine.head.ict import default_path
from engine.reconstruct import reconstruct

HAVE_ICT = Path(default_path()).exists()


def _check_folder(out: Path, model: str, n_vertices: int, method: str) -> dict:
    params = json.loads((out / "params.json").read_text())
    assert params["model"] == model and params["method"] == method
    for name in ("head.obj", "head.glb", "albedo.png", "rig.json", "head_camera.obj", "overlay.png", "summary.png"):
        assert (out / name).stat().st_size > 0, name
    rig = json.loads((out / "rig.json").read_text())
    assert rig["n_vertices"] == n_vertices
    lm = np.asarray(params["landmarks68_image_px"])
    assert lm.shape == (68, 2) and np.isfinite(lm).all()
    return params


@pytest.mark.shared
@pytest.mark.skipif(not HAVE_ICT, reason=f"ICT Face Model Light not found in {default_path()}")
def test_reconstruct_with_ict_fits_the_astronaut(astronaut_png, tmp_path):
    from engine.head import load_head_model

    reconstruct(astronaut_png, tmp_path / "ict", model="ict")
    params = _check_folder(tmp_path / "ict", "ict", 26719, "fit")
    # a real fit: the model's landmarks land near the detected ones (the open model: ~2-3 px)
    err = np.linalg.norm(np.asarray(params["landmarks68_image_px"]) - np.asarray(params["landmarks68_detected_px"]),
                         axis=1)
    assert np.median(err) < 8.0, np.median(err)
    assert list(params["expression"]) == load_head_model("ict").expression_names


def test_reconstruct_with_flame_fit(astronaut_png, tmp_path, flame_pkl):
    _check_folder(reconstruct(astronaut_png, tmp_path / "flame", model="flame", model_path=flame_pkl).out_dir,
                  "flame", 576, "fit")


@pytest.fixture(scope="module")
def tiny_flame_checkpoint(tmp_path_factory, flame_pkl) -> Path:
    """An untrained small MoFA for the FLAME fixture, saved by the trainer's export."""
    from engine.methods.mofa import Mofa, MofaConfig
    from engine.train.trainer import export_checkpoint

    model = Mofa(MofaConfig(backbone="resnet10", width=0.25, image_size=48, head_model="flame",
                            head_model_path=flame_pkl))
    path = tmp_path_factory.mktemp("flame_ckpt") / "tiny.pt"
    export_checkpoint({"model": model.state_dict(), "method": "mofa", "export": model.export_config()}, path)
    return path


def test_reconstruct_with_flame_learned_and_hybrid(astronaut_png, tmp_path, flame_pkl, tiny_flame_checkpoint):
    for method in ("mofa", "hybrid"):
        res = reconstruct(astronaut_png, tmp_path / method, model="flame", model_path=flame_pkl, method=method,
                          checkpoint=tiny_flame_checkpoint)
        params = _check_folder(res.out_dir, "flame", 576, method)
        assert sorted(params["expression"]) == [f"exp{i:03d}" for i in range(100)]


def test_checkpoint_for_another_head_model_is_one_clear_error(astronaut_png, tmp_path, tiny_flame_checkpoint):
    from engine.errors import UserError

    with pytest.raises(UserError, match="trained for head model 'flame'.*--model flame"):
        reconstruct(astronaut_png, tmp_path / "x", model="open", method="mofa", checkpoint=tiny_flame_checkpoint)
    assert not (tmp_path / "x").exists()


def test_head_model_without_a_required_region_fails_at_load_time():
    """Regions are a checked contract: a missing one is a ModelFileError, not a KeyError mid-fit."""
    from engine.head import load_head_model
    from engine.head.model import REGION_NAMES, HeadModel

    m = load_head_model("open")
    arrays = {k: getattr(m, k).numpy() for k in ("template", "faces", "uv", "face_uv", "identity_basis",
                                                  "identity_std", "expression_basis", "expression_range",
                                                  "joint_template", "joint_identity_basis",
                                                  "joint_expression_basis", "joint_parents", "skin_weights",
                                                  "lmk_faces", "lmk_bary")}
    regions = {k: v.numpy() for k, v in m.regions.items() if k != "skin"}
    with pytest.raises(ModelFileError, match="regions skin are missing"):
        HeadModel("broken", arrays, m.expression_names, m.joint_names, regions)
    assert "skin" in REGION_NAMES
    bad = dict(arrays, identity_std=arrays["identity_std"][:-1])
    with pytest.raises(ModelFileError, match="identity_std has shape"):
        HeadModel("broken", bad, m.expression_names, m.joint_names, m.regions)


@pytest.mark.shared
@pytest.mark.skipif(not HAVE_ICT, reason=f"ICT Face Model Light not found in {default_path()}")
@pytest.mark.parametrize("method", ["mofa", "hybrid"])
def test_ict_without_a_network_is_one_error_line(astronaut_png, tmp_path, method):
    """No network has been trained for ICT yet: one line naming --checkpoint, exit 2, no folder."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-m", "engine", "reconstruct", str(astronaut_png), "--out",
                           str(tmp_path / "o"), "--model", "ict", "--method", method, "--progress", "none"],
                          capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs --checkpoint" in lines[0] and "'ict'" in lines[0], lines
    assert not (tmp_path / "o").exists()
