"""Render the documentation figure: the imported head at several slider settings.

    .venv/bin/python -m blender_addon.figure RESULT_DIR docs/blender_import.png

    .venv/bin/python -m blender_addon.figure compare OUT.png before=ROOT_A after=ROOT_B [--tile 700x840] [--plain]

    .venv/bin/python -m blender_addon.figure detail RESULT_DIR OUT.png

    .venv/bin/python -m blender_addon.figure views OUT.png before=ROOT_A after=ROOT_B [--views A,B,...]

    .venv/bin/python -m blender_addon.figure camera OUT.png RESULT_DIR [RESULT_DIR ...]

    .venv/bin/python -m blender_addon.figure video OUT.png ANIMATE_DIR

RESULT_DIR is an ``engine reconstruct`` output folder (``compare``: ROOTs of such folders, one
per face, same names; a sheet of faces × versions). The head is imported with the
add-on's importer (as the sidebar button does), rendered with Cycles on the CPU under the
photo-lighting world plus a soft key light, once per slider setting, and the tiles are
placed next to the photo with labels. ``detail``: a head with animated detail (DECA) at five
expressions under a raking light, once with the detail and once with it muted, so the
wrinkles that the shape-key drivers bring in can be seen. Needs Pillow (the project's venv),
not Blender's UI.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

#: (label, pose, values): pose "photo" = the fitted bone pose, "neutral" = all bones at rest;
#: values set face controls, shape keys or the armature's pose controls by name.
SETTINGS: list[tuple[str, str, dict[str, float]]] = [
    ("photo pose (fitted jaw bone), sliders 0", "photo", {}),
    ("neutral pose, sliders 0", "neutral", {}),
    ("jaw_open 0.7", "neutral", {"jaw_open": 0.7}),
    ("mouthSmile L+R 1.0, eyes_blink 0.6", "neutral", {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0,
                                                       "eyes_blink": 0.6}),
    ("neck_turn 0.5, neck_nod 0.2, gaze_side 0.3", "neutral", {"neck_turn": 0.5, "neck_nod": 0.2,
                                                              "gaze_side": 0.3}),
]


_REGISTERED = False  # the add-on's classes, registered once per process (they outlive read_homefile)


def _register_once() -> None:
    """The add-on's classes in this process (registered once: they outlive read_homefile)."""
    global _REGISTERED
    if not _REGISTERED:
        from blender_addon import register

        register()
        _REGISTERED = True


def _fresh_import(result, photo_lighting: bool = True):
    """An empty scene (factory start-up) holding the head of the ``engine reconstruct`` folder
    ``result``, imported by the add-on's importer (photo pose, sliders at 0)."""
    import bpy

    from blender_addon import importer

    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    _register_once()
    return importer.import_result(bpy.context, str(result), apply_expression=False, photo_lighting=photo_lighting)


def _plain_import(result):
    """An empty scene holding ``head.glb`` of the folder ``result`` — or the model file
    ``result`` (glTF/GLB or FBX) — as Blender's own importer reads it, without the add-on: what
    another program shows (for head.glb: one textured material, the morph weights the file
    sets, no eye/mouth/teeth materials). Returns its first mesh."""
    import bpy

    path = Path(result) / "head.glb" if Path(result).is_dir() else Path(result)
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    if path.suffix.lower() in (".glb", ".gltf"):
        bpy.ops.import_scene.gltf(filepath=str(path))
    elif path.suffix.lower() == ".fbx":
        bpy.ops.import_scene.fbx(filepath=str(path))
    else:
        raise SystemExit(f"{path}: a character is a .glb, .gltf or .fbx file")
    return next(o for o in bpy.context.scene.objects if o.type == "MESH")


def _grey_world(bpy) -> None:
    """A plain grey world (ambient light) for a scene the add-on did not light."""
    world = bpy.data.worlds.new("figure grey")
    world.color = (0.35, 0.35, 0.35)
    bpy.context.scene.world = world


def _bounds(obj) -> tuple[list[float], list[float], list[float]]:
    """The head's world-space box: (lowest corner, highest corner, centre)."""
    lo = [min(c[i] for c in (obj.matrix_world @ v.co for v in obj.data.vertices)) for i in range(3)]
    hi = [max(c[i] for c in (obj.matrix_world @ v.co for v in obj.data.vertices)) for i in range(3)]
    return lo, hi, [(a + b) / 2 for a, b in zip(lo, hi)]


def _setup_scene(bpy, obj, size: tuple[int, int], samples: int) -> None:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = True
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = False
    scene.view_settings.view_transform = "Standard"
    # Frame the head from the front (the face looks along Blender's -Y).
    lo, hi, centre = _bounds(obj)
    cam_data = bpy.data.cameras.new("figure camera")
    cam_data.lens = 85.0
    cam = bpy.data.objects.new("figure camera", cam_data)
    scene.collection.objects.link(cam)
    height = hi[2] - lo[2]
    distance = 1.15 * height * cam_data.lens / cam_data.sensor_width * max(1.0, size[1] / size[0])
    yaw = math.radians(12.0)
    cam.location = (centre[0] + distance * math.sin(yaw), centre[1] - distance * math.cos(yaw), centre[2] + 0.01)
    cam.rotation_euler = (math.radians(90.0), 0.0, yaw)
    scene.camera = cam
    light_data = bpy.data.lights.new("figure key", "AREA")
    light_data.energy = 12.0
    light_data.size = 0.4
    light = bpy.data.objects.new("figure key", light_data)
    light.location = (centre[0] + 0.35, centre[1] - 0.45, centre[2] + 0.35)
    direction = [centre[i] - light.location[i] for i in range(3)]
    light.rotation_euler = (math.atan2(math.hypot(direction[0], direction[1]), -direction[2]), 0.0,
                            math.atan2(direction[1], direction[0]) + math.pi / 2)
    scene.collection.objects.link(light)


def _set_sliders(importer, obj, rig, values: dict[str, float], to_photo: bool) -> None:
    """Reset the head's expression and pose (to the photo's or the neutral pose), then set
    ``values`` by name: face controls, the armature's pose controls, or shape keys."""
    importer.reset_expression(obj)
    if rig is not None:
        importer.reset_pose(rig, to_photo=to_photo)
    for name, value in values.items():
        if name in importer.CONTROLS:
            obj[name] = value
        elif name in importer.POSE_CONTROLS and rig is not None:
            rig[name] = value
            rig.update_tag()
        else:
            importer.set_key_value(obj, name, value)
    obj.update_tag()


def render_sheet(result_dir: str, out_png: str, tile: tuple[int, int] = (360, 440), samples: int = 24) -> None:
    import bpy
    from PIL import Image, ImageDraw

    from blender_addon import importer

    obj = _fresh_import(result_dir)
    _setup_scene(bpy, obj, tile, samples)
    tiles = []
    with tempfile.TemporaryDirectory() as tmp:
        rig = importer.pose_rig_of(obj)
        for label, pose, values in SETTINGS:
            _set_sliders(importer, obj, rig, values, to_photo=pose == "photo")
            path = os.path.join(tmp, f"{len(tiles)}.png")
            bpy.context.scene.render.filepath = path
            bpy.ops.render.render(write_still=True)
            tiles.append((label, Image.open(path).convert("RGB")))
    params = importer.read_params(Path(result_dir))
    photo = _photo_tile(params, tile)
    if photo is not None:
        tiles.insert(0, ("photo", photo))
    sheet = Image.new("RGB", (tile[0] * len(tiles), tile[1] + 28), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, image) in enumerate(tiles):
        sheet.paste(image, (i * tile[0], 28))
        draw.text((i * tile[0] + 8, 8), label, fill=(0, 0, 0))
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    keys = obj.data.shape_keys.key_blocks if obj.data.shape_keys else []
    print(f"wrote {out_png} ({sheet.size[0]}x{sheet.size[1]}) with {obj.name}: "
          f"{len(obj.data.vertices)} vertices, {max(len(keys) - 1, 0)} shape keys")


def _photo_tile(params: dict, tile: tuple[int, int]):
    """The photo cropped around the detected face, same aspect as the tiles (None without a photo)."""
    import numpy as np
    from PIL import Image

    if not (params.get("photo") and os.path.isfile(params["photo"])):
        return None
    photo = Image.open(params["photo"]).convert("RGB")
    lm = np.asarray(params["landmarks68_image_px"])
    cx, cy = lm[:, 0].mean(), lm[:, 1].mean()
    half_h = 1.25 * (lm[:, 1].max() - lm[:, 1].min())
    half_w = half_h * tile[0] / tile[1]
    box = tuple(int(round(v)) for v in (cx - half_w, cy - half_h * 0.9, cx + half_w, cy + half_h * 1.1))
    return photo.crop(box).resize(tile)


def render_compare(columns: list[tuple[str, str]], out_png: str, tile: tuple[int, int] = (300, 360),
                   samples: int = 24, plain: bool = False) -> None:
    """Rows of faces, columns of versions: ``columns`` = [(label, ROOT), ...], each ROOT holding
    one ``engine reconstruct`` output folder per face (same folder names in every ROOT). Each head
    is imported into a fresh scene with the add-on's importer (photo pose, sliders at 0) and
    rendered with Cycles beside its photo: e.g. before/after a change, as an artist sees it.
    ``plain``: ``head.glb`` through Blender's own glTF importer instead (:func:`_plain_import`:
    as another program shows the file), lit by the key light and a grey world."""
    import bpy
    from PIL import Image, ImageDraw

    from blender_addon import importer

    names = sorted(p.name for p in Path(columns[0][1]).iterdir() if (p / "params.json").is_file())
    if not names:
        raise SystemExit(f"no reconstruct output folders in {columns[0][1]}")
    head = 28
    sheet = Image.new("RGB", (tile[0] * (len(columns) + 1), head + tile[1] * len(names)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(["photo"] + [lab for lab, _ in columns]):
        draw.text((c * tile[0] + 8, 8), label, fill=(0, 0, 0))
    with tempfile.TemporaryDirectory() as tmp:
        for r, name in enumerate(names):
            for c, (label, root) in enumerate(columns):
                result = Path(root) / name
                obj = _plain_import(result) if plain else _fresh_import(result)
                _setup_scene(bpy, obj, tile, samples)
                if plain:
                    _grey_world(bpy)
                path = os.path.join(tmp, f"{r}_{c}.png")
                bpy.context.scene.render.filepath = path
                bpy.ops.render.render(write_still=True)
                sheet.paste(Image.open(path).convert("RGB"), ((c + 1) * tile[0], head + r * tile[1]))
                if c == 0:
                    photo = _photo_tile(importer.read_params(result), tile)
                    if photo is not None:
                        sheet.paste(photo, (0, head + r * tile[1]))
                print(f"{name} [{label}] rendered", flush=True)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    print(f"wrote {out_png} ({sheet.size[0]}x{sheet.size[1]}): {len(names)} faces x {len(columns)} versions")


def _square_around(points, side: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A square crop box (left, top, right, bottom) of ``side`` pixels centred on the points'
    mean, moved inside an image of ``size`` (no larger than it)."""
    import numpy as np

    side = min(side, *size)
    cx, cy = np.asarray(points, float).mean(0)[:2]
    left = float(np.clip(cx - side / 2, 0, size[0] - side))
    top = float(np.clip(cy - side / 2, 0, size[1] - side))
    return tuple(int(round(v)) for v in (left, top, left + side, top + side))


def through_camera_setup(scene, samples: int, max_side: int) -> None:
    """Render settings for a head seen through its photo or video camera, to be laid over the
    photo: Cycles on the CPU, film transparent, the Standard view transform (the photo's own
    colours), the camera's render size scaled to ``max_side`` pixels on the longer side."""
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = True
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    W, H = scene.render.resolution_x, scene.render.resolution_y
    scene.render.resolution_percentage = max(1, min(100, round(100 * max_side / max(W, H))))


def render_photo_camera(folders: list[str], out_png: str, tile: int = 300, samples: int = 24,
                        max_side: int = 768) -> None:
    """One row per ``engine reconstruct`` output folder: the photo, the head seen through its
    *Photo Camera* (the add-on's operator; Cycles, the photo-lighting world, film transparent)
    laid over the photo, and the same at half opacity, cropped around the face: where the
    head lies on the photo as the artist sees it in camera view. A batch's folder (a group
    photo's ``--face all``) is one row: every face's head imported, the camera of face 0
    arranging the others (*Arrange the group*), cropped around all the faces."""
    import bpy
    import numpy as np
    from PIL import Image, ImageDraw

    from blender_addon import importer, runner
    from blender_addon.photo_camera import add_photo_camera

    head = 28
    labels = ["photo", "head through the photo camera", "half and half"]
    sheet = Image.new("RGB", (tile * 3, head + tile * len(folders)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(labels):
        draw.text((c * tile + 8, 8), label, fill=(0, 0, 0))
    with tempfile.TemporaryDirectory() as tmp:
        for r, folder in enumerate(folders):
            items = runner.batch_items(folder) or []
            faces = [Path(i["folder"]) for i in items if i.get("folder")] or [Path(folder)]
            obj = _fresh_import(faces[0])
            for other in faces[1:]:
                importer.import_result(bpy.context, other, replace=False, photo_lighting=False)
            made = add_photo_camera(bpy.context, obj)
            if made.photo is None:
                raise SystemExit(f"{folder}: no photo to show behind the head")
            scene = bpy.context.scene
            through_camera_setup(scene, samples, max_side)
            path = os.path.join(tmp, f"{r}.png")
            scene.render.filepath = path
            bpy.ops.render.render(write_still=True)
            render = Image.open(path).convert("RGBA")
            photo = Image.open(made.photo).convert("RGB").resize(render.size, Image.LANCZOS)
            over = photo.copy()
            over.paste(render, (0, 0), render)
            half = Image.blend(photo, over, 0.5)
            params = [importer.read_params(f) for f in faces]
            lm = np.concatenate([np.asarray(p["landmarks68_image_px"]) for p in params]) * \
                render.size[0] / params[0]["image_size"][0]
            box = _square_around(lm, 2.2 * max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1])), render.size)
            for c, image in enumerate((photo, over, half)):
                if len(faces) > 1:  # a group: the whole photo, fitted into the tile
                    f = tile / max(image.size)
                    small = image.resize((round(image.size[0] * f), round(image.size[1] * f)), Image.LANCZOS)
                    sheet.paste(small, (c * tile + (tile - small.size[0]) // 2, head + r * tile + (tile - small.size[1]) // 2))
                else:
                    sheet.paste(image.crop(box).resize((tile, tile), Image.LANCZOS), (c * tile, head + r * tile))
            draw.text((8, head + r * tile + 6), Path(folder).name, fill=(255, 255, 0))
            print(f"{folder} rendered through {made.camera.name}", flush=True)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    print(f"wrote {out_png} ({sheet.size[0]}x{sheet.size[1]})")


def _clip_frames(anim, columns: int):
    """``columns`` samples of ``anim`` spread over its clip, and their frames of the video (RGB,
    by source index), read by the engine's clip reader."""
    import numpy as np

    from engine.video.source import open_clip

    picks = np.unique(np.linspace(0, anim.n_frames - 1, columns).round().astype(int))
    wanted = {int(anim.frames[k]) for k in picks}
    return picks, {f.index: f.rgb for f in open_clip(anim.meta["source"]) if f.index in wanted}


def render_video_camera(anim_dir: str, out_png: str, columns: int = 5, tile: int = 240, samples: int = 16,
                        max_side: int = 512) -> None:
    """An ``engine animate`` output folder's head, animated by the add-on with its video camera
    (``animation.json``), rendered through that camera at ``columns`` frames spread over the
    clip (Cycles, film transparent, the photo-lighting world) and laid over the video's own
    frames (read by the engine's clip reader): rows video / head through the video camera /
    half and half, cropped around the face (the first frame's fitted landmarks, as a fixed
    window: the head is seen moving with the video)."""
    import bpy
    import numpy as np
    from PIL import Image, ImageDraw

    from blender_addon import animation, importer

    obj = _fresh_import(anim_dir)
    anim = animation.read_animation(Path(anim_dir) / "animation.json")
    done = animation.apply_animation(bpy.context, obj, anim, camera=True)
    if done["camera"] is None:
        raise SystemExit(f"{anim_dir}: animation.json has no per-frame camera")
    scene = bpy.context.scene
    W = scene.render.resolution_x
    through_camera_setup(scene, samples, max_side)
    picks, video = _clip_frames(anim, columns)
    lm = np.asarray(importer.read_params(Path(anim_dir)).get("landmarks68_image_px"), float)
    head = 28
    sheet = Image.new("RGB", (tile * len(picks), head + 3 * tile), "white")
    draw = ImageDraw.Draw(sheet)
    with tempfile.TemporaryDirectory() as tmp:
        for c, k in enumerate(picks):
            scene.frame_set(int(done["frames"][k]))
            path = os.path.join(tmp, f"{k}.png")
            scene.render.filepath = path
            bpy.ops.render.render(write_still=True)
            render = Image.open(path).convert("RGBA")
            frame = Image.fromarray(video[int(anim.frames[k])]).resize(render.size, Image.LANCZOS)
            over = frame.copy()
            over.paste(render, (0, 0), render)
            half = Image.blend(frame, over, 0.5)
            f = render.size[0] / W
            box = _square_around(lm * f, 2.6 * np.ptp(lm[:, 1]) * f, render.size)
            for r, image in enumerate((frame, over, half)):
                sheet.paste(image.crop(box).resize((tile, tile), Image.LANCZOS), (c * tile, head + r * tile))
            draw.text((c * tile + 8, 8), f"frame {int(anim.frames[k])}", fill=(0, 0, 0))
            print(f"frame {int(anim.frames[k])} rendered through {done['camera'].camera.name}", flush=True)
    for r, label in enumerate(("video", "head through the video camera", "half and half")):
        draw.text((8, head + r * tile + 6), label, fill=(255, 255, 0))
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    print(f"wrote {out_png} ({sheet.size[0]}x{sheet.size[1]})")


def render_character(anim_dir: str, character: str, out_png: str, columns: int = 6, tile: int = 240,
                     samples: int = 16) -> None:
    """A character of one's own — a GLB/glTF or FBX with ARKit shape keys, brought in by
    Blender's own importer, not the add-on's — animated by the add-on's *Character* target
    from an ``engine animate`` folder (its animation.csv, the head bone found by name): rows
    video frame / the character at that scene frame (Cycles, a front camera, grey world),
    ``columns`` frames spread over the clip. The character's bones start at their rest pose (a
    ``head.glb`` comes posed as its photo, its jaw as the photo opened it)."""
    import bpy
    import numpy as np
    from PIL import Image, ImageDraw

    from blender_addon import animation, retarget

    _plain_import(character)
    _register_once()
    for o in bpy.context.scene.objects:
        o.select_set(True)
    meshes, rig = animation.character_of(bpy.context)
    if not meshes:
        raise SystemExit(f"{character}: no mesh with shape keys")
    if rig is not None:  # the character at its rest pose (a head.glb comes posed as its photo: jaw open)
        for pb in rig.pose.bones:
            pb.matrix_basis.identity()
    bone = retarget.guess_head_bone([b.name for b in rig.data.bones]) if rig is not None else None
    anim = animation.read_character_animation(Path(anim_dir) / "animation.json")
    done = animation.apply_to_character(bpy.context, meshes, rig, bone, anim)
    print(animation.character_report(done, meshes), flush=True)
    scene = bpy.context.scene
    scene.frame_set(int(done["frames"][0]))
    _setup_scene(bpy, meshes[0], (tile, tile), samples)
    _grey_world(bpy)
    picks, video = _clip_frames(anim, columns)
    head = 28
    sheet = Image.new("RGB", (tile * len(picks), head + 2 * tile), "white")
    draw = ImageDraw.Draw(sheet)
    with tempfile.TemporaryDirectory() as tmp:
        for c, k in enumerate(picks):
            at = float(done["frames"][k])  # (a fraction of a frame where the scene's rate is not the clip's)
            scene.frame_set(int(np.floor(at)), subframe=float(at - np.floor(at)))
            frame = int(round(at))
            path = os.path.join(tmp, f"{k}.png")
            scene.render.filepath = path
            bpy.ops.render.render(write_still=True)
            rgb = Image.fromarray(video[int(anim.frames[k])])
            side = min(rgb.size)
            rgb = rgb.crop(((rgb.size[0] - side) // 2, (rgb.size[1] - side) // 2,
                            (rgb.size[0] + side) // 2, (rgb.size[1] + side) // 2))
            sheet.paste(rgb.resize((tile, tile), Image.LANCZOS), (c * tile, head))
            sheet.paste(Image.open(path).convert("RGB"), (c * tile, head + tile))
            draw.text((c * tile + 8, 8), f"frame {frame}", fill=(0, 0, 0))
            print(f"frame {frame} rendered", flush=True)
    draw.text((8, head + 6), "video", fill=(255, 255, 0))
    draw.text((8, head + tile + 6), f"character ({Path(character).name}, bone {bone})", fill=(255, 255, 0))
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    print(f"wrote {out_png} ({sheet.size[0]}x{sheet.size[1]})")


#: the views figure's columns: (label, camera yaw around the head in degrees, sliders, close-up)
VIEWS: list[tuple[str, float, dict[str, float], str]] = [
    ("front", 0.0, {}, ""),
    ("3/4", 40.0, {}, ""),
    ("profile", 90.0, {}, ""),
    ("back", 180.0, {}, ""),
    ("smile", 0.0, {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0}, ""),
    ("blink", 0.0, {"eyes_blink": 1.0}, ""),
    ("eyes", 0.0, {}, "eyes"),
    ("hairline", 0.0, {}, "hairline"),
    ("mouth", 0.0, {}, "mouth"),
    ("jaw open", 0.0, {"jaw_open": 0.6}, "mouth"),
    ("smile 3/4", 30.0, {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0, "jaw_open": 0.25}, "mouth"),
]
#: the views the sheet shows unless ``--views`` names others (issue #17's sheet)
DEFAULT_VIEWS = ("front", "3/4", "profile", "back", "smile", "blink", "eyes", "hairline")
MOUTH_BELOW_EYES_M = 0.066  # the mouth close-ups aim this far below the eyeballs' centre


def _aim(camera, target) -> None:
    from mathutils import Vector

    direction = Vector(target) - camera.location
    camera.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()


def _eye_centre(obj):
    """World position between the eyeballs (the faces of the eyes material), or None."""
    slots = obj.get("facerecon_material_slots")
    eyes = None if slots is None else slots.get("eyes")
    if eyes is None:
        return None
    pts = [obj.matrix_world @ obj.data.vertices[v].co for p in obj.data.polygons if p.material_index == eyes
           for v in p.vertices]
    if not pts:
        return None
    return [sum(c[i] for c in pts) / len(pts) for i in range(3)]


def render_views(columns: list[tuple[str, str]], out_png: str, tile: tuple[int, int] = (200, 240),
                 samples: int = 24, views: tuple[str, ...] = DEFAULT_VIEWS) -> None:
    """Issue #17's artist sheet: for every face (one ``engine reconstruct`` folder per face in
    each ROOT, same names) and version, the imported head (photo pose, sliders 0) seen from the
    front, at 3/4, in profile and from the back, with a full smile and a blink, and close-ups of
    the eyes and of the hairline — camera and key light orbit the head together. ``views``
    picks other columns of :data:`VIEWS` by label (e.g. the mouth close-ups)."""
    import bpy
    from PIL import Image, ImageDraw

    from blender_addon import importer

    unknown = [v for v in views if v not in {row[0] for row in VIEWS}]
    if unknown:
        raise SystemExit(f"unknown view(s) {', '.join(unknown)}; choose from {', '.join(row[0] for row in VIEWS)}")
    chosen = [row for row in VIEWS if row[0] in views]

    names = sorted(p.name for p in Path(columns[0][1]).iterdir() if (p / "params.json").is_file())
    if not names:
        raise SystemExit(f"no reconstruct output folders in {columns[0][1]}")
    head = 22
    rows = [(name, label, root) for name in names for label, root in columns]
    sheet = Image.new("RGB", (tile[0] * (len(chosen) + 1), head + tile[1] * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(["photo"] + [v[0] for v in chosen]):
        draw.text((c * tile[0] + 6, 6), label, fill=(0, 0, 0))
    with tempfile.TemporaryDirectory() as tmp:
        for r, (name, label, root) in enumerate(rows):
            result = Path(root) / name
            obj = _fresh_import(result)
            _setup_scene(bpy, obj, tile, samples)
            scene = bpy.context.scene
            cam, light = scene.camera, bpy.data.objects["figure key"]
            lo, hi, centre = _bounds(obj)
            cam0, light0, lens0 = tuple(cam.location), tuple(light.location), cam.data.lens
            eyes = _eye_centre(obj) or [centre[0], lo[1], centre[2] + 0.2 * (hi[2] - lo[2])]
            rig = importer.pose_rig_of(obj)
            for c, (view, yaw_deg, values, close) in enumerate(chosen):
                _set_sliders(importer, obj, rig, values, to_photo=True)
                yaw = math.radians(yaw_deg)
                for thing, start in ((cam, cam0), (light, light0)):  # orbit about the head's vertical axis
                    dx, dy = start[0] - centre[0], start[1] - centre[1]
                    thing.location = (centre[0] + dx * math.cos(yaw) - dy * math.sin(yaw),
                                      centre[1] + dx * math.sin(yaw) + dy * math.cos(yaw), start[2])
                cam.data.lens = lens0
                target = centre
                if close == "eyes":
                    cam.data.lens, target = lens0 * 3.0, eyes
                elif close == "hairline":
                    cam.data.lens = lens0 * 2.5
                    target = [eyes[0], eyes[1], eyes[2] + 0.55 * (hi[2] - eyes[2])]
                elif close == "mouth":
                    cam.data.lens, target = lens0 * 3.0, [eyes[0], eyes[1], eyes[2] - MOUTH_BELOW_EYES_M]
                _aim(cam, target)
                _aim(light, centre)
                path = os.path.join(tmp, f"{r}_{c}.png")
                scene.render.filepath = path
                bpy.ops.render.render(write_still=True)
                sheet.paste(Image.open(path).convert("RGB"), ((c + 1) * tile[0], head + r * tile[1]))
            photo = _photo_tile(importer.read_params(result), tile)
            if photo is not None:
                sheet.paste(photo, (0, head + r * tile[1]))
            draw.text((6, head + r * tile[1] + 4), f"{name} [{label}]", fill=(255, 255, 0))
            print(f"{name} [{label}] rendered", flush=True)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    print(f"wrote {out_png} ({sheet.size[0]}x{sheet.size[1]}): {len(names)} faces x {len(columns)} versions x "
          f"{len(chosen)} views")


#: the detail figure's expressions: (label, shape keys / face controls)
DETAIL_SETTINGS: list[tuple[str, dict[str, float]]] = [
    ("neutral", {}),
    ("smile", {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0, "cheekSquintLeft": 0.6, "cheekSquintRight": 0.6}),
    ("brow raise", {"browInnerUp": 1.0, "browOuterUpLeft": 1.0, "browOuterUpRight": 1.0}),
    ("frown", {"browDownLeft": 1.0, "browDownRight": 1.0, "noseSneerLeft": 0.5, "noseSneerRight": 0.5}),
    ("jaw open", {"jaw_open": 0.7}),
]


def render_detail(result_dir: str, out_png: str, tile: tuple[int, int] = (300, 340), samples: int = 32) -> None:
    """Rows: with the animated detail, with the detail muted, their difference amplified;
    columns: :data:`DETAIL_SETTINGS`."""
    import bpy
    from PIL import Image, ImageDraw

    from blender_addon import importer

    obj = _fresh_import(result_dir, photo_lighting=False)
    mat = obj.active_material
    disp = mat.node_tree.nodes.get("Detail") if mat is not None and mat.node_tree is not None else None
    if disp is None:
        raise SystemExit(f"{result_dir} has no detail (no displacement.png / params.json 'detail')")
    _setup_scene(bpy, obj, tile, samples)
    scene = bpy.context.scene
    # closer on the face, and a low key light grazing it from the upper left
    cam = scene.camera
    cam.data.lens = 130.0
    bpy.data.objects["figure key"].data.energy = 0.0
    sun_data = bpy.data.lights.new("figure raking sun", "SUN")
    sun_data.energy = 4.0
    sun_data.angle = math.radians(2.0)
    sun = bpy.data.objects.new("figure raking sun", sun_data)
    # from the front (the face looks along -Y), high and from the subject's right: grazing the forehead
    sun.rotation_euler = (math.radians(62.0), 0.0, math.radians(-35.0))
    scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("figure dim world")
    scene.world = world
    if bpy.app.version < (5, 0, 0):
        world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.15
    scale = disp.inputs["Scale"].default_value
    rig = importer.pose_rig_of(obj)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for muted in (False, True):
            disp.inputs["Scale"].default_value = 0.0 if muted else scale
            row = []
            for label, values in DETAIL_SETTINGS:
                _set_sliders(importer, obj, rig, values, to_photo=False)
                bpy.context.view_layer.update()
                path = os.path.join(tmp, f"{int(muted)}_{len(row)}.png")
                scene.render.filepath = path
                bpy.ops.render.render(write_still=True)
                row.append((label, Image.open(path).convert("RGB")))
                print(f"{label} ({'detail muted' if muted else 'animated detail'}) rendered", flush=True)
            rows.append(row)
    import numpy as np

    gain = 8.0
    diff = [(label, Image.fromarray(np.clip(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)) * gain,
                                            0, 255).astype(np.uint8)))
            for (label, a), (_, b) in zip(rows[0], rows[1])]
    rows.append(diff)
    titles = ("animated detail (shape-key drivers)", "detail muted", f"|difference| x {gain:g}: where the detail acts")
    head = 28
    sheet = Image.new("RGB", (tile[0] * len(DETAIL_SETTINGS), head + len(rows) * (tile[1] + head)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (title, row) in enumerate(zip(titles, rows)):
        y = r * (tile[1] + head)
        draw.text((8, y + 8), title, fill=(0, 0, 0))
        for c, (label, image) in enumerate(row):
            sheet.paste(image, (c * tile[0], y + head))
            draw.text((c * tile[0] + 8, y + head + 6), label, fill=(255, 255, 255))
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    print(f"wrote {out_png} ({sheet.size[0]}x{sheet.size[1]})")


def _main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "detail":
        render_detail(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "compare":
        # python -m blender_addon.figure compare OUT.png LABEL=ROOT [LABEL=ROOT ...] [--tile WxH] [--plain]
        args = sys.argv[3:]
        plain = "--plain" in args
        args = [a for a in args if a != "--plain"]
        tile = (300, 360)
        if "--tile" in args:
            k = args.index("--tile")
            try:
                tile = tuple(int(x) for x in args[k + 1].lower().split("x"))
            except (IndexError, ValueError):
                raise SystemExit("--tile needs WIDTHxHEIGHT in pixels, e.g. --tile 700x840") from None
            args = args[:k] + args[k + 2:]
        render_compare([tuple(a.split("=", 1)) for a in args], sys.argv[2], tile=tile, plain=plain)
    elif len(sys.argv) >= 4 and sys.argv[1] == "views":
        # python -m blender_addon.figure views OUT.png LABEL=ROOT [LABEL=ROOT ...] [--views A,B,...]
        args = sys.argv[3:]
        views = DEFAULT_VIEWS
        if "--views" in args:
            k = args.index("--views")
            if k + 1 >= len(args):
                raise SystemExit("--views needs a comma-separated list of view labels, e.g. --views mouth,'jaw open'")
            views = tuple(v.strip() for v in args[k + 1].split(","))
            args = args[:k] + args[k + 2:]
        render_views([tuple(a.split("=", 1)) for a in args], sys.argv[2], views=views)
    elif len(sys.argv) == 4 and sys.argv[1] == "video":
        # python -m blender_addon.figure video OUT.png ANIMATE_DIR
        render_video_camera(sys.argv[3], sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "character":
        # python -m blender_addon.figure character OUT.png ANIMATE_DIR CHARACTER.glb|.fbx
        render_character(sys.argv[3], sys.argv[4], sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "camera":
        # python -m blender_addon.figure camera OUT.png RESULT_DIR [RESULT_DIR ...]
        render_photo_camera(sys.argv[3:], sys.argv[2])
    elif len(sys.argv) == 3:
        render_sheet(sys.argv[1], sys.argv[2])
    else:
        raise SystemExit("usage: python -m blender_addon.figure RESULT_DIR OUT.png\n"
                         "       python -m blender_addon.figure compare OUT.png LABEL=ROOT [LABEL=ROOT ...] "
                         "[--tile WxH] [--plain]\n"
                         "       python -m blender_addon.figure views OUT.png LABEL=ROOT [LABEL=ROOT ...] [--views A,B,...]\n"
                         "       python -m blender_addon.figure detail RESULT_DIR OUT.png\n"
                         "       python -m blender_addon.figure camera OUT.png RESULT_DIR [RESULT_DIR ...]\n"
                         "       python -m blender_addon.figure video OUT.png ANIMATE_DIR\n"
                         "       python -m blender_addon.figure character OUT.png ANIMATE_DIR CHARACTER.glb|.fbx")


def exit_after(main) -> None:
    """Run a script's ``main()`` that uses ``bpy`` and end the process with its status (an int
    it returns or raises with SystemExit; a SystemExit message is printed, status 1; an
    exception's traceback, status 1) through ``os._exit``: bpy as a module can hang in its
    exit handlers, after an error too. Used by this module and tools/photo_relight_error.py."""
    import traceback

    try:
        result = main()
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except Exception:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_after(_main)
