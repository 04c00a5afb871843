"""OBJ and GLB writers: read the files back and check what other tools rely on."""

from __future__ import annotations

import numpy as np
import pytest

from engine.export import write_glb, write_obj
from engine.export.gltf import read_glb, split_seams


def _quad_strip():
    # two triangles sharing an edge, with a UV seam on vertex 1 (two different uvs)
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float64)
    f = np.array([[0, 1, 2], [1, 3, 2]])
    uv = np.array([[0, 0], [0.5, 0], [0, 1], [1, 0], [1, 1]], np.float64)
    fuv = np.array([[0, 1, 2], [3, 4, 2]])
    return v, f, uv, fuv


def test_obj_roundtrip(tmp_path):
    v, f, uv, fuv = _quad_strip()
    tex = tmp_path / "src" / "albedo.png"
    tex.parent.mkdir()
    tex.write_bytes(b"\x89PNG fake bytes are fine for copying")
    p = write_obj(tmp_path / "out" / "m.obj", v, f, uv, fuv, texture_path=tex)
    lines = p.read_text().splitlines()
    assert lines[0] == "mtllib m.mtl"
    vs = np.array([list(map(float, ln.split()[1:])) for ln in lines if ln.startswith("v ")])
    vts = np.array([list(map(float, ln.split()[1:])) for ln in lines if ln.startswith("vt ")])
    fs = [ln.split()[1:] for ln in lines if ln.startswith("f ")]
    np.testing.assert_allclose(vs, v)
    np.testing.assert_allclose(vts, uv)
    assert fs[1] == ["2/4", "4/5", "3/3"]
    assert "map_Kd albedo.png" in (tmp_path / "out" / "m.mtl").read_text()
    assert (tmp_path / "out" / "albedo.png").is_file()
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_split_seams_mapping():
    v, f, uv, fuv = _quad_strip()
    vmap, umap, nf = split_seams(f, fuv)
    assert len(vmap) == 5  # vertex 1 is split in two
    np.testing.assert_array_equal(vmap[nf], f)
    np.testing.assert_array_equal(umap[nf], fuv)


def test_split_seams_orders_corners_like_a_row_unique():
    """The GLB's vertex order is the (vertex, uv) pairs sorted row-wise: the same as
    ``np.unique(pairs, axis=0)``, so files stay byte-identical to earlier versions."""
    rng = np.random.default_rng(0)
    f, fuv = rng.integers(0, 40, (300, 3)), rng.integers(0, 55, (300, 3))
    pairs = np.stack([f.ravel(), fuv.ravel()], 1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    vmap, umap, nf = split_seams(f, fuv)
    np.testing.assert_array_equal(vmap, uniq[:, 0])
    np.testing.assert_array_equal(umap, uniq[:, 1])
    np.testing.assert_array_equal(nf, inverse.reshape(-1, 3))


def test_obj_text_of_two_meshes_in_turn(tmp_path):
    """The cached vt/f text belongs to its own mesh: writing another mesh in between changes nothing."""
    v, f, uv, fuv = _quad_strip()
    a1 = write_obj(tmp_path / "a1.obj", v, f, uv, fuv).read_text()
    b = write_obj(tmp_path / "b.obj", v[:3], f[:1], uv[:3] * 0.5, fuv[:1]).read_text()
    a2 = write_obj(tmp_path / "a2.obj", v, f, uv, fuv).read_text()
    assert a1.replace("a1", "a2") == a2
    assert "vt 0.25 0" in b and "f 1/1 2/2 3/3" in b and "vt 1 0" not in b


def test_glb_structure(tmp_path):
    v, f, uv, fuv = _quad_strip()
    morph = {"jawOpen": np.tile([0, -0.1, 0], (4, 1)), "eyeBlinkLeft": np.eye(4, 3)}
    res = write_glb(tmp_path / "m.glb", v, f, uv, fuv, morph, morph_weights={"jawOpen": 0.8},
                    texture_png=b"\x89PNG\r\n\x1a\nnot really")
    doc, blob = read_glb(tmp_path / "m.glb")
    mesh = doc["meshes"][0]
    assert mesh["extras"]["targetNames"] == ["jawOpen", "eyeBlinkLeft"]
    assert mesh["weights"] == [0.8, 0.0]
    prim = mesh["primitives"][0]
    acc = doc["accessors"]
    n = acc[prim["attributes"]["POSITION"]]["count"]
    assert n == res["n_vertices"] == 5
    for a in prim["attributes"].values():
        assert acc[a]["count"] == n

    def read(i, comps, dtype=np.float32):
        a, bv = acc[i], doc["bufferViews"][acc[i]["bufferView"]]
        return np.frombuffer(blob, dtype, a["count"] * comps, bv["byteOffset"]).reshape(a["count"], comps)

    pos = read(prim["attributes"]["POSITION"], 3)
    np.testing.assert_allclose(pos, v[res["vertex_map"]])
    # each vertex names its model vertex (an importer's exact map back, coincident vertices too)
    np.testing.assert_array_equal(read(prim["attributes"]["_MODEL_VERTEX"], 1)[:, 0], res["vertex_map"])
    tex = read(prim["attributes"]["TEXCOORD_0"], 2)
    idx = read(prim["indices"], 1, np.uint32).reshape(-1, 3)
    np.testing.assert_allclose(1 - tex[idx][..., 1], uv[fuv][..., 1])  # v flipped for glTF
    nrm = read(prim["attributes"]["NORMAL"], 3)
    np.testing.assert_allclose(nrm, np.tile([0, 0, 1], (5, 1)), atol=1e-6)
    d = read(prim["targets"][1]["POSITION"], 3)
    np.testing.assert_allclose(d, np.eye(4, 3)[res["vertex_map"]])
    assert acc[prim["targets"][0]["POSITION"]]["min"] == [0.0, pytest.approx(-0.1), 0.0]
    assert doc["images"][0]["mimeType"] == "image/png"
    assert len(blob) % 4 == 0


def test_glb_skin_rotations_pose_the_joints(tmp_path):
    """A skin's ``rotations`` become the joint nodes' rotations (the rest pose without): the
    file then shows the mesh bent at the joint, as linear blend skinning gives it."""
    from engine.export.gltf import posed_positions

    v, f, uv, fuv = _quad_strip()
    skin = {"joint_names": ["root", "tip"], "joint_parents": [-1, 0], "rest_joints": [[0, 0, 0], [1.0, 0, 0]],
            "weights": np.array([[1, 0], [1, 0], [0, 1], [0, 1]], float)}
    rest = write_glb(tmp_path / "rest.glb", v, f, uv, fuv, skin=skin)
    doc, blob = read_glb(tmp_path / "rest.glb")
    assert all("rotation" not in n for n in doc["nodes"][1:])
    np.testing.assert_allclose(posed_positions(doc, blob), v[rest["vertex_map"]], atol=1e-6)
    quarter = [0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)]  # 90 degrees about +Z at the tip joint
    res = write_glb(tmp_path / "bent.glb", v, f, uv, fuv, skin={**skin, "rotations": [[0, 0, 0, 1], quarter]})
    doc, blob = read_glb(tmp_path / "bent.glb")
    assert "rotation" not in doc["nodes"][1] and np.allclose(doc["nodes"][2]["rotation"], quarter)
    orig = v[res["vertex_map"]]
    moved = posed_positions(doc, blob)
    on_tip = np.array([1.0, 0.0, 0.0])  # the tip joint; vertices 2, 3 follow it
    for k, src in enumerate(res["vertex_map"]):
        if src >= 2:
            d = orig[k] - on_tip
            np.testing.assert_allclose(moved[k], on_tip + [-d[1], d[0], d[2]], atol=1e-6)
        else:
            np.testing.assert_allclose(moved[k], orig[k], atol=1e-6)
    with pytest.raises(ValueError, match="rotations"):
        write_glb(tmp_path / "bad.glb", v, f, uv, fuv, skin={**skin, "rotations": [quarter]})


def test_cli_export_obj_and_glb(tmp_path, capsys):
    import json

    from engine.head import load_head_model
    from engine.head.__main__ import main

    m = load_head_model("open")
    main(["export", "--model", "open", "--out", str(tmp_path / "h.obj"), "--expression", "jawOpen=0.8"])
    txt = (tmp_path / "h.obj").read_text()
    assert txt.count("\nv ") == m.n_vertices and txt.count("\nf ") == m.n_faces
    assert (tmp_path / "h.mtl").is_file()
    main(["export", "--model", "open", "--out", str(tmp_path / "h.glb"), "--identity", "0=1.5",
          "--pose", "jaw=0.2,0,0", "--expression", "mouthSmileLeft=1"])
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    doc, _ = read_glb(tmp_path / "h.glb")
    assert doc["meshes"][0]["extras"]["targetNames"] == m.expression_names
    assert rep["n_morph_targets"] == 52
    with pytest.raises(SystemExit):
        main(["export", "--model", "open", "--out", str(tmp_path / "h.ply")])
    assert capsys.readouterr().err.startswith("error: ")


def test_glb_texture_may_come_later(tmp_path):
    """write_glb takes the PNG as bytes or as a function it calls once the mesh is packed: same file."""
    v, f, uv, fuv = _quad_strip()
    png = b"\x89PNG not decoded by the writer"
    targets = {"a": np.ones((4, 3)) * 0.01}
    write_glb(tmp_path / "now.glb", v, f, uv, fuv, morph_targets=targets, texture_png=png)
    calls = []
    write_glb(tmp_path / "later.glb", v, f, uv, fuv, morph_targets=targets,
              texture_png=lambda: calls.append(1) or png)
    assert calls == [1]
    assert (tmp_path / "now.glb").read_bytes() == (tmp_path / "later.glb").read_bytes()
