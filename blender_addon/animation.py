"""Animation on a reconstructed head: keyframes from ``animation.json`` / a Live Link Face CSV,
the *Animate from Video* and *Import Animation File* operators and their sidebar panel.

The files are read by the engine's own reader (``engine/video/formats.py``, standard library
+ numpy, loaded by path like the method registry), so add-on and engine agree on them.

:func:`apply_animation` keys, per frame (linear interpolation, so every frame shows exactly
the file's value):

* one shape key per named curve (animation.json: the model's expression names; CSV: the 52
  ARKit names). The jaw/eye face controls would override keyed values through their
  drivers, so they are removed first (as *Free All Sliders* does);
* the bones of the head's rig (rig.json armature): each joint's local rotation, and the
  head's rotation (relative to the camera's line of sight) on the ``neck`` bone (``global``
  for rigs without one), composed with the neck's own rotation; the neck/gaze bone controls
  of animated bones give way to the keys. A CSV has no joints: its mouth opens by the
  ``jawOpen`` shape key, so the jaw bone is keyed closed (the photo's jaw opening would add
  to it), and its gaze is in the ``eyeLook*`` keys (its eye-rotation columns would turn the
  eyes twice, so they are not keyed);
* optionally the scene: frame range from ``start_frame`` and the frame rate of the file — the
  video's own when the file sampled a video at a lower rate (:func:`timeline_rate`: the keys
  land on the video's frames).

:func:`apply_to_character` keys a character of the user's own instead (the *Character*
target; *Import Animation File* with no reconstructed head active): the ARKit curves
(:func:`read_character_animation`: a CSV, or the ``animation.csv`` beside an animation.json)
on every selected mesh's shape keys that spell ARKit units, and the head's turn on one bone
of its armature (:mod:`blender_addon.retarget` matches names and turns the bone).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from . import importer, runner
from .operators import EngineJobOperator, active_head, engine_choice, keep_result_folder
from .preferences import user_data_dir

_FORMATS = "_facerecon_animation_formats"

__all__ = ["apply_animation", "classes", "fcurves_of", "formats", "read_animation", "scene_frames"]


def formats():
    """``engine/video/formats.py`` of the engine this add-on runs (loaded on its own)."""
    root = runner.engine_root()
    if root is None:
        raise importer.ImportFailed("The engine is not bundled with this add-on (no 'engine' folder next to it).")
    path = root / "engine" / "video" / "formats.py"
    module = sys.modules.get(_FORMATS)
    if module is not None and getattr(module, "__file__", None) == str(path):
        return module
    spec = importlib.util.spec_from_file_location(_FORMATS, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_FORMATS] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def read_animation(path: str | Path, fps: float | None = None):
    """An ``Animation`` from animation.json or a Live Link Face CSV (ImportFailed otherwise)."""
    fmt = formats()
    try:
        return fmt.read_animation(path, fps)
    except fmt.AnimationFileError as exc:
        raise importer.ImportFailed(str(exc)) from None


def timeline_rate(anim) -> float:
    """The scene's frame rate for ``anim``: the video's own when the animation sampled it at a
    lower rate (``engine animate --fps``), so that its keys land on the video's frames
    (interpolated between them) and the video plays in step behind the video camera; else
    the animation's rate (a folder of frames, a CSV)."""
    try:
        source = float(anim.meta.get("source_fps") or 0.0)
    except (TypeError, ValueError):
        source = 0.0
    return source if source > anim.fps * 1.0001 else float(anim.fps)


def scene_frames(times: np.ndarray, fps: float, start_frame: int) -> np.ndarray:
    """Scene frame of each sample: ``start_frame`` + elapsed time × fps, rounded."""
    return start_frame + np.round((np.asarray(times) - float(times[0])) * fps).astype(np.int64)


def adjusted_animation(anim, strength: float = 1.0, rest_frame: int = 0, start_frame: int = 1,
                       fps: float | None = None):
    """``anim`` with its expression curves made stronger or weaker from a rest face
    (:func:`retarget.adjust_weights`), the jaw joint's opening scaled alike; ``rest_frame``:
    the scene frame (the animation keyed from ``start_frame`` at ``fps`` scene frames a second,
    by default :func:`timeline_rate`) where the face is at rest, 0 for none. The same ``anim``
    when nothing changes."""
    from dataclasses import replace

    from . import retarget

    if strength == 1.0 and rest_frame <= 0:
        return anim
    rest = None
    if rest_frame > 0:
        frames = start_frame + (np.asarray(anim.times) - float(anim.times[0])) * (fps or timeline_rate(anim))
        if not round(frames[0]) <= rest_frame <= round(frames[-1]):
            raise importer.ImportFailed(f"The rest frame {rest_frame} is outside the animation's frames "
                                        f"{frames[0]:.0f}-{frames[-1]:.0f}.")
        rest = anim.weights[int(np.argmin(np.abs(frames - rest_frame)))]
    try:
        weights = retarget.adjust_weights(anim.weights, strength, rest)
    except ValueError as exc:
        raise importer.ImportFailed(str(exc)) from None
    joints = {j: (v * strength if j == "jaw" else v) for j, v in anim.joints.items()}
    return replace(anim, weights=weights, joints=joints)


def mirrored_animation(anim):
    """``anim`` seen in a mirror (a mirrored selfie video): every unit of one side takes its
    twin's curve (:func:`retarget.mirror_order`), the head's and the joints' rotations are
    reflected (:func:`retarget.mirror_rotations`; the eyes swap). Its per-frame camera is
    dropped: it saw the unmirrored head."""
    from dataclasses import replace

    from . import retarget

    twin = {"eye_left": "eye_right", "eye_right": "eye_left"}
    joints = {j: retarget.mirror_rotations(anim.joints[twin.get(j, j)] if twin.get(j, j) in anim.joints else v)
              for j, v in anim.joints.items()}
    head = None if anim.head_rotation is None else retarget.mirror_rotations(anim.head_rotation)
    return replace(anim, weights=anim.weights[:, retarget.mirror_order(anim.names)], joints=joints,
                   head_rotation=head, camera={}, eye_rotations={})


def fcurves_of(id_data):
    """The F-curves that animate ``id_data``: its action's curves (Blender < 5), or those of the
    channelbag of its assigned slot (Blender 5 removed the legacy ``Action.fcurves``); None
    when it has no action."""
    ad = id_data.animation_data
    if ad is None or ad.action is None:
        return None
    if bpy.app.version < (5, 0, 0):
        return ad.action.fcurves
    from bpy_extras import anim_utils

    if ad.action_slot is None:
        return None
    bag = anim_utils.action_get_channelbag_for_slot(ad.action, ad.action_slot)
    return bag.fcurves if bag is not None else None


def _fcurve(id_data, action_name: str, data_path: str, index: int = 0, group: str | None = None):
    """The F-curve of ``data_path[index]`` on ``id_data``'s action (created as needed), emptied."""
    ad = id_data.animation_data or id_data.animation_data_create()
    if ad.action is None:
        ad.action = bpy.data.actions.new(action_name)
    action = ad.action
    if bpy.app.version >= (5, 0, 0):  # slotted actions only: curves live in a slot's channelbag
        from bpy_extras import anim_utils

        if ad.action_slot is None:
            slot = next((s for s in action.slots if s.target_id_type == id_data.id_type), None)
            ad.action_slot = slot or action.slots.new(id_type=id_data.id_type, name=id_data.name)
        curves = anim_utils.action_ensure_channelbag_for_slot(action, ad.action_slot).fcurves
        fc = curves.find(data_path, index=index)
        if fc is None:
            fc = curves.new(data_path, index=index, group_name=group or "")
    else:
        fc = action.fcurves.find(data_path, index=index)
        if fc is None:
            fc = action.fcurves.new(data_path, index=index, action_group=group or "")
        # Blender 4.4+ (slotted actions): a new action's legacy slot must be assigned to play
        if getattr(ad, "action_slot", True) is None and len(getattr(action, "slots", ())):
            ad.action_slot = action.slots[0]
    fc.keyframe_points.clear()
    return fc


_LINEAR = None


def _key(fc, frames: np.ndarray, values: np.ndarray) -> None:
    global _LINEAR
    if _LINEAR is None:
        _LINEAR = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value
    n = len(frames)
    fc.keyframe_points.add(n)
    co = np.empty(2 * n, np.float32)
    co[0::2], co[1::2] = frames, values
    fc.keyframe_points.foreach_set("co", co)
    fc.keyframe_points.foreach_set("interpolation", np.full(n, _LINEAR, np.int32))
    fc.update()


def _key_bone(rig, bone: str, action_name: str, frames: np.ndarray, quats: np.ndarray,
              free_controls: bool = True) -> None:
    """Key a pose bone's rotation quaternion (``quats`` (T, 4), its own axes) on ``frames``;
    ``free_controls``: a driver on its Euler rotation (our head's bone controls) is removed (a
    character's own drivers stay: with the bone in quaternion mode they no longer act)."""
    pbone = rig.pose.bones[bone]
    if free_controls:
        pbone.driver_remove("rotation_euler")
    pbone.rotation_mode = "QUATERNION"
    quats = np.array(quats, np.float64)
    for i in range(1, len(quats)):  # sign continuity: keys interpolate component-wise
        if np.dot(quats[i], quats[i - 1]) < 0:
            quats[i] = -quats[i]
    path = f'pose.bones["{bone}"].rotation_quaternion'
    for c in range(4):
        _key(_fcurve(rig, action_name, path, c, bone), frames, quats[:, c])


def _set_timeline(scene, frames: np.ndarray, fps: float) -> None:
    """The scene plays ``frames`` at ``fps`` (fractional rates through ``fps_base``)."""
    rate = max(1, int(round(fps)))
    scene.render.fps, scene.render.fps_base = rate, rate / fps
    scene.frame_start, scene.frame_end = int(frames[0]), int(frames[-1])
    scene.frame_set(int(frames[0]))


def animated_rig(obj):
    """The armature whose bones an animation keys for the head ``obj``: its rig.json rig, else
    any armature it is parented to; None without one."""
    parent = obj.parent
    return importer.pose_rig_of(obj) or (parent if parent is not None and parent.type == "ARMATURE" else None)


def _head_bone(rig) -> str | None:
    return next((b for b in ("neck", "global") if b in rig.pose.bones), None)


def apply_animation(context, obj, anim, *, start_frame: int = 1, set_scene: bool = True,
                    camera: bool = False, sound: bool = False) -> dict:
    """Keyframe ``obj`` (a head from an output folder) and its rig with ``anim`` (module docstring).
    ``camera``: also key the video camera (:func:`photo_camera.key_video_camera`; with
    ``set_scene`` it becomes the scene's camera). Returns what was keyed: ``frames`` (scene
    frames), ``shape_keys``, ``bones``, ``unknown``, ``camera`` (a ``PhotoCamera`` or None)."""
    fmt = formats()
    keys = obj.data.shape_keys
    if keys is None:
        raise importer.ImportFailed(f"'{obj.name}' has no shape keys to animate.")
    if anim.n_frames == 0:
        raise importer.ImportFailed("The animation has no frames.")
    fps = timeline_rate(anim)
    frames = scene_frames(anim.times, fps, start_frame)
    blocks = keys.key_blocks
    known = [n for n in anim.names if n in blocks]
    unknown = [n for n in anim.names if n not in blocks]
    if not known:
        raise importer.ImportFailed(f"None of the animation's {len(anim.names)} curves ({anim.names[0]}, ...) is a "
                                    f"shape key of '{obj.name}' (a head of another model?).")
    if set(known) & set(obj.get("facerecon_driven_keys", [])):
        importer.remove_face_controls(obj)  # drivers would override the keyed values
    action = f"{obj.name} face"
    for name in known:
        _key(_fcurve(keys, action, f'key_blocks["{name}"].value', 0, "Expressions"), frames, anim.weight(name))
    bones: list[str] = []
    rig = animated_rig(obj)
    if rig is not None:
        rotations = {j: np.asarray(v, np.float64) for j, v in anim.joints.items() if j in rig.pose.bones}
        if "jaw" in rig.pose.bones and "jaw" not in rotations and "jawOpen" in known:
            # the file opens the mouth by the jawOpen key alone (a CSV): the jaw bone is keyed
            # closed, or the photo's own jaw opening would add to it
            rotations["jaw"] = np.zeros((anim.n_frames, 3))
        head_bone = _head_bone(rig)
        if anim.head_rotation is not None and head_bone is not None:
            own = rotations.get(head_bone, np.zeros((anim.n_frames, 3)))
            q = fmt.quaternion_multiply(fmt.rotvec_to_quaternion(anim.head_rotation), fmt.rotvec_to_quaternion(own))
            rotations[head_bone] = fmt.quaternion_to_rotvec(q)
        controls = list(rig.get("facerecon_pose_controls", []))
        for bone, rv in rotations.items():
            quats = np.array([list(importer._bone_local_rotation(rig, bone, r)) for r in rv])
            _key_bone(rig, bone, f"{obj.name} head", frames, quats)
            bones.append(bone)
            controls = [p for p in controls if all(b != bone for b, _, _ in importer.POSE_CONTROLS[p][3])]
        if rig.get("facerecon_pose_controls") is not None:
            rig["facerecon_pose_controls"] = controls
    if set_scene:
        _set_timeline(context.scene, frames, fps)
    made = None
    if camera:
        from .photo_camera import key_video_camera

        made = key_video_camera(context, obj, anim, frames, fmt, make_active=set_scene)
    obj["facerecon_animation"] = str(anim.meta.get("source", ""))
    heard = add_video_sound(context, anim, frames[0], fps, obj.name) if sound else None
    return {"frames": frames, "shape_keys": known, "bones": bones, "unknown": unknown, "camera": made,
            "sound": heard}


def _keyframes_on(id_data, paths: set[str]) -> int:
    """How many keyframes ``id_data``'s action holds on the curves of ``paths``."""
    curves = fcurves_of(id_data)
    return 0 if curves is None else sum(len(fc.keyframe_points) for fc in curves if fc.data_path in paths)


def character_of(context) -> tuple[list, object | None]:
    """The selected character: the meshes with shape keys among the selected objects (the
    active one included) and the children of a selected armature, reconstructed heads left
    out; its armature: a selected one, else the first mesh's parent or Armature modifier's."""
    chosen = list(context.selected_objects)
    if context.active_object is not None and context.active_object not in chosen:
        chosen.append(context.active_object)
    rigs = [o for o in chosen if o.type == "ARMATURE"]
    meshes: list = []
    for o in chosen + [c for r in rigs for c in r.children_recursive]:
        if (o.type == "MESH" and o not in meshes and o.data.shape_keys is not None
                and o.get("facerecon_name") is None):
            meshes.append(o)
    rig = rigs[0] if rigs else None
    for o in meshes:
        if rig is not None:
            break
        if o.parent is not None and o.parent.type == "ARMATURE":
            rig = o.parent
        rig = rig or next((m.object for m in o.modifiers if m.type == "ARMATURE" and m.object is not None), None)
    return meshes, rig


def read_character_animation(path: str | Path, fps: float | None = None):
    """The ARKit curves that animate a character: a Live Link Face CSV as it is; for an
    animation.json the ``animation.csv`` beside it (its ``jawOpen`` holds the jaw's opening
    and its ``eyeLook*`` the gaze, which animation.json keeps on the head's bones), on the
    JSON's own times and rate (a CSV's timecodes only approximate them)."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        return read_animation(path, fps)
    csv_path = path.with_name("animation.csv")
    if not csv_path.is_file():
        raise importer.ImportFailed(
            f"A character is animated by ARKit curves: {path.name} holds the head model's own units and "
            f"there is no animation.csv beside it (the engine writes one for the open and ICT models; "
            f"FLAME's expressions have no ARKit meaning).")
    timing = read_animation(path)
    anim = read_animation(csv_path, timing.fps)
    if anim.n_frames != timing.n_frames:
        raise importer.ImportFailed(f"{csv_path.name} has {anim.n_frames} frames but {path.name} "
                                    f"{timing.n_frames}: they are not of one clip.")
    anim.times, anim.fps, anim.meta, anim.frames = timing.times, timing.fps, timing.meta, timing.frames
    return anim


def apply_to_character(context, meshes: list, rig, head_bone: str | None, anim, *, start_frame: int = 1,
                       set_scene: bool = True, sound: bool = False) -> dict:
    """Key a character of your own with ``anim``'s ARKit curves (a Live Link Face CSV or our
    animation.csv): every shape key of ``meshes`` whose name spells an ARKit unit
    (:func:`retarget.match_arkit`), and the head's turn on ``head_bone`` of ``rig``
    (:func:`retarget.head_bone_rotation`; None: no bone keyed). Keys other curves of the
    meshes' and the rig's actions leave alone. Returns ``frames``, ``units`` (ARKit units
    keyed), ``keys`` (shape keys keyed), ``missing`` (units of the file no key takes),
    ``driven`` (keyed shape keys that drivers of the character override), ``replaced`` (the
    character's earlier keyframes on those shape keys and the head bone's rotation, which the
    new keys replace: the report says so, Undo brings them back), ``bone``, ``sound``
    (with ``sound``: :func:`add_video_sound`'s report). The keys are placed by time at the
    scene's own frame rate (fractional frames where the rates differ), so the rest of the
    scene's animation keeps its timing; ``set_scene`` widens the frame range to hold them."""
    from mathutils import Matrix

    from . import retarget

    if not meshes:
        raise importer.ImportFailed("Select your character: a mesh with ARKit shape keys (or its armature).")
    if anim.n_frames == 0:
        raise importer.ImportFailed("The animation has no frames.")
    scene = context.scene
    fps = scene.render.fps / scene.render.fps_base  # the scene's own rate: its other animation keeps its timing
    frames = start_frame + (np.asarray(anim.times) - float(anim.times[0])) * fps  # by time, fractions kept
    units: set[str] = set()
    keyed = driven = replaced = 0
    for obj in meshes:
        keys = obj.data.shape_keys
        names = [kb.name for kb in keys.key_blocks if kb != keys.reference_key]
        match = retarget.match_arkit(names, anim.names)
        drivers = {d.data_path for d in keys.animation_data.drivers} if keys.animation_data else set()
        replaced += _keyframes_on(keys, {f'key_blocks["{n}"].value' for ns in match.keys.values() for n in ns})
        for unit, key_names in match.keys.items():
            for name in key_names:
                path = f'key_blocks["{name}"].value'
                _key(_fcurve(keys, f"{obj.name} face", path, 0, "Expressions"), frames, anim.weight(unit))
                keyed += 1
                driven += path in drivers
            units.add(unit)
    if not units:
        names = ", ".join(o.name for o in meshes)
        raise importer.ImportFailed(f"No shape key of {names} is an ARKit unit (eyeBlinkLeft, jawOpen, … in any "
                                    f"spelling such as EyeBlink_L): nothing to animate.")
    bone = None
    if rig is not None and head_bone and anim.head_rotation is not None:
        if head_bone not in rig.pose.bones:
            raise importer.ImportFailed(f"'{rig.name}' has no bone '{head_bone}'.")
        rest = np.array(rig.data.bones[head_bone].matrix_local.to_3x3())
        world = np.array(rig.matrix_world.to_3x3())
        quats = np.array([list(Matrix(retarget.head_bone_rotation(
            importer._model_rotation_to_blender(r), rest, world).tolist()).to_quaternion())
            for r in anim.head_rotation])
        # the bone's earlier keys: replaced (quaternion), or no longer played (Euler, axis-angle)
        replaced += _keyframes_on(rig, {f'pose.bones["{head_bone}"].{r}'
                                        for r in ("rotation_quaternion", "rotation_euler", "rotation_axis_angle")})
        _key_bone(rig, head_bone, f"{rig.name} head turn", frames, quats, free_controls=False)
        bone = head_bone
    if set_scene:  # the range grows to hold the keys, never shrinks
        scene.frame_start = min(scene.frame_start, int(np.floor(frames[0])))
        scene.frame_end = max(scene.frame_end, int(np.ceil(frames[-1])))
        scene.frame_set(int(round(frames[0])))
    heard = add_video_sound(context, anim, frames[0], fps, (rig or meshes[0]).name) if sound else None
    return {"frames": frames, "units": sorted(units), "keys": keyed, "driven": driven, "replaced": replaced,
            "bone": bone,
            "missing": [u for u in anim.names if u not in units], "sound": heard}


def character_report(done: dict, meshes: list) -> str:
    """One line for the user: what was keyed on the character, what was not and why."""
    text = (f"Keyed {len(done['units'])} ARKit units on {done['keys']} shape keys "
            f"of {', '.join(o.name for o in meshes)}, frames {done['frames'][0]:.0f}-{done['frames'][-1]:.0f}")
    text += f"; head turn on bone '{done['bone']}'" if done["bone"] else "; no head bone keyed"
    if done["missing"]:
        text += f"; units without a shape key: {', '.join(done['missing'][:4])}" + (
            f" and {len(done['missing']) - 4} more" if len(done["missing"]) > 4 else "")
    if done.get("sound"):
        text += f"; {done['sound']}"
    if done.get("replaced"):
        text += (f"; {done['replaced']} earlier keyframes of these shape keys and the head bone were replaced "
                 f"(Undo brings them back)")
    if done["driven"]:
        one = done["driven"] == 1
        text += (f"; {done['driven']} of those shape keys {'has a driver' if one else 'have drivers'} of the "
                 f"character's own, which {'overrides' if one else 'override'} the keys")
    return text


#: Marks the sequencer strip that plays a head's or a character's video sound (the value: whose).
SOUND_OWNER = "facerecon_sound_of"


def add_video_sound(context, anim, start_frame: float, fps: float, owner: str) -> str | None:
    """The video's sound as a strip of the scene's sequencer, placed by time: the animation's
    first sample (``anim.times[0]`` seconds into the video) at ``start_frame``, at ``fps`` scene
    frames a second, so speech plays in step with the keys; the strip an earlier import made
    for ``owner`` (an object's name) is replaced, and playback syncs to the sound. Returns what
    the report says: the strip's name, or why there is no sound; None for a CSV or a folder of
    frames (no sound to expect)."""
    if anim.meta.get("format_read") == "live-link-face-csv":
        return None
    src = anim.meta.get("source")
    path = Path(src) if src else None
    if path is None or not path.exists():
        return "no sound: the video is not there any more"
    if path.is_dir():  # a folder of frames: nothing to say
        return None
    video_start = float(start_frame) - float(anim.times[0]) * fps  # the scene frame of the video's 0 s
    scene = context.scene
    editor = scene.sequence_editor or scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences  # Blender 4.4 renamed them
    for old in [s for s in strips if s.get(SOUND_OWNER) == owner]:
        sound = getattr(old, "sound", None)
        strips.remove(old)
        if sound is not None and sound.users == 0:
            bpy.data.sounds.remove(sound)
    busy = {s.channel for s in strips}
    channel = next(c for c in range(1, 129) if c not in busy)
    try:
        strip = strips.new_sound(f"{owner} sound", str(path), channel, int(round(video_start)))
    except RuntimeError as exc:
        return f"no sound: Blender cannot read it ({exc})"
    if strip.sound is None or strip.sound.samplerate <= 0:  # a video without an audio stream
        sound = strip.sound
        strips.remove(strip)
        if sound is not None and sound.users == 0:
            bpy.data.sounds.remove(sound)
        return "the video has no sound"
    strip.frame_start = video_start  # (a fraction of a frame where the rates differ)
    strip[SOUND_OWNER] = owner
    scene.sync_mode = "AUDIO_SYNC"
    return f"sound: strip '{strip.name}' (channel {channel})"


def video_report(done: dict) -> str:
    """What the report says of the video camera and the video's sound (empty without them)."""
    made = done.get("camera")
    parts = [f"camera {made.camera.name}", *made.notes] if made is not None else []
    parts += [done["sound"]] if done.get("sound") else []
    return "".join(f"; {p}" for p in parts)


# ---------------------------------------------------------------------------- operators
TARGETS = [("NEW", "New head", "Build a head from the video and animate it"),
           ("ACTIVE", "Active head", "Animate the selected reconstructed head (keeps its shape)"),
           ("CHARACTER", "Character", "Animate your own character: the selected meshes' ARKit shape keys "
                                      "(any spelling: eyeBlinkLeft, EyeBlink_L, …) and its head bone")]


class FACERECON_AnimateSettings(bpy.types.PropertyGroup):
    video: StringProperty(name="Video", subtype="FILE_PATH",
                          description="Video (mp4, mov, avi, webm) or a folder of images")
    target: EnumProperty(name="Animate", items=TARGETS, default="NEW")
    fps: FloatProperty(name="Frame rate", default=0.0, min=0.0, max=240.0,
                       description="Frames per second to sample (0: the video's own; 30 for image folders)")
    start: FloatProperty(name="Start", default=0.0, min=0.0, unit="TIME_ABSOLUTE", description="Start time (s)")
    end: FloatProperty(name="End", default=0.0, min=0.0, unit="TIME_ABSOLUTE", description="End time (s; 0: the end)")
    camera: BoolProperty(name="Video camera", default=True,
                         description="Key a camera that sees the head as the video does, the video behind it; "
                                     "it becomes the scene's camera")
    sound: BoolProperty(name="Video sound", default=True,
                        description="Put the video's sound in the sequencer, in step with the keys (lip sync)")
    smooth: EnumProperty(name="Smoothing", default="two-pass", items=[
        ("two-pass", "Smooth", "One Euro filter forwards and backwards, averaged: steady, no lag"),
        ("causal", "Live", "Forwards only, as a live tracker smooths: a little lag"),
        ("off", "Raw", "The per-frame estimates as they are")])
    min_cutoff: FloatProperty(name="Steadiness cut-off", default=0.0, min=0.0, max=10.0, unit="NONE",
                              description="The filter's cut-off at rest in Hz: lower holds still poses "
                                          "steadier, higher follows small motion (0: the engine's 0.5)")
    strength: FloatProperty(name="Strength", default=1.0, min=0.0, soft_max=2.0, max=5.0,
                            description="Scale every expression curve (and the jaw's opening); 1 keeps them")
    rest_frame: IntProperty(name="Rest frame", default=0, min=0,
                            description="A frame where the face is at rest: its expression is taken out of "
                                        "every frame (0: none)")
    mirror: BoolProperty(name="Mirror", default=False,
                         description="Swap left and right (a mirrored selfie video): each unit takes its "
                                     "twin's curve, the head turns and tilts the other way")
    turn_head: BoolProperty(name="Turn the head", default=True,
                            description="Key the head's turn on a bone of the character's armature")
    head_bone: StringProperty(name="Head bone",
                              description="The character's bone that turns its head (empty: the one named "
                                          "head, Head, mixamorig:Head, …, else a neck)")


def _with_settings(context, anim, start_frame: int, character: bool = False):
    """``anim`` adjusted by the sidebar's *Strength* and *Rest frame* (a character's keys are at
    the scene's rate, a head's at :func:`timeline_rate`), and for a character its *Mirror*."""
    settings = context.scene.facerecon_animate
    render = context.scene.render
    if character and settings.mirror:
        anim = mirrored_animation(anim)
    return adjusted_animation(anim, settings.strength, settings.rest_frame, start_frame,
                              render.fps / render.fps_base if character else None)


def character_head_bone(context, rig) -> str | None:
    """The bone the character's head turns on: the sidebar's choice, else the usual one."""
    from . import retarget

    settings = context.scene.facerecon_animate
    if rig is None or not settings.turn_head:
        return None
    if settings.head_bone:
        return settings.head_bone
    return retarget.guess_head_bone([b.name for b in rig.data.bones])


class FACERECON_OT_animate_video(EngineJobOperator, bpy.types.Operator):
    """Animate a head from a video: ARKit shape-key and bone keyframes (runs in the background; Esc cancels)"""

    bl_idname = "facerecon.animate_video"
    bl_label = "Animate from Video"
    bl_options = {"REGISTER", "UNDO"}
    job_label = "Animation"

    video: StringProperty(name="Video", subtype="FILE_PATH", options={"SKIP_SAVE"},
                          description="Overrides the sidebar's video (for scripts)")
    timeout: FloatProperty(name="Timeout", default=0.0, min=0.0, options={"SKIP_SAVE"},
                           description="Seconds before a synchronous run gives up (0: no limit)")

    def _make_job(self, context) -> runner.EngineJob | None:
        settings, anim = context.scene.facerecon, context.scene.facerecon_animate
        video = bpy.path.abspath(self.video or anim.video)
        if not video:
            self.report({"ERROR"}, "Pick a video first.")
            return None
        if not os.path.exists(video):
            self.report({"ERROR"}, f"The video '{video}' does not exist.")
            return None
        if anim.target == "ACTIVE" and active_head(context) is None:
            self.report({"ERROR"}, "Select a reconstructed head to animate (or animate a new head).")
            return None
        self._character = character_of(context) if anim.target == "CHARACTER" else None
        if self._character is not None:
            if not self._character[0]:
                self.report({"ERROR"}, "Select your character: a mesh with ARKit shape keys (or its armature).")
                return None
            if settings.model == "flame":
                self.report({"ERROR"}, "FLAME's expressions have no ARKit meaning: pick the open or ICT model "
                                       "to animate a character.")
                return None
        engine = self._engine(context)
        if engine is None:
            return None
        model_path, choice = engine
        self._target = active_head(context) if anim.target == "ACTIVE" else None
        request = runner.AnimateRequest(video=video, model=settings.model, model_path=model_path,
                                        method=settings.method, device=settings.device, face=settings.face_index,
                                        fps=anim.fps, start=anim.start, end=anim.end, smooth=anim.smooth,
                                        min_cutoff=anim.min_cutoff)
        return runner.EngineJob(request, choice, data_dir=user_data_dir())

    def _import(self, context, job: runner.EngineJob) -> tuple[str, str]:
        settings = context.scene.facerecon
        character = getattr(self, "_character", None)
        if character is not None:
            meshes, rig = character
            anim = _with_settings(context, read_character_animation(job.out_dir / "animation.json"), 1, True)
            done = apply_to_character(context, meshes, rig, character_head_bone(context, rig), anim,
                                      sound=context.scene.facerecon_animate.sound)
            text = character_report(done, meshes)
            return f"{meshes[0].name}: frames {done['frames'][0]:.0f}-{done['frames'][-1]:.0f} keyed in " \
                   f"{job.elapsed:.1f} s", text
        anim = _with_settings(context, read_animation(job.out_dir / "animation.json"), 1)
        obj = getattr(self, "_target", None)
        new = obj is None
        if new:
            obj = importer.import_result(context, job.out_dir, replace=settings.result_mode == "REPLACE",
                                         apply_expression=False, photo_lighting=settings.photo_lighting)
            keep_result_folder(obj, job.out_dir)
        try:
            done = apply_animation(context, obj, anim, camera=context.scene.facerecon_animate.camera,
                                   sound=context.scene.facerecon_animate.sound)
        except Exception:
            if new:  # all or nothing, like the import itself
                importer.remove_objects([o for o in (obj, obj.parent) if o is not None])
            raise
        first, last = int(done["frames"][0]), int(done["frames"][-1])
        return (f"{obj.name}: frames {first}-{last} keyed in {job.elapsed:.1f} s",
                f"Animated '{obj.name}': frames {first}-{last}, {len(done['shape_keys'])} shape keys, "
                f"bones {', '.join(done['bones']) or 'none'}" + video_report(done))


class FACERECON_OT_import_animation(bpy.types.Operator):
    """Keyframe the active head, or your selected character's ARKit shape keys and head bone, from an
    animation.json or a Live Link Face CSV recorded elsewhere"""

    bl_idname = "facerecon.import_animation"
    bl_label = "Import Animation File"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="File", subtype="FILE_PATH")
    filter_glob: StringProperty(default="*.json;*.csv", options={"HIDDEN"})
    fps: FloatProperty(name="CSV frame rate", default=0.0, min=0.0, max=240.0,
                       description="Frame rate of a CSV's timecodes (0: read from the timecodes)")
    start_frame: bpy.props.IntProperty(name="Start frame", default=1)
    sound: BoolProperty(name="Video sound", default=True,
                        description="Put the video's sound in the sequencer, in step with the keys (animation.json "
                                    "of a video that is still there)")
    camera: BoolProperty(name="Video camera", default=True,
                         description="Key a camera that sees the head as the video does (animation.json), "
                                     "the video behind it; it becomes the scene's camera")

    @classmethod
    def poll(cls, context):
        return active_head(context) is not None or bool(character_of(context)[0])

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        obj = active_head(context)
        if obj is None:
            return self._character(context)
        try:
            anim = _with_settings(context, read_animation(bpy.path.abspath(self.filepath), self.fps or None),
                                  self.start_frame)
            done = apply_animation(context, obj, anim, start_frame=self.start_frame, camera=self.camera,
                                   sound=self.sound)
        except Exception as exc:
            self.report({"ERROR"}, f"Import failed: {exc}")
            return {"CANCELLED"}
        extra = f"; not on this head: {', '.join(done['unknown'][:5])}" if done["unknown"] else ""
        self.report({"INFO"}, f"Keyed '{obj.name}' on frames {int(done['frames'][0])}-{int(done['frames'][-1])} "
                              f"({len(done['shape_keys'])} shape keys, bones {', '.join(done['bones']) or 'none'})"
                              + extra + video_report(done))
        return {"FINISHED"}

    def _character(self, context):
        meshes, rig = character_of(context)
        try:
            anim = _with_settings(context, read_character_animation(bpy.path.abspath(self.filepath),
                                                                    self.fps or None), self.start_frame, True)
            done = apply_to_character(context, meshes, rig, character_head_bone(context, rig), anim,
                                      start_frame=self.start_frame, sound=self.sound)
        except Exception as exc:
            self.report({"ERROR"}, f"Import failed: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, character_report(done, meshes))
        return {"FINISHED"}


class FACERECON_PT_animate(bpy.types.Panel):
    bl_label = "Animate from Video"
    bl_idname = "FACERECON_PT_animate"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face"

    def draw(self, context):
        layout = self.layout
        anim = context.scene.facerecon_animate
        job = context.window_manager.facerecon_job
        layout.prop(anim, "video")
        layout.row().prop(anim, "target", expand=True)
        if anim.target == "CHARACTER":
            _draw_character(layout, context, anim)
        col = layout.column(align=True)
        col.prop(anim, "fps")
        row = col.row(align=True)
        row.prop(anim, "smooth", text="")
        row.prop(anim, "min_cutoff", text="Cut-off Hz")
        row = col.row(align=True)
        row.prop(anim, "strength")
        row.prop(anim, "rest_frame")
        row = col.row(align=True)
        if anim.target != "CHARACTER":
            row.prop(anim, "camera")
        row.prop(anim, "sound")
        row = col.row(align=True)
        row.prop(anim, "start")
        row.prop(anim, "end")
        layout.label(text="Model, method, device and face: as above", icon="INFO")
        if not job.running:
            row = layout.row()
            row.scale_y = 1.4
            row.enabled = engine_choice(context).ok
            row.operator("facerecon.animate_video", icon="SEQUENCE")
        layout.operator("facerecon.import_animation", icon="IMPORT")


def _draw_character(layout, context, anim) -> None:
    """What the character target will key: its meshes and ARKit units, its head bone."""
    from . import retarget

    meshes, rig = character_of(context)
    box = layout.box()
    if not meshes:
        box.label(text="Select a mesh with ARKit shape keys", icon="ERROR")
        return
    try:
        arkit = formats().ARKIT_NAMES
    except importer.ImportFailed as exc:  # a broken install: say so instead of failing to draw
        box.label(text=str(exc), icon="ERROR")
        return
    units = set()
    for o in meshes:
        keys = o.data.shape_keys
        units |= set(retarget.match_arkit([kb.name for kb in keys.key_blocks if kb != keys.reference_key],
                                          arkit).keys)
    box.label(text=f"{', '.join(o.name for o in meshes)[:48]}: {len(units)} of 52 ARKit units",
              icon="SHAPEKEY_DATA" if units else "ERROR")
    box.prop(anim, "mirror")
    if rig is None:
        box.label(text="No armature: the head will not turn", icon="INFO")
        return
    row = box.row(align=True)
    row.prop(anim, "turn_head", text="")
    sub = row.row(align=True)
    sub.enabled = anim.turn_head
    sub.prop_search(anim, "head_bone", rig.data, "bones", text="")
    if anim.turn_head and not anim.head_bone:
        guess = retarget.guess_head_bone([b.name for b in rig.data.bones])
        box.label(text=f"Head bone: {guess}" if guess else "No head bone found: pick one", icon="BONE_DATA")


classes = (FACERECON_AnimateSettings, FACERECON_OT_animate_video, FACERECON_OT_import_animation, FACERECON_PT_animate)


def register_properties() -> None:
    bpy.types.Scene.facerecon_animate = PointerProperty(type=FACERECON_AnimateSettings)


def unregister_properties() -> None:
    del bpy.types.Scene.facerecon_animate


