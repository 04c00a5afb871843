"""ICT Face Model Light adapter: the shared cached copy (skipped when absent) and the
original FaceXModel OBJ-folder reader (on a tiny synthetic folder)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.errors import ModelFileError
from engine.head import load_head_model
from engine.head.ict import default_path, read_facex_folder, resolve

HAVE_ICT = (default_path() / "ict_face_model_light.npz").is_file()
needs_ict = pytest.mark.skipif(not HAVE_ICT, reason=f"ICT Face Model Light not found in {default_path()}")


@pytest.fixture(scope="module")
def ict():
    return load_head_model("ict")


@needs_ict
@pytest.mark.shared
def test_ict_shapes_units_and_landmarks(ict):
    s = ict.summary()
    assert (s["n_vertices"], s["n_identity"], s["n_expression"], s["n_landmarks"]) == (26719, 100, 53, 68)
    assert "jawOpen" in ict.expression_names and "eyeBlinkLeft" in ict.expression_names
    assert 0.058 < s["inter_pupil_distance_m"] < 0.07  # cm -> m verified by the eyes
    torch.testing.assert_close(ict().vertices[0], ict.template)
    j = dict(zip(ict.joint_names, ict.joint_template))
    assert j["eye_left"][0] > 0 > j["eye_right"][0]
    # landmarks sit on the listed vertices
    idx = json.loads((default_path() / "vertex_indices.json").read_text())["idx_to_landmark_verts"]
    lm = ict.landmarks(ict.template[None])[0]
    torch.testing.assert_close(lm, ict.template[idx])
    # linearity of the identity basis
    a = torch.randn(1, 100, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ict(2 * a).vertices - ict.template, 2 * (ict(a).vertices - ict.template),
                               atol=1e-5, rtol=1e-4)


@needs_ict
@pytest.mark.shared
def test_ict_jaw_joint_opens_mouth_not_skull(ict):
    pose = torch.zeros(1, len(ict.joint_names), 3)
    pose[0, ict.joint_names.index("jaw"), 0] = 0.3
    v = ict(pose=pose).vertices[0]
    d = (v - ict.template).norm(dim=-1)
    assert float(d[ict.regions["eyes"]].max()) < 1e-6
    assert float(d[ict.template[:, 1] > 0.02].max()) < 1e-6  # forehead and skull stay
    lm0, lm1 = ict.landmarks(ict.template[None])[0], ict.landmarks(v[None])[0]
    assert float(lm0[8, 1] - lm1[8, 1]) > 0.01  # chin drops > 1 cm


def _write_obj(path, v, faces=None, uv=None):
    lines = [f"v {x} {y} {z}" for x, y, z in v]
    if uv is not None:
        lines += [f"vt {a} {b}" for a, b in uv]
        lines.append("usemtl M_Face")
        lines += ["f " + " ".join(f"{i + 1}/{i + 1}" for i in f) for f in faces]
    path.write_text("\n".join(lines) + "\n")


def test_facex_folder_reader(tmp_path):
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0]], np.float32)
    uv = v[:, :2] / 2
    _write_obj(tmp_path / "generic_neutral_mesh.obj", v, [[0, 1, 2, 3], [1, 4, 2]], uv)
    _write_obj(tmp_path / "identity000.obj", v + [0, 0, 1])
    _write_obj(tmp_path / "identity001.obj", v * 2)
    _write_obj(tmp_path / "jawOpen.obj", v - [0, 1, 0])
    _write_obj(tmp_path / "eyeBlink_L.obj", v + [0.5, 0, 0])
    _write_obj(tmp_path / "PupilDilate_L.obj", v)
    (tmp_path / "vertex_indices.json").write_text(json.dumps({"idx_to_landmark_verts": list(range(68))}))
    raw = read_facex_folder(tmp_path)
    assert raw["identity"].shape == (2, 5, 3) and list(raw["identity_names"]) == ["identity000", "identity001"]
    np.testing.assert_allclose(raw["identity"][0], np.tile([0, 0, 1], (5, 1)))
    np.testing.assert_allclose(raw["identity"][1], v)
    assert list(raw["expression_names"]) == ["eyeBlink_L", "jawOpen"]  # extras are not expressions
    np.testing.assert_allclose(raw["expression"][1], np.tile([0, -1, 0], (5, 1)))
    assert raw["face_vertex_index"].tolist() == [[0, 1, 2, 3], [1, 4, 2, -1]]
    assert raw["face_material"].tolist() == [0, 0]
    raw2, meta = resolve(tmp_path)  # a folder path works and finds vertex_indices.json
    assert meta["landmark_verts"] == list(range(68))
    # the tiny folder is not the 26,719-vertex Light model: one clear error
    with pytest.raises(ModelFileError, match="26719"):
        load_head_model("ict", str(tmp_path))


def test_ict_missing_or_corrupt(tmp_path):
    with pytest.raises(ModelFileError, match="ICT-FaceKit"):
        load_head_model("ict", str(tmp_path / "nothing"))
    bad = tmp_path / "ict.npz"
    bad.write_bytes(b"garbage")
    (tmp_path / "vertex_indices.json").write_text("{}")
    with pytest.raises(ModelFileError, match="ict.npz"):
        load_head_model("ict", str(bad))
    (tmp_path / "generic_neutral_mesh.obj").write_text("v 0 0 0\nf 1 2 3 4 5\n")
    with pytest.raises(ModelFileError, match="corners"):
        read_facex_folder(tmp_path)
