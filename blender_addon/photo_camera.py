"""The photo's camera: a Blender camera that sees a reconstructed head as the photo did.

The engine's fit is a pinhole camera (``params.json``: ``K``, ``R``, ``t``, ``image_size``;
OpenCV axes, ``X_cam = R @ X_model + t``, docs/conventions.md). :func:`camera_settings`
turns it into Blender's camera model (bpy-free, so it is tested without Blender):

* pose: the camera's centre ``-Rᵀt`` and axes ``Rᵀ`` in the model frame, Blender's camera
  looking down its local −Z with +Y up (OpenCV's +Y down, +Z forward flipped);
* lens: the focal length in millimetres on a 36-mm sensor fitted to the photo's longer side
  (``fx · 36 / W`` for a landscape photo), the principal point as Blender's lens shift (in
  units of that side: the engine's principal point need not be the photo's centre);
* the render size: the photo's (only the aspect ratio matters; square pixels, as the
  engine's cameras have).

:func:`add_photo_camera` adds it to the scene beside the head (``<head>_photo_camera``),
parented to the head's top object (the rig, else the mesh) so it follows when the head is
moved, with the photo behind the head in camera view (the result folder's ``photo.jpg``: the
photo upright as the engine read it, packed into the .blend on import, so the temporary
folder of a reconstruction may go; heads imported before: the folder's file, else the
photo's own file when it is still there). Seen through it at the photo pose, the head lies
on the photo's face; the heads of a group photo's other faces can be moved to where it sees
them (``arrange``), so that one camera shows the group.

:func:`key_video_camera` does the same for a video's animation: a camera keyed per frame
(``<head>_video_camera``) from the per-frame camera of ``animation.json``, moved to see the
head as the add-on animates it (the head's rotation played on its neck bone:
:func:`head_turn`, :func:`turned_extrinsics`), with the video playing behind it in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The sensor width the lens is expressed on (millimetres; full frame, Blender's default).
SENSOR_MM = 36.0

#: Object-property values marking the photo camera and the video camera of a head (beside
#: the head's result key).
ROLE = "photo_camera"
VIDEO_ROLE = "video_camera"

#: OpenCV camera axes (x right, y down, z forward) in Blender camera axes (x right, y up, -z forward).
_CV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0])


class PhotoCameraError(Exception):
    """The head has no camera to rebuild (imported by an older version, or params.json lacks it)."""


@dataclass(frozen=True)
class CameraSettings:
    """Blender's camera for a fitted pinhole camera (:func:`camera_settings`)."""

    camera_to_model: np.ndarray  # (4, 4): Blender camera axes -> the model frame (metres)
    lens_mm: float
    sensor_fit: str  # "HORIZONTAL" (landscape or square photo) or "VERTICAL"
    shift_x: float  # lens shift, in units of the photo's longer side
    shift_y: float
    resolution: tuple[int, int]  # (W, H) pixels


def camera_settings(K, R, t, image_size) -> CameraSettings:
    """Blender's camera that projects like ``u = fx·x/z + cx`` after ``x = R X + t``.

    ``K`` (3, 3), ``R`` (3, 3), ``t`` (3,), ``image_size`` (W, H) pixels, as in params.json
    (flat lists of 9 numbers are accepted too). Raises :class:`PhotoCameraError` for a
    camera that cannot be one (no focal length, a degenerate rotation, no image size)."""
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    W, H = (int(round(float(v))) for v in np.asarray(image_size, dtype=np.float64).reshape(2))
    if W <= 0 or H <= 0 or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise PhotoCameraError(f"the fit's camera is not usable (K {K.tolist()}, image size {W} x {H})")
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise PhotoCameraError("the fit's camera rotation R is not a rotation")
    longer = max(W, H)
    landscape = W >= H
    lens = (K[0, 0] / W if landscape else K[1, 1] / H) * SENSOR_MM
    m = np.eye(4)
    m[:3, :3] = R.T @ _CV_TO_BLENDER_CAMERA
    m[:3, 3] = -R.T @ t
    return CameraSettings(camera_to_model=m, lens_mm=float(lens),
                          sensor_fit="HORIZONTAL" if landscape else "VERTICAL",
                          shift_x=float((W / 2.0 - K[0, 2]) / longer),
                          shift_y=float((K[1, 2] - H / 2.0) / longer), resolution=(W, H))


def project(settings: CameraSettings, points_model) -> np.ndarray:
    """(N, 2) pixels (x right, y down, the photo's frame) of model-frame points (N, 3) through
    Blender's camera model with ``settings``: focal length on the sensor fitted to the longer
    side, shift in units of that side. (What Blender's camera does; the add-on's tests check
    it against Blender's own ``world_to_camera_view``.)"""
    pts = np.asarray(points_model, dtype=np.float64).reshape(-1, 3)
    inv = np.linalg.inv(settings.camera_to_model)
    cam = pts @ inv[:3, :3].T + inv[:3, 3]  # Blender camera axes: looking down -z
    W, H = settings.resolution
    longer = max(W, H)
    f_px = settings.lens_mm / SENSOR_MM * longer
    depth = -cam[:, 2]
    u = W / 2.0 + f_px * cam[:, 0] / depth - settings.shift_x * longer
    v = H / 2.0 - f_px * cam[:, 1] / depth + settings.shift_y * longer
    return np.stack([u, v], axis=1)


def photo_file(folder: Path, params: dict) -> Path | None:
    """The picture to show behind the head: the folder's ``photo.jpg`` (upright, as the engine
    read it), else the photo the folder was made from when it is still there (older folders),
    else None."""
    own = Path(folder) / "photo.jpg"
    if own.is_file():
        return own
    original = params.get("photo")
    if original and Path(original).is_file():
        return Path(original)
    return None


def head_turn(rest_joints: dict, parents: dict, rotations: dict, head_bone: str,
              head_rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How the add-on's animation moves the head beyond the engine's own pose of a frame:
    ``(R_A, c)``, the rotation ``R_A`` (model frame) about the point ``c`` that takes the
    head as the engine posed it (joint rotations ``rotations``) to the head as Blender poses it
    (the same, with ``head_rotation`` composed onto ``head_bone``'s own rotation:
    blender_addon/animation.py). ``rest_joints`` {name: (3,)} model frame, ``parents`` {name:
    parent name or None}, ``rotations`` {name: (3, 3)} local rotations (absent: none).

    Along the chain from the root: a joint's posed position is its parent's plus the parent's
    world rotation applied to their rest offset; the head bone's extra rotation turns
    everything below it about its posed position, in its parent's world frame."""
    chain = [head_bone]
    while parents.get(chain[-1]) is not None:
        chain.append(parents[chain[-1]])
    chain.reverse()
    eye = np.eye(3)
    world_rot, position = eye, np.asarray(rest_joints[chain[0]], np.float64)
    parent_rot = eye
    for prev, joint in zip([None] + chain[:-1], chain):
        if prev is not None:
            position = position + world_rot @ (np.asarray(rest_joints[joint], np.float64)
                                               - np.asarray(rest_joints[prev], np.float64))
        parent_rot = world_rot
        world_rot = world_rot @ np.asarray(rotations.get(joint, eye), np.float64)
    R_A = parent_rot @ np.asarray(head_rotation, np.float64) @ parent_rot.T
    return R_A, position


def same_view_translation(K, t, K_new) -> np.ndarray:
    """The translation that shows a head (model origin at ``t``, camera frame) through ``K_new``
    where ``K`` showed it: at the same pixel and the same size (its depth scaled by the focal
    lengths' ratio); exact for the origin, a small perspective change elsewhere."""
    K, t, K_new = (np.asarray(v, np.float64) for v in (K, t, K_new))
    pixel = K @ t / t[2]
    depth = t[2] * K_new[0, 0] / K[0, 0]
    return depth * (np.linalg.inv(K_new) @ pixel)


def turned_extrinsics(R, t, R_A, c) -> tuple[np.ndarray, np.ndarray]:
    """The camera ``(R', t')`` that sees the head turned by :func:`head_turn` as ``(R, t)``
    saw it before the turn: ``x = R X + t = R' X' + t'`` for ``X' = R_A (X − c) + c``."""
    R, t, R_A, c = (np.asarray(v, np.float64) for v in (R, t, R_A, c))
    R2 = R @ R_A.T
    return R2, t + R @ c - R2 @ c


@dataclass
class PhotoCamera:
    """What :func:`add_photo_camera` (or :func:`key_video_camera`) made: the camera object,
    the picture (or video) behind the head (None when there is none) and sentences for the
    artist about what changed."""

    camera: object  # bpy.types.Object
    photo: Path | None
    notes: list[str]


def _find_camera(head, role: str):
    import bpy

    from . import importer

    key = importer.object_result_key(head)
    if key is None:
        return None
    return next((o for o in bpy.data.objects if o.type == "CAMERA" and o.get("facerecon_role") == role
                 and importer.object_result_key(o) == key), None)


def find_photo_camera(head):
    """The photo camera made earlier for ``head`` (a head's mesh or rig), or None."""
    return _find_camera(head, ROLE)


def find_video_camera(head):
    """The video camera keyed earlier for ``head``, or None."""
    return _find_camera(head, VIDEO_ROLE)


def _camera_for(context, obj, role: str, suffix: str):
    """The head's camera of ``role`` (made earlier, or new beside the head, named
    ``<head>_<suffix>``), carrying the head's result key so *Replace* finds it."""
    import bpy

    camera = _find_camera(obj, role)
    if camera is None:
        name = f"{obj.get('facerecon_name') or obj.name}_{suffix}"
        camera = bpy.data.objects.new(name, bpy.data.cameras.new(name))
        collection = obj.users_collection[0] if obj.users_collection else context.scene.collection
        collection.objects.link(camera)
    for prop in ("facerecon_name", "facerecon_photo", "facerecon_face_index"):
        if obj.get(prop) is not None:
            camera[prop] = obj[prop]
    camera["facerecon_role"] = role
    return camera


def _set_lens(cam, settings: CameraSettings) -> None:
    cam.type = "PERSP"
    cam.sensor_fit = settings.sensor_fit
    cam.sensor_width = cam.sensor_height = SENSOR_MM
    cam.lens = settings.lens_mm
    cam.shift_x, cam.shift_y = settings.shift_x, settings.shift_y
    # near and far around the head (metres): the camera stands where the photographer stood
    distance = float(np.linalg.norm(settings.camera_to_model[:3, 3]))
    cam.clip_start = max(0.01, 0.05 * distance)
    cam.clip_end = max(100.0, 10.0 * distance)


def _model_to_parent(context, obj):
    """``(top, M)``: the object a head's camera is parented to (its rig, else the mesh) and the
    4x4 matrix (numpy) from the model frame to that object's local space."""
    from . import importer

    top = importer.pose_rig_of(obj) or obj
    context.view_layer.update()  # obj.matrix_world after its rig was just placed (an import's Replace)
    model_to_local = np.eye(4)
    model_to_local[:3, :3] = importer.MODEL_TO_BLENDER  # the mesh's own coordinates: Blender's axes
    to_top = np.array(top.matrix_world.inverted() @ obj.matrix_world)
    return top, to_top @ model_to_local


def _show_behind(cam, source, *, movie: bool = False) -> None:
    """``source`` (a picture, or a movie clip: a video or an image sequence, with ``movie``)
    behind the head in camera view, filling the frame."""
    cam.background_images.clear()
    bg = cam.background_images.new()
    if movie:
        bg.source = "MOVIE_CLIP"
        bg.clip = source
    else:
        bg.image = source
    bg.alpha = 1.0
    bg.frame_method = "STRETCH"  # the picture fills the camera's frame exactly
    bg.display_depth = "BACK"
    cam.show_background_images = True


def _make_active(context, camera, resolution: tuple[int, int]) -> list[str]:
    """The scene's camera, render size the picture's, every 3D view through it; notes."""
    scene = context.scene
    scene.camera = camera
    W, H = resolution
    before = (scene.render.resolution_x, scene.render.resolution_y)
    notes = []
    if before != (W, H) or (scene.render.pixel_aspect_x, scene.render.pixel_aspect_y) != (1.0, 1.0):
        scene.render.resolution_x, scene.render.resolution_y = W, H
        scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
        notes.append(f"render size set to {W} x {H} (was {before[0]} x {before[1]})")
    look_through(context, camera)
    return notes


_CAMERA_KEYS = ("facerecon_K", "facerecon_R", "facerecon_t", "facerecon_image_size")


def _fitted(obj) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(K, R, t, image_size)`` a head keeps from its params.json (importer._store_params)."""
    if any(obj.get(k) is None for k in _CAMERA_KEYS):
        raise PhotoCameraError(f"{obj.name} has no fitted camera (import its result folder again)")
    K, R, t, size = (np.asarray(list(obj[k]), np.float64) for k in _CAMERA_KEYS)
    return K.reshape(3, 3), R.reshape(3, 3), t.reshape(3), size


def other_faces(obj) -> list:
    """The heads in the file made from other faces of ``obj``'s photo (a group photo)."""
    import bpy

    from . import importer

    key = importer.object_result_key(obj)
    if key is None:
        return []
    return [o for o in bpy.data.objects if o.type == "MESH" and o is not obj and o.get("facerecon_K") is not None
            and (k := importer.object_result_key(o)) is not None and k[0] == key[0] and k[1] != key[1]]


def add_photo_camera(context, obj, *, make_active: bool = True, arrange: bool = True,
                     in_renders: bool = False) -> PhotoCamera:
    """Add (or update) the photo camera of the head mesh ``obj``.

    ``make_active``: make it the scene's camera, set the render size to the photo's (the
    camera sees the photo's frame only at its aspect ratio) and look through it in every 3D
    view. ``arrange``: the heads of the photo's other faces (a group photo's) move to where
    the camera sees them as the photo does, so one camera shows the whole group (each fit
    estimates its head's own distance: the group's depths are the fits'). ``in_renders``: the
    scene's world becomes the head's photo lighting with the photo behind the head for camera
    rays (``importer.photo_world``'s backdrop), and the view transform *Standard*, so that a
    render through the camera is the head on the photo in the photo's own colours. Raises
    :class:`PhotoCameraError` when ``obj`` holds no fitted camera."""
    import bpy
    from mathutils import Matrix

    from . import importer

    mine_K, R, t, size = _fitted(obj)
    settings = camera_settings(mine_K, R, t, size)
    camera = _camera_for(context, obj, ROLE, "photo_camera")
    _set_lens(camera.data, settings)
    top, model_to_top = _model_to_parent(context, obj)
    camera.parent = top
    camera.matrix_parent_inverse = Matrix.Identity(4)
    camera.matrix_basis = Matrix((model_to_top @ settings.camera_to_model).tolist())

    notes: list[str] = []
    if arrange:
        context.view_layer.update()
        seen_from = np.array(camera.matrix_world)
        moved = []
        for other in other_faces(obj):
            try:
                K, R, t, _ = _fitted(other)
            except PhotoCameraError:
                continue
            if not np.allclose(K, mine_K, rtol=1e-4, atol=1e-3):  # another focal length (a network's crop camera)
                t = same_view_translation(K, t, mine_K)
            theirs = camera_settings(mine_K, R, t, settings.resolution)
            other_top, other_to_top = _model_to_parent(context, other)
            # the other head's top placed so that its own fitted camera is this one
            other_top.matrix_world = Matrix((seen_from @ np.linalg.inv(other_to_top @ theirs.camera_to_model)).tolist())
            moved.append(other.name)
        if moved:
            notes.append(f"moved {', '.join(moved)} where the photo shows them")
    image = bpy.data.images.get(str(obj.get("facerecon_photo_image", "")))  # photo.jpg, packed on import
    if image is not None:
        picture = Path(image.filepath)
    else:  # heads imported before photo.jpg was packed: the folder's file, else the photo's own
        folder = Path(str(obj.get("facerecon_folder", "")))
        picture = photo_file(folder, importer.read_params(folder) if (folder / "params.json").is_file() else {})
        if picture is not None:
            image = bpy.data.images.load(str(picture), check_existing=True)
    if image is None:
        camera.data.background_images.clear()
        notes.append("the photo is not there any more: the camera has no background")
    else:
        _show_behind(camera.data, image)
    if make_active:
        notes += _make_active(context, camera, settings.resolution)
    if in_renders and image is not None and obj.get("facerecon_sh") is not None:
        scene = context.scene
        before = scene.world.name if scene.world is not None else "none"
        lighting = {"sh": list(obj["facerecon_sh"]), "R": list(obj["facerecon_R"])}
        scene.world = importer.photo_world(str(obj.get("facerecon_name") or obj.name), lighting, backdrop=image)
        notes.append(f"world '{scene.world.name}' with the photo behind the head in renders (was '{before}')")
        if scene.view_settings.view_transform != "Standard":  # the photo's own colours
            notes.append(f"view transform Standard (was {scene.view_settings.view_transform})")
            scene.view_settings.view_transform = "Standard"
    return PhotoCamera(camera, picture, notes)


def key_video_camera(context, obj, anim, frames, fmt, *, make_active: bool = True):
    """Key the video camera of the head mesh ``obj`` animated by ``anim`` (an
    ``engine.video.formats.Animation`` with its per-frame camera ``R``, ``t``, ``K``) on the
    scene ``frames``: at every frame it sees the head, as Blender poses it (the head's
    rotation on its neck bone), where the video shows it, the video behind it when it can
    be played in step. None when the animation has no camera (a Live Link Face CSV).

    The engine's per-frame camera sees the head posed without the head's rotation (which the
    camera's ``R`` holds); :func:`head_turn` and :func:`turned_extrinsics` move it to see the
    head turned on its bone instead. ``fmt``: the engine's ``engine/video/formats.py``."""
    import bpy
    from mathutils import Matrix

    from . import importer
    from .animation import _fcurve, _head_bone, _key, animated_rig

    if not {"R", "t", "K"} <= set(anim.camera):
        return None
    size = anim.meta.get("frame_size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2):
        return None
    camera = _camera_for(context, obj, VIDEO_ROLE, "video_camera")
    top, model_to_top = _model_to_parent(context, obj)
    camera.parent = top
    camera.matrix_parent_inverse = Matrix.Identity(4)
    rig = animated_rig(obj)  # the rig apply_animation turns the head with
    head_bone = _head_bone(rig) if rig is not None else None
    turned = head_bone is not None and anim.head_rotation is not None  # (as animation.apply_animation plays it)
    if turned:
        to_model = importer.MODEL_TO_BLENDER.T
        rest = {b.name: to_model @ np.array(b.head_local) for b in rig.data.bones}
        parents = {b.name: (b.parent.name if b.parent else None) for b in rig.data.bones}
    locs, quats, lens = [], [], []
    for k in range(anim.n_frames):
        R, t = anim.camera["R"][k], anim.camera["t"][k]
        if turned:
            rotations = {j: fmt.rotvec_to_matrix(v[k]) for j, v in anim.joints.items() if j in rest}
            R_A, pivot = head_turn(rest, parents, rotations, head_bone, fmt.rotvec_to_matrix(anim.head_rotation[k]))
            R, t = turned_extrinsics(R, t, R_A, pivot)
        settings = camera_settings(anim.camera["K"][k], R, t, size)
        loc, rot, _ = Matrix((model_to_top @ settings.camera_to_model).tolist()).decompose()
        q = np.array(rot)
        if quats and np.dot(q, quats[-1]) < 0:  # sign continuity: keys interpolate component-wise
            q = -q
        locs.append(np.array(loc))
        quats.append(q)
        lens.append((settings.lens_mm, settings.shift_x, settings.shift_y))
    _set_lens(camera.data, settings)
    camera.rotation_mode = "QUATERNION"
    action = f"{camera.name} motion"
    locs, quats, lens = np.array(locs), np.array(quats), np.array(lens)
    for c in range(3):
        _key(_fcurve(camera, action, "location", c, "Camera"), frames, locs[:, c])
    for c in range(4):
        _key(_fcurve(camera, action, "rotation_quaternion", c, "Camera"), frames, quats[:, c])
    if np.ptp(lens, axis=0).max() > 1e-6:  # a zoom: the lens and shift are keyed too
        for c, path in enumerate(("lens", "shift_x", "shift_y")):
            _key(_fcurve(camera.data, f"{camera.name} lens", path, 0, "Lens"), frames, lens[:, c])

    notes: list[str] = []
    source = video_source(anim, frames, fmt.natural_key)
    if isinstance(source, str):
        camera.data.background_images.clear()
        notes.append(f"{source}: the camera has no background")
        source = None
    else:
        path, first_scene_frame = source
        clip = bpy.data.movieclips.load(str(path), check_existing=True)
        clip.frame_start = int(first_scene_frame)
        _show_behind(camera.data, clip, movie=True)
        source = path
    if make_active:
        notes += _make_active(context, camera, (int(size[0]), int(size[1])))
    return PhotoCamera(camera, source, notes)


def video_source(anim, frames, natural_key) -> tuple[Path, int] | str:
    """``(file, scene frame of the video's first frame)`` to play behind the video camera —
    the video file, or the first image of a folder of frames (in the engine's natural order,
    ``natural_key``: a numbered sequence, which Blender plays as a clip) — when the scene
    ``frames`` of the animation's samples are the video's frames (one scene frame per video
    frame, as ``animation.timeline_rate`` places them), so that the clip plays in step;
    otherwise the reason it cannot (a sentence)."""
    import bpy

    src = anim.meta.get("source")
    if not src or not Path(src).exists():
        return "the video is not there any more"
    index = np.asarray(anim.frames if anim.frames is not None else np.arange(anim.n_frames))
    frames = np.asarray(frames)
    if not np.array_equal(index - index[0], frames - frames[0]):  # (keys on the video's frames: timeline_rate)
        return "the animation's keys are not on the video's frames"
    path = Path(src)
    if path.is_dir():
        images = sorted((p for p in path.iterdir() if p.suffix.lower() in bpy.path.extensions_image),
                        key=lambda p: natural_key(p.name))
        if not images:
            return "the folder of frames is empty"
        path = images[0]
    return path, int(frames[0] - index[0])


def look_through(context, camera) -> None:
    """Show every 3D view of the window through ``camera`` (nothing without a window)."""
    screen = getattr(context, "screen", None)
    if screen is None:
        return
    for area in screen.areas:
        if area.type == "VIEW_3D":
            space = area.spaces.active
            if getattr(space, "region_3d", None) is not None:
                space.region_3d.view_perspective = "CAMERA"
            area.tag_redraw()
