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
    if bpy.context.scene.world is None:
        bpy.context.scene.world = bpy.data.worlds.new("World")
    world_before = bpy.context.scene.world
    assert not settings.photo_lighting  # off by default: an artist's world is not replaced
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
    assert obj["facerecon_face_index"] == 0 and obj["facerecon_photo"] == str(photos["astronaut"])
    # the scene had a world: photo lighting is off by default, so it is kept
    assert world_before is not None and bpy.context.scene.world == world_before
    assert not any(w.name.startswith("astronaut photo light") for w in bpy.data.worlds)

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
    photo = json.loads((result_folder / "params.json").read_text())["photo"]
    # (the head of the reconstruct test above came from another file named astronaut.png: kept)
    def heads():
        return [o for o in bpy.data.objects if o.get("facerecon_photo") == photo and o.type == "MESH"]
    assert len(heads()) == 1 and tuple(heads()[0].matrix_world.translation) == (1.0, 0.0, 0.0)  # in place
    assert len([o for o in bpy.data.objects if o.get("facerecon_photo") == photo]) == 2  # head + rig
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


# ---------------------------------------------------------------------------- issue 17: artist feedback
def _import_copy(bpy, result_folder, tmp_path, name, **params_update):
    """Import a copy of the real output folder whose params.json is changed (photo, face)."""
    folder = tmp_path / name
    shutil.copytree(result_folder, folder)
    params = json.loads((folder / "params.json").read_text())
    params.update(params_update)
    (folder / "params.json").write_text(json.dumps(params))
    assert bpy.ops.facerecon.import_result(directory=str(folder)) == {"FINISHED"}
    return bpy.context.active_object


def test_replace_keeps_the_other_faces_of_a_group_photo(blender, result_folder, tmp_path):
    """Replace swaps only the head of the same photo *and* face; face 1 of a group photo does
    not remove face 0's head (both keep their photo and face index on the object)."""
    bpy, installed = blender
    settings = bpy.context.scene.facerecon
    settings.result_mode = "REPLACE"
    group = str(tmp_path / "team.jpg")
    face0 = _import_copy(bpy, result_folder, tmp_path, "f0", photo=group, face_index=0, faces_found=3)
    face1 = _import_copy(bpy, result_folder, tmp_path, "f1", photo=group, face_index=1, faces_found=3)
    assert (face0.name, face1.name) == ("team_face0", "team_face1")
    assert face0.name in bpy.data.objects  # still there
    for obj, index in ((face0, 0), (face1, 1)):
        assert obj["facerecon_photo"] == group and obj["facerecon_face_index"] == index
        assert obj.parent["facerecon_face_index"] == index  # the rig carries it too
    (face1.parent or face1).location = (0.4, 0.0, 0.0)
    again = _import_copy(bpy, result_folder, tmp_path, "f1b", photo=group, face_index=1, faces_found=3)
    heads = [o for o in bpy.data.objects if o.type == "MESH" and o.get("facerecon_photo") == group]
    assert sorted(o.name for o in heads) == ["team_face0", "team_face1"]  # face 1 replaced in place
    assert again.name == "team_face1" and tuple(again.matrix_world.translation) == pytest.approx((0.4, 0, 0))
    # another photo with the same file name is another photo
    other = _import_copy(bpy, result_folder, tmp_path, "f0c", photo=str(tmp_path / "x" / "team.jpg"),
                         face_index=0, faces_found=3)
    assert face0.name in bpy.data.objects and other != face0
    installed.importer.remove_objects([o for o in bpy.data.objects
                                       if str(o.get("facerecon_photo", "")).endswith("team.jpg")])


def test_group_photo_faces_are_numbered_and_reconstructed_by_index(blender, engine_choice, photos):
    """Find Faces numbers the faces of a group photo on the panel's preview (one number per
    face, 0 = the largest, drawn by the engine's detector in reconstruct's order), and
    reconstructing face 0 and then face 1 gives two heads."""
    bpy, installed = blender
    from PIL import Image
    from scipy import ndimage

    settings = bpy.context.scene.facerecon
    settings.photo = str(photos["group"])
    assert settings.faces_found == -1  # a new photo: not counted yet
    assert bpy.ops.facerecon.find_faces() == {"FINISHED"}
    assert settings.faces_found == 2
    user_dir = Path(installed.preferences.user_data_dir())
    png = user_dir / installed.operators.FACES_PREVIEW
    assert png.is_file()
    image = bpy.data.images[installed.ui.PREVIEW_IMAGE]
    with Image.open(png) as written:
        assert image.packed_file is not None and tuple(image.size) == written.size

    # the same search from the runner, with where each number was drawn
    found = installed.runner.find_faces(installed.operators.engine_choice(bpy.context), str(photos["group"]),
                                        user_dir / "again.png")
    assert found.error is None and len(found.faces) == 2 and [lb["index"] for lb in found.labels] == [0, 1]
    b0, b1 = (np.array(f["box"]) for f in found.faces)
    assert (b0[2] - b0[0]) > (b1[2] - b1[0]) and b0[0] < 320 < b1[0]  # largest first: the left face
    rgb = np.asarray(Image.open(found.preview).convert("RGB")).astype(int)
    label_colour = np.all(rgb == (255, 220, 0), axis=-1)
    _, n_marks = ndimage.label(ndimage.binary_fill_holes(label_colour))  # (the hole of a "0" too)
    assert n_marks == 2  # one box + number label per face, nothing else in that colour
    holes = []
    for lb in found.labels:
        x0, y0, x1, y1 = lb["label"]
        patch = rgb[y0:y1, x0:x1]
        ink = np.all(patch < 60, axis=-1)  # the number, in black
        assert 0.03 < ink.mean() < 0.5, lb
        assert label_colour[y0:y1, x0:x1][~ink].mean() > 0.95  # on a filled label
        _, n_background = ndimage.label(~ink)
        holes.append(n_background - 1)
    assert holes == [1, 0]  # "0" encloses a hole, "1" does not: the numbers are 0 and 1

    # reconstruct face 1, then face 0 (Replace mode): two heads, named by face
    settings.method, settings.result_mode = "mofa", "REPLACE"
    for index in (1, 0):
        settings.face_index = index
        assert bpy.ops.facerecon.reconstruct(timeout=300) == {"FINISHED"}
    heads = sorted(o.name for o in bpy.data.objects if o.type == "MESH" and o.get("facerecon_photo") == str(photos["group"]))
    assert heads == ["group_face0", "group_face1"]
    assert bpy.data.objects["group_face1"]["facerecon_face_index"] == 1
    settings.method = "fit"
    installed.importer.remove_objects([o for o in bpy.data.objects
                                       if o.get("facerecon_photo") == str(photos["group"])])


def test_photo_lighting_is_an_option_with_one_world_per_head(blender, result_folder):
    bpy, installed = blender
    scene, settings = bpy.context.scene, bpy.context.scene.facerecon
    settings.result_mode = "ADD"
    own = bpy.data.worlds.new("artist world")
    scene.world = own
    settings.photo_lighting = False
    n_worlds = len(bpy.data.worlds)
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    assert scene.world == own and len(bpy.data.worlds) == n_worlds  # untouched, nothing added

    settings.photo_lighting = True  # ticked: the photo's lighting replaces the world
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    light = scene.world
    assert light.name == "astronaut photo light" and len(bpy.data.worlds) == n_worlds + 1
    n_nodes = len(light.node_tree.nodes)
    background = next(n for n in light.node_tree.nodes if n.type == "BACKGROUND")
    assert background.inputs["Color"].links  # lit by the SH nodes
    for _ in range(2):  # re-imports reuse the head's world: no "astronaut photo light.001"
        assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
        assert scene.world == light and len(bpy.data.worlds) == n_worlds + 1
        assert len(light.node_tree.nodes) == n_nodes
    assert not any(w.name.startswith("astronaut photo light.") for w in bpy.data.worlds)

    settings.photo_lighting = False
    scene.world = None  # a scene without a world always gets the photo's lighting
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    assert scene.world == light
    scene.world = own
    installed.importer.remove_objects([o for o in bpy.data.objects if o.get("facerecon_name") == "astronaut"])


def test_new_heads_go_to_the_3d_cursor(blender, result_folder):
    bpy, installed = blender
    scene, settings = bpy.context.scene, bpy.context.scene.facerecon
    settings.result_mode = "ADD"
    scene.cursor.location = (0.5, -0.3, 0.2)
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    obj = bpy.context.active_object
    bpy.context.view_layer.update()
    assert tuple(obj.matrix_world.translation) == pytest.approx((0.5, -0.3, 0.2), abs=1e-6)
    assert tuple(obj.parent.location) == pytest.approx((0.5, -0.3, 0.2), abs=1e-6)
    from mathutils import Vector

    corners = np.array([obj.matrix_world @ Vector(c) for c in obj.bound_box])
    assert np.linalg.norm(corners.mean(0) - (0.5, -0.3, 0.2)) < 0.15  # the head itself is there
    # Replace keeps the replaced head's place, wherever the cursor is now
    settings.result_mode = "REPLACE"
    scene.cursor.location = (-2.0, 0.0, 0.0)
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    assert tuple(bpy.context.active_object.matrix_world.translation) == pytest.approx((0.5, -0.3, 0.2), abs=1e-6)
    scene.cursor.location = (0.0, 0.0, 0.0)
    installed.importer.remove_objects([o for o in bpy.data.objects if o.get("facerecon_name") == "astronaut"])


def test_every_arkit_key_is_directly_usable_beside_the_face_controls(blender, result_folder):
    """A wink without *Free All Sliders*: eyeBlinkLeft and jawOpen are set directly (their
    manual value, what the Face Sliders list shows) and keep their values through depsgraph
    updates and frame changes, while the eyes_blink / jaw_open controls add to them."""
    bpy, installed = blender
    importer = installed.importer
    scene = bpy.context.scene
    scene.facerecon.result_mode = "ADD"
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    obj = bpy.context.active_object
    keys = obj.data.shape_keys
    kb = keys.key_blocks
    assert {"jawOpen", "eyeBlinkLeft", "eyeBlinkRight"} <= set(obj["facerecon_driven_keys"])
    importer.reset_expression(obj)
    neutral = _evaluated_coords(bpy, obj)

    def settle():
        scene.frame_set(7)
        scene.frame_set(1)
        bpy.context.view_layer.update()

    # what the panel's slider for the key edits
    owner, path = importer.key_value_path(obj, "eyeBlinkLeft")
    assert owner == keys and path == '["eyeBlinkLeft"]'
    keys["eyeBlinkLeft"] = 1.0
    keys.update_tag()
    importer.set_key_value(obj, "jawOpen", 0.6)
    settle()
    assert kb["eyeBlinkLeft"].value == pytest.approx(1.0) and kb["eyeBlinkRight"].value == 0.0
    assert kb["jawOpen"].value == pytest.approx(0.6)
    wink = _evaluated_coords(bpy, obj)
    move = np.linalg.norm(wink - neutral, axis=1)
    assert move.max() > 0.01  # the jaw opened
    # a free key set directly stays too
    kb["mouthSmileLeft"].value = 0.5
    settle()
    assert kb["mouthSmileLeft"].value == pytest.approx(0.5)

    # the controls add to the keys' own values
    obj["eyes_blink"] = 0.4
    obj["jaw_open"] = 0.3
    obj.update_tag()
    settle()
    assert kb["eyeBlinkLeft"].value == pytest.approx(1.0)  # 1.4, clamped to the slider range
    assert kb["eyeBlinkRight"].value == pytest.approx(0.4)
    assert kb["jawOpen"].value == pytest.approx(0.9)
    obj["eyes_blink"] = 0.0
    obj["jaw_open"] = 0.0
    obj.update_tag()
    settle()
    assert kb["eyeBlinkLeft"].value == pytest.approx(1.0) and kb["jawOpen"].value == pytest.approx(0.6)

    # Free All Sliders keeps the totals as plain key values
    obj["jaw_open"] = 0.2
    obj.update_tag()
    settle()
    assert bpy.ops.facerecon.remove_controls() == {"FINISHED"}
    settle()
    assert kb["jawOpen"].value == pytest.approx(0.8) and "jawOpen" not in keys
    assert importer.key_value_path(obj, "jawOpen") == (kb["jawOpen"], "value")
    importer.remove_objects([obj, obj.parent])


def test_a_blink_moves_only_its_eyelids_in_blender(blender, result_folder):
    """eyeBlinkLeft on the imported head: the subject's left eyelids close; nothing on the
    right half, in the mouth or below the nose moves (the model's blink mask, engine side)."""
    bpy, installed = blender
    from engine.head import load_head_model

    model = load_head_model("open")
    rig_data = json.loads((result_folder / "rig.json").read_text())
    bpy.context.scene.facerecon.result_mode = "ADD"
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    obj = bpy.context.active_object
    importer = installed.importer
    order = importer._model_vertex_order(obj, rig_data)
    assert bpy.ops.facerecon.reset_pose(to_photo=False) == {"FINISHED"}
    importer.reset_expression(obj)
    neutral = _evaluated_coords(bpy, obj)[order]
    to_blender = importer.MODEL_TO_BLENDER
    joints = np.array(rig_data["rest_joints"]) @ to_blender.T
    eye = {s: joints[model.joint_names.index(j)] for s, j in (("Left", "eye_left"), ("Right", "eye_right"))}
    for side, sign in (("Left", 1.0), ("Right", -1.0)):
        importer.reset_expression(obj)
        importer.set_key_value(obj, f"eyeBlink{side}", 1.0)
        move = np.linalg.norm(_evaluated_coords(bpy, obj)[order] - neutral, axis=1)
        rest = np.array(rig_data["rest_vertices"]) @ to_blender.T
        region = (np.linalg.norm(rest - eye[side], axis=1) < 0.04) & (rest[:, 0] * sign > 0) \
            & ~model.regions["mouth_interior"].numpy()
        assert move[region].max() > 8e-3
        assert move[~region].max() < 1e-4, (side, move[~region].max())
    importer.remove_objects([obj, obj.parent])


def test_files_the_addon_writes_go_to_its_user_folder(blender, engine_choice):
    """The built open model and the faces preview go to Blender's per-extension user folder,
    not into the installed extension's folder (replaced on update, possibly read-only)."""
    bpy, installed = blender
    ext_dir = Path(installed.__file__).parent
    user_dir = Path(bpy.utils.extension_path_user(installed.__package__))
    assert Path(installed.preferences.user_data_dir()) == user_dir and user_dir.is_dir()
    assert not str(user_dir).startswith(str(ext_dir))
    # the reconstruction and Check Engine above loaded the open model through the engine child
    assert (user_dir / "open_head.npz").is_file()
    assert not list(ext_dir.rglob("*.npz")) and not list(ext_dir.rglob("*.png"))
    env = installed.runner.child_env(installed.operators.engine_choice(bpy.context), str(user_dir))
    assert env[installed.runner.DATA_DIR_ENV] == str(user_dir)
    # the built model in the user folder is current: a new engine child uses it without rebuilding
    import subprocess

    proc = subprocess.run(
        [installed.operators.engine_choice(bpy.context).python, "-c",
         "from engine.head.build import open_head as b; print(b.default_path())"],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == str(user_dir / "open_head.npz"), proc.stderr


class _Layout:
    """A stand-in for ``bpy.types.UILayout`` (panels cannot be drawn headless) that checks
    what a panel draws: every property exists on its owner, every operator is registered,
    every list type is a registered UIList."""

    def __init__(self, bpy, log):
        self._bpy, self.log = bpy, log

    def __getattr__(self, name):  # row, column, box, split, ...: nested layouts
        return lambda *args, **kw: _Layout(self._bpy, self.log)

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)

    def prop(self, data, path, **kw):
        if path.startswith('["'):
            assert path[2:-2] in data, (data, path)
        else:
            assert path in data.bl_rna.properties, (data, path)
        self.log.append(("prop", data, path))

    def operator(self, idname, **kw):
        category, name = idname.split(".")
        assert hasattr(getattr(self._bpy.ops, category), name), idname
        self.log.append(("operator", idname))
        return type("OperatorProps", (), {})()

    def template_list(self, listtype, list_id, data, propname, active_data, active_propname, **kw):
        assert hasattr(self._bpy.types, listtype), listtype
        self.log.append(("list", listtype))


def test_panels_draw_what_exists(blender, result_folder, photos):
    """The sidebar's panels and the shape-key list draw only registered operators and
    existing properties: the Find Faces button, the photo lighting option, and for each key
    the slider that edits it (the manual value of a key the controls add to)."""
    bpy, installed = blender
    from types import SimpleNamespace

    ui, importer = installed.ui, installed.importer
    settings = bpy.context.scene.facerecon
    settings.photo, settings.result_mode = str(photos["astronaut"]), "ADD"
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    obj = bpy.context.active_object
    log = []
    for panel in (ui.FACERECON_PT_reconstruct, ui.FACERECON_PT_sliders, ui.FACERECON_PT_export):
        panel.draw(SimpleNamespace(layout=_Layout(bpy, log)), bpy.context)
    assert ("operator", "facerecon.find_faces") in log and ("operator", "facerecon.reconstruct") in log
    assert ("list", "FACERECON_UL_shape_keys") in log
    assert any(e[0] == "prop" and e[2] == "photo_lighting" for e in log)
    keys = obj.data.shape_keys
    row_log = []
    for index, kb in enumerate(keys.key_blocks):
        ui.FACERECON_UL_shape_keys.draw_item(None, bpy.context, _Layout(bpy, row_log), keys, kb, 0, obj,
                                             "active_shape_key_index", index)
    drawn = {(e[1].name if e[2] == "value" else e[2][2:-2]): e for e in row_log if e[0] == "prop"}
    assert len(drawn) == len(keys.key_blocks) - 1  # one slider per key (not the basis)
    assert drawn["eyeBlinkLeft"][1] == keys and drawn["mouthSmileLeft"][1] == keys.key_blocks["mouthSmileLeft"]
    importer.remove_objects([obj, obj.parent])


# ---------------------------------------------------------------------------- issue 17: eyes
def test_eyes_and_mouth_have_their_own_materials(blender, result_folder, tmp_path):
    """Slots after the skin: the eyeballs' procedural material (iris colour from params.json)
    and the mouth interior's; faces assigned by rig.json's regions; a front render of an eye
    shows a dark pupil at the front pole, the photo's iris colour around it, a light sclera."""
    bpy, installed = blender
    importer = installed.importer
    params = json.loads((result_folder / "params.json").read_text())
    rig_data = json.loads((result_folder / "rig.json").read_text())
    settings = bpy.context.scene.facerecon
    settings.result_mode = "REPLACE"
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    obj = bpy.context.active_object
    mesh = obj.data
    names = [m.name for m in mesh.materials]
    # (named after the head; ".001" where an earlier test's head of another astronaut.png keeps its own)
    assert len(names) >= 3 and [n.split(".")[0] for n in names[:3]] == \
        ["astronaut_skin", "astronaut_eyes", "astronaut_mouth"], names
    assert obj.active_material == mesh.materials[0]
    assert mesh.materials[0].node_tree.nodes["Albedo"].image is not None  # the skin keeps the albedo

    # faces by region: a face is in a region when all its vertices are
    order = importer._model_vertex_order(obj, rig_data)
    index = np.empty(len(mesh.polygons), dtype=np.int32)
    mesh.polygons.foreach_get("material_index", index)
    verts = np.array([list(p.vertices) for p in mesh.polygons])
    for region, slot in (("eyes", 1), ("mouth_interior", 2)):
        vmask = np.zeros(len(mesh.vertices), bool)
        vmask[order[np.array(rig_data["regions"][region])]] = True
        faces = vmask[verts].all(1)
        assert faces.sum() > 100 and (index[faces] == slot).all() and (index[~faces] != slot).all()
    assert (index == 0).sum() > 0.7 * len(index)

    # the eye material's colours: the photo's iris, a dark pupil, a lighter sclera
    eyes = mesh.materials[1]
    nodes = eyes.node_tree.nodes
    iris_lin = np.array(importer.srgb_to_linear(params["eyes"]["iris_rgb"]))
    assert np.allclose(nodes["Iris"].outputs[0].default_value[:3], iris_lin, atol=1e-4)
    assert max(nodes["Pupil"].outputs[0].default_value[:3]) < 0.02
    assert sum(nodes["Sclera"].outputs[0].default_value[:3]) > 2 * iris_lin.sum()
    attr = mesh.attributes[importer.EYE_ATTRIBUTE]
    assert attr.domain == "POINT" and attr.data_type == "FLOAT_VECTOR"

    # render the subject's left eye from the front (neutral pose and expression, uniform white
    # world, no lights: a diffuse pixel is about its albedo)
    rig = importer.pose_rig_of(obj)
    if rig is not None:
        importer.reset_pose(rig, to_photo=False)
    importer.reset_expression(obj)
    bpy.context.view_layer.update()
    centre = obj.matrix_world @ __import__("mathutils").Vector(obj["facerecon_eye_centres"][:3])
    scene = bpy.context.scene
    world_before, camera_before = scene.world, scene.camera
    world = bpy.data.worlds.new("eye test white")
    world.color = (1.0, 1.0, 1.0)
    importer._use_nodes(world)
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    cam_data = bpy.data.cameras.new("eye test")
    cam_data.type, cam_data.ortho_scale = "ORTHO", 0.03
    cam = bpy.data.objects.new("eye test", cam_data)
    scene.collection.objects.link(cam)
    cam.location = (centre.x, centre.y - 0.2, centre.z)
    cam.rotation_euler = (np.pi / 2, 0.0, 0.0)  # looking along +Y: at the face
    hidden = [o for o in scene.objects if o.type == "MESH" and o != obj and not o.hide_render]
    for o in hidden:
        o.hide_render = True
    scene.world, scene.camera = world, cam
    render = scene.render
    render.engine, render.resolution_x, render.resolution_y, render.resolution_percentage = "CYCLES", 60, 60, 100
    scene.cycles.samples, scene.cycles.device = 16, "CPU"
    scene.view_settings.view_transform = "Standard"
    render.image_settings.file_format = "OPEN_EXR"
    render.filepath = str(tmp_path / "eye.exr")
    try:
        bpy.ops.render.render(write_still=True)
        image = bpy.data.images.load(str(tmp_path / "eye.exr"))
        px = np.empty(60 * 60 * 4, dtype=np.float32)
        image.pixels.foreach_get(px)
        px = px.reshape(60, 60, 4)[..., :3]  # row 0 at the bottom
        bpy.data.images.remove(image)
    finally:
        for o in hidden:
            o.hide_render = False
        scene.world, scene.camera = world_before, camera_before
        bpy.data.objects.remove(cam)
        bpy.data.cameras.remove(cam_data)
        bpy.data.worlds.remove(world)

    def at(dx_m: float) -> np.ndarray:  # the pixel dx metres to the side of the front pole
        col = int(round((dx_m / 0.03 + 0.5) * 60 - 0.5))
        return px[29:31, col - 1:col + 1].reshape(-1, 3).mean(0)

    radius = float(np.mean(obj["facerecon_eye_radii"]))
    iris_r = importer.IRIS_RADIUS_M
    pupil, iris, sclera = at(0.0), at(0.55 * iris_r), at(iris_r + 0.35 * (radius - iris_r) / 2)
    # (the glossy coat reflects the white world: ~0.08 on every pixel, the whole of the pupil's)
    assert pupil.sum() < 0.6 * iris.sum() and iris.sum() < 0.6 * sclera.sum(), (pupil, iris, sclera)
    hue = lambda c: c / c.sum()  # noqa: E731
    assert np.abs(hue(iris - pupil) - hue(iris_lin)).max() < 0.05, (iris, pupil, iris_lin)

    # re-importing (Replace) reuses the head's eye and mouth materials
    def region_materials():
        return sorted(m.name for m in bpy.data.materials if m.name.startswith(("astronaut_eyes", "astronaut_mouth")))
    before = region_materials()
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    again = bpy.context.active_object
    assert [m.name for m in again.data.materials][1:3] == names[1:3] and region_materials() == before
    importer.remove_objects([again] + ([again.parent] if again.parent else []))
