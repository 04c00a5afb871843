"""Inside Blender (the ``bpy`` module): the installed extension end to end.

Run by ``tests/test_blender_addon.py::test_inside_blender`` in a child process that sets a
temporary HOME / BLENDER_USER_RESOURCES and passes the built zip and a real output folder;
skipped when collected on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

CHILD = os.environ.get("FACERECON_BLENDER_CHILD") == "1"
pytestmark = [pytest.mark.blender,
              pytest.mark.skipif(not CHILD, reason="runs in the bpy child process started by "
                                                   "tests/test_blender_addon.py::test_inside_blender")]


@pytest.fixture(scope="module")
def result_folder() -> Path:
    return Path(os.environ["FACERECON_RESULT_FOLDER"])


@pytest.fixture(scope="module")
def engine_choice():
    return None  # the parent only starts this file when the engine is available


@pytest.fixture(scope="module")
def blender(tmp_path_factory):
    """bpy with the built extension installed into the temporary user folder."""
    home = Path(os.environ["HOME"])
    import bpy

    ext_dir = Path(bpy.utils.user_resource("EXTENSIONS"))
    assert str(ext_dir).startswith(str(home))
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    result = bpy.ops.extensions.package_install_files(filepath=os.environ["FACERECON_EXTENSION_ZIP"],
                                                      repo="user_default", enable_on_install=True)
    assert result == {"FINISHED"}
    module_name = "bl_ext.user_default.facerecon"
    assert module_name in bpy.context.preferences.addons
    installed = sys.modules[module_name]
    assert Path(installed.__file__).parent == ext_dir / "user_default" / "facerecon"
    return bpy, installed


def _evaluated_coords(bpy, obj) -> np.ndarray:
    obj.update_tag()  # a script setting an ID property must tag it (the UI does so itself)
    bpy.context.view_layer.update()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    co = np.empty(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", co)
    evaluated.to_mesh_clear()
    return co.reshape(-1, 3)


def _shape_key_names(obj) -> list[str]:
    return [kb.name for kb in obj.data.shape_keys.key_blocks[1:]]


def test_installed_extension_finds_its_bundled_engine(blender, engine_choice):
    bpy, installed = blender
    assert installed.runner.engine_root() == Path(installed.__file__).parent
    assert bpy.ops.facerecon.check_engine() == {"FINISHED"}
    assert bpy.context.window_manager.facerecon_job.status == "engine ready"


def test_reconstruct_operator_on_a_real_photo(blender, engine_choice, photos, tmp_path):
    bpy, installed = blender
    from engine.head import load_head_model

    model = load_head_model("open")
    settings = bpy.context.scene.facerecon
    settings.photo = str(photos["astronaut"])
    assert bpy.ops.facerecon.reconstruct() == {"FINISHED"}  # EXEC_DEFAULT: the synchronous path

    obj = bpy.context.active_object
    assert obj.name == "astronaut" and obj.type == "MESH"
    assert len(obj.data.vertices) == model.template.shape[0]
    assert len(obj.data.polygons) == model.faces.shape[0]
    uv = np.empty(len(obj.data.loops) * 2)
    obj.data.uv_layers.active.data.foreach_get("uv", uv)
    assert 0.0 <= uv.min() and uv.max() <= 1.0 and np.ptp(uv) > 0.5
    size = obj.dimensions
    assert 0.1 < size.x < 0.4 and 0.1 < size.z < 0.4  # metres, Z up
    image = obj.active_material.node_tree.nodes["Albedo"].image
    assert image.packed_file is not None and tuple(image.size) >= (256, 256)
    assert _shape_key_names(obj) == list(model.expression_names)
    assert obj["facerecon_model"] == "open" and len(obj["facerecon_sh"]) == 27
    assert bpy.context.scene.world.name == "astronaut photo light"

    # the jaw control opens the mouth: lower-face vertices move down
    installed.importer.reset_expression(obj)
    neutral = _evaluated_coords(bpy, obj)
    obj["jaw_open"] = 0.7
    opened = _evaluated_coords(bpy, obj)
    moved = np.linalg.norm(opened - neutral, axis=1) > 1e-3
    assert moved.sum() > 50 and obj.data.shape_keys.key_blocks["jawOpen"].value == pytest.approx(0.7)
    assert neutral[moved, 2].mean() < 0.0 and (opened - neutral)[moved, 2].mean() < 0  # below the eyes, downwards
    obj["jaw_open"] = 0.0
    obj.data.shape_keys.key_blocks["mouthSmileLeft"].value = 1.0
    smile = _evaluated_coords(bpy, obj)
    moved = np.linalg.norm(smile - neutral, axis=1) > 1e-3
    assert moved.sum() > 20 and neutral[moved, 0].mean() > 0.0  # the subject's left is +X

    # GLB round trip keeps the shape keys (names and count)
    glb = tmp_path / "astronaut.glb"
    assert bpy.ops.facerecon.export(format="GLB", filepath=str(glb)) == {"FINISHED"}
    from engine.export.gltf import read_glb

    doc, _ = read_glb(glb)
    assert doc["meshes"][0]["extras"]["targetNames"] == list(model.expression_names)
    before = set(bpy.data.objects)
    bpy.ops.import_scene.gltf(filepath=str(glb))
    # (the importer adds an "Icosphere" bone-shape mesh for the rig's bones: skip it)
    reimported = [o for o in bpy.data.objects if o not in before and o.type == "MESH" and o.data.shape_keys]
    assert len(reimported) == 1 and _shape_key_names(reimported[0]) == list(model.expression_names)
    reimported += [o for o in bpy.data.objects if o not in before and o not in reimported]
    # FBX keeps them as blend shapes
    bpy.context.view_layer.objects.active = obj
    fbx = tmp_path / "astronaut.fbx"
    assert bpy.ops.facerecon.export(format="FBX", filepath=str(fbx)) == {"FINISHED"}
    before = set(bpy.data.objects)
    bpy.ops.import_scene.fbx(filepath=str(fbx))
    from_fbx = [o for o in bpy.data.objects if o not in before and o.type == "MESH"]
    assert len(from_fbx) == 1 and _shape_key_names(from_fbx[0]) == list(model.expression_names)
    from_fbx += [o for o in bpy.data.objects if o not in before and o.type == "ARMATURE"]
    installed.importer.remove_objects(reimported + from_fbx)


def test_bad_photo_reports_an_error_and_adds_nothing(blender, engine_choice, photos):
    bpy, _ = blender
    before = len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.images)
    with pytest.raises(RuntimeError, match="(?i)face"):
        bpy.ops.facerecon.reconstruct(photo=str(photos["gradient"]))
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.facerecon.reconstruct(photo=str(photos["gradient"].with_name("missing.jpg")))
    assert (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.images)) == before
    assert not bpy.context.window_manager.facerecon_job.running


def test_import_replaces_or_adds_and_rolls_back(blender, result_folder, tmp_path):
    bpy, _ = blender
    settings = bpy.context.scene.facerecon
    settings.result_mode = "REPLACE"
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    first = bpy.context.active_object
    (first.parent or first).location = (1.0, 0.0, 0.0)  # move the head (its rig carries the mesh)
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    def heads():
        return [o for o in bpy.data.objects if o.get("facerecon_name") == "astronaut" and o.type == "MESH"]
    assert len(heads()) == 1 and tuple(heads()[0].matrix_world.translation) == (1.0, 0.0, 0.0)  # in place
    assert len([o for o in bpy.data.objects if o.get("facerecon_name") == "astronaut"]) == 2  # head + rig
    settings.result_mode = "ADD"
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    assert len(heads()) == 2

    broken = tmp_path / "broken"
    shutil.copytree(result_folder, broken)
    (broken / "params.json").write_text("{not json")
    counts = [len(getattr(bpy.data, c)) for c in ("objects", "meshes", "materials", "images", "worlds", "armatures")]
    with pytest.raises(RuntimeError, match="not valid JSON"):
        bpy.ops.facerecon.import_result(directory=str(broken))
    params = json.loads((result_folder / "params.json").read_text())
    (broken / "params.json").write_text(json.dumps(params))
    Path(broken / "displacement.png").write_bytes(b"not a png")  # fails after the glTF import
    with pytest.raises(RuntimeError, match="displacement"):
        bpy.ops.facerecon.import_result(directory=str(broken))
    assert [len(getattr(bpy.data, c)) for c in ("objects", "meshes", "materials", "images", "worlds", "armatures")] == counts


def test_detail_map_in_material_and_baked_into_all_shape_keys(blender, result_folder, tmp_path):
    bpy, installed = blender
    from PIL import Image

    folder = tmp_path / "detail"
    shutil.copytree(result_folder, folder)
    # a flat 16-bit map 1000 units above the mid grey at 1 µm per unit: 1 mm outwards
    Image.fromarray(np.full((64, 64), 32768 + 1000, np.uint16)).save(folder / "displacement.png")
    params = json.loads((folder / "params.json").read_text())
    params["displacement_scale_m"] = 1e-6
    (folder / "params.json").write_text(json.dumps(params))
    settings = bpy.context.scene.facerecon
    settings.result_mode, settings.bake_detail = "ADD", False
    assert bpy.ops.facerecon.import_result(directory=str(folder)) == {"FINISHED"}
    obj = bpy.context.active_object
    mat = obj.active_material
    output = next(n for n in mat.node_tree.nodes if n.type == "OUTPUT_MATERIAL")
    assert output.inputs["Displacement"].links[0].from_node.name == "Detail"

    keys = obj.data.shape_keys.key_blocks
    def key_co(kb):
        co = np.empty(len(kb.data) * 3)
        kb.data.foreach_get("co", co)
        return co.reshape(-1, 3)
    basis0, smile0 = key_co(keys[0]), key_co(keys["mouthSmileLeft"])
    normals = np.empty(len(obj.data.vertices) * 3)
    obj.data.vertex_normals.foreach_get("vector", normals)
    assert bpy.ops.facerecon.bake_detail() == {"FINISHED"}
    basis1, smile1 = key_co(keys[0]), key_co(keys["mouthSmileLeft"])
    offset = basis1 - basis0
    assert np.allclose(offset, 1e-3 * normals.reshape(-1, 3), atol=2e-5)  # 1 mm along the normals
    assert np.allclose(smile1 - basis1, smile0 - basis0, atol=1e-6)  # expressions unchanged
    assert not output.inputs["Displacement"].links and [m.type for m in obj.modifiers] == ["ARMATURE"]
    assert obj["facerecon_detail_baked"]


def test_rig_json_armature_poses_neck_and_eyes_and_exports_with_the_skin(blender, result_folder, tmp_path):
    """rig.json -> armature: the photo pose reproduces head.obj, neutral is the unposed GLB,
    the neck turns the head but not the neck base, the eye bones move only the eyeballs, and
    the GLB export keeps both the shape keys and the skin."""
    bpy, installed = blender
    importer = installed.importer
    from engine.head import load_head_model

    model = load_head_model("open")
    rig_data = json.loads((result_folder / "rig.json").read_text())
    bpy.context.scene.facerecon.result_mode = "ADD"
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    obj = bpy.context.active_object
    rig = obj.parent
    assert rig is not None and rig.type == "ARMATURE" and importer.pose_rig_of(obj) is rig
    assert [b.name for b in rig.data.bones] == model.joint_names
    assert [b.parent.name if b.parent else None for b in rig.data.bones] == \
        [model.joint_names[p] if p >= 0 else None for p in model.joint_parents.tolist()]
    assert [m.type for m in obj.modifiers] == ["ARMATURE"] and obj.modifiers[0].object is rig
    assert sorted(g.name for g in obj.vertex_groups) == sorted(model.joint_names)
    to_blender = importer.MODEL_TO_BLENDER
    order = importer._model_vertex_order(obj, rig_data)  # Blender index of each model vertex
    assert sorted(order.tolist()) == list(range(len(order)))  # a permutation (Blender reorders)
    # bone heads at the rest joints (model frame -> Blender: x, -z, y)
    heads = np.array([rig.data.bones[n].head_local for n in model.joint_names])
    assert np.allclose(heads, np.array(rig_data["rest_joints"]) @ to_blender.T, atol=1e-6)

    # photo pose + fitted expression = the engine's posed head.obj
    head_obj = np.array([[float(v) for v in line.split()[1:4]] for line in
                         (result_folder / "head.obj").read_text().splitlines() if line.startswith("v ")])
    assert np.abs(_evaluated_coords(bpy, obj)[order] - head_obj @ to_blender.T).max() < 1e-4
    # neutral pose + neutral expression = the unposed rest mesh of rig.json
    assert bpy.ops.facerecon.reset_pose(to_photo=False) == {"FINISHED"}
    installed.importer.reset_expression(obj)
    neutral = _evaluated_coords(bpy, obj)[order]
    assert np.abs(neutral - np.array(rig_data["rest_vertices"]) @ to_blender.T).max() < 1e-5

    # neck turn: the top of the head swings, the nose goes to the subject's left (+X), the
    # neck base (vertices the model binds mostly to the root joint; none fully) hardly moves
    rig["neck_turn"] = 0.5
    rig.update_tag()
    turned = _evaluated_coords(bpy, obj)[order]
    move = np.linalg.norm(turned - neutral, axis=1)
    top = neutral[:, 2] > np.percentile(neutral[:, 2], 95)
    root = rig_data["skin_weights"][model.joint_names[0]]
    base = np.zeros(len(neutral), bool)
    base[np.array(root["vertices"])[np.array(root["weights"]) >= 0.7]] = True
    assert base.sum() > 20 and neutral[base, 2].mean() < np.percentile(neutral[:, 2], 10)  # low on the neck
    nose = np.argmin(neutral[:, 1])  # most forward vertex (front is -Y)
    assert move[top].mean() > 0.02 and turned[nose, 0] - neutral[nose, 0] > 0.03
    assert move[base].max() < 0.25 * move[top].mean()
    rig["neck_turn"] = 0.0

    # gaze: the eyeballs turn (fronts to the subject's left); besides them only eyelid skin,
    # which the model's eye joints weigh by <= 11 %, moves a little
    rig["gaze_side"] = 0.3
    rig.update_tag()
    gaze = _evaluated_coords(bpy, obj)[order]
    move = np.linalg.norm(gaze - neutral, axis=1)
    eyes = model.regions["eyes"].numpy()
    assert (move[eyes] > 1e-4).all()
    assert move[~eyes].max() < 0.2 * move[eyes].max() and (move[~eyes] > 1e-6).sum() < 0.5 * eyes.sum()
    front = eyes & (neutral[:, 1] < np.percentile(neutral[eyes, 1], 20))
    assert (gaze - neutral)[front, 0].mean() > 1e-3

    # back to the photo pose
    assert bpy.ops.facerecon.reset_pose(to_photo=True) == {"FINISHED"}
    assert rig["gaze_side"] == pytest.approx(rig["facerecon_photo_pose"]["controls"]["gaze_side"])

    # GLB round trip: shape keys AND skin survive
    glb = tmp_path / "rigged.glb"
    assert bpy.ops.facerecon.export(format="GLB", filepath=str(glb)) == {"FINISHED"}
    from engine.export.gltf import read_glb

    doc, _ = read_glb(glb)
    mesh_node = next(n for n in doc["nodes"] if "mesh" in n)
    assert "skin" in mesh_node and len(doc["skins"][mesh_node["skin"]]["joints"]) == len(model.joint_names)
    assert doc["meshes"][0]["extras"]["targetNames"] == list(model.expression_names)
    before = set(bpy.data.objects)
    bpy.ops.import_scene.gltf(filepath=str(glb))
    new = [o for o in bpy.data.objects if o not in before]
    meshes = [o for o in new if o.type == "MESH" and o.data.shape_keys]  # not the bone-shape sphere
    arms = [o for o in new if o.type == "ARMATURE"]
    assert len(meshes) == 1 and len(arms) == 1
    assert _shape_key_names(meshes[0]) == list(model.expression_names)
    assert {b.name for b in arms[0].data.bones} == set(model.joint_names)
    assert any(m.type == "ARMATURE" and m.object is arms[0] for m in meshes[0].modifiers)
    assert set(model.joint_names) <= {g.name for g in meshes[0].vertex_groups}
    importer.remove_objects(new)
