"""Animation in Blender: keyframes from animation.json and a Live Link Face CSV, played back
and checked against the files (shape-key values, bone rotations, the posed mesh against the
engine's own skinning), the *Animate from Video* operator end to end, and animation.glb
played by Blender's glTF importer.

The parent test (plain Python) makes a short clip and runs ``python -m engine animate`` on
it, then runs this same file in a child process that imports ``bpy`` (see
tests/test_blender_addon.py for why a child process); the child's tests are skipped when
collected on their own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHILD = os.environ.get("FACERECON_BLENDER_VIDEO_CHILD") == "1"
HAS_BPY = importlib.util.find_spec("bpy") is not None
pytestmark = [pytest.mark.blender,
              pytest.mark.skipif(not HAS_BPY, reason="the bpy module (Blender as a Python module) is not installed")]


# ---------------------------------------------------------------------------- parent
@pytest.mark.skipif(CHILD, reason="the parent's part")
def test_blender_plays_the_animation(tmp_path):
    pytest.importorskip("mediapipe")
    from PIL import Image

    from engine.__main__ import main
    from engine.generator import SyntheticConfig
    from engine.head import load_head_model
    from engine.video.synthetic import LongClipConfig, render_long_clip

    head = load_head_model("open")
    clip = render_long_clip(head, 6, LongClipConfig(n_frames=10, n_keys=2), SyntheticConfig(image_size=192))
    frames = tmp_path / "clip"
    frames.mkdir()
    for i, s in enumerate(clip.samples):
        Image.fromarray(s.image).save(frames / f"{i:02d}.png")
    out = tmp_path / "anim"
    assert main(["animate", str(frames), "--out", str(out), "--method", "mofa", "--key-frames", "2",
                 "--progress", "none"]) == 0
    home = tmp_path / "home"
    env = dict(os.environ, HOME=str(home), BLENDER_USER_RESOURCES=str(home / "blender"),
               XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               FACERECON_BLENDER_VIDEO_CHILD="1", FACERECON_ANIMATION_FOLDER=str(out),
               FACERECON_CLIP_FOLDER=str(frames), PYTHONPATH=str(REPO))
    code = ("import os, sys, pytest; rc = pytest.main(sys.argv[1:]); "
            "sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))")
    proc = subprocess.run([sys.executable, "-c", code, "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           str(Path(__file__))], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                          timeout=600)
    report = proc.stdout[-6000:] + "\n" + "\n".join(
        ln for ln in proc.stderr.splitlines() if "Freeing memory after the leak" not in ln)[-3000:]
    assert proc.returncode == 0, report
    assert " passed" in proc.stdout and "failed" not in proc.stdout, report


# ---------------------------------------------------------------------------- child (bpy)
child = pytest.mark.skipif(not CHILD, reason="runs in the bpy child process of test_blender_plays_the_animation")


@pytest.fixture(scope="module")
def blender():
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    import blender_addon

    blender_addon.register()
    from blender_addon import animation, importer

    return bpy, animation, importer


@pytest.fixture(scope="module")
def folder() -> Path:
    return Path(os.environ["FACERECON_ANIMATION_FOLDER"])


def _evaluated(bpy, obj) -> np.ndarray:
    bpy.context.view_layer.update()
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = ev.to_mesh()
    co = np.empty(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    return co.reshape(-1, 3)


def _bone_rotation(rig, name: str) -> np.ndarray:
    """The pose bone's rotation in armature space relative to its rest orientation (3x3)."""
    pb = rig.pose.bones[name]
    return np.array((pb.matrix.to_3x3() @ pb.bone.matrix_local.to_3x3().inverted()))


@child
def test_json_keys_shape_keys_and_bones(blender, folder):
    bpy, animation, importer = blender
    from engine.head import load_head_model
    from engine.head.teeth import with_teeth
    from engine.video import formats as fmt

    model = with_teeth(load_head_model("open"))  # the files' mesh: the model and its teeth
    anim = fmt.read_json(folder / "animation.json")
    bpy.context.scene.facerecon.result_mode = "ADD"
    obj = importer.import_result(bpy.context, folder, replace=False, apply_expression=False)
    assert bpy.ops.facerecon.import_animation(filepath=str(folder / "animation.json")) == {"FINISHED"}
    scene = bpy.context.scene
    assert (scene.frame_start, scene.frame_end) == (1, anim.n_frames) and scene.render.fps == 30
    rig = importer.pose_rig_of(obj) or obj.parent
    M = importer.MODEL_TO_BLENDER
    rig_data = json.loads((folder / "rig.json").read_text())
    order = importer._model_vertex_order(obj, rig_data)
    import torch

    for k in (0, anim.n_frames // 2, anim.n_frames - 1):
        scene.frame_set(1 + k)
        keys = obj.data.shape_keys.key_blocks
        for name in anim.names:
            assert keys[name].value == pytest.approx(anim.weight(name)[k], abs=1e-5), (k, name)
        # bones: rotations composed along the chain, from the file (head rotation on the neck)
        local = {j: fmt.rotvec_to_matrix(anim.joints[j][k]) for j in anim.joints}
        local["neck"] = fmt.rotvec_to_matrix(anim.head_rotation[k]) @ local["neck"]
        world = {"global": local["global"]}
        world["neck"] = world["global"] @ local["neck"]
        world["jaw"] = world["neck"] @ local["jaw"]
        for bone in ("neck", "jaw"):
            np.testing.assert_allclose(_bone_rotation(rig, bone), M @ world[bone] @ M.T, atol=1e-4)
        # the posed mesh: the engine's skinning of the same frame
        pose = np.stack([anim.joints[j][k] for j in model.joint_names])
        pose[model.joint_names.index("neck")] = fmt.quaternion_to_rotvec(fmt.quaternion_multiply(
            fmt.rotvec_to_quaternion(anim.head_rotation[k]), fmt.rotvec_to_quaternion(pose[1])))
        with torch.no_grad():
            verts = model(torch.tensor(anim.meta["identity"], dtype=torch.float32)[None],
                          torch.tensor(anim.weights[k], dtype=torch.float32)[None],
                          torch.tensor(pose, dtype=torch.float32)[None]).vertices[0].numpy()
        err = np.linalg.norm(_evaluated(bpy, obj)[order] - verts @ M.T, axis=1)
        assert err.mean() < 5e-4 and err.max() < 3e-3, (k, err.mean(), err.max())
    importer.remove_objects([obj, rig])


@child
def test_video_camera_sees_the_animated_head_where_the_video_shows_it(blender, folder):
    """The video camera keyed from animation.json: at every frame, Blender's own projection
    of the head as the add-on animates it (the head's rotation on the neck bone) through the
    keyed camera is the engine's projection of that frame (its pose, its camera); the clip
    (a folder of frames, every frame kept) plays behind it from the first scene frame."""
    bpy, animation, importer = blender
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    from engine.head import load_head_model
    from engine.head.teeth import with_teeth
    from engine.video import formats as fmt

    model = with_teeth(load_head_model("open"))
    anim = fmt.read_json(folder / "animation.json")
    bpy.context.scene.facerecon.result_mode = "ADD"
    bpy.context.scene.cursor.location = (0.3, -0.2, 0.1)  # not at the origin: the camera follows the head
    obj = importer.import_result(bpy.context, folder, replace=False, apply_expression=False)
    assert bpy.ops.facerecon.import_animation(filepath=str(folder / "animation.json")) == {"FINISHED"}
    scene = bpy.context.scene
    camera = scene.camera
    from blender_addon.photo_camera import find_video_camera

    assert camera is not None and camera.parent == obj.parent and find_video_camera(obj) == camera
    W, H = anim.meta["frame_size"]
    assert (scene.render.resolution_x, scene.render.resolution_y) == (W, H)
    bg = camera.data.background_images[0]
    assert bg.source == "MOVIE_CLIP" and Path(bg.clip.filepath).name == "00.png" and bg.clip.frame_start == 1
    rig_data = json.loads((folder / "rig.json").read_text())
    order = importer._model_vertex_order(obj, rig_data)
    names = model.joint_names
    head = model.skin_weights[:, [names.index(n) for n in ("neck", "jaw", "eye_left", "eye_right")]].sum(1) > 0.999
    import torch

    for k in range(anim.n_frames):
        scene.frame_set(1 + k)
        # the engine's projection of frame k: its own pose (no head rotation on the neck), its camera
        pose = np.stack([anim.joints[j][k] for j in names])
        with torch.no_grad():
            verts = model(torch.tensor(anim.meta["identity"], dtype=torch.float32)[None],
                          torch.tensor(anim.weights[k], dtype=torch.float32)[None],
                          torch.tensor(pose, dtype=torch.float32)[None]).vertices[0].double().numpy()
        x = (verts @ anim.camera["R"][k].T + anim.camera["t"][k]) @ anim.camera["K"][k].T
        expected = x[:, :2] / x[:, 2:]
        world = np.array(obj.matrix_world)
        pts = _evaluated(bpy, obj)[order] @ world[:3, :3].T + world[:3, 3]
        seen = np.array([[c.x * W, (1 - c.y) * H] for c in
                         (world_to_camera_view(scene, camera, Vector(p)) for p in pts[head.numpy()])])
        err = np.linalg.norm(seen - expected[head.numpy()], axis=1)
        assert err.max() < 0.05, (k, err.max())  # pixels of a 192-px frame
    importer.remove_objects([o for o in (obj, obj.parent, camera) if o is not None])
    bpy.context.scene.cursor.location = (0.0, 0.0, 0.0)


@child
def test_live_link_csv_drives_the_head(blender, folder):
    bpy, animation, importer = blender
    from engine.video import formats as fmt

    obj = importer.import_result(bpy.context, folder, replace=False, apply_expression=False)
    rig = importer.pose_rig_of(obj) or obj.parent
    jaw = rig.pose.bones["jaw"]  # a photo whose jaw is open (a network or fit that reads it)
    jaw.rotation_mode = "QUATERNION"
    jaw.rotation_quaternion = importer._bone_local_rotation(rig, "jaw", (0.25, 0.0, 0.0))
    bpy.context.view_layer.update()
    assert not np.allclose(_bone_rotation(rig, "jaw"), _bone_rotation(rig, "neck"), atol=1e-3)
    csv_anim = fmt.read_live_link_csv(folder / "animation.csv", fps=30.0)
    assert bpy.ops.facerecon.import_animation(filepath=str(folder / "animation.csv"), fps=30.0,
                                              start_frame=11) == {"FINISHED"}
    scene = bpy.context.scene
    assert (scene.frame_start, scene.frame_end) == (11, 10 + csv_anim.n_frames)
    M = importer.MODEL_TO_BLENDER
    for k in (0, csv_anim.n_frames - 1):
        scene.frame_set(11 + k)
        keys = obj.data.shape_keys.key_blocks
        assert keys["jawOpen"].value == pytest.approx(csv_anim.weight("jawOpen")[k], abs=1e-5)
        assert keys["eyeLookOutLeft"].value == pytest.approx(csv_anim.weight("eyeLookOutLeft")[k], abs=1e-5)
        neck = fmt.rotvec_to_matrix(csv_anim.head_rotation[k])
        np.testing.assert_allclose(_bone_rotation(rig, "neck"), M @ neck @ M.T, atol=1e-4)
        # the jaw is keyed closed (the CSV opens the mouth by the jawOpen shape key alone)
        np.testing.assert_allclose(_bone_rotation(rig, "jaw"), _bone_rotation(rig, "neck"), atol=1e-4)
    # the bone controls of the animated neck gave way to the keys
    assert not any(p.startswith("neck") for p in rig.get("facerecon_pose_controls", []))
    importer.remove_objects([obj, rig])


@child
def test_strength_scales_our_heads_keys_and_jaw(blender, folder):
    """*Strength* on a reconstructed head: every expression key and the jaw bone's opening."""
    bpy, animation, importer = blender
    from engine.video import formats as fmt

    anim = fmt.read_json(folder / "animation.json")
    obj = importer.import_result(bpy.context, folder, replace=False, apply_expression=False)
    rig = importer.pose_rig_of(obj) or obj.parent
    settings = bpy.context.scene.facerecon_animate
    settings.strength = 0.5
    try:
        assert bpy.ops.facerecon.import_animation(filepath=str(folder / "animation.json")) == {"FINISHED"}
    finally:
        settings.strength = 1.0
    k = int(np.argmax(np.linalg.norm(anim.joints["jaw"], axis=1)))  # the widest opening
    bpy.context.scene.frame_set(1 + k)
    keys = obj.data.shape_keys.key_blocks
    for name in anim.names:
        assert keys[name].value == pytest.approx(min(max(0.5 * anim.weight(name)[k], 0.0), 1.0), abs=1e-5), name
    M = importer.MODEL_TO_BLENDER
    jaw_local = np.linalg.inv(_bone_rotation(rig, "neck")) @ _bone_rotation(rig, "jaw")
    np.testing.assert_allclose(jaw_local, M @ fmt.rotvec_to_matrix(0.5 * anim.joints["jaw"][k]) @ M.T, atol=1e-4)
    importer.remove_objects([obj, rig])


def _video_with_sound(bpy, frames_dir: Path, out: Path) -> Path:
    """The clip's frames as an mp4 with a 440-Hz tone for sound, encoded by Blender itself
    (its sequencer and FFmpeg: no other encoder here writes sound)."""
    import aud

    tone = out.with_suffix(".wav")
    aud.Sound.sine(440, 48000).limit(0, 1.0).write(str(tone), 48000, aud.CHANNELS_MONO, aud.FORMAT_S16,
                                                   aud.CONTAINER_WAV, aud.CODEC_PCM)
    images = sorted(frames_dir.glob("*.png"))
    scene = bpy.data.scenes.new("encode")
    scene.render.fps, scene.frame_start, scene.frame_end = 30, 1, len(images)
    scene.render.resolution_x = scene.render.resolution_y = 192
    editor = scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    strip = strips.new_image("frames", str(images[0]), 1, 1)
    for p in images[1:]:
        strip.elements.append(p.name)
    strips.new_sound("tone", str(tone), 2, 1)
    r = scene.render
    if hasattr(r.image_settings, "media_type"):  # Blender 5: video output is a media type of its own
        r.image_settings.media_type = "VIDEO"
    r.image_settings.file_format = "FFMPEG"
    r.ffmpeg.format, r.ffmpeg.codec, r.ffmpeg.audio_codec = "MPEG4", "H264", "AAC"
    r.filepath = str(out)
    bpy.ops.render.render(animation=True, scene=scene.name)
    bpy.data.scenes.remove(scene)
    return out


@child
def test_the_videos_sound_plays_in_step(blender, folder, tmp_path):
    """*Video sound*: the video's sound as a sequencer strip placed by time (the video's 0 s at
    the scene frame where it falls), for a head and for a character; replaced, not piled up, on
    a second import; a video without sound says so; a CSV (no video) adds nothing."""
    bpy, animation, importer = blender
    import cv2

    video = _video_with_sound(bpy, Path(os.environ["FACERECON_CLIP_FOLDER"]), tmp_path / "talk.mp4")
    doc = json.loads((folder / "animation.json").read_text())
    doc["source"] = str(video)
    anim_dir = tmp_path / "anim"
    anim_dir.mkdir()
    (anim_dir / "animation.json").write_text(json.dumps(doc))
    (anim_dir / "animation.csv").write_bytes((folder / "animation.csv").read_bytes())
    obj = importer.import_result(bpy.context, folder, replace=False, apply_expression=False)
    scene = bpy.context.scene
    for _ in range(2):  # the second import replaces the strip
        assert bpy.ops.facerecon.import_animation(filepath=str(anim_dir / "animation.json"), start_frame=3,
                                                  camera=False) == {"FINISHED"}
    editor = scene.sequence_editor
    strips = [s for s in (editor.strips if hasattr(editor, "strips") else editor.sequences)
              if s.get(animation.SOUND_OWNER) == obj.name]
    assert len(strips) == 1 and strips[0].type == "SOUND"
    strip = strips[0]
    assert strip.frame_start == 3 and strip.sound.samplerate == 48000 and scene.sync_mode == "AUDIO_SYNC"
    assert Path(bpy.path.abspath(strip.sound.filepath)) == video
    # an animation of the video from 0.5 s on (``--start 0.5``): the sound starts 15 frames earlier
    late = dict(doc, frames=[dict(f, time=f["time"] + 0.5, frame=f["frame"] + 15) for f in doc["frames"]])
    (anim_dir / "animation.json").write_text(json.dumps(late))
    assert bpy.ops.facerecon.import_animation(filepath=str(anim_dir / "animation.json"), start_frame=3,
                                              camera=False) == {"FINISHED"}
    strip = next(s for s in (editor.strips if hasattr(editor, "strips") else editor.sequences)
                 if s.get(animation.SOUND_OWNER) == obj.name)
    assert strip.frame_start == pytest.approx(3 - 15)
    (anim_dir / "animation.json").write_text(json.dumps(doc))
    # a character animated from the same file gets its own strip
    rig, meshes = _character(bpy)
    assert bpy.ops.facerecon.import_animation(filepath=str(anim_dir / "animation.json")) == {"FINISHED"}
    owners = sorted(s.get(animation.SOUND_OWNER) for s in (editor.strips if hasattr(editor, "strips")
                                                          else editor.sequences))
    assert owners == sorted([obj.name, rig.name])
    # a video without sound; a CSV
    silent = tmp_path / "silent.mp4"
    writer = cv2.VideoWriter(str(silent), cv2.VideoWriter_fourcc(*"mp4v"), 30, (64, 64))
    for i in range(len(doc["frames"])):
        writer.write(np.full((64, 64, 3), 8 * i, np.uint8))
    writer.release()
    doc["source"] = str(silent)
    (anim_dir / "animation.json").write_text(json.dumps(doc))
    from engine.video import formats as fmt

    anim = animation.read_character_animation(anim_dir / "animation.json")
    done = animation.apply_to_character(bpy.context, meshes, rig, None, anim, set_scene=False, sound=True)
    assert done["sound"] == "the video has no sound"
    csv_anim = fmt.read_live_link_csv(anim_dir / "animation.csv", fps=30.0)
    assert animation.apply_to_character(bpy.context, meshes, rig, None, csv_anim, set_scene=False,
                                        sound=True)["sound"] is None
    importer.remove_objects([obj, obj.parent, *meshes, rig])


@child
def test_animate_operator_builds_an_animated_head(blender):
    bpy, animation, importer = blender
    clip = os.environ["FACERECON_CLIP_FOLDER"]
    settings = bpy.context.scene.facerecon
    settings.method = "mofa"
    anim_settings = bpy.context.scene.facerecon_animate
    anim_settings.video, anim_settings.target = clip, "NEW"
    before = set(bpy.data.objects)
    assert bpy.ops.facerecon.animate_video(timeout=300) == {"FINISHED"}
    obj = bpy.context.active_object
    assert obj not in before and obj.data.shape_keys.animation_data.action is not None
    n = len(list(Path(clip).glob("*.png")))
    scene = bpy.context.scene
    assert (scene.frame_start, scene.frame_end, scene.render.fps) == (1, n, 30)
    fcurves = animation.fcurves_of(obj.data.shape_keys)  # (Blender 5: the slot's channelbag)
    assert len(fcurves) == len(obj.data.shape_keys.key_blocks) - 1
    assert all(len(fc.keyframe_points) == n for fc in fcurves)
    assert "frames 1-" in bpy.context.window_manager.facerecon_job.status
    # a missing video is refused before any engine starts
    anim_settings.video = clip + "_missing"
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.facerecon.animate_video()


def _character(bpy, yaw_deg: float = 30.0):
    """A character of one's own: a body mesh with ARKit keys in other spellings (one driven by
    the character's own driver, one no unit), a teeth mesh with its own jawOpen, under an
    FBX-like armature (Mixamo's bone names, rotated 90° about X, scale 0.01, turned about Z)."""
    for o in bpy.context.selected_objects:
        o.select_set(False)
    data = bpy.data.armatures.new("CharacterRig")
    rig = bpy.data.objects.new("CharacterRig", data)
    bpy.context.scene.collection.objects.link(rig)
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    bones = {}
    for name, head, tail, parent in (("mixamorig:Hips", (0, 100, 0), (0, 110, 0), None),
                                     ("mixamorig:Neck", (0, 150, 0), (0, 160, 2), "mixamorig:Hips"),
                                     ("mixamorig:Head", (0, 160, 2), (0, 178, 1), "mixamorig:Neck"),
                                     ("mixamorig:HeadTop_End", (0, 178, 1), (0, 185, 1), "mixamorig:Head")):
        b = data.edit_bones.new(name)
        b.head, b.tail, b.roll = head, tail, 0.3
        if parent:
            b.parent = bones[parent]
        bones[name] = b
    bpy.ops.object.mode_set(mode="OBJECT")
    rig.rotation_euler = (np.pi / 2, 0.0, np.radians(yaw_deg))
    rig.scale = (0.01, 0.01, 0.01)
    meshes = []
    for name, keys in (("Body", ["EyeBlink_L", "blendShape1.jawOpen", "Mouth_Smile_R", "browInnerUp", "Custom"]),
                       ("Teeth", ["jawOpen"])):
        me = bpy.data.meshes.new(name)
        me.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
        obj = bpy.data.objects.new(name, me)
        bpy.context.scene.collection.objects.link(obj)
        obj.parent = rig
        for k in ["Basis", *keys]:
            obj.shape_key_add(name=k)
        meshes.append(obj)
    meshes[0].data.shape_keys.key_blocks["browInnerUp"].driver_add("value").driver.expression = "0.5"
    rig.select_set(True)  # the armature selected: its meshes come with it
    bpy.context.view_layer.update()
    return rig, meshes


def _frame_at(bpy, anim, k: int, start: int, fps: float) -> None:
    """Go to the scene time of the animation's sample ``k`` (keyed from ``start`` at ``fps``)."""
    f = start + (anim.times[k] - anim.times[0]) * fps
    bpy.context.scene.frame_set(int(np.floor(f + 1e-6)), subframe=float(f - np.floor(f + 1e-6)))


def _check_character(bpy, rig, meshes, anim, start: int, yaw_deg: float, fps: float) -> None:
    """Every spelled ARKit key holds the file's weight at its time (keys placed by time at the
    scene's rate ``fps``), the head bone turned in the world as the subject's head did (turned
    with the character), the key that is no unit not keyed."""
    from blender_addon import animation, importer
    from blender_addon.retarget import _orthonormal
    from engine.video import formats as fmt

    M = importer.MODEL_TO_BLENDER
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    Z = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    A = _orthonormal(np.array(rig.matrix_world.to_3x3()))
    body, teeth = (o.data.shape_keys.key_blocks for o in meshes)
    for k in (0, anim.n_frames // 2, anim.n_frames - 1):
        _frame_at(bpy, anim, k, start, fps)
        assert body["EyeBlink_L"].value == pytest.approx(anim.weight("eyeBlinkLeft")[k], abs=1e-5)
        assert body["Mouth_Smile_R"].value == pytest.approx(anim.weight("mouthSmileRight")[k], abs=1e-5)
        for key in (body["blendShape1.jawOpen"], teeth["jawOpen"]):
            assert key.value == pytest.approx(anim.weight("jawOpen")[k], abs=1e-5)
        turn = fmt.rotvec_to_matrix(anim.head_rotation[k])
        np.testing.assert_allclose(A @ _bone_rotation(rig, "mixamorig:Head") @ A.T, Z @ M @ turn @ M.T @ Z.T,
                                   atol=1e-4)
        np.testing.assert_allclose(_bone_rotation(rig, "mixamorig:Neck"), np.eye(3), atol=1e-6)
    paths = {fc.data_path for fc in animation.fcurves_of(meshes[0].data.shape_keys)}
    assert 'key_blocks["Custom"].value' not in paths and 'key_blocks["EyeBlink_L"].value' in paths


@child
def test_a_character_of_ones_own_is_keyed_from_the_file(blender, folder):
    """Import Animation File with a character selected (no reconstructed head active): picking
    animation.json keys its ARKit curves (the animation.csv beside it) on the JSON's frames."""
    bpy, animation, importer = blender
    anim = animation.read_character_animation(folder / "animation.json")
    assert anim.n_frames == len(json.loads((folder / "animation.json").read_text())["frames"])
    rig, meshes = _character(bpy)
    # work of the user's on the character: keys on a shape key and on the head bone's Euler rotation
    rig.pose.bones["mixamorig:Head"].rotation_mode = "XYZ"
    for f in (1, 20, 40):
        rig.pose.bones["mixamorig:Head"].keyframe_insert("rotation_euler", frame=f)  # 3 curves x 3 keys
        meshes[0].data.shape_keys.key_blocks["EyeBlink_L"].keyframe_insert("value", frame=f)
    scene = bpy.context.scene
    # a scene of the user's at 24 frames/s (the clip is 30): its rate and range stay, keys go by time
    scene.render.fps, scene.render.fps_base, scene.frame_start, scene.frame_end = 24, 1.0, 1, 250
    done = animation.apply_to_character(bpy.context, meshes, rig, "mixamorig:Head",
                                        animation.read_character_animation(folder / "animation.json"),
                                        start_frame=5, set_scene=False)
    assert done["replaced"] == 9 + 3  # and the report says so
    assert "12 earlier keyframes of these shape keys and the head bone were replaced" in \
        animation.character_report(done, meshes)
    assert bpy.ops.facerecon.import_animation(filepath=str(folder / "animation.json"), start_frame=5) == {"FINISHED"}
    assert (scene.frame_start, scene.frame_end, scene.render.fps) == (1, 250, 24)
    _check_character(bpy, rig, meshes, anim, 5, 30.0, 24.0)
    last_key = animation.fcurves_of(meshes[0].data.shape_keys)[0].keyframe_points[-1].co.x
    assert last_key == pytest.approx(5 + (anim.times[-1] - anim.times[0]) * 24, abs=1e-4)
    # what was keyed and what was not, as the report says it
    done = animation.apply_to_character(bpy.context, meshes, rig, "mixamorig:Head", anim, set_scene=False)
    assert done["bone"] == "mixamorig:Head" and done["keys"] == 5 and done["driven"] == 1
    assert set(done["units"]) == {"eyeBlinkLeft", "jawOpen", "mouthSmileRight", "browInnerUp"}
    assert "cheekPuff" in done["missing"] and len(done["missing"]) == 48
    text = animation.character_report(done, meshes)
    assert "4 ARKit units on 5 shape keys of Body, Teeth" in text and "bone 'mixamorig:Head'" in text
    assert "1 of those shape keys has a driver of the character's own" in text
    # no bone: keys only
    assert animation.apply_to_character(bpy.context, meshes, None, None, anim, set_scene=False)["bone"] is None
    # the sidebar's Strength and Rest frame: stronger curves, the rest frame's expression taken out
    settings = bpy.context.scene.facerecon_animate
    settings.strength, settings.rest_frame = 1.5, 6  # scene frame 6: nearest the second sample (5.8)
    assert bpy.ops.facerecon.import_animation(filepath=str(folder / "animation.csv"), fps=30.0,
                                              start_frame=5) == {"FINISHED"}
    w, r = anim.weight("jawOpen"), anim.weight("jawOpen")[1]
    for k in (1, anim.n_frames - 1):
        _frame_at(bpy, anim, k, 5, 24.0)
        expected = min(max(1.5 * (w[k] - r) / (1 - r), 0.0), 1.0)
        assert meshes[1].data.shape_keys.key_blocks["jawOpen"].value == pytest.approx(expected, abs=1e-5)
    settings.rest_frame = 100  # past the animation's last frame: refused, saying which frames it has
    with pytest.raises(RuntimeError, match="The rest frame 100 is outside the animation's frames 5-12"):
        bpy.ops.facerecon.import_animation(filepath=str(folder / "animation.csv"), fps=30.0, start_frame=5)
    settings.strength, settings.rest_frame = 1.0, 0
    # Mirror (a mirrored selfie video): the left key takes the right curve, the head turns the other way
    settings.mirror = True
    try:
        assert bpy.ops.facerecon.import_animation(filepath=str(folder / "animation.json"),
                                                  start_frame=5) == {"FINISHED"}
    finally:
        settings.mirror = False
    from blender_addon.retarget import _orthonormal
    from engine.video import formats as fmt

    M, S = importer.MODEL_TO_BLENDER, np.diag([-1.0, 1.0, 1.0])
    c, s_ = np.cos(np.radians(30.0)), np.sin(np.radians(30.0))
    Z = np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]])
    A = _orthonormal(np.array(rig.matrix_world.to_3x3()))
    for k in (0, anim.n_frames - 1):
        _frame_at(bpy, anim, k, 5, 24.0)
        assert meshes[0].data.shape_keys.key_blocks["EyeBlink_L"].value == pytest.approx(
            anim.weight("eyeBlinkRight")[k], abs=1e-5)
        turn = S @ fmt.rotvec_to_matrix(anim.head_rotation[k]) @ S
        np.testing.assert_allclose(A @ _bone_rotation(rig, "mixamorig:Head") @ A.T, Z @ M @ turn @ M.T @ Z.T,
                                   atol=1e-4)
    # a mesh without ARKit keys is refused with the reason; nothing selected: the operator is greyed out
    for o in bpy.context.selected_objects:
        o.select_set(False)
    me = bpy.data.meshes.new("Prop")
    me.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    prop = bpy.data.objects.new("Prop", me)
    bpy.context.scene.collection.objects.link(prop)
    prop.shape_key_add(name="Basis")
    prop.shape_key_add(name="Open")
    prop.select_set(True)
    bpy.context.view_layer.objects.active = prop
    with pytest.raises(RuntimeError, match="No shape key of Prop is an ARKit unit"):
        bpy.ops.facerecon.import_animation(filepath=str(folder / "animation.csv"), fps=30.0)
    prop.select_set(False)
    bpy.context.view_layer.objects.active = None
    assert not bpy.ops.facerecon.import_animation.poll()
    importer.remove_objects([prop, *meshes, rig])


@child
def test_animate_operator_keys_a_character(blender):
    """Animate from Video with the Character target: the engine animates the clip, no head is
    imported, the selected character is keyed from its animation.csv."""
    bpy, animation, importer = blender
    clip = os.environ["FACERECON_CLIP_FOLDER"]
    bpy.context.scene.facerecon.method = "mofa"
    settings = bpy.context.scene.facerecon_animate
    settings.video, settings.target = clip, "CHARACTER"
    rig, meshes = _character(bpy, yaw_deg=-70.0)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base, scene.frame_start, scene.frame_end = 30, 1.0, 1, 3
    before = set(bpy.data.objects)
    assert bpy.ops.facerecon.animate_video(timeout=300) == {"FINISHED"}
    assert set(bpy.data.objects) == before  # nothing imported
    n = len(list(Path(clip).glob("*.png")))
    assert (scene.frame_start, scene.frame_end) == (1, n)  # widened to hold the keys
    status = bpy.context.window_manager.facerecon_job.status
    assert status.startswith("Body: frames 1-") and f"-{n} keyed" in status
    fcurves = animation.fcurves_of(meshes[0].data.shape_keys)
    assert all(len(fc.keyframe_points) == n for fc in fcurves) and len(fcurves) == 4
    assert animation.fcurves_of(rig) is not None
    settings.target = "NEW"
    importer.remove_objects([*meshes, rig])


@child
def test_gltf_importer_plays_animation_glb(blender, folder):
    bpy, animation, importer = blender
    from engine.video import formats as fmt

    anim = fmt.read_json(folder / "animation.json")
    before = set(bpy.data.objects)
    assert bpy.ops.import_scene.gltf(filepath=str(folder / "animation.glb")) == {"FINISHED"}
    new = [o for o in bpy.data.objects if o not in before]
    mesh = next(o for o in new if o.type == "MESH" and o.data.shape_keys)
    arm = next(o for o in new if o.type == "ARMATURE")
    assert mesh.data.shape_keys.animation_data and mesh.data.shape_keys.animation_data.action
    assert arm.animation_data and arm.animation_data.action
    # the importer keys morph weights at glTF's times: a weight plays back at its frame
    k = anim.n_frames - 1
    name = anim.names[int(np.argmax(anim.weights[k]))]
    bpy.context.scene.frame_set(int(round(anim.times[k] * bpy.context.scene.render.fps / 1.0)) + 1)
    assert mesh.data.shape_keys.key_blocks[name].value == pytest.approx(anim.weight(name)[k], abs=0.02)
    importer.remove_objects(new)
