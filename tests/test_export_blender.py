"""The GLB we write imports into Blender with shape keys named after the expressions."""

from __future__ import annotations

import os

import numpy as np
import pytest

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a module) is not installed")
pytestmark = pytest.mark.blender


def test_glb_imports_into_blender_with_named_shape_keys(tmp_path, monkeypatch):
    from engine.head import load_head_model
    from engine.head.__main__ import export

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    m = load_head_model("open")
    out = tmp_path / "head.glb"
    rep = export(m, out, [], ["jawOpen=0.8"], [])
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=os.fspath(out))
    meshes = [o for o in bpy.data.objects if o.type == "MESH"]
    assert len(meshes) == 1
    me = meshes[0].data
    assert len(me.vertices) == rep["n_vertices"]
    assert len(me.polygons) == m.n_faces
    keys = me.shape_keys.key_blocks
    assert [k.name for k in keys][1:] == m.expression_names
    assert keys["jawOpen"].value == pytest.approx(0.8)
    assert len(me.uv_layers) == 1
    # the jawOpen shape key moves the chin down in Blender's Z-up frame (glTF +Y -> Blender +Z)
    basis = np.array([v.co[:] for v in keys["Basis"].data])
    jaw = np.array([v.co[:] for v in keys["jawOpen"].data])
    assert (jaw - basis)[:, 2].min() < -0.01
