"""Bring an ``engine reconstruct`` output folder into the scene (docs/conventions.md).

``head.glb`` gives the mesh, UVs and one named shape key per expression basis;
``albedo.png`` becomes the material's base colour; ``displacement.png`` (DECA detail)
becomes a displacement/bump input of the material and can be baked into the mesh and
every shape key alike (a Displace modifier would block shape-key export); with a ``detail``
entry in ``params.json`` the expression units' detail maps (``detail/<unit>.png``) are added
to it, each weighted by a driver that reads its shape key (and the jaw's by the jaw bone), so
wrinkles follow the sliders (:func:`build_detail_mix`); ``params.json``
names the object after the photo (and the face, for a group photo), keeps the fit as custom
properties, sets the fitted expression and approximates the photo's SH lighting by a world
shader (one world per head, reused on re-import; set as the scene's world only when the
scene has none or when asked). New heads are placed at the 3D cursor.

Import is all-or-nothing: on any error every datablock created so far is removed, so a
failed import leaves the scene as it was.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import bpy
import numpy as np

from . import photo_camera

#: The compact face controls (object properties): (min, max, description). A control adds
#: to the shape keys of ``DRIVEN_KEYS``; each of those keys keeps its own manual value (a
#: property of the same name on the shape-key datablock), so every key stays usable:
#: ``value = manual + control`` (clamped to the slider range by Blender).
CONTROLS: dict[str, tuple[float, float, str]] = {
    "jaw_open": (0.0, 1.0, "Open the jaw (jawOpen)"),
    "jaw_side": (-1.0, 1.0, "Move the jaw to the subject's left (+) or right (-) (jawLeft/jawRight)"),
    "jaw_forward": (0.0, 1.0, "Push the jaw forward (jawForward)"),
    "eyes_side": (-1.0, 1.0, "Look to the subject's left (+) or right (-) (eyeLookIn/Out)"),
    "eyes_up_down": (-1.0, 1.0, "Look up (+) or down (-) (eyeLookUp/Down)"),
    "eyes_blink": (0.0, 1.0, "Close both eyes (eyeBlinkLeft/Right)"),
}

#: shape key → the controls' part of its driver expression (the key's manual value is added).
DRIVEN_KEYS: dict[str, str] = {
    "jawOpen": "jaw_open",
    "jawLeft": "max(jaw_side, 0)",
    "jawRight": "max(-jaw_side, 0)",
    "jawForward": "jaw_forward",
    # Subject's left eye looking to the subject's left looks outwards.
    "eyeLookOutLeft": "max(eyes_side, 0)",
    "eyeLookInLeft": "max(-eyes_side, 0)",
    "eyeLookInRight": "max(eyes_side, 0)",
    "eyeLookOutRight": "max(-eyes_side, 0)",
    "eyeLookUpLeft": "max(eyes_up_down, 0)",
    "eyeLookUpRight": "max(eyes_up_down, 0)",
    "eyeLookDownLeft": "max(-eyes_up_down, 0)",
    "eyeLookDownRight": "max(-eyes_up_down, 0)",
    "eyeBlinkLeft": "eyes_blink",
    "eyeBlinkRight": "eyes_blink",
}

DISPLACEMENT_MIDLEVEL = 32768.0 / 65535.0  # grey value of zero displacement in a 16-bit map

#: The skin material's Principled *Specular IOR Level* (Blender's default 0.5; see _build_material).
SKIN_SPECULAR = 0.25

#: Node names of the animated detail in the skin material (docs/blender_addon.md, "Animated detail").
DETAIL_FRAME = "Animated detail"          # the frame around the whole mix
DETAIL_NEUTRAL = "Detail displacement"    # image texture of displacement.png
DETAIL_SUM = "Detail animated"            # the last node of the mix: neutral + Σ weight·Δ
DETAIL_BAKED = "Detail (baked pose)"      # image texture of a map baked for one pose by the engine
DETAIL_SOURCE = "Detail source"           # Mix: 0 = the animated mix, 1 = the baked pose map
DETAIL_JAW = "jaw"                        # the jaw's term, besides the shape-key units


def detail_weight_node_name(unit: str) -> str:
    """The Value node that holds the weight of a unit's (or the jaw's) detail map."""
    return f"Detail weight {unit}"

# SH constants of engine.render.shading (Ramamoorthi & Hanrahan): environment radiance of
# bands 0 and 1 is L0·C0 + C1·(L1·y + L2·z + L3·x) in the view frame.
_SH_C0 = 0.5 / math.sqrt(math.pi)
_SH_C1 = math.sqrt(3.0 / (4.0 * math.pi))


class ImportFailed(Exception):
    """The output folder cannot be imported; the message is shown to the user."""


def read_params(out_dir: Path) -> dict:
    path = out_dir / "params.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ImportFailed(f"{path} is not valid JSON: {exc}") from None


def result_warnings(out_dir: str | Path) -> list[str]:
    """The engine's warnings about a result (``params.json``'s ``warnings``: an implausible fit,
    a lost detector), one sentence each; empty when there are none or no such entry. For a
    batch folder (every face of a photo), each face's warnings and why a face failed."""
    from .runner import batch_items

    items = batch_items(out_dir)
    if items is not None:
        said = []
        for item in items:
            face = f"face {item.get('face')}" if item.get("face") is not None else str(item.get("name", "?"))
            if item.get("error"):
                said.append(f"{face} failed: {item['error']}")
            said += [f"{face}: {w}" for w in (item.get("warnings") or [])]
        return said
    warnings = read_params(Path(out_dir)).get("warnings") or []
    return [str(w) for w in warnings] if isinstance(warnings, list) else [str(warnings)]


#: Metres between the heads of one group photo imported side by side (a head is ~0.2 m wide).
HEAD_SPACING_M = 0.3


def side_by_side(folders: list[Path], centre) -> list:
    """Where new heads from the folders go: one row along X centred on ``centre`` (the 3D
    cursor), in the order the faces stand in the photo from left to right (the detected
    landmarks' mean x), so a group photo's heads stand as the people do; one folder: ``centre``."""
    from mathutils import Vector

    def x(folder: Path) -> float:
        pts = read_params(folder).get("landmarks68_detected_px") or []
        xs = [float(p[0]) for p in pts if isinstance(p, (list, tuple)) and p]
        return sum(xs) / len(xs) if xs else 0.0

    order = sorted(range(len(folders)), key=lambda k: x(folders[k]))
    spots = [None] * len(folders)
    for rank, k in enumerate(order):
        spots[k] = Vector(centre) + Vector(((rank - (len(folders) - 1) / 2) * HEAD_SPACING_M, 0.0, 0.0))
    return spots


def face_index(params: dict) -> int:
    """Which face of the photo the folder holds (0 = the largest; older folders: 0)."""
    try:
        return max(int(params.get("face_index", 0)), 0)
    except (TypeError, ValueError):
        return 0


def result_name(out_dir: Path, params: dict) -> str:
    """Object name: the photo's file name without extension (else the folder's name), with
    ``_face<N>`` for a photo with several faces (``group_face0``, ``group_face1``)."""
    photo = params.get("photo")
    name = Path(photo).stem if photo else out_dir.name
    try:
        several = int(params.get("faces_found", 1)) > 1
    except (TypeError, ValueError):
        several = False
    index = face_index(params)
    return f"{name}_face{index}" if several or index > 0 else name


def result_key(params: dict, name: str) -> tuple[str, int]:
    """What *Replace* matches: the photo (its path, else the object name) and the face index."""
    return (str(params.get("photo") or name), face_index(params))


def object_result_key(obj) -> tuple[str, int] | None:
    """:func:`result_key` of an imported object (heads of older versions: photo/name, face 0)."""
    name = obj.get("facerecon_name")
    if name is None:
        return None
    return (str(obj.get("facerecon_photo") or name), int(obj.get("facerecon_face_index", 0)))


class _Created:
    """Datablocks created during an import, so a failure can remove them all."""

    COLLECTIONS = ("objects", "meshes", "materials", "images", "worlds", "armatures", "actions",
                   "shape_keys", "node_groups", "textures", "cameras")

    def __init__(self) -> None:
        self.before = {c: set(getattr(bpy.data, c)) for c in self.COLLECTIONS}

    def new(self, collection: str) -> list:
        return [d for d in getattr(bpy.data, collection) if d not in self.before[collection]]

    def rollback(self) -> None:
        for collection in ("objects", "meshes", "armatures", "cameras", "materials", "images", "worlds",
                           "actions", "node_groups", "textures"):
            for datablock in self.new(collection):
                try:
                    getattr(bpy.data, collection).remove(datablock)
                except (ReferenceError, RuntimeError):
                    pass


def find_results(key: tuple[str, int]) -> list[bpy.types.Object]:
    """Objects (head, rig, photo camera) imported earlier from the same photo and face (for *Replace*)."""
    return [o for o in bpy.data.objects if object_result_key(o) == key]


def remove_objects(objects: list[bpy.types.Object]) -> None:
    for obj in objects:
        data = obj.data
        bpy.data.objects.remove(obj)
        if data is not None and data.users == 0:
            if isinstance(data, bpy.types.Mesh):
                bpy.data.meshes.remove(data)
            elif isinstance(data, bpy.types.Armature):
                bpy.data.armatures.remove(data)
            elif isinstance(data, bpy.types.Camera):
                bpy.data.cameras.remove(data)


def import_result(context: bpy.types.Context, out_dir: str | Path, *, replace: bool = True,
                  apply_expression: bool = True, photo_lighting: bool = False,
                  bake_detail: bool = False, face_controls: bool = True, at=None) -> bpy.types.Object:
    """Import a reconstruction folder; returns the head mesh object (active and selected).

    ``replace``: remove the head made earlier from the same photo and face (keeping its place);
    otherwise, and when there is none, the new head goes to ``at`` (a location; default the 3D
    cursor). ``photo_lighting``:
    make the photo's lighting the scene's world even when the scene has one (a scene without
    a world always gets it)."""
    out_dir = Path(out_dir)
    glb = out_dir / "head.glb"
    if not glb.is_file():
        raise ImportFailed(f"{out_dir} has no head.glb; is it an 'engine reconstruct' output folder?")
    params = read_params(out_dir)
    name = result_name(out_dir, params)
    created = _Created()
    try:
        return _import(context, out_dir, glb, params, name, created, replace=replace,
                       apply_expression=apply_expression, photo_lighting=photo_lighting,
                       bake=bake_detail, face_controls=face_controls, at=at)
    except Exception:
        created.rollback()
        raise


def _import(context, out_dir, glb, params, name, created, *, replace, apply_expression, photo_lighting,
            bake, face_controls, at):
    if context.object is not None and context.object.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    result = bpy.ops.import_scene.gltf(filepath=str(glb), merge_vertices=True, import_shading="NORMALS")
    if "FINISHED" not in result:
        raise ImportFailed(f"Blender's glTF importer could not read {glb}.")
    new_objects = created.new("objects")
    rig = next((o for o in new_objects if o.type == "ARMATURE"), None)
    # (for a skin the importer adds a mesh object as its bones' display shape: not the head)
    shapes = {b.custom_shape for b in rig.pose.bones if b.custom_shape is not None} if rig is not None else set()
    meshes = [o for o in new_objects if o.type == "MESH" and o not in shapes]
    if len(meshes) != 1:
        raise ImportFailed(f"{glb} should hold exactly one mesh, found {len(meshes)}.")
    obj = meshes[0]
    # Drop helper empties and bone shapes the importer may create; keep the mesh (and a skin's armature).
    for extra in new_objects:
        if extra is not obj and extra is not rig:
            for child in extra.children:
                world = child.matrix_world.copy()
                child.parent = None
                child.matrix_world = world
            bpy.data.objects.remove(extra)

    key = result_key(params, name)
    old = find_results(key) if replace else []
    heads = [o for o in old if o.type != "CAMERA"]
    old_top = next((o for o in heads if o.parent not in heads), heads[0]) if heads else None  # the rig, if any
    old_matrix = old_top.matrix_world.copy() if old_top is not None else None
    # the head's photo camera is made again for the new head (the scene's camera if it was that)
    old_camera = next((o for o in old if o.type == "CAMERA" and o.get("facerecon_role") == photo_camera.ROLE), None)
    camera_was_active = old_camera is not None and context.scene.camera == old_camera
    remove_objects(old)

    rig_data = read_rig(out_dir)
    if rig_data is not None:
        if rig is not None:  # head.glb's own skeleton (for other programs): rig.json's armature replaces it
            _drop_gltf_skeleton(obj, rig, rig_data["joint_names"])
        rig = build_armature(context, obj, rig_data, name)

    top = rig or obj
    obj.name = name
    obj.data.name = name
    if rig is not None:
        rig.name = f"{name}_rig"
        rig.data.name = f"{name}_rig"
    if old_matrix is not None:
        top.matrix_world = old_matrix
    else:  # a new head goes where the user points, not into whatever sits at the origin
        top.location = context.scene.cursor.location.copy() if at is None else at
    for o in (obj, rig):
        if o is not None:
            o["facerecon_name"] = name
            o["facerecon_photo"] = key[0]
            o["facerecon_face_index"] = key[1]
    _store_params(obj, params, out_dir)
    if (out_dir / "photo.jpg").is_file():  # packed: the Photo Camera's background outlives a temporary folder
        photo = _load_image(out_dir / "photo.jpg")
        photo.name = f"{name}_photo"
        obj["facerecon_photo_image"] = photo.name
    _build_material(obj, out_dir, params, name)
    build_region_materials(obj, params, name, rig_data if rig_data is not None else read_rig(out_dir))
    _setup_shape_keys(obj, params, apply_expression)
    if face_controls:
        add_face_controls(obj)
    if rig is not None and rig_data is not None:
        add_pose_controls(rig, rig_data)
    elif rig is not None:
        _pose_rig(rig, params)
    if obj.get("facerecon_detail_units") is not None:
        add_detail_drivers(obj)
    if bake and obj.get("facerecon_displacement_image"):
        bake_detail(obj)
    if old_camera is not None:
        photo_camera.add_photo_camera(context, obj, make_active=camera_was_active, arrange=False)  # the others stay put
    # last, so that a failed import leaves the scene's world as it was
    if params.get("sh") and (photo_lighting or context.scene.world is None):
        context.scene.world = photo_world(name, params)

    for o in context.view_layer.objects:
        o.select_set(False)
    for o in (obj, rig):
        if o is not None:
            o.select_set(True)
    context.view_layer.objects.active = obj
    return obj


def _store_params(obj, params: dict, out_dir: Path) -> None:
    """Keep the fit on the object (lighting, camera, pose) for scripts and exporters."""
    obj["facerecon_folder"] = str(out_dir)
    for key in ("model", "method"):
        if key in params:
            obj[f"facerecon_{key}"] = str(params[key])
    for key in ("image_size", "K", "R", "t", "identity"):
        if key in params:
            obj[f"facerecon_{key}"] = np.asarray(params[key], dtype=np.float64).ravel().tolist()
    if "sh" in params:
        obj["facerecon_sh"] = np.asarray(params["sh"], dtype=np.float64).ravel().tolist()
    if isinstance(params.get("pose"), dict):
        obj["facerecon_pose"] = {k: [float(x) for x in v] for k, v in params["pose"].items()}
    if isinstance(params.get("expression"), dict):
        obj["facerecon_expression"] = {k: float(v) for k, v in params["expression"].items()}
    if isinstance(params.get("same_person"), dict):  # one identity from several photos (--same-person)
        obj["facerecon_same_person_photos"] = int(params["same_person"].get("photos", 1))


def _prop_variable(driver, name: str, id_type: str, target, data_path: str) -> None:
    """Add a *Single Property* variable ``name`` reading ``data_path`` of ``target`` (an ID of
    ``id_type``: "OBJECT", "KEY", ...) to ``driver``."""
    var = driver.variables.new()
    var.name = name
    var.type = "SINGLE_PROP"
    var.targets[0].id_type = id_type
    var.targets[0].id = target
    var.targets[0].data_path = data_path


def _load_image(path: Path, non_color: bool = False) -> bpy.types.Image:
    image = bpy.data.images.load(str(path), check_existing=False)
    if non_color:
        image.colorspace_settings.name = "Non-Color"
    image.pack()  # the output folder may be a temporary one
    return image


def _build_material(obj, out_dir: Path, params: dict, name: str) -> None:
    albedo_path = out_dir / "albedo.png"
    disp_path = out_dir / "displacement.png"
    old_mat = obj.active_material
    albedo = _load_image(albedo_path) if albedo_path.is_file() else None
    if albedo is None and old_mat is not None and old_mat.node_tree is not None:
        albedo = next((n.image for n in old_mat.node_tree.nodes if n.type == "TEX_IMAGE" and n.image), None)
    mat = bpy.data.materials.new(f"{name}_skin")
    _use_nodes(mat)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    out = next(n for n in nodes if n.type == "OUTPUT_MATERIAL")
    bsdf.inputs["Roughness"].default_value = 0.55
    # half of Blender's default specular: the albedo is the photo divided by a diffuse shading,
    # so it already holds part of the photo's sheen (renders under the photo's light: 14.8 ->
    # 11.8 /255 from the photo, docs/blender_addon.md; 0 gave 8.6 but chalky skin under lamps)
    bsdf.inputs["Specular IOR Level"].default_value = SKIN_SPECULAR
    uv = nodes.new("ShaderNodeUVMap")
    uv.location = (-900, 200)
    if albedo is not None:
        tex = nodes.new("ShaderNodeTexImage")
        tex.name = tex.label = "Albedo"
        tex.image = albedo
        tex.location = (-600, 300)
        links.new(uv.outputs["UV"], tex.inputs["Vector"])
        links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        obj["facerecon_albedo_image"] = albedo.name
    detail = read_detail(out_dir, params)
    if detail is not None and not disp_path.is_file():
        raise ImportFailed(f"params.json has a 'detail' entry but {disp_path} (the neutral detail map) is missing.")
    if disp_path.is_file():
        scale_m = float(params.get("displacement_scale_m", 0.0))
        if scale_m <= 0.0:
            raise ImportFailed(f"{disp_path} exists but params.json has no positive displacement_scale_m.")
        disp_img = _load_image(disp_path, non_color=True)
        dtex = nodes.new("ShaderNodeTexImage")
        dtex.name = dtex.label = DETAIL_NEUTRAL
        dtex.image = disp_img
        dtex.interpolation = "Cubic"
        dtex.location = (-600, -250)
        disp = nodes.new("ShaderNodeDisplacement")
        disp.name = "Detail"
        disp.location = (-250, -250)
        disp.inputs["Scale"].default_value = 65535.0 * scale_m
        links.new(uv.outputs["UV"], dtex.inputs["Vector"])
        if detail is None:  # the neutral map alone, straight into the height
            disp.inputs["Midlevel"].default_value = DISPLACEMENT_MIDLEVEL
            links.new(dtex.outputs["Color"], disp.inputs["Height"])
        else:
            build_detail_mix(obj, mat, uv, dtex, disp, detail)
        links.new(disp.outputs["Displacement"], out.inputs["Displacement"])
        mat.displacement_method = "BUMP"  # works without subdivision, in EEVEE and Cycles
        obj["facerecon_displacement_image"] = disp_img.name
        obj["facerecon_displacement_scale_m"] = scale_m
    obj.data.materials.clear()
    obj.data.materials.append(mat)
    if old_mat is not None and old_mat.users == 0:
        bpy.data.materials.remove(old_mat)


# ---------------------------------------------------------------------------- animated detail
def _folder_file(out_dir: Path, rel, what: str) -> Path:
    """A file named by params.json, inside the output folder (no absolute paths, no ``..``)."""
    if not isinstance(rel, str) or not rel:
        raise ImportFailed(f"params.json's detail entry names no file for {what}.")
    root = out_dir.resolve()
    path = (out_dir / rel).resolve()
    if Path(rel).is_absolute() or root not in path.parents:
        raise ImportFailed(f"params.json's detail map for {what} ('{rel}') is not inside {out_dir}.")
    if not path.is_file():
        raise ImportFailed(f"The detail map for {what} ({out_dir / rel}) is missing.")
    return path


def read_detail(out_dir: Path, params: dict) -> dict | None:
    """The ``detail`` entry of params.json, checked: ``{"units": {unit: Path}, "jaw": (Path,
    radians) or None}``; None when the folder has no animated detail."""
    entry = params.get("detail")
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise ImportFailed("params.json's 'detail' entry is not an object.")
    units = entry.get("units") or {}
    if not isinstance(units, dict) or not all(isinstance(k, str) and k for k in units):
        raise ImportFailed("params.json's detail 'units' is not an object of {shape key: file}.")
    if DETAIL_JAW in units:
        raise ImportFailed(f"params.json's detail units name '{DETAIL_JAW}', which is the jaw's map.")
    jaw = entry.get("jaw")
    jaw_map = None
    if jaw is not None:
        try:
            rad = float(jaw["rad"])
        except (TypeError, KeyError, ValueError):
            raise ImportFailed("params.json's detail 'jaw' needs a 'file' and an angle 'rad'.") from None
        if not (math.isfinite(rad) and rad > 0.0):
            raise ImportFailed(f"params.json's detail jaw angle 'rad' must be positive, not {jaw['rad']!r}.")
        jaw_map = (_folder_file(out_dir, jaw.get("file"), "the jaw"), rad)
    return {"units": {unit: _folder_file(out_dir, rel, unit) for unit, rel in units.items()}, "jaw": jaw_map}


def _math(nodes, operation: str, label: str, location, parent, value: float | None = None):
    node = nodes.new("ShaderNodeMath")
    node.operation = operation
    node.name = node.label = label
    node.parent = parent
    node.location = location
    if value is not None:
        node.inputs[1].default_value = value
    return node


def build_detail_mix(obj, mat, uv, neutral_tex, disp, detail: dict) -> None:
    """The animated detail height in the skin material, inside the frame *Animated detail*:

    ``(neutral − mid) + Σ_k w_k·(Δ_k − mid) + w_jaw·(Δ_jaw − mid)`` into the Displacement
    node's Height (midlevel 0, scale = metres per unit × 65535), with ``mid`` = 32768/65535.
    Each map is a packed 16-bit Non-Color image texture; each weight ``w`` is a Value node
    (:func:`detail_weight_node_name`) that :func:`add_detail_drivers` drives by its shape
    key (the jaw's: jaw bone angle about X / the map's angle). Missing shape keys are an
    :class:`ImportFailed`."""
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    keys = obj.data.shape_keys
    names = {kb.name for kb in keys.key_blocks[1:]} if keys is not None else set()
    missing = [u for u in detail["units"] if u not in names]
    if missing:
        raise ImportFailed(f"params.json has detail maps for {', '.join(missing)}, which the head has no "
                           "shape key for.")
    frame = nodes.new("NodeFrame")
    frame.name = frame.label = DETAIL_FRAME
    neutral_tex.parent = frame
    neutral_tex.location = (-1300, -250)
    total = _math(nodes, "SUBTRACT", "Detail neutral - mid", (-1000, -250), frame, DISPLACEMENT_MIDLEVEL)
    links.new(neutral_tex.outputs["Color"], total.inputs[0])
    terms = list(detail["units"].items())
    if detail["jaw"] is not None:
        terms.append((DETAIL_JAW, detail["jaw"][0]))
    images = {}
    for i, (unit, path) in enumerate(terms):
        y = -550 - 320 * i
        image = _load_image(path, non_color=True)
        tex = nodes.new("ShaderNodeTexImage")
        tex.name = tex.label = f"Detail {unit}"
        tex.image = image
        tex.interpolation = "Cubic"
        tex.parent = frame
        tex.location = (-1300, y)
        links.new(uv.outputs["UV"], tex.inputs["Vector"])
        centred = _math(nodes, "SUBTRACT", f"Detail {unit} - mid", (-1000, y), frame, DISPLACEMENT_MIDLEVEL)
        links.new(tex.outputs["Color"], centred.inputs[0])
        weight = nodes.new("ShaderNodeValue")
        weight.name = detail_weight_node_name(unit)
        weight.label = f"{unit} (driven)"
        weight.parent = frame
        weight.location = (-1000, y - 170)
        weight.outputs[0].default_value = 0.0
        scaled = _math(nodes, "MULTIPLY", f"Detail {unit} weighted", (-800, y), frame)
        links.new(centred.outputs["Value"], scaled.inputs[0])
        links.new(weight.outputs["Value"], scaled.inputs[1])
        added = _math(nodes, "ADD", f"Detail + {unit}", (-600, y + 150), frame)
        links.new(total.outputs["Value"], added.inputs[0])
        links.new(scaled.outputs["Value"], added.inputs[1])
        total = added
        images[unit] = image.name
    total.name = DETAIL_SUM
    disp.inputs["Midlevel"].default_value = 0.0
    links.new(total.outputs["Value"], disp.inputs["Height"])
    obj["facerecon_detail_units"] = {u: images[u] for u in detail["units"]}
    if detail["jaw"] is not None:
        obj["facerecon_detail_jaw"] = {"image": images[DETAIL_JAW], "rad": float(detail["jaw"][1])}


def skin_material(obj):
    """The head's skin material (slot 0), or None."""
    mats = obj.data.materials
    mat = mats[0] if len(mats) else None
    return mat if mat is not None and mat.node_tree is not None else None


def add_detail_drivers(obj) -> list[str]:
    """Drive each detail weight of the skin material: a unit's by its shape key's value
    (``key_blocks["<unit>"].value``, so also what the face controls add to it), the jaw's by
    the rig's ``jaw`` bone: its local rotation about X (swing-twist, radians) divided by the
    map's angle. The rig.json armature's jaw bone has its local X along the model's X, so that
    angle is the engine's jaw rotation about X (a positive angle opens the mouth). The jaw's
    weight stays 0 without such a rig. Returns the driven data paths."""
    mat = skin_material(obj)
    keys = obj.data.shape_keys
    if mat is None:
        return []
    nodes = mat.node_tree.nodes
    paths = []
    for unit in obj.get("facerecon_detail_units", {}):
        node = nodes.get(detail_weight_node_name(unit))
        if node is None or keys is None:
            continue
        node.outputs[0].driver_remove("default_value")
        driver = node.outputs[0].driver_add("default_value").driver
        driver.type = "AVERAGE"
        _prop_variable(driver, "weight", "KEY", keys, f'key_blocks["{unit}"].value')
        paths.append(node.outputs[0].path_from_id("default_value"))
    jaw = obj.get("facerecon_detail_jaw")
    rig = pose_rig_of(obj)
    node = nodes.get(detail_weight_node_name(DETAIL_JAW))
    if jaw is not None and node is not None and rig is not None and "jaw" in rig.pose.bones:
        node.outputs[0].driver_remove("default_value")
        driver = node.outputs[0].driver_add("default_value").driver
        driver.type = "SCRIPTED"
        var = driver.variables.new()
        var.name = "jaw"
        var.type = "TRANSFORMS"
        target = var.targets[0]
        target.id = rig
        target.bone_target = "jaw"
        target.transform_type = "ROT_X"
        target.transform_space = "LOCAL_SPACE"
        target.rotation_mode = "SWING_TWIST_X"
        driver.expression = f"jaw / {float(jaw['rad'])!r}"  # a simple expression: no Python needed
        paths.append(node.outputs[0].path_from_id("default_value"))
    return paths


def jaw_model_rotation(rig) -> list[float]:
    """The ``jaw`` bone's current local rotation as the engine's joint pose: axis-angle in model
    axes (radians), the inverse of :func:`_bone_local_rotation`; zeros without a jaw bone."""
    from mathutils import Matrix

    if rig is None or "jaw" not in rig.pose.bones:
        return [0.0, 0.0, 0.0]
    local = np.array(rig.pose.bones["jaw"].matrix_basis.to_3x3())
    M = np.array(rig.data.bones["jaw"].matrix_local.to_3x3())
    R = MODEL_TO_BLENDER.T @ (M @ local @ M.T) @ MODEL_TO_BLENDER
    axis, angle = Matrix(R.tolist()).to_quaternion().to_axis_angle()
    return [float(c) * float(angle) for c in axis]


def detail_pose(context, obj) -> dict:
    """The pose ``engine bake-detail`` bakes a map for: every shape key's current value (with
    what drivers and animation put there) and the jaw joint's rotation (model axes, radians)."""
    depsgraph = context.evaluated_depsgraph_get()
    keys = obj.data.shape_keys
    expression = {}
    if keys is not None:
        evaluated = keys.evaluated_get(depsgraph)
        expression = {kb.name: float(kb.value) for kb in evaluated.key_blocks[1:]}
    rig = pose_rig_of(obj)
    return {"expression": expression,
            "jaw": jaw_model_rotation(rig.evaluated_get(depsgraph) if rig is not None else None)}


def _detail_nodes(obj):
    """(material, Displacement node, the animated mix's last node) of a head with animated detail."""
    mat = skin_material(obj)
    if mat is None or obj.get("facerecon_detail_units") is None:
        raise ImportFailed(f"'{obj.name}' has no animated detail (its folder had no detail maps).")
    nodes = mat.node_tree.nodes
    disp, total = nodes.get("Detail"), nodes.get(DETAIL_SUM)
    if disp is None or total is None:
        raise ImportFailed(f"The skin material of '{obj.name}' has lost its detail nodes ('Detail', "
                           f"'{DETAIL_SUM}').")
    return mat, disp, total


def use_baked_detail(obj, path: str | Path) -> bpy.types.Image:
    """Load a map written by ``engine bake-detail`` (same encoding and scale as
    displacement.png) as *Detail (baked pose)* and switch the height to it (the *Detail
    source* Mix, factor 1). A second bake replaces the image; :func:`set_detail_source` goes
    back to the animated mix."""
    mat, disp, total = _detail_nodes(obj)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    image = _load_image(Path(path), non_color=True)
    image.name = f"{obj.name} {DETAIL_BAKED}"
    tex = nodes.get(DETAIL_BAKED)
    frame = nodes.get(DETAIL_FRAME)
    if tex is None:
        tex = nodes.new("ShaderNodeTexImage")
        tex.name = tex.label = DETAIL_BAKED
        tex.interpolation = "Cubic"
        tex.parent = frame
        tex.location = (-1300, 200)
        uv = next((n for n in nodes if n.type == "UVMAP"), None)
        if uv is not None:
            links.new(uv.outputs["UV"], tex.inputs["Vector"])
        centred = _math(nodes, "SUBTRACT", f"{DETAIL_BAKED} - mid", (-1000, 200), frame, DISPLACEMENT_MIDLEVEL)
        links.new(tex.outputs["Color"], centred.inputs[0])
        mix = nodes.new("ShaderNodeMix")
        mix.name = mix.label = DETAIL_SOURCE
        mix.data_type = "FLOAT"
        mix.parent = frame
        mix.location = (-450, 0)
        links.new(total.outputs["Value"], _socket(mix.inputs, "A_Float"))
        links.new(centred.outputs["Value"], _socket(mix.inputs, "B_Float"))
        links.new(_socket(mix.outputs, "Result_Float"), disp.inputs["Height"])
    old = tex.image
    tex.image = image
    if old is not None and old != image and old.users == 0:
        bpy.data.images.remove(old)
    image.name = f"{obj.name} {DETAIL_BAKED}"  # (after the old one is gone: no ".001")
    set_detail_source(obj, baked=True)
    return image


def set_detail_source(obj, baked: bool) -> None:
    """Height from the map baked for one pose (``baked``) or from the animated mix."""
    mat, disp, total = _detail_nodes(obj)
    mix = mat.node_tree.nodes.get(DETAIL_SOURCE)
    if mix is None:
        if baked:
            raise ImportFailed(f"'{obj.name}' has no detail map baked for a pose yet.")
        return
    _socket(mix.inputs, "Factor_Float").default_value = 1.0 if baked else 0.0


def detail_source(obj) -> str | None:
    """What the head's detail height comes from now: ``ANIMATED``, ``BAKED`` (the *Detail
    source* Mix's factor), or None for a head without animated detail."""
    mat = skin_material(obj)
    if mat is None or obj.get("facerecon_detail_units") is None:
        return None
    mix = mat.node_tree.nodes.get(DETAIL_SOURCE)
    if mix is None:
        return "ANIMATED"
    return "BAKED" if _socket(mix.inputs, "Factor_Float").default_value > 0.5 else "ANIMATED"


# ---------------------------------------------------------------------------- eyes, mouth, teeth
#: Colours (sRGB) of the mouth interior and teeth materials; the eyes' default iris and sclera
#: (when params.json has no ``eyes`` entry) match engine.photo.eyes.
MOUTH_RGB = (0.30, 0.09, 0.08)
TEETH_RGB = (0.86, 0.83, 0.74)
DEFAULT_IRIS_RGB = (0.35, 0.24, 0.15)
DEFAULT_SCLERA_RGB = (0.85, 0.82, 0.78)
PUPIL_RGB = (0.01, 0.01, 0.01)
IRIS_RADIUS_M = 5.9e-3  # half the visible iris diameter of an adult (as engine.generator.eyes)
PUPIL_RADIUS_M = 1.9e-3
#: The per-vertex attribute that carries each eyeball point's rest direction from its centre.
EYE_ATTRIBUTE = "eye_direction"


def srgb_to_linear(c) -> tuple[float, float, float]:
    """sRGB [0, 1] -> scene-linear (what a colour socket holds)."""
    c = np.clip(np.asarray(c, dtype=np.float64)[:3], 0.0, 1.0)
    return tuple(float(x) for x in np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4))


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through ``points (N, 3)``: (centre, radius)."""
    A = np.concatenate([2.0 * points, np.ones((len(points), 1))], 1)
    b = (points ** 2).sum(1)
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    c = sol[:3]
    return c, float(np.sqrt(max(sol[3] + c @ c, 1e-12)))


def eye_directions(co_model: np.ndarray, eyes: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, float]]]:
    """Unit direction ``(V, 3)`` of each eyeball vertex from its eyeball's centre (zero off the
    eyes), model axes (+Z is where the eyes look at rest), and the (centre, radius) of each
    eyeball (sphere fits; left = +X first). ``co_model (V, 3)``, ``eyes (V,)`` bool."""
    direction = np.zeros_like(co_model)
    spheres = []
    for side in (1.0, -1.0):
        ids = np.flatnonzero(eyes & (np.sign(co_model[:, 0]) == side))
        if len(ids) < 4:
            continue
        c, r = fit_sphere(co_model[ids])
        d = co_model[ids] - c
        direction[ids] = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        spheres.append((c, r))
    return direction, spheres


def _region_material(mat_name: str) -> bpy.types.Material:
    """The material ``mat_name`` with an empty node tree. One per head: the material of an
    earlier import that no object uses any more (the head *Replace* just removed) is reused
    and rebuilt, not duplicated as ``.001``; one another head still uses is left alone."""
    mat = bpy.data.materials.get(mat_name)
    if mat is None or mat.users > 0 or mat.library is not None:
        mat = bpy.data.materials.new(mat_name)
    _use_nodes(mat)
    mat.node_tree.nodes.clear()
    return mat


def _principled(mat, rgb, roughness: float, coat: float = 0.0):
    nodes = mat.node_tree.nodes
    out = nodes.new("ShaderNodeOutputMaterial")
    out.location = (400, 0)
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.location = (100, 0)
    mat.node_tree.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    bsdf.inputs["Base Color"].default_value = (*srgb_to_linear(rgb), 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    if coat > 0 and "Coat Weight" in bsdf.inputs:
        bsdf.inputs["Coat Weight"].default_value = coat
        bsdf.inputs["Coat Roughness"].default_value = 0.02
    mat.diffuse_color = (*srgb_to_linear(rgb), 1.0)  # Workbench / viewport solid colour
    mat.roughness = roughness
    return bsdf


def _socket(sockets, identifier: str):
    return next(s for s in sockets if s.identifier == identifier)


def eye_material(mat_name: str, iris_rgb, sclera_rgb, iris_angle: float, pupil_angle: float):
    """Procedural eyeball: sclera, iris disc and pupil around each eyeball's front pole.

    The ``eye_direction`` attribute (rest direction from the eyeball centre, +Z forward) is
    normalised per pixel, so the discs are round however coarse the eyeball mesh is, and they
    follow the eyeball when the eye bones or shape keys turn it. Editable nodes: the RGB nodes
    *Iris*, *Sclera*, *Pupil*, and the Map Range nodes *Pupil edge* / *Iris edge* (angles from
    the front pole in radians) and *Limbal ring* (the darker rim of the iris)."""
    mat = _region_material(mat_name)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = _principled(mat, sclera_rgb, roughness=0.25, coat=1.0)
    attr = nodes.new("ShaderNodeAttribute")
    attr.name = attr.label = "Eye direction"
    attr.attribute_type = "GEOMETRY"
    attr.attribute_name = EYE_ATTRIBUTE
    attr.location = (-1500, 0)
    norm = nodes.new("ShaderNodeVectorMath")
    norm.operation = "NORMALIZE"
    norm.location = (-1300, 0)
    links.new(attr.outputs["Vector"], norm.inputs[0])
    sep = nodes.new("ShaderNodeSeparateXYZ")
    sep.location = (-1100, 0)
    links.new(norm.outputs["Vector"], sep.inputs["Vector"])
    acos = nodes.new("ShaderNodeMath")
    acos.name = acos.label = "Angle from front"
    acos.operation = "ARCCOSINE"
    acos.use_clamp = False
    acos.location = (-900, 0)
    links.new(sep.outputs["Z"], acos.inputs[0])

    def edge(label: str, lo: float, hi: float, y: float, invert: bool):
        node = nodes.new("ShaderNodeMapRange")
        node.name = node.label = label
        node.interpolation_type = "SMOOTHSTEP"
        node.clamp = True
        node.inputs["From Min"].default_value = lo
        node.inputs["From Max"].default_value = hi
        node.inputs["To Min"].default_value = 1.0 if invert else 0.0
        node.inputs["To Max"].default_value = 0.0 if invert else 1.0
        node.location = (-650, y)
        links.new(acos.outputs["Value"], node.inputs["Value"])
        return node

    soft = 0.012  # radians: a slightly soft edge, no aliasing
    pupil_mask = edge("Pupil edge", pupil_angle - soft, pupil_angle + soft, 300, invert=True)
    iris_mask = edge("Iris edge", iris_angle - soft, iris_angle + soft, 0, invert=True)
    limbal = edge("Limbal ring", iris_angle - 0.35 * (iris_angle - pupil_angle), iris_angle, -300, invert=False)

    def rgb(label: str, colour, y: float):
        node = nodes.new("ShaderNodeRGB")
        node.name = node.label = label
        node.outputs[0].default_value = (*srgb_to_linear(colour), 1.0)
        node.location = (-650, y)
        return node

    sclera_node = rgb("Sclera", sclera_rgb, -600)
    iris_node = rgb("Iris", iris_rgb, -800)
    pupil_node = rgb("Pupil", PUPIL_RGB, -1000)

    def mix(label: str, factor, a, b, x: float, blend: str = "MIX"):
        node = nodes.new("ShaderNodeMix")
        node.name = node.label = label
        node.data_type = "RGBA"
        node.blend_type = blend
        node.location = (x, -200)
        links.new(factor, _socket(node.inputs, "Factor_Float"))
        if isinstance(a, bpy.types.NodeSocket):
            links.new(a, _socket(node.inputs, "A_Color"))
        if isinstance(b, bpy.types.NodeSocket):
            links.new(b, _socket(node.inputs, "B_Color"))
        return node

    # the iris darkens towards its rim (multiply by a darker grey over the limbal ring)
    rim = mix("Iris rim", limbal.outputs["Result"], iris_node.outputs[0], None, -450, blend="MULTIPLY")
    _socket(rim.inputs, "B_Color").default_value = (0.35, 0.35, 0.35, 1.0)
    iris_on = mix("Sclera/iris", iris_mask.outputs["Result"], sclera_node.outputs[0],
                  _socket(rim.outputs, "Result_Color"), -250)
    pupil_on = mix("Iris/pupil", pupil_mask.outputs["Result"], _socket(iris_on.outputs, "Result_Color"),
                   pupil_node.outputs[0], -50)
    bsdf.location = (200, 0)
    links.new(_socket(pupil_on.outputs, "Result_Color"), bsdf.inputs["Base Color"])
    mat["facerecon_iris_rgb"] = [float(c) for c in iris_rgb]
    mat["facerecon_sclera_rgb"] = [float(c) for c in sclera_rgb]
    return mat


def _eye_colours(params: dict) -> tuple[tuple, tuple]:
    """(iris, sclera) sRGB from params.json's ``eyes`` entry, else the defaults."""
    eyes = params.get("eyes") if isinstance(params.get("eyes"), dict) else {}
    out = []
    for key, default in (("iris_rgb", DEFAULT_IRIS_RGB), ("sclera_rgb", DEFAULT_SCLERA_RGB)):
        try:
            value = tuple(float(c) for c in eyes[key])
            out.append(value if len(value) == 3 and all(math.isfinite(c) for c in value) else default)
        except (KeyError, TypeError, ValueError):
            out.append(default)
    return out[0], out[1]


def build_region_materials(obj, params: dict, name: str, rig_data: dict | None) -> dict[str, int]:
    """Material slots after the skin (slot 0): ``<name>_eyes`` (procedural sclera / iris /
    pupil, the iris colour from params.json), ``<name>_mouth`` (mouth interior) and, for a
    model with separate teeth, ``<name>_teeth``; faces are assigned by rig.json's ``regions``
    (a face whose vertices are all in a region). Each head's materials are reused on
    re-import. Returns {region: slot index}; nothing is added without regions (older folders)."""
    regions = (rig_data or {}).get("regions")
    if not isinstance(regions, dict) or not regions:
        return {}
    mesh = obj.data
    n = len(mesh.vertices)
    order = _model_vertex_order(obj, rig_data)  # Blender index of each model vertex
    loop_vert = np.empty(len(mesh.loops), dtype=np.int64)
    mesh.loops.foreach_get("vertex_index", loop_vert)
    loop_start = np.empty(len(mesh.polygons), dtype=np.int64)
    mesh.polygons.foreach_get("loop_start", loop_start)
    masks = {}
    for region in ("eyes", "mouth_interior", "teeth"):
        ids = regions.get(region)
        if not ids:
            continue
        ids = np.asarray(ids, dtype=np.int64)
        if ids.min() < 0 or ids.max() >= len(order):
            raise ImportFailed(f"rig.json's region '{region}' has vertex indices outside its {len(order)} vertices.")
        vmask = np.zeros(n, dtype=bool)
        vmask[order[ids]] = True
        masks[region] = vmask
    co = np.empty(n * 3, dtype=np.float64)
    mesh.vertices.foreach_get("co", co)
    co_model = co.reshape(-1, 3) @ MODEL_TO_BLENDER  # Blender (x, -z, y) back to the model frame
    slots: dict[str, int] = {}
    material_index = np.zeros(len(mesh.polygons), dtype=np.int64)
    for region, vmask in masks.items():
        faces = np.minimum.reduceat(vmask[loop_vert].astype(np.int8), loop_start).astype(bool)
        if not faces.any():
            continue
        if region == "eyes":
            direction, spheres = eye_directions(co_model, vmask)
            radius = float(np.mean([r for _, r in spheres])) if spheres else 0.012
            r = max(radius, 1.25 * IRIS_RADIUS_M)  # the iris has its real size on any eyeball
            iris, sclera = _eye_colours(params)
            mat = eye_material(f"{name}_eyes", iris, sclera, iris_angle=math.asin(IRIS_RADIUS_M / r),
                               pupil_angle=math.asin(PUPIL_RADIUS_M / r))
            attr = mesh.attributes.get(EYE_ATTRIBUTE)
            if attr is not None:
                mesh.attributes.remove(attr)
            attr = mesh.attributes.new(EYE_ATTRIBUTE, "FLOAT_VECTOR", "POINT")
            attr.data.foreach_set("vector", direction.astype(np.float32).ravel())
            obj["facerecon_eye_centres"] = [float(x) for c, _ in spheres for x in MODEL_TO_BLENDER @ c]
            obj["facerecon_eye_radii"] = [float(r_) for _, r_ in spheres]
        elif region == "mouth_interior":
            mat = _region_material(f"{name}_mouth")
            _principled(mat, MOUTH_RGB, roughness=0.35)
        else:
            mat = _region_material(f"{name}_teeth")
            _principled(mat, TEETH_RGB, roughness=0.3)
        mesh.materials.append(mat)
        slots[region] = len(mesh.materials) - 1
        material_index[faces] = slots[region]
    mesh.polygons.foreach_set("material_index", material_index.astype(np.int32))
    mesh.update()
    obj.active_material_index = 0  # the skin stays the active material
    obj["facerecon_material_slots"] = slots
    return slots


def is_arkit(names: list[str]) -> bool:
    return "jawOpen" in names


def _setup_shape_keys(obj, params: dict, apply_expression: bool) -> None:
    keys = obj.data.shape_keys
    if keys is None:
        return
    keys.use_relative = True
    names = [kb.name for kb in keys.key_blocks[1:]]
    fitted = params.get("expression") if isinstance(params.get("expression"), dict) else {}
    arkit = is_arkit(names)
    for kb in keys.key_blocks[1:]:
        value = float(fitted.get(kb.name, 0.0)) if apply_expression else 0.0
        if arkit:
            kb.slider_min, kb.slider_max = 0.0, 1.0
        else:  # PCA expressions (FLAME): coefficients in units of std
            bound = max(3.0, math.ceil(abs(value)))
            kb.slider_min, kb.slider_max = -bound, bound
        # Set every value explicitly: Blender 5 creates new shape keys at 1.0.
        kb.value = min(max(value, kb.slider_min), kb.slider_max)


def _add_control(obj, prop: str, value: float) -> None:
    lo, hi, desc = CONTROLS[prop]
    obj[prop] = float(min(max(value, lo), hi))
    obj.id_properties_ui(prop).update(min=lo, max=hi, soft_min=lo, soft_max=hi, description=desc)


def add_face_controls(obj) -> list[str]:
    """Jaw/eye controls as object properties, added to the ARKit shape keys by drivers.

    Each driven key keeps a manual value: an ID property of the same name on the shape-key
    datablock (``obj.data.shape_keys["jawOpen"]``), which is what the *Face Sliders* list shows
    for that key. Its driver is ``manual + control part``, so the key can be set directly
    (a wink: ``eyeBlinkLeft`` = 1) and keeps that value on every depsgraph update or frame
    change while the control still adds to it. The controls start at 0 and the keys' current
    values (the fitted expression) become their manual values, so nothing changes visually.
    Returns the driven shape-key names (empty for non-ARKit models).
    """
    keys = obj.data.shape_keys
    if keys is None or not is_arkit([kb.name for kb in keys.key_blocks]):
        return []
    kb = keys.key_blocks
    for prop in CONTROLS:
        _add_control(obj, prop, 0.0)
    driven = []
    for key_name, expression in DRIVEN_KEYS.items():
        if key_name not in kb:
            continue
        block = kb[key_name]
        keys[key_name] = float(block.value)
        keys.id_properties_ui(key_name).update(
            min=block.slider_min, max=block.slider_max, soft_min=block.slider_min, soft_max=block.slider_max,
            description=f"Manual value of the {key_name} shape key (the face controls add to it)")
        driver = block.driver_add("value").driver
        driver.type = "SCRIPTED"
        _prop_variable(driver, "manual", "KEY", keys, f'["{key_name}"]')
        for var_name in CONTROLS:
            if var_name in expression:
                _prop_variable(driver, var_name, "OBJECT", obj, f'["{var_name}"]')
        driver.expression = f"manual + {expression}"
        driven.append(key_name)
    obj["facerecon_driven_keys"] = driven
    return driven


def key_value_path(obj, key_name: str) -> tuple[bpy.types.ID | bpy.types.ShapeKey, str]:
    """Where a user sets a shape key: ``(owner, property)`` for ``layout.prop`` / ``setattr``.
    A key the face controls also drive has its manual value on the shape-key datablock; any
    other key is its own ``value``."""
    keys = obj.data.shape_keys
    if key_name in obj.get("facerecon_driven_keys", []) and key_name in keys:
        return keys, f'["{key_name}"]'
    return keys.key_blocks[key_name], "value"


def set_key_value(obj, key_name: str, value: float) -> None:
    """Set a shape key the way the *Face Sliders* list does (the manual value of a driven
    key, else the key itself), clamped to its slider range, and tag the head for update."""
    keys = obj.data.shape_keys
    block = keys.key_blocks[key_name]
    value = float(min(max(value, block.slider_min), block.slider_max))
    owner, path = key_value_path(obj, key_name)
    if path == "value":
        block.value = value
    else:
        keys[key_name] = value
        keys.update_tag()
    obj.update_tag()


def remove_face_controls(obj) -> None:
    """Delete the drivers (keeping the current values) so every key is a plain slider again."""
    keys = obj.data.shape_keys
    if keys is None:
        return
    for key_name in obj.get("facerecon_driven_keys", []):
        kb = keys.key_blocks.get(key_name)
        if kb is not None:
            value = kb.value
            kb.driver_remove("value")
            kb.value = value
        if key_name in keys:
            del keys[key_name]
    for prop in CONTROLS:
        if prop in obj:
            del obj[prop]
    if "facerecon_driven_keys" in obj:
        del obj["facerecon_driven_keys"]


def reset_expression(obj) -> None:
    """Neutral face: all shape keys, their manual values and the face controls to zero."""
    keys = obj.data.shape_keys
    if keys is not None:
        for kb in keys.key_blocks[1:]:
            kb.value = 0.0
            if kb.name in keys and kb.name in obj.get("facerecon_driven_keys", []):
                keys[kb.name] = 0.0
        keys.update_tag()
    for prop in CONTROLS:
        if prop in obj:
            obj[prop] = 0.0
    obj.update_tag()


def _axis_angle_to_quaternion(rotvec) -> tuple[float, float, float, float]:
    # Model frame (+Y up, +Z front) to Blender after glTF import (+Z up, -Y front).
    x, y, z = (float(c) for c in rotvec)
    v = np.array([x, -z, y])
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return (1.0, 0.0, 0.0, 0.0)
    axis = v / angle
    s = math.sin(angle / 2)
    return (math.cos(angle / 2), *(axis * s))


def _drop_gltf_skeleton(obj, rig, joint_names) -> None:
    """Remove the armature Blender's glTF importer made from ``head.glb``'s skin, with its
    modifier, parenting and joint vertex groups: the mesh stays as imported (the rest mesh)."""
    for modifier in [m for m in obj.modifiers if m.type == "ARMATURE"]:
        obj.modifiers.remove(modifier)
    world = obj.matrix_world.copy()
    obj.parent = None
    obj.matrix_world = world
    for joint in joint_names:
        group = obj.vertex_groups.get(joint)
        if group is not None:
            obj.vertex_groups.remove(group)
    data = rig.data
    bpy.data.objects.remove(rig)
    if data.users == 0:
        bpy.data.armatures.remove(data)


def _pose_rig(rig, params: dict) -> None:
    """Apply the fitted joint rotations when the GLB came with a skin."""
    pose = params.get("pose") if isinstance(params.get("pose"), dict) else {}
    for joint, rotvec in pose.items():
        bone = rig.pose.bones.get(joint)
        if bone is not None and len(rotvec) == 3:
            bone.rotation_mode = "QUATERNION"
            bone.rotation_quaternion = _axis_angle_to_quaternion(rotvec)


# ---------------------------------------------------------------------------- rig.json armature
#: Model frame (+Y up, +Z front) -> Blender after glTF import (+Z up, -Y front).
MODEL_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

#: Pose controls on the armature object: property -> (min, max, description,
#: [(bone, Euler XYZ index in the bone's local axes, sign)]), values in radians. Each drives
#: the bones' rotation; the jaw bone has no control (the ``jaw_open`` face control opens the
#: mouth by the jawOpen shape key) and holds the photo's fitted jaw rotation.
POSE_CONTROLS: dict[str, tuple[float, float, str, list[tuple[str, int, float]]]] = {
    "neck_turn": (-1.2, 1.2, "Turn the head to the subject's left (+) or right (-), radians",
                  [("neck", 1, 1.0)]),
    "neck_nod": (-0.8, 0.8, "Nod the head down (+) or up (-), radians", [("neck", 0, 1.0)]),
    "neck_tilt": (-0.8, 0.8, "Tilt the head towards the subject's left (+) or right (-) shoulder, radians",
                  [("neck", 2, -1.0)]),
    "gaze_side": (-0.6, 0.6, "Turn both eyeballs to the subject's left (+) or right (-), radians",
                  [("eye_left", 2, 1.0), ("eye_right", 2, 1.0)]),
    "gaze_up": (-0.5, 0.5, "Turn both eyeballs up (+) or down (-), radians",
                [("eye_left", 0, 1.0), ("eye_right", 0, 1.0)]),
}

#: Bone tails relative to the head, in Blender axes: the neck points up (local X = subject's
#: left, Y = up, Z = back), the eyes look forward (local X = subject's right, Z = up); the
#: jaw points to the chin. The directions fix the local Euler axes the controls use.
_BONE_DIRECTIONS = {"neck": (0.0, 0.0, 0.12), "jaw": (0.0, -0.08, -0.03),
                    "eye_left": (0.0, -0.025, 0.0), "eye_right": (0.0, -0.025, 0.0)}


def read_rig(out_dir: Path) -> dict | None:
    """``rig.json`` of the output folder (docs/conventions.md), or None when absent."""
    path = out_dir / "rig.json"
    if not path.is_file():
        return None
    try:
        rig = json.loads(path.read_text(encoding="utf-8"))
        names = list(rig["joint_names"])
        if len(rig["joint_parents"]) != len(names) or np.asarray(rig["rest_joints"]).shape != (len(names), 3):
            raise ValueError("joint_names, joint_parents and rest_joints disagree")
        return rig
    except (ValueError, KeyError, TypeError) as exc:
        raise ImportFailed(f"{path} is not a valid rig file: {exc}") from None


def _model_rotation_to_blender(rotvec) -> np.ndarray:
    """Axis-angle in model axes -> 3x3 rotation in Blender's armature axes."""
    from mathutils import Matrix, Vector

    v = Vector([float(c) for c in rotvec])
    R = np.array(Matrix.Rotation(v.length, 3, v.normalized()) if v.length > 1e-12 else Matrix.Identity(3))
    return MODEL_TO_BLENDER @ R @ MODEL_TO_BLENDER.T


def build_armature(context, obj, rig_data: dict, name: str):
    """Armature from ``rig.json``: one bone per joint at its rest position, vertex groups
    from the skin weights, an Armature modifier (the only modifier, so shape keys still
    export as morph targets next to the skin) and the mesh parented to the armature."""
    n = len(obj.data.vertices)
    if int(rig_data.get("n_vertices", n)) < n:  # (fewer: the importer welded coincident vertices)
        raise ImportFailed(f"rig.json is for {rig_data['n_vertices']} vertices but head.glb has {n}.")
    names = list(rig_data["joint_names"])
    parents = [int(p) for p in rig_data["joint_parents"]]
    joints = np.asarray(rig_data["rest_joints"], dtype=np.float64) @ MODEL_TO_BLENDER.T
    arm = bpy.data.armatures.new(f"{name}_rig")
    rig = bpy.data.objects.new(f"{name}_rig", arm)
    for collection in obj.users_collection:
        collection.objects.link(rig)
    rig.matrix_world = obj.matrix_world.copy()
    arm.display_type = "STICK"
    rig.show_in_front = True
    view_layer = context.view_layer
    view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        bones = []
        for j, joint in enumerate(names):
            bone = arm.edit_bones.new(joint)
            head = joints[j]
            children = [c for c, p in enumerate(parents) if p == j]
            if joint in _BONE_DIRECTIONS:
                tail = head + np.asarray(_BONE_DIRECTIONS[joint])
            elif len(children) == 1 and np.linalg.norm(joints[children[0]] - head) > 1e-3:
                tail = joints[children[0]]  # the root points at the neck
            else:
                tail = head + np.array([0.0, 0.0, 0.05])
            bone.head, bone.tail, bone.roll = tuple(head), tuple(tail), 0.0
            bones.append(bone)
        for j, p in enumerate(parents):
            if p >= 0:
                bones[j].parent = bones[p]
                bones[j].use_connect = False
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    order = _model_vertex_order(obj, rig_data)
    for joint, entry in rig_data.get("skin_weights", {}).items():
        group = obj.vertex_groups.new(name=joint)
        for index, weight in zip(entry["vertices"], entry["weights"]):
            group.add([int(order[int(index)])], float(weight), "REPLACE")
    modifier = obj.modifiers.new("Armature", "ARMATURE")
    modifier.object = rig
    modifier.use_vertex_groups = True
    obj.parent = rig
    obj.matrix_parent_inverse = rig.matrix_world.inverted()
    return rig


#: head.glb's per-vertex attribute holding each glTF vertex's model vertex index (engine.export.gltf).
MODEL_VERTEX_ATTRIBUTE = "_MODEL_VERTEX"


def _model_vertex_order(obj, rig_data: dict) -> np.ndarray:
    """Blender vertex index of each model vertex (rig.json order; (n_model,) int).

    The glTF importer welds the seams back, but not in the model's order, and it also welds
    a model's own coincident vertices where their data agree (ICT has 118 positions held by
    two vertices). head.glb names each vertex's model vertex (``_MODEL_VERTEX``, a point
    attribute after the import): a model vertex whose index the weld dropped maps to the
    vertex at its position. Files without it (older folders): matched by position against
    ``rest_vertices``, one to one.
    """
    from mathutils.kdtree import KDTree

    mesh = obj.data
    n = len(mesh.vertices)
    co = np.empty(n * 3, dtype=np.float64)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    rest = rig_data.get("rest_vertices")
    rest = None if rest is None else np.asarray(rest, dtype=np.float64) @ MODEL_TO_BLENDER.T
    n_model = int(rig_data.get("n_vertices", n if rest is None else len(rest)))
    attr = mesh.attributes.get(MODEL_VERTEX_ATTRIBUTE)
    if attr is None and rest is None:
        return np.arange(n)
    if attr is not None:
        ids = np.empty(n, dtype=np.float64)
        attr.data.foreach_get("value", ids)
        ids = np.round(ids).astype(np.int64)
        if attr.domain != "POINT" or ids.min() < 0 or ids.max() >= n_model:
            raise ImportFailed(f"head.glb's vertex indices do not fit rig.json's {n_model} vertices.")
        order = np.full(n_model, -1, dtype=np.int64)
        order[ids] = np.arange(n)
        todo = np.nonzero(order < 0)[0]
        if len(todo) and rest is None:
            raise ImportFailed(f"{len(todo)} model vertices have no vertex in head.glb (and rig.json no positions).")
    else:
        if rest.shape != (n, 3):
            raise ImportFailed(f"rig.json has {len(rest)} rest vertices but head.glb has {n}.")
        order = np.full(n, -1, dtype=np.int64)
        todo = np.arange(n)
    if len(todo):
        tree = KDTree(n)
        for i, p in enumerate(co):
            tree.insert(p, i)
        tree.balance()
        worst = 0.0
        for i in todo:
            _, index, dist = tree.find(rest[i])
            order[i] = index
            worst = max(worst, dist)
        if worst > 1e-5:
            raise ImportFailed(f"rig.json does not match head.glb (a vertex is {worst * 1000:.3f} mm away).")
    return order


def _bone_local_rotation(rig, bone_name: str, rotvec):
    """Model-frame local joint rotation -> the pose bone's quaternion in its own axes."""
    from mathutils import Matrix

    M = np.array(rig.data.bones[bone_name].matrix_local.to_3x3())
    local = M.T @ _model_rotation_to_blender(rotvec) @ M
    return Matrix(local.tolist()).to_quaternion()


def add_pose_controls(rig, rig_data: dict) -> dict[str, float]:
    """Neck and gaze controls (armature object properties driving bone rotations), the jaw
    and root bones posed directly; everything starts at the photo's fitted pose, which is
    kept in ``facerecon_photo_pose`` for *Reset to Photo Pose*. Returns the control values."""
    pose = rig_data.get("pose", {})
    photo: dict[str, float] = {}
    eulers = {b: _bone_local_rotation(rig, b, pose.get(b, (0, 0, 0))).to_euler("XYZ")
              for b in ("neck", "eye_left", "eye_right") if b in rig.pose.bones}
    for prop, (lo, hi, desc, targets) in POSE_CONTROLS.items():
        targets = [t for t in targets if t[0] in rig.pose.bones]
        if not targets:
            continue
        value = float(np.mean([eulers[b][i] * sign for b, i, sign in targets]))
        photo[prop] = value
        rig[prop] = float(min(max(value, lo), hi))
        rig.id_properties_ui(prop).update(min=lo, max=hi, soft_min=lo, soft_max=hi, description=desc,
                                          subtype="ANGLE")
        for bone, index, sign in targets:
            pbone = rig.pose.bones[bone]
            pbone.rotation_mode = "XYZ"
            driver = pbone.driver_add("rotation_euler", index).driver
            driver.type = "SCRIPTED"
            _prop_variable(driver, prop, "OBJECT", rig, f'["{prop}"]')
            driver.expression = prop if sign > 0 else f"-{prop}"
    direct = {}
    for pbone in rig.pose.bones:
        if pbone.rotation_mode == "XYZ":
            continue
        pbone.rotation_mode = "QUATERNION"
        q = _bone_local_rotation(rig, pbone.name, pose.get(pbone.name, (0, 0, 0)))
        pbone.rotation_quaternion = q
        direct[pbone.name] = list(q)
    rig["facerecon_photo_pose"] = {"controls": photo, "bones": direct}
    rig["facerecon_pose_controls"] = list(photo)
    return photo


def pose_rig_of(obj):
    """The armature made from rig.json for a head mesh, or None."""
    rig = obj.parent
    if rig is not None and rig.type == "ARMATURE" and rig.get("facerecon_pose_controls") is not None:
        return rig
    return None


def reset_pose(rig, to_photo: bool) -> None:
    """Bones to the photo's fitted pose or to the neutral rest pose (all rotations zero)."""
    photo = rig.get("facerecon_photo_pose", {})
    controls = photo.get("controls", {}) if photo else {}
    bones = photo.get("bones", {}) if photo else {}
    for prop in rig.get("facerecon_pose_controls", []):
        lo, hi = POSE_CONTROLS[prop][:2]
        value = float(controls.get(prop, 0.0)) if to_photo else 0.0
        rig[prop] = min(max(value, lo), hi)
    for name, q in bones.items():
        pbone = rig.pose.bones.get(name)
        if pbone is not None:
            pbone.rotation_quaternion = tuple(q) if to_photo else (1.0, 0.0, 0.0, 0.0)
    rig.update_tag()
    for child in rig.children:
        child.update_tag()


def sh_shading(sh: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """The engine's diffuse shading ``(N, 3)`` of unit normals ``(N, 3)`` (view frame) under SH
    lighting ``sh`` (9, 3): ``engine.render.shading.sh_basis(n) @ sh`` in numpy (Blender's
    Python has no torch; ``tests/test_photo_camera.py`` checks the two agree)."""
    x, y, z = np.asarray(normals, dtype=np.float64).T
    c2 = 0.25 * 0.5 * math.sqrt(15.0 / math.pi)  # (Â_2/π)·c_2m
    basis = np.stack([np.full_like(x, _SH_C0), (2 / 3) * _SH_C1 * y, (2 / 3) * _SH_C1 * z, (2 / 3) * _SH_C1 * x,
                      c2 * x * y, c2 * y * z, 0.25 * 0.25 * math.sqrt(5.0 / math.pi) * (3 * z * z - 1), c2 * x * z,
                      0.25 * 0.25 * math.sqrt(15.0 / math.pi) * (x * x - y * y)], axis=1)
    return basis @ np.asarray(sh, dtype=np.float64).reshape(9, 3)


def srgb_decode(v: np.ndarray) -> np.ndarray:
    """sRGB-encoded values -> linear light (the standard transfer curve, extended above 1)."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((np.maximum(v, 0.0) + 0.055) / 1.055) ** 2.4)


#: The skin value (sRGB) at which the photo-lighting world reproduces the engine's shading exactly.
WORLD_REFERENCE_ALBEDO = 0.6


def linear_light_sh(sh: np.ndarray, n_normals: int = 2000) -> np.ndarray:
    """Bands 0–1 ``(4, 3)`` of SH lighting whose irradiance in *linear* light gives, through
    Blender's sRGB output, the engine's shading of the photo.

    The engine forms the photo in sRGB values (``colour = albedo · shading``), Blender in linear
    light (its texture decoded, lit, then encoded): lit by the fitted SH itself a head renders
    brighter and flatter than the photo (``shading^(1/2.4)``, roughly). So the world's lighting is
    fitted (least squares over the normals that face the camera, ``n_z > −0.2``) to
    ``decode(a · s(n)) / decode(a)`` with ``a`` = :data:`WORLD_REFERENCE_ALBEDO` (a skin value;
    with a power-law transfer the result would not depend on it)."""
    i = np.arange(n_normals) + 0.5
    polar, azimuth = np.arccos(1 - 2 * i / n_normals), np.pi * (1 + 5 ** 0.5) * i
    d = np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], 1)
    d = d[d[:, 2] > -0.2]
    a = WORLD_REFERENCE_ALBEDO
    target = srgb_decode(a * np.maximum(sh_shading(sh, d), 0.0)) / float(srgb_decode(a))
    zero = np.zeros((9, 3))
    columns = []
    for k in range(4):  # the basis of bands 0-1, as the engine shades with it
        unit = zero.copy()
        unit[k] = 1.0
        columns.append(sh_shading(unit, d)[:, 0])
    return np.linalg.lstsq(np.stack(columns, 1), target, rcond=None)[0]


def sh_world_terms(params: dict) -> tuple[np.ndarray, np.ndarray]:
    """The photo's lighting as Blender-world radiance ``a + b·d`` (bands 0–1 of
    :func:`linear_light_sh`: in linear light, so that renders reproduce the photo's shading).

    Returns ``a`` (3,) and ``b`` (3 colours, 3 Blender axes). The engine's coefficients live
    in the view frame (OpenCV camera with Y, Z flipped) and are raw (``params.json``
    ``sh_convention``: no ambient offset; an ``sh_ambient`` entry, if ever written, is added
    to the constant term); the head's rotation ``R`` maps them onto the
    canonical head, which sits in Blender with model +Y → +Z and model +Z → −Y.
    """
    sh = np.asarray(params["sh"], dtype=np.float64).reshape(9, 3).copy()
    sh[0] += float(params.get("sh_ambient", 0.0)) / _SH_C0
    lin = linear_light_sh(sh)
    a = lin[0] * _SH_C0
    b_view = _SH_C1 * np.stack([lin[3], lin[1], lin[2]], axis=1)  # (3 colours, xyz view)
    R = np.asarray(params.get("R", np.diag([1.0, -1.0, -1.0])), dtype=np.float64).reshape(3, 3)
    flip = np.diag([1.0, -1.0, -1.0])
    b_model = b_view @ (flip @ R)  # d_view = flip·R·d_model
    to_blender = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # d_bl = M d_model
    b_blender = b_model @ to_blender.T
    return a, b_blender


def _use_nodes(datablock) -> None:
    """Materials and worlds have node trees by default from Blender 5.0 on, where
    ``use_nodes`` is deprecated; older versions need it switched on."""
    if bpy.app.version < (5, 0, 0) or datablock.node_tree is None:
        datablock.use_nodes = True


#: Name of the world's image node that shows the photo to camera rays (:func:`photo_world`'s ``backdrop``).
BACKDROP_NODE = "Photo backdrop"


def photo_world(name: str, params: dict, backdrop: bpy.types.Image | None = None) -> bpy.types.World:
    """A world whose background is the photo's low-frequency lighting (:func:`sh_world_terms`).

    One world per head: the world ``<name> photo light`` of an earlier import is reused
    (its nodes rebuilt for the new lighting), not duplicated as ``.001``. ``backdrop``: the
    photo, shown to camera rays only (the camera's frame, *Window* coordinates) while
    everything else is still lit by the photo's light — through the photo camera a render
    shows the head on the photo (the *Photo Camera*'s *Photo in renders*)."""
    a, b = sh_world_terms(params)
    world_name = f"{name} photo light"
    world = bpy.data.worlds.get(world_name)
    if world is None:
        world = bpy.data.worlds.new(world_name)
    _use_nodes(world)
    nodes = world.node_tree.nodes
    for node in list(nodes):
        if node.type not in ("BACKGROUND", "OUTPUT_WORLD"):
            nodes.remove(node)
    if not any(n.type == "OUTPUT_WORLD" for n in nodes):
        nodes.new("ShaderNodeOutputWorld").location = (300, 0)
    if not any(n.type == "BACKGROUND" for n in nodes):
        nodes.new("ShaderNodeBackground")
    output = next(n for n in nodes if n.type == "OUTPUT_WORLD")
    if not output.inputs["Surface"].links:
        world.node_tree.links.new(next(n for n in nodes if n.type == "BACKGROUND").outputs["Background"],
                                  output.inputs["Surface"])
    nodes, links = world.node_tree.nodes, world.node_tree.links
    background = next(n for n in nodes if n.type == "BACKGROUND")
    coords = nodes.new("ShaderNodeTexCoord")
    coords.location = (-900, 0)
    combine = nodes.new("ShaderNodeCombineColor")
    combine.location = (-250, 0)
    for c, socket in enumerate(("Red", "Green", "Blue")):
        dot = nodes.new("ShaderNodeVectorMath")
        dot.operation = "DOT_PRODUCT"
        dot.inputs[1].default_value = tuple(float(x) for x in b[c])
        dot.location = (-650, 200 - 200 * c)
        links.new(coords.outputs["Generated"], dot.inputs[0])
        add = nodes.new("ShaderNodeMath")
        add.operation = "ADD"
        add.inputs[1].default_value = float(a[c])
        add.location = (-450, 200 - 200 * c)
        links.new(dot.outputs["Value"], add.inputs[0])
        clamp = nodes.new("ShaderNodeMath")
        clamp.operation = "MAXIMUM"
        clamp.inputs[1].default_value = 0.0
        clamp.location = (-350, 200 - 200 * c)
        links.new(add.outputs["Value"], clamp.inputs[0])
        links.new(clamp.outputs["Value"], combine.inputs[socket])
    colour = combine.outputs["Color"]
    if backdrop is not None:
        tex = nodes.new("ShaderNodeTexImage")
        tex.name = tex.label = BACKDROP_NODE
        tex.image = backdrop
        tex.extension = "EXTEND"
        tex.location = (-250, 400)
        links.new(coords.outputs["Window"], tex.inputs["Vector"])
        path = nodes.new("ShaderNodeLightPath")
        path.location = (-250, 700)
        mix = nodes.new("ShaderNodeMix")
        mix.data_type = "RGBA"
        mix.location = (0, 300)
        links.new(path.outputs["Is Camera Ray"], _socket(mix.inputs, "Factor_Float"))
        links.new(colour, _socket(mix.inputs, "A_Color"))
        links.new(tex.outputs["Color"], _socket(mix.inputs, "B_Color"))
        colour = _socket(mix.outputs, "Result_Color")
    links.new(colour, background.inputs["Color"])
    background.inputs["Strength"].default_value = 1.0
    world.color = tuple(float(min(max(x, 0.0), 1.0)) for x in a)  # Workbench/viewport fallback
    world["facerecon_sh"] = np.asarray(params["sh"], dtype=np.float64).ravel().tolist()
    return world


def _image_grey(image: bpy.types.Image) -> np.ndarray:
    """Image as (H, W) float array, row 0 at the bottom (Blender's pixel order)."""
    w, h = image.size
    if w == 0 or h == 0:
        raise ImportFailed(f"The detail image '{image.name}' has no pixels.")
    pixels = np.empty(w * h * image.channels, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    return pixels.reshape(h, w, image.channels)[..., 0]


def _sample_bilinear(grid: np.ndarray, uv: np.ndarray) -> np.ndarray:
    h, w = grid.shape
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip(uv[:, 1] * h - 0.5, 0, h - 1)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    top = grid[y0, x0] * (1 - fx) + grid[y0, x1] * fx
    bottom = grid[y1, x0] * (1 - fx) + grid[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _map_heights(obj, image: bpy.types.Image) -> np.ndarray:
    """Per-vertex height (V,) in metres of a detail map (zero at grey 32768; the head's metres
    per unit), averaged over each vertex's UV corners."""
    mesh = obj.data
    scale_m = float(obj["facerecon_displacement_scale_m"])
    grid = _image_grey(image).astype(np.float64)
    n_loops, n_verts = len(mesh.loops), len(mesh.vertices)
    uv = np.empty(n_loops * 2, dtype=np.float32)
    mesh.uv_layers.active.data.foreach_get("uv", uv)
    loop_vert = np.empty(n_loops, dtype=np.int64)
    mesh.loops.foreach_get("vertex_index", loop_vert)
    height = (_sample_bilinear(grid, uv.reshape(-1, 2).astype(np.float64)) * 65535.0 - 32768.0) * scale_m
    counts = np.bincount(loop_vert, minlength=n_verts)
    return np.bincount(loop_vert, weights=height, minlength=n_verts) / np.maximum(counts, 1)


def _basis_normals(obj) -> np.ndarray:
    normals = np.empty(len(obj.data.vertices) * 3, dtype=np.float32)
    obj.data.vertex_normals.foreach_get("vector", normals)
    return normals.reshape(-1, 3).astype(np.float64)


def detail_offsets(obj) -> np.ndarray:
    """Per-vertex displacement (V, 3) in metres from the (neutral) detail map, along basis normals."""
    image = bpy.data.images.get(obj.get("facerecon_displacement_image", ""))
    if image is None:
        raise ImportFailed(f"{obj.name} has no detail displacement map.")
    return _map_heights(obj, image)[:, None] * _basis_normals(obj)


def unit_detail_offsets(obj) -> dict[str, np.ndarray]:
    """Per-vertex displacement (V, 3) of each expression unit's detail map (``detail/<unit>.png``),
    along the basis normals: what its shape key at 1 adds to the neutral detail."""
    units = obj.get("facerecon_detail_units", {})
    keys = obj.data.shape_keys
    if not units or keys is None:
        return {}
    normals = _basis_normals(obj)
    offsets = {}
    for unit, image_name in units.items():
        image = bpy.data.images.get(image_name)
        if image is None:
            raise ImportFailed(f"The detail map of {unit} ('{image_name}') is no longer in the file.")
        if unit in keys.key_blocks:
            offsets[unit] = _map_heights(obj, image)[:, None] * normals
    return offsets


def bake_detail(obj) -> float:
    """Move the base mesh and every shape key by the detail map, without a modifier.

    The same neutral offset is added to all shape keys, so expression deltas are unchanged and
    shape keys still export; with animated detail each unit's map is added to its own shape
    key as well, so its wrinkles still come with the slider (also in an export). The jaw's map
    (a bone, no shape key) and a map baked for one pose are not baked. The material's
    displacement link is removed to avoid applying the detail twice. Returns the largest
    offset in metres.
    """
    mesh = obj.data
    offsets = detail_offsets(obj)
    units = unit_detail_offsets(obj)
    n = len(mesh.vertices)
    co = np.empty(n * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    mesh.vertices.foreach_set("co", (co.reshape(-1, 3) + offsets).ravel().astype(np.float32))
    largest = float(np.abs(offsets).max()) if len(offsets) else 0.0
    if mesh.shape_keys is not None:
        for kb in mesh.shape_keys.key_blocks:
            total = offsets + units[kb.name] if kb.name in units else offsets
            kb.data.foreach_get("co", co)
            kb.data.foreach_set("co", (co.reshape(-1, 3) + total).ravel().astype(np.float32))
            largest = max(largest, float(np.abs(total).max()) if len(total) else 0.0)
    mesh.update()
    for mat in mesh.materials:
        if mat is None or mat.node_tree is None:
            continue
        out = next((nd for nd in mat.node_tree.nodes if nd.type == "OUTPUT_MATERIAL"), None)
        if out is not None:
            for link in list(out.inputs["Displacement"].links):
                mat.node_tree.links.remove(link)
    obj["facerecon_detail_baked"] = True
    return largest
