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
def deca_folder() -> Path:
    """A real output folder with animated detail (a tiny DECA detail network; the parent's fixture)."""
    return Path(os.environ["FACERECON_DETAIL_FOLDER"])


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
    from engine.head.teeth import with_teeth

    model = with_teeth(load_head_model("open"))  # the files' mesh: the model and its teeth
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


def _flat_displacement_folder(result_folder, folder, steps: int):
    """A copy of ``result_folder`` with a flat 16-bit ``displacement.png`` ``steps`` grey levels
    above the mid grey at 1 µm per level (``params.json``'s ``displacement_scale_m``)."""
    from PIL import Image

    shutil.copytree(result_folder, folder)
    Image.fromarray(np.full((64, 64), 32768 + steps, np.uint16)).save(folder / "displacement.png")
    params = json.loads((folder / "params.json").read_text())
    params["displacement_scale_m"] = 1e-6
    (folder / "params.json").write_text(json.dumps(params))
    return folder


def test_detail_map_in_material_and_baked_into_all_shape_keys(blender, result_folder, tmp_path):
    bpy, installed = blender
    # a flat 16-bit map 1000 units above the mid grey at 1 µm per unit: 1 mm outwards
    folder = _flat_displacement_folder(result_folder, tmp_path / "detail", 1000)
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
    from engine.head.teeth import with_teeth

    model = with_teeth(load_head_model("open"))  # the files' mesh: the model and its teeth
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


def test_the_engines_warnings_reach_the_artist(blender, result_folder, tmp_path, capfd):
    """A result the engine doubts (params.json's ``warnings``: an implausible fit, a lost
    detector) is imported, and Blender's report says why; a result without warnings imports
    with a plain info report."""
    bpy, installed = blender
    doubt = "the detector is probably lost on this face (a profile or an occluded face)"
    bpy.context.scene.facerecon.result_mode = "ADD"
    obj = _import_copy(bpy, result_folder, tmp_path, "warned", warnings=[doubt])
    assert installed.importer.result_warnings(tmp_path / "warned") == [doubt]
    out = capfd.readouterr()
    assert f"but: {doubt}" in out.out + out.err
    installed.importer.remove_objects([obj] + ([obj.parent] if obj.parent else []))
    clean = _import_copy(bpy, result_folder, tmp_path, "clean", warnings=[])
    assert installed.importer.result_warnings(tmp_path / "clean") == []
    assert "but:" not in "".join(capfd.readouterr())
    installed.importer.remove_objects([clean] + ([clean.parent] if clean.parent else []))


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


def test_all_faces_of_a_group_photo_stand_side_by_side(blender, photos):
    """*All* reconstructs every face in one engine run: one head per face, each named and keyed
    by its face, in a row at the 3D cursor ordered as the people stand in the photo (face 0,
    the larger, is on the left there); run again in Replace mode, the same two heads are
    replaced in place, none added."""
    bpy, installed = blender
    settings = bpy.context.scene.facerecon
    settings.photo = str(photos["group"])
    settings.method, settings.result_mode, settings.all_faces = "mofa", "REPLACE", True
    bpy.context.scene.cursor.location = (1.0, 2.0, 0.5)
    try:
        assert bpy.ops.facerecon.reconstruct(timeout=300) == {"FINISHED"}
        heads = {o["facerecon_face_index"]: o for o in bpy.data.objects
                 if o.type == "MESH" and o.get("facerecon_photo") == str(photos["group"])}
        assert sorted(heads) == [0, 1] and heads[1].name == "group_face1"
        tops = {k: (o.parent or o) for k, o in heads.items()}
        x0, x1 = (tops[k].location.x for k in (0, 1))
        assert x0 < x1 and abs((x0 + x1) / 2 - 1.0) < 1e-6 and abs(x1 - x0 - installed.importer.HEAD_SPACING_M) < 1e-6
        assert all(abs(t.location.y - 2.0) < 1e-6 and abs(t.location.z - 0.5) < 1e-6 for t in tops.values())
        assert all(o.select_get() for o in heads.values()) and bpy.context.view_layer.objects.active == heads[0]
        tops[1].location.z = 3.0  # moved by the artist: a re-run replaces it where it now stands
        assert bpy.ops.facerecon.reconstruct(timeout=300) == {"FINISHED"}
        again = {o["facerecon_face_index"]: o for o in bpy.data.objects
                 if o.type == "MESH" and o.get("facerecon_photo") == str(photos["group"])}
        assert sorted(again) == [0, 1]
        assert abs((again[1].parent or again[1]).location.z - 3.0) < 1e-6
        # Photo Camera on face 0 arranges the group: one camera sees both heads where the photo has them
        bpy.context.view_layer.objects.active = again[0]
        assert bpy.ops.facerecon.photo_camera() == {"FINISHED"}
        camera = bpy.context.scene.camera
        assert camera.data.background_images[0].image.packed_file is not None  # the temporary folder is gone
        for k, head in again.items():  # each head's vertices through the one camera: its own fit's pixels
            K, R, t = (np.array(head[f"facerecon_{v}"]).reshape(s) for v, s in (("K", (3, 3)), ("R", (3, 3)), ("t", 3)))
            local = _evaluated_coords(bpy, head)[::40]
            x = (local @ installed.importer.MODEL_TO_BLENDER @ R.T + t) @ K.T  # model frame -> camera -> pixels
            m = np.array(head.matrix_world)
            seen = _through_camera(bpy, camera, local @ m[:3, :3].T + m[:3, 3], head["facerecon_image_size"])
            # face 0 is the camera's own; the network gave face 1 another crop camera (focal length),
            # so its head stands where it shows at the same pixel and size: off by the perspective alone
            err = np.linalg.norm(seen - x[:, :2] / x[:, 2:], axis=1)
            width = np.ptp(x[:, 0] / x[:, 2])  # the head's width in the photo (px)
            assert (err.max() < 0.01) if k == 0 else (np.median(err) < 0.03 * width), (k, np.median(err), width)
    finally:
        settings.method, settings.all_faces = "fit", False
        bpy.context.scene.cursor.location = (0.0, 0.0, 0.0)
        installed.importer.remove_objects([o for o in bpy.data.objects
                                           if o.get("facerecon_photo") == str(photos["group"])])


def test_import_result_folder_takes_a_whole_batch_moved_from_elsewhere(blender, result_folder, tmp_path, capfd):
    """*Import Result Folder* on a batch's folder (batch.json, computed on another machine: its
    ``out`` paths point where it was written) imports every face it holds, side by side; a
    failed face is named in the warning."""
    bpy, installed = blender
    root = tmp_path / "batch_from_gpu_box"
    for name, face in (("left", 0), ("right", 1)):
        shutil.copytree(result_folder, root / f"team_face{face}")
        params = json.loads((root / f"team_face{face}" / "params.json").read_text())
        x = 100.0 if name == "left" else 400.0
        params.update(photo="/elsewhere/team.jpg", face_index=face, faces_found=3,
                      landmarks68_detected_px=[[x, 50.0]] * 68)
        (root / f"team_face{face}" / "params.json").write_text(json.dumps(params))
    items = [{"photo": "/elsewhere/team.jpg", "name": "team", "face": k, "out": f"/gpu/out/team_face{k}",
              "error": None, "warnings": []} for k in (1, 0)]
    items.append({"photo": "/elsewhere/team.jpg", "name": "team", "face": 2, "out": None,
                  "error": "the face detector found a face but no landmarks for it", "warnings": []})
    (root / "batch.json").write_text(json.dumps({"format": "engine.batch/1", "face": "all", "items": items}))
    bpy.context.scene.facerecon.result_mode = "ADD"
    before = {o.name for o in bpy.data.objects}
    assert bpy.ops.facerecon.import_result(directory=str(root)) == {"FINISHED"}
    heads = {o["facerecon_face_index"]: o for o in bpy.data.objects
             if o.name not in before and o.type == "MESH" and o.get("facerecon_name")}
    assert sorted(heads) == [0, 1]
    x0, x1 = ((heads[k].parent or heads[k]).location.x for k in (0, 1))
    assert x0 < x1  # face 0 stood left in the photo
    assert "face 2 failed: the face detector found a face but no landmarks" in "".join(capfd.readouterr())
    installed.importer.remove_objects([o for o in bpy.data.objects if o.name not in before])


def test_more_photos_of_one_person_give_one_head_with_their_identity(blender, photos, tmp_path):
    """*More photos*: the photo and a folder of more photos of the person (here her mirror
    image) are reconstructed as one person; one head is imported, the photo's own."""
    bpy, installed = blender
    from PIL import Image

    more = tmp_path / "more_of_her"
    more.mkdir()
    Image.fromarray(np.asarray(Image.open(photos["astronaut"]))[:, ::-1].copy()).save(more / "mirrored.png")
    settings = bpy.context.scene.facerecon
    settings.photo, settings.more_photos = str(photos["astronaut"]), str(more)
    settings.method, settings.result_mode = "mofa", "ADD"
    before = {o.name for o in bpy.data.objects}
    try:
        assert bpy.ops.facerecon.reconstruct(timeout=300) == {"FINISHED"}
        heads = [o for o in bpy.data.objects if o.name not in before and o.type == "MESH" and o.get("facerecon_name")]
        assert len(heads) == 1 and heads[0]["facerecon_photo"] == str(photos["astronaut"])
        assert heads[0]["facerecon_same_person_photos"] == 2
        assert "one identity from 2 photos" in bpy.context.window_manager.facerecon_job.status
    finally:
        settings.more_photos, settings.method = "", "fit"
        installed.importer.remove_objects([o for o in bpy.data.objects if o.name not in before])


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


def _obj_vertices(path: Path) -> np.ndarray:
    return np.array([[float(v) for v in line.split()[1:4]] for line in path.read_text().splitlines()
                     if line.startswith("v ")])


def _through_camera(bpy, camera, points_world, size) -> np.ndarray:
    """Pixels (x right, y down) of world points seen through ``camera`` by Blender itself."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    W, H = size
    return np.array([[c.x * W, (1.0 - c.y) * H] for c in
                     (world_to_camera_view(bpy.context.scene, camera, Vector(p)) for p in points_world)])


def test_photo_camera_sees_the_head_where_the_photo_has_it(blender, result_folder, tmp_path, capfd):
    """*Photo Camera*: Blender's own projection of the fitted landmarks through the new camera
    gives params.json's pixels, the posed head seen from it is head_camera.obj, the photo is
    behind it; it follows a moved head, is reused (not doubled), survives *Replace*, and
    without the photo it still works and says so."""
    bpy, installed = blender
    import importlib

    importer, photo_camera = installed.importer, importlib.import_module(f"{installed.__name__}.photo_camera")
    scene, settings = bpy.context.scene, bpy.context.scene.facerecon
    settings.result_mode = "ADD"
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    scene.cursor.location = (0.4, 0.2, -0.1)  # a head away from the origin: the camera goes with it
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    obj = bpy.context.active_object
    rig = obj.parent
    assert bpy.ops.facerecon.photo_camera() == {"FINISHED"}
    camera = photo_camera.find_photo_camera(obj)
    assert camera is not None and camera.type == "CAMERA" and camera.name == "astronaut_photo_camera"
    assert scene.camera == camera and camera.parent == rig
    params = json.loads((result_folder / "params.json").read_text())
    W, H = params["image_size"]
    assert (scene.render.resolution_x, scene.render.resolution_y) == (W, H)
    bg = camera.data.background_images[0]
    assert camera.data.show_background_images and Path(bg.image.filepath) == result_folder / "photo.jpg"
    assert tuple(bg.image.size) == (W, H)  # the astronaut is 512 px: photo.jpg at full size

    # the fitted 3-D landmarks (camera frame -> model frame -> the head's world) land on the
    # fitted 2-D landmarks through Blender's camera
    K, R, t = (np.array(params[k]) for k in ("K", "R", "t"))
    to_world = np.array(obj.matrix_world)
    to_blender = importer.MODEL_TO_BLENDER

    def world_of(head, points_model):
        m = np.array(head.matrix_world)
        return (points_model @ to_blender.T) @ m[:3, :3].T + m[:3, 3]

    def world(points_model):
        return (points_model @ to_blender.T) @ to_world[:3, :3].T + to_world[:3, 3]

    lm_model = (np.array(params["landmarks68_camera"]) - t) @ R
    px = _through_camera(bpy, camera, world(lm_model), (W, H))
    assert np.abs(px - np.array(params["landmarks68_image_px"])).max() < 0.01
    s = photo_camera.camera_settings(K, R, t, (W, H))  # the bpy-free model of the same camera
    assert np.abs(photo_camera.project(s, lm_model) - px).max() < 0.01
    # the posed head seen from the camera is head_camera.obj (OpenCV axes: Blender's y, z flipped)
    cam_inv = np.array(camera.matrix_world.inverted())
    evaluated = _evaluated_coords(bpy, obj) @ to_world[:3, :3].T + to_world[:3, 3]
    in_camera = (evaluated @ cam_inv[:3, :3].T + cam_inv[:3, 3]) * (1.0, -1.0, -1.0)
    from scipy.spatial import cKDTree

    gap, _ = cKDTree(_obj_vertices(result_folder / "head_camera.obj")).query(in_camera)
    assert gap.max() < 2e-4

    # moving the head moves its camera: the view through it is unchanged
    rig.location.x += 1.0
    bpy.context.view_layer.update()
    to_world = np.array(obj.matrix_world)
    assert np.abs(_through_camera(bpy, camera, world(lm_model), (W, H)) - px).max() < 0.01
    # once more: the same camera, updated; Replace makes it again for the new head
    assert bpy.ops.facerecon.photo_camera() == {"FINISHED"}
    assert [o for o in bpy.data.objects if o.type == "CAMERA" and o.get("facerecon_name") == "astronaut"] == [camera]
    settings.result_mode = "REPLACE"
    assert bpy.ops.facerecon.import_result(directory=str(result_folder)) == {"FINISHED"}
    new = bpy.context.active_object
    cameras = [o for o in bpy.data.objects if o.type == "CAMERA" and o.get("facerecon_name") == "astronaut"]
    assert len(cameras) == 1 and scene.camera == cameras[0] and cameras[0].parent == new.parent
    to_world = np.array(new.matrix_world)
    assert np.abs(_through_camera(bpy, cameras[0], world(lm_model), (W, H)) - px).max() < 0.01

    # Photo in renders: the head's photo lighting as the world, the photo behind the head for
    # camera rays, Standard view transform: a render's background is the photo itself
    scene.view_settings.view_transform = "AgX"
    assert bpy.ops.facerecon.photo_camera(in_renders=True) == {"FINISHED"}
    assert scene.world.name == "astronaut photo light" and scene.view_settings.view_transform == "Standard"
    assert scene.world.node_tree.nodes[importer.BACKDROP_NODE].image == cameras[0].data.background_images[0].image
    scene.render.engine, scene.cycles.samples, scene.cycles.use_denoising = "CYCLES", 4, False
    scene.render.resolution_percentage, scene.render.film_transparent = 25, False
    scene.render.filepath = str(tmp_path / "render.png")
    bpy.ops.render.render(write_still=True)
    from PIL import Image

    render = np.asarray(Image.open(tmp_path / "render.png").convert("RGB"), dtype=float) / 255
    photo = np.asarray(Image.open(result_folder / "photo.jpg").convert("RGB").resize(render.shape[1::-1]),
                       dtype=float) / 255
    assert np.abs(render[:24, :24] - photo[:24, :24]).mean() < 0.05  # a corner without the head: the photo
    scene.render.resolution_percentage = 100

    # portrait and landscape frames with the principal point off the centre (what Blender's
    # sensor fit and lens shift must carry): Blender's projection is still K's
    lm3 = np.array(params["landmarks68_camera"])
    settings.result_mode = "ADD"
    for n, (size, K2) in enumerate([((400, 640), [[900.0, 0, 150.0], [0, 900.0, 380.0], [0, 0, 1]]),
                                    ((900, 500), [[700.0, 0, 500.0], [0, 700.0, 200.0], [0, 0, 1]])]):
        other = _import_copy(bpy, result_folder, tmp_path, f"frame{n}", image_size=list(size), K=K2)
        assert bpy.ops.facerecon.photo_camera() == {"FINISHED"}
        seen = _through_camera(bpy, photo_camera.find_photo_camera(other), world_of(other, lm_model), size)
        expected = lm3 @ np.array(K2).T
        assert np.abs(seen - expected[:, :2] / expected[:, 2:]).max() < 0.01
        assert (scene.render.resolution_x, scene.render.resolution_y) == size

    # a folder without photo.jpg whose photo is gone: a camera without background, and a warning
    folder = tmp_path / "gone"
    shutil.copytree(result_folder, folder)
    (folder / "photo.jpg").unlink()
    params["photo"] = str(tmp_path / "moved_away.png")
    (folder / "params.json").write_text(json.dumps(params))
    assert bpy.ops.facerecon.import_result(directory=str(folder)) == {"FINISHED"}
    capfd.readouterr()
    assert bpy.ops.facerecon.photo_camera() == {"FINISHED"}
    lonely = photo_camera.find_photo_camera(bpy.context.active_object)
    assert lonely is not None and len(lonely.data.background_images) == 0
    assert "the photo is not there any more" in "".join(capfd.readouterr())
    scene.cursor.location = (0.0, 0.0, 0.0)
    importer.remove_objects([o for o in bpy.data.objects if o.get("facerecon_name") in ("astronaut", "moved_away")])


def test_an_ict_head_imports_whole_with_its_coincident_vertices(blender, photos, tmp_path):
    """ICT holds 118 positions with two vertices each; Blender's glTF importer welds some of
    them, and matching by position mapped both to one vertex (the import failed: "rig.json is
    for 26719 vertices but head.glb has 26718"). head.glb's _MODEL_VERTEX attribute maps every
    model vertex: the posed head is head.obj everywhere and every vertex is skinned."""
    from engine.head.ict import default_path

    if not Path(default_path()).exists():
        pytest.skip(f"ICT Face Model Light not found in {default_path()}")
    bpy, installed = blender
    importer = installed.importer
    from engine.reconstruct import reconstruct

    out = reconstruct(photos["astronaut"], tmp_path / "ict", model="ict").out_dir
    bpy.context.scene.facerecon.result_mode = "ADD"
    assert bpy.ops.facerecon.import_result(directory=str(out)) == {"FINISHED"}
    obj = bpy.context.active_object
    rig_data = json.loads((out / "rig.json").read_text())
    order = importer._model_vertex_order(obj, rig_data)
    n_blender = len(obj.data.vertices)
    assert len(order) == rig_data["n_vertices"] and set(order.tolist()) == set(range(n_blender))
    err = np.linalg.norm(_evaluated_coords(bpy, obj)[order] - _obj_vertices(out / "head.obj") @ importer.MODEL_TO_BLENDER.T,
                         axis=1)
    assert err.max() < 1e-4
    total = np.zeros(n_blender)
    for v in obj.data.vertices:
        total[v.index] = sum(g.weight for g in v.groups)
    assert total.min() > 0.99  # every vertex follows the bones
    importer.remove_objects([o for o in (obj, obj.parent) if o is not None])


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
    from engine.head.teeth import with_teeth

    model = with_teeth(load_head_model("open"))  # the files' mesh: the model and its teeth
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

    def prop_search(self, data, path, search_data, search_path, **kw):
        assert path in data.bl_rna.properties and search_path in search_data.bl_rna.properties, (path, search_path)
        self.log.append(("prop_search", data, path))

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
    # the texture size menu: offered, 1024 by default, the engine's sizes
    from engine.outputs import TEXTURE_SIZES

    assert any(e[0] == "prop" and e[2] == "texture_size" for e in log) and settings.texture_size == "1024"
    assert [int(k) for k, _, _ in installed.properties.TEXTURE_SIZES] == list(TEXTURE_SIZES)
    # "Expressive mouth": off by default, offered for methods that fit, passed as fit settings
    from_props = installed.properties
    assert not settings.expressive_mouth and settings.fit_options() == ()
    assert any(e[0] == "prop" and e[2] == "expressive_mouth" for e in log)  # the method is the fit
    settings.expressive_mouth = True
    assert settings.fit_options() == from_props.EXPRESSIVE_MOUTH_OPTIONS
    settings.method = "mofa"
    assert settings.fit_options() == ()  # a learned method does not fit
    mofa_log = []
    ui.FACERECON_PT_reconstruct.draw(SimpleNamespace(layout=_Layout(bpy, mofa_log)), bpy.context)
    assert not any(e[0] == "prop" and e[2] == "expressive_mouth" for e in mofa_log)
    settings.method, settings.expressive_mouth = "fit", False
    keys = obj.data.shape_keys
    row_log = []
    for index, kb in enumerate(keys.key_blocks):
        ui.FACERECON_UL_shape_keys.draw_item(None, bpy.context, _Layout(bpy, row_log), keys, kb, 0, obj,
                                             "active_shape_key_index", index)
    drawn = {(e[1].name if e[2] == "value" else e[2][2:-2]): e for e in row_log if e[0] == "prop"}
    assert len(drawn) == len(keys.key_blocks) - 1  # one slider per key (not the basis)
    assert drawn["eyeBlinkLeft"][1] == keys and drawn["mouthSmileLeft"][1] == keys.key_blocks["mouthSmileLeft"]
    # the Animate panel's character target: what it will key, the head bone to pick
    anim_settings = bpy.context.scene.facerecon_animate
    anim_settings.target = "CHARACTER"
    rig = bpy.data.objects.new("Character", bpy.data.armatures.new("Character"))
    bpy.context.scene.collection.objects.link(rig)
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    rig.data.edit_bones.new("Head").tail = (0, 0, 0.2)
    bpy.ops.object.mode_set(mode="OBJECT")
    me = bpy.data.meshes.new("CharacterFace")
    me.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    face = bpy.data.objects.new("CharacterFace", me)
    bpy.context.scene.collection.objects.link(face)
    face.parent = rig
    for k in ("Basis", "EyeBlink_L", "Jaw_Open"):
        face.shape_key_add(name=k)
    for o in bpy.context.selected_objects:
        o.select_set(False)
    face.select_set(True)
    bpy.context.view_layer.objects.active = face
    anim_log = []
    installed.animation.FACERECON_PT_animate.draw(SimpleNamespace(layout=_Layout(bpy, anim_log)), bpy.context)
    assert any(e[0] == "prop_search" and e[2] == "head_bone" for e in anim_log)
    assert not any(e[0] == "prop" and e[2] == "camera" for e in anim_log)  # no video camera for a character
    assert installed.animation.character_of(bpy.context) == ([face], rig)
    anim_settings.target = "NEW"
    importer.remove_objects([obj, obj.parent, face, rig])


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
    assert len(names) >= 4 and [n.split(".")[0] for n in names[:4]] == \
        ["astronaut_skin", "astronaut_eyes", "astronaut_mouth", "astronaut_teeth"], names
    assert obj.active_material == mesh.materials[0]
    assert mesh.materials[0].node_tree.nodes["Albedo"].image is not None  # the skin keeps the albedo

    # faces by region: a face is in a region when all its vertices are
    order = importer._model_vertex_order(obj, rig_data)
    index = np.empty(len(mesh.polygons), dtype=np.int32)
    mesh.polygons.foreach_get("material_index", index)
    verts = np.array([list(p.vertices) for p in mesh.polygons])
    def region_faces(region):
        vmask = np.zeros(len(mesh.vertices), bool)
        vmask[order[np.array(rig_data["regions"][region])]] = True
        return vmask[verts].all(1)

    teeth = region_faces("teeth")  # the teeth the engine adds (engine.head.teeth): a region of their own
    assert teeth.sum() > 1000 and (index[teeth] == 3).all() and (index[~teeth] != 3).all()
    for region, slot in (("eyes", 1), ("mouth_interior", 2)):
        faces = region_faces(region) & ~teeth
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


# ---------------------------------------------------------------------------- issue 14: animated detail
DETAIL_SIZE = 1024  # texels; the open model's UV map puts ~1 mm on a texel at this size
DETAIL_SCALE_M = 2e-8  # metres per 16-bit unit
DETAIL_UNITS = ("browInnerUp", "mouthSmileLeft", "jawOpen")
DETAIL_JAW_RAD = 0.35


def _uv_mask(model, vertices: np.ndarray) -> np.ndarray:
    """Texels (PNG rows, top = v 1) covered by the model's triangles whose vertices are all in
    ``vertices``, in the output files' UV layout (engine.export.uv_pack)."""
    from engine.export.uv_pack import export_layout
    from PIL import Image, ImageDraw

    exp = export_layout(model)
    faces, face_uv, uv = model.faces.numpy(), exp.face_uv.numpy(), exp.uv.numpy()
    image = Image.new("L", (DETAIL_SIZE, DETAIL_SIZE), 0)
    draw = ImageDraw.Draw(image)
    for tri in np.flatnonzero(vertices[faces].all(1)):
        draw.polygon([(float(u * DETAIL_SIZE), float((1.0 - v) * DETAIL_SIZE)) for u, v in uv[face_uv[tri]]],
                     fill=255)
    return np.asarray(image) > 0


@pytest.fixture(scope="module")
def handmade_detail(result_folder, tmp_path_factory):
    """The real output folder plus hand-made animated detail (16-bit PNGs, docs/conventions.md):
    a flat neutral map (+500 units = 10 µm), bumps on the forehead for browInnerUp, bumps on
    the chin for mouthSmileLeft, flat +2000 for jawOpen and flat +3000 for the jaw at 0.35 rad.
    Returns (folder, {"forehead", "chin"}: model-order vertex masks, {file: uint16 array})."""
    from engine.head import load_head_model
    from engine.head.teeth import with_teeth
    from PIL import Image

    model = with_teeth(load_head_model("open"))  # the files' mesh: the model and its teeth
    rest = model.template.numpy()
    skin = model.regions["face_skin"].numpy()
    regions = {"forehead": skin & (rest[:, 1] > 0.025) & (rest[:, 1] < 0.06) & (np.abs(rest[:, 0]) < 0.035),
               "chin": skin & (rest[:, 1] < -0.075) & (np.abs(rest[:, 0]) < 0.03)}
    rows, cols = np.mgrid[0:DETAIL_SIZE, 0:DETAIL_SIZE]
    bumps = 20000.0 * np.sin(2 * np.pi * cols / 8) * np.sin(2 * np.pi * rows / 8)  # ±0.4 mm, 8 mm period
    maps = {"displacement.png": np.full((DETAIL_SIZE, DETAIL_SIZE), 32768 + 500.0),
            "detail/browInnerUp.png": 32768 + bumps * _uv_mask(model, regions["forehead"]),
            "detail/mouthSmileLeft.png": 32768 + bumps * _uv_mask(model, regions["chin"]),
            "detail/jawOpen.png": np.full((DETAIL_SIZE, DETAIL_SIZE), 32768 + 2000.0),
            "detail/jaw.png": np.full((DETAIL_SIZE, DETAIL_SIZE), 32768 + 3000.0)}
    folder = tmp_path_factory.mktemp("animated_detail") / "astronaut_detail"
    shutil.copytree(result_folder, folder)
    (folder / "detail").mkdir()
    maps = {name: np.round(m).astype(np.uint16) for name, m in maps.items()}
    for name, m in maps.items():
        Image.fromarray(m).save(folder / name)
    params = json.loads((folder / "params.json").read_text())
    params["displacement_scale_m"] = DETAIL_SCALE_M
    params["detail"] = {"units": {u: f"detail/{u}.png" for u in DETAIL_UNITS},
                        "jaw": {"file": "detail/jaw.png", "rad": DETAIL_JAW_RAD},
                        "method": "deca", "checkpoint": str(folder / "no_such_checkpoint.pt")}
    (folder / "params.json").write_text(json.dumps(params))
    return folder, regions, maps


def _import_detail(bpy, folder):
    settings = bpy.context.scene.facerecon
    settings.result_mode, settings.bake_detail = "ADD", False
    assert bpy.ops.facerecon.import_result(directory=str(folder)) == {"FINISHED"}
    return bpy.context.active_object


def _weight(bpy, importer, obj, unit) -> float:
    obj.update_tag()
    bpy.context.view_layer.update()
    return obj.active_material.node_tree.nodes[importer.detail_weight_node_name(unit)].outputs[0].default_value


def test_animated_detail_weights_are_driven_by_the_shape_keys_and_the_jaw(blender, handmade_detail):
    """params.json's detail entry: one packed 16-bit map per unit and the jaw in the frame
    *Animated detail*, summed into the Displacement node (midlevel 0); each unit's weight is
    driven by its shape key's value (also through a face control), the jaw's by the jaw bone's
    angle about X / 0.35 rad."""
    bpy, installed = blender
    importer = installed.importer
    folder, _, _ = handmade_detail
    obj = _import_detail(bpy, folder)
    rig = importer.pose_rig_of(obj)
    mat = obj.active_material
    nodes = mat.node_tree.nodes
    frame = nodes[importer.DETAIL_FRAME]
    assert frame.type == "FRAME"
    disp = nodes["Detail"]
    assert disp.inputs["Midlevel"].default_value == 0.0
    assert disp.inputs["Scale"].default_value == pytest.approx(65535 * DETAIL_SCALE_M)
    assert disp.inputs["Height"].links[0].from_node.name == importer.DETAIL_SUM
    output = next(n for n in nodes if n.type == "OUTPUT_MATERIAL")
    assert output.inputs["Displacement"].links[0].from_node == disp and mat.displacement_method == "BUMP"
    for unit in (*DETAIL_UNITS, "jaw"):
        tex = nodes[f"Detail {unit}"]
        assert tex.parent == frame and tex.image.packed_file is not None
        assert tex.image.colorspace_settings.name == "Non-Color" and tex.image.is_float  # 16 bits kept
        assert nodes[importer.detail_weight_node_name(unit)].parent == frame
    assert nodes[importer.DETAIL_NEUTRAL].parent == frame
    assert dict(obj["facerecon_detail_units"]).keys() == set(DETAIL_UNITS)
    assert obj["facerecon_detail_jaw"]["rad"] == pytest.approx(DETAIL_JAW_RAD)

    drivers = {d.data_path: d.driver for d in mat.node_tree.animation_data.drivers}
    for unit in DETAIL_UNITS:
        driver = drivers[f'nodes["{importer.detail_weight_node_name(unit)}"].outputs[0].default_value']
        target = driver.variables[0].targets[0]
        assert driver.is_valid and target.id == obj.data.shape_keys
        assert target.data_path == f'key_blocks["{unit}"].value'
    jaw = drivers[f'nodes["{importer.detail_weight_node_name("jaw")}"].outputs[0].default_value']
    assert jaw.is_valid and jaw.variables[0].type == "TRANSFORMS"
    assert jaw.variables[0].targets[0].id == rig and jaw.variables[0].targets[0].bone_target == "jaw"

    # the weights follow the sliders and the jaw bone
    importer.reset_pose(rig, to_photo=False)
    importer.reset_expression(obj)
    # (the jaw's weight is read from the bone's evaluated matrix: ~1e-8 of rounding on some CPUs)
    assert [_weight(bpy, importer, obj, u) for u in (*DETAIL_UNITS, "jaw")] == pytest.approx([0.0] * 4, abs=1e-6)
    importer.set_key_value(obj, "browInnerUp", 1.0)
    assert _weight(bpy, importer, obj, "browInnerUp") == pytest.approx(1.0)
    assert _weight(bpy, importer, obj, "mouthSmileLeft") == 0.0
    importer.set_key_value(obj, "mouthSmileLeft", 0.25)
    assert _weight(bpy, importer, obj, "mouthSmileLeft") == pytest.approx(0.25)
    obj["jaw_open"] = 0.6  # the face control adds to jawOpen, whose value drives the weight
    assert _weight(bpy, importer, obj, "jawOpen") == pytest.approx(0.6)
    rig.pose.bones["jaw"].rotation_quaternion = importer._bone_local_rotation(rig, "jaw", (0.175, 0.0, 0.0))
    rig.update_tag()
    assert _weight(bpy, importer, obj, "jaw") == pytest.approx(0.5, abs=1e-5)  # 0.175 / 0.35
    # the photo pose (the fitted jaw) gives the fitted jaw's weight
    importer.reset_pose(rig, to_photo=True)
    fitted = json.loads((folder / "rig.json").read_text())["pose"]["jaw"]
    assert _weight(bpy, importer, obj, "jaw") == pytest.approx(fitted[0] / DETAIL_JAW_RAD, abs=1e-4)
    importer.remove_objects([obj, rig])


def test_a_folder_without_detail_entry_keeps_the_neutral_map_alone(blender, result_folder, tmp_path):
    """displacement.png without params.json's detail: the Displacement node reads the map at
    midlevel 32768/65535, no frame, no driven weights (as before animated detail)."""
    bpy, installed = blender
    folder = _flat_displacement_folder(result_folder, tmp_path / "neutral_only", 100)
    obj = _import_detail(bpy, folder)
    nodes = obj.active_material.node_tree.nodes
    disp = nodes["Detail"]
    assert disp.inputs["Midlevel"].default_value == pytest.approx(32768 / 65535)
    assert disp.inputs["Height"].links[0].from_node == nodes[installed.importer.DETAIL_NEUTRAL]
    assert installed.importer.DETAIL_FRAME not in nodes and not any(n.type == "VALUE" for n in nodes)
    ad = obj.active_material.node_tree.animation_data
    assert ad is None or len(ad.drivers) == 0
    assert obj.get("facerecon_detail_units") is None and installed.importer.detail_source(obj) is None
    assert installed.operators.keep_result_folder(obj, folder) is None  # nothing to bake later: not kept
    installed.importer.remove_objects([obj, obj.parent])


def test_a_bad_detail_entry_is_one_error_and_adds_nothing(blender, handmade_detail, tmp_path):
    """A unit the head has no shape key for, a map outside the folder or missing, a jaw without
    a positive angle: the import fails with one sentence and rolls back."""
    bpy, _ = blender
    folder, _, _ = handmade_detail
    good = json.loads((folder / "params.json").read_text())
    counts = lambda: [len(getattr(bpy.data, c)) for c in ("objects", "meshes", "materials", "images")]  # noqa: E731
    before = counts()
    for n, (detail, message) in enumerate([
            ({"units": {"frownDeep": "detail/browInnerUp.png"}}, "frownDeep, which the head has no shape key"),
            ({"units": {"browInnerUp": "../outside.png"}}, "not inside"),
            ({"units": {"browInnerUp": "detail/none.png"}}, "missing"),
            ({"units": {}, "jaw": {"file": "detail/jaw.png", "rad": 0}}, "must be positive")]):
        bad = tmp_path / f"bad{n}"
        shutil.copytree(folder, bad)
        (bad.parent / "outside.png").write_bytes((folder / "detail" / "browInnerUp.png").read_bytes())
        (bad / "params.json").write_text(json.dumps(dict(good, detail=dict(good["detail"], **detail))))
        with pytest.raises(RuntimeError, match=message):
            bpy.ops.facerecon.import_result(directory=str(bad))
        assert counts() == before


def _render_front(bpy, importer, obj, path, size=128, ortho=0.26):
    """A small Cycles render of the head from the front under a raking sun from above (black
    world, 4 samples, fixed seed: a pixel whose shading did not change renders the same).
    Returns ((H, W, 3) linear RGB with row 0 at the bottom, the image centre's Blender (x, z))."""
    scene = bpy.context.scene
    centre = obj.matrix_world.translation
    saved = scene.world, scene.camera
    world = bpy.data.worlds.new("detail test black")
    importer._use_nodes(world)
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.0, 0.0, 0.0, 1.0)
    cam_data = bpy.data.cameras.new("detail test")
    cam_data.type, cam_data.ortho_scale = "ORTHO", ortho
    cam = bpy.data.objects.new("detail test", cam_data)
    view_centre = (centre.x, centre.z - 0.02)  # what the image's centre shows (Blender x, z)
    cam.location = (view_centre[0], centre.y - 0.5, view_centre[1])
    cam.rotation_euler = (np.pi / 2, 0.0, 0.0)  # looking along +Y: at the face
    sun_data = bpy.data.lights.new("detail test sun", "SUN")
    sun_data.energy = 4.0
    sun = bpy.data.objects.new("detail test sun", sun_data)
    sun.rotation_euler = (np.radians(25), 0.0, np.radians(15))  # from above the face, grazing the forehead
    for o in (cam, sun):
        scene.collection.objects.link(o)
    hidden = [o for o in scene.objects if o.type == "MESH" and o != obj and not o.hide_render]
    for o in hidden:
        o.hide_render = True
    scene.world, scene.camera = world, cam
    render = scene.render
    render.engine, render.resolution_x, render.resolution_y, render.resolution_percentage = "CYCLES", size, size, 100
    scene.cycles.samples, scene.cycles.device, scene.cycles.seed = 4, "CPU", 0
    scene.cycles.use_denoising = False
    scene.view_settings.view_transform = "Standard"
    render.image_settings.file_format = "OPEN_EXR"
    render.filepath = str(path)
    try:
        bpy.ops.render.render(write_still=True)
        image = bpy.data.images.load(str(path))
        px = np.empty(size * size * 4, dtype=np.float32)
        image.pixels.foreach_get(px)
        bpy.data.images.remove(image)
    finally:
        for o in hidden:
            o.hide_render = False
        scene.world, scene.camera = saved
        bpy.data.objects.remove(cam)
        bpy.data.objects.remove(sun)
        bpy.data.cameras.remove(cam_data)
        bpy.data.lights.remove(sun_data)
        bpy.data.worlds.remove(world)
    return px.reshape(size, size, 4)[..., :3], view_centre


def test_animated_detail_renders_where_its_map_is(blender, handmade_detail, tmp_path):
    """Cycles renders of the head under raking light at browInnerUp = 1 (the key also moves the
    brows, so the same pose with that weight's driver muted at 0 is the reference): the driven
    detail changes the forehead, where its map has bumps, and nothing else; a map baked for one
    pose (neutral + browInnerUp's + mouthSmileLeft's maps) renders like the mix on the forehead
    and adds the chin's bumps, and *Animated* switches back to the mix."""
    bpy, installed = blender
    importer = installed.importer
    from mathutils import Vector
    from PIL import Image

    folder, regions, maps = handmade_detail
    obj = _import_detail(bpy, folder)
    rig = importer.pose_rig_of(obj)
    importer.reset_pose(rig, to_photo=False)
    importer.reset_expression(obj)
    importer.set_key_value(obj, "browInnerUp", 1.0)
    assert _weight(bpy, importer, obj, "browInnerUp") == pytest.approx(1.0)
    order = importer._model_vertex_order(obj, json.loads((folder / "rig.json").read_text()))
    co = np.array([obj.matrix_world @ Vector(c) for c in _evaluated_coords(bpy, obj)])
    size, ortho = 128, 0.26
    driven, (cx, cz) = _render_front(bpy, importer, obj, tmp_path / "driven.exr", size, ortho)

    def pixels(mask):  # the pixels the region's vertices fall on
        p = co[order[mask]]
        col = np.floor(((p[:, 0] - cx) / ortho + 0.5) * size).astype(int)
        row = np.floor(((p[:, 2] - cz) / ortho + 0.5) * size).astype(int)
        out = np.zeros((size, size), bool)
        out[np.clip(row, 0, size - 1), np.clip(col, 0, size - 1)] = True
        return out

    forehead, chin = pixels(regions["forehead"]), pixels(regions["chin"])
    assert forehead.sum() > 20 and chin.sum() > 20 and driven[forehead].mean() > 0.05  # lit
    mat = obj.active_material
    weight = mat.node_tree.nodes[importer.detail_weight_node_name("browInnerUp")]
    fcurve = mat.node_tree.animation_data.drivers.find(weight.outputs[0].path_from_id("default_value"))
    fcurve.mute = True
    weight.outputs[0].default_value = 0.0
    flat, _ = _render_front(bpy, importer, obj, tmp_path / "flat.exr", size, ortho)
    fcurve.mute = False
    assert _weight(bpy, importer, obj, "browInnerUp") == pytest.approx(1.0)
    diff = np.abs(driven - flat).sum(-1)
    assert diff[forehead].mean() > 0.05, diff[forehead].mean()
    assert diff[chin].mean() < 1e-3 * diff[forehead].mean(), (diff[chin].mean(), diff[forehead].mean())
    rows, cols = np.nonzero(forehead)
    around = np.zeros_like(forehead)
    around[max(rows.min() - 4, 0):rows.max() + 5, max(cols.min() - 4, 0):cols.max() + 5] = True
    assert diff[~around].mean() < 0.01 * diff[forehead].mean()  # nothing else changed

    # a map baked for one pose (what the engine's bake-detail writes: same encoding and scale)
    baked = maps["displacement.png"].astype(np.int64) + maps["detail/browInnerUp.png"] \
        + maps["detail/mouthSmileLeft.png"] - 2 * 32768
    Image.fromarray(baked.astype(np.uint16)).save(tmp_path / "pose.png")
    image = importer.use_baked_detail(obj, tmp_path / "pose.png")
    nodes = mat.node_tree.nodes
    assert nodes[importer.DETAIL_BAKED].image == image and image.packed_file is not None
    assert nodes["Detail"].inputs["Height"].links[0].from_node == nodes[importer.DETAIL_SOURCE]
    assert importer.detail_source(obj) == "BAKED"
    pose, _ = _render_front(bpy, importer, obj, tmp_path / "pose.exr", size, ortho)
    assert np.abs(pose - driven).sum(-1)[forehead].mean() < 0.02 * diff[forehead].mean()
    assert np.abs(pose - driven).sum(-1)[chin].mean() > 0.2 * diff[forehead].mean()  # the chin's bumps
    # a second bake replaces the image (no ".001" piling up)
    n_images = len(bpy.data.images)
    again = importer.use_baked_detail(obj, tmp_path / "pose.png")
    assert len(bpy.data.images) == n_images and nodes[importer.DETAIL_BAKED].image == again
    assert again.name == f"{obj.name} {importer.DETAIL_BAKED}"
    # back to the animated mix
    assert bpy.ops.facerecon.detail_source(baked=False) == {"FINISHED"}
    assert importer.detail_source(obj) == "ANIMATED"
    back, _ = _render_front(bpy, importer, obj, tmp_path / "back.exr", size, ortho)
    assert np.abs(back - driven).sum(-1).max() < 1e-4
    assert bpy.ops.facerecon.detail_source(baked=True) == {"FINISHED"}
    assert importer.detail_source(obj) == "BAKED"
    importer.remove_objects([obj, rig])


def test_bake_detail_into_mesh_puts_each_units_map_into_its_shape_key(blender, handmade_detail):
    """*Bake Detail into Mesh* on a head with animated detail: the neutral map moves the base
    and every key alike; each unit's map is added to its own shape key along the normals
    (browInnerUp: the forehead only; jawOpen: its flat 40 µm everywhere); other keys keep
    their deltas."""
    bpy, installed = blender
    importer = installed.importer
    folder, regions, _ = handmade_detail
    obj = _import_detail(bpy, folder)
    keys = obj.data.shape_keys.key_blocks
    order = importer._model_vertex_order(obj, json.loads((folder / "rig.json").read_text()))

    def key_co(name):
        co = np.empty(len(keys[name].data) * 3)
        keys[name].data.foreach_get("co", co)
        return co.reshape(-1, 3)

    names = ["Basis", *DETAIL_UNITS, "eyeBlinkLeft"]
    before = {n: key_co(n) for n in names}
    normals = np.empty(len(obj.data.vertices) * 3)
    obj.data.vertex_normals.foreach_get("vector", normals)
    normals = normals.reshape(-1, 3)
    assert bpy.ops.facerecon.bake_detail() == {"FINISHED"}
    after = {n: key_co(n) for n in names}
    basis_move = after["Basis"] - before["Basis"]
    assert np.allclose(basis_move, 500 * DETAIL_SCALE_M * normals, atol=1e-7)  # the neutral map: 10 µm
    change = {n: (after[n] - after["Basis"]) - (before[n] - before["Basis"]) for n in names[1:]}
    assert np.abs(change["eyeBlinkLeft"]).max() < 1e-7  # not a detail unit: its delta is unchanged
    assert np.allclose(change["jawOpen"], 2000 * DETAIL_SCALE_M * normals, atol=1e-7)
    brow = np.linalg.norm(change["browInnerUp"], axis=1)
    forehead = np.zeros(len(brow), bool)
    forehead[order[regions["forehead"]]] = True
    assert brow[forehead].max() > 2e-4  # bumps of ±0.4 mm
    assert np.allclose(np.abs((change["browInnerUp"] * normals).sum(1)), brow, atol=1e-8)  # along the normals
    chin = np.zeros(len(brow), bool)
    chin[order[regions["chin"]]] = True
    assert brow[chin].max() < 1e-8
    output = next(n for n in obj.active_material.node_tree.nodes if n.type == "OUTPUT_MATERIAL")
    assert not output.inputs["Displacement"].links
    importer.remove_objects([obj, obj.parent])


def test_bake_detail_for_this_pose_sends_the_pose_to_the_engine(blender, handmade_detail, tmp_path):
    """*Bake Detail for This Pose*: the panel offers it next to the detail source; the pose it
    sends is every shape key's value (with the face controls' part) and the jaw joint's
    model-axes rotation; it runs ``python -m engine bake-detail FOLDER --pose POSE --out MAP``
    through the job machinery, and the material is untouched when the engine fails (the
    successful bake: the next test)."""
    bpy, installed = blender
    importer, runner = installed.importer, installed.runner
    from types import SimpleNamespace

    folder, _, _ = handmade_detail
    obj = _import_detail(bpy, folder)
    assert obj["facerecon_folder"] == str(folder)  # the folder the bake runs the engine on
    rig = importer.pose_rig_of(obj)
    log = []
    installed.ui.FACERECON_PT_sliders.draw(SimpleNamespace(layout=_Layout(bpy, log)), bpy.context)
    assert ("operator", "facerecon.bake_detail_pose") in log and ("operator", "facerecon.detail_source") in log
    assert ("operator", "facerecon.bake_detail") in log

    importer.reset_expression(obj)
    importer.set_key_value(obj, "browInnerUp", 0.7)
    importer.set_key_value(obj, "eyeBlinkLeft", 0.2)
    obj["jaw_open"] = 0.3  # through the face control
    rig.pose.bones["jaw"].rotation_quaternion = importer._bone_local_rotation(rig, "jaw", (0.1, 0.05, 0.02))
    rig.update_tag()
    obj.update_tag()
    bpy.context.view_layer.update()
    pose = importer.detail_pose(bpy.context, obj)
    assert list(pose["expression"]) == _shape_key_names(obj) and len(pose["expression"]) == 52
    assert pose["expression"]["browInnerUp"] == pytest.approx(0.7)
    assert pose["expression"]["eyeBlinkLeft"] == pytest.approx(0.2)
    assert pose["expression"]["jawOpen"] == pytest.approx(0.3)
    assert pose["expression"]["mouthSmileLeft"] == 0.0
    assert np.allclose(pose["jaw"], (0.1, 0.05, 0.02), atol=1e-5)

    request = runner.BakeDetailRequest(result_dir=str(folder), pose=pose)
    work = tmp_path / "bake"
    assert request.arguments(str(work)) == ["-m", "engine", "bake-detail", str(folder), "--pose",
                                            str(work / "pose.json"), "--out", str(work / "detail_pose.png")]
    request.prepare(work)
    assert json.loads((work / "pose.json").read_text()) == pose

    # the operator through the engine child (synchronous path): this hand-made folder has no
    # detail code, so the engine refuses it in one line and nothing changes
    nodes = obj.active_material.node_tree.nodes
    n_nodes = len(nodes)
    with pytest.raises(RuntimeError, match="no detail code"):
        bpy.ops.facerecon.bake_detail_pose(timeout=120)
    assert len(nodes) == n_nodes and importer.DETAIL_BAKED not in nodes
    assert importer.detail_source(obj) == "ANIMATED" and not bpy.context.window_manager.facerecon_job.running
    # a head reconstructed by the add-on keeps its (temporary) folder in the user folder
    kept = installed.operators.keep_result_folder(obj, folder)
    user_dir = Path(installed.preferences.user_data_dir())
    assert kept.parent == user_dir / "results" and (kept / "detail" / "browInnerUp.png").is_file()
    assert obj["facerecon_folder"] == str(kept)
    shutil.rmtree(kept)
    # a head whose folder is gone says so instead of starting the engine
    obj["facerecon_folder"] = str(tmp_path / "gone")
    with pytest.raises(RuntimeError, match="is gone"):
        bpy.ops.facerecon.bake_detail_pose(timeout=120)
    importer.remove_objects([obj, rig])


def test_bake_detail_for_this_pose_end_to_end(blender, deca_folder, tmp_path):
    """A folder written by the engine's DECA detail stage (a tiny network): the import drives
    every unit the engine chose; *Bake Detail for This Pose* runs ``engine bake-detail`` in the
    engine child and shows exactly the map the engine writes for the head's current pose (a
    different map from the neutral one), a second press at another pose re-bakes, *Animated*
    switches back; a moved network is one error line and changes nothing."""
    bpy, installed = blender
    importer = installed.importer
    import subprocess

    from PIL import Image

    params = json.loads((deca_folder / "params.json").read_text())
    units = list(params["detail"]["units"])
    assert 1 <= len(units) <= 8 and params["detail"]["jaw"] is None  # this network predicts no jaw
    obj = _import_detail(bpy, deca_folder)
    assert list(obj["facerecon_detail_units"]) == units
    nodes = obj.active_material.node_tree.nodes
    drivers = {d.data_path for d in obj.active_material.node_tree.animation_data.drivers}
    assert drivers == {f'nodes["{importer.detail_weight_node_name(u)}"].outputs[0].default_value' for u in units}
    importer.reset_expression(obj)
    importer.set_key_value(obj, units[0], 0.8)
    assert _weight(bpy, importer, obj, units[0]) == pytest.approx(0.8)

    def engine_map(pose) -> np.ndarray:  # what the engine writes for a pose, as Blender reads it
        (tmp_path / "pose.json").write_text(json.dumps(pose))
        env = installed.runner.child_env(installed.operators.engine_choice(bpy.context))
        proc = subprocess.run([installed.operators.engine_choice(bpy.context).python, "-m", "engine", "bake-detail",
                               str(deca_folder), "--pose", str(tmp_path / "pose.json"), "--out",
                               str(tmp_path / "want.png")], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return np.asarray(Image.open(tmp_path / "want.png"), dtype=np.float64)[::-1] / 65535.0

    def shown() -> np.ndarray:
        return installed.importer._image_grey(nodes[importer.DETAIL_BAKED].image).astype(np.float64)

    assert bpy.ops.facerecon.bake_detail_pose(timeout=300) == {"FINISHED"}
    assert importer.detail_source(obj) == "BAKED" and nodes[importer.DETAIL_BAKED].image.packed_file is not None
    pose = importer.detail_pose(bpy.context, obj)
    assert pose["expression"][units[0]] == pytest.approx(0.8)
    want = engine_map(pose)
    assert shown().shape == want.shape and np.abs(shown() - want).max() < 0.5 / 65535
    neutral = np.asarray(Image.open(deca_folder / "displacement.png"), dtype=np.float64)[::-1] / 65535.0
    assert np.abs(want - neutral).max() > 20 / 65535  # the pose's own map, not the neutral one
    # another pose: a second press re-bakes into the same node and image name
    importer.set_key_value(obj, units[0], 0.0)
    importer.set_key_value(obj, units[-1], 1.0)
    obj.update_tag()
    bpy.context.view_layer.update()
    n_images = len(bpy.data.images)
    assert bpy.ops.facerecon.bake_detail_pose(timeout=300) == {"FINISHED"}
    assert len(bpy.data.images) == n_images
    assert np.abs(shown() - engine_map(importer.detail_pose(bpy.context, obj))).max() < 0.5 / 65535
    assert np.abs(shown() - want).max() > 20 / 65535
    assert bpy.ops.facerecon.detail_source(baked=False) == {"FINISHED"}
    assert importer.detail_source(obj) == "ANIMATED"
    importer.remove_objects([obj, obj.parent])

    # the network moved away: the engine's one line, and the head keeps its animated detail
    moved = tmp_path / "moved"
    shutil.copytree(deca_folder, moved)
    (moved / "params.json").write_text(json.dumps(dict(params, detail=dict(
        params["detail"], checkpoint=str(tmp_path / "gone.pt")))))
    obj = _import_detail(bpy, moved)
    with pytest.raises(RuntimeError, match="is not there") as failed:
        bpy.ops.facerecon.bake_detail_pose(timeout=300)
    assert "\n" not in str(failed.value).strip()
    assert importer.DETAIL_BAKED not in obj.active_material.node_tree.nodes
    importer.remove_objects([obj, obj.parent])
