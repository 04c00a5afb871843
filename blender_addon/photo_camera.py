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
moved, with the photo behind the head in camera view (``photo.jpg`` of the result folder:
the photo upright as the engine read it; older folders: the photo's own file when it is
still there). Seen through it at the photo pose, the head lies on the photo's face.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The sensor width the lens is expressed on (millimetres; full frame, Blender's default).
SENSOR_MM = 36.0

#: Object-property value marking the photo camera of a head (beside the head's result key).
ROLE = "photo_camera"

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


@dataclass
class PhotoCamera:
    """What :func:`add_photo_camera` made: the camera object, the picture behind the head
    (None when the photo is gone) and sentences for the artist about what changed."""

    camera: object  # bpy.types.Object
    photo: Path | None
    notes: list[str]


def find_photo_camera(head):
    """The photo camera made earlier for ``head`` (a head's mesh or rig), or None."""
    import bpy

    from . import importer

    key = importer.object_result_key(head)
    if key is None:
        return None
    return next((o for o in bpy.data.objects if o.type == "CAMERA" and o.get("facerecon_role") == ROLE
                 and importer.object_result_key(o) == key), None)


def add_photo_camera(context, obj, *, make_active: bool = True) -> PhotoCamera:
    """Add (or update) the photo camera of the head mesh ``obj``.

    ``make_active``: make it the scene's camera, set the render size to the photo's (the
    camera sees the photo's frame only at its aspect ratio) and look through it in every 3D
    view. Raises :class:`PhotoCameraError` when ``obj`` holds no fitted camera."""
    import bpy
    from mathutils import Matrix

    from . import importer

    keys = ("facerecon_K", "facerecon_R", "facerecon_t", "facerecon_image_size")
    if any(obj.get(k) is None for k in keys):
        raise PhotoCameraError(f"{obj.name} has no fitted camera (import its result folder again)")
    settings = camera_settings(*(list(obj[k]) for k in keys))
    name = f"{obj.get('facerecon_name') or obj.name}_photo_camera"
    camera = find_photo_camera(obj)
    if camera is None:
        data = bpy.data.cameras.new(name)
        camera = bpy.data.objects.new(name, data)
        collection = obj.users_collection[0] if obj.users_collection else context.scene.collection
        collection.objects.link(camera)
    for prop in ("facerecon_name", "facerecon_photo", "facerecon_face_index"):
        if obj.get(prop) is not None:
            camera[prop] = obj[prop]
    camera["facerecon_role"] = ROLE
    cam = camera.data
    cam.type = "PERSP"
    cam.sensor_fit = settings.sensor_fit
    cam.sensor_width = cam.sensor_height = SENSOR_MM
    cam.lens = settings.lens_mm
    cam.shift_x, cam.shift_y = settings.shift_x, settings.shift_y
    # near and far around the head (metres): the camera stands where the photographer stood
    distance = float(np.linalg.norm(settings.camera_to_model[:3, 3]))
    cam.clip_start = max(0.01, 0.05 * distance)
    cam.clip_end = max(100.0, 10.0 * distance)

    top = importer.pose_rig_of(obj) or obj
    context.view_layer.update()  # obj.matrix_world after its rig was just placed (an import's Replace)
    model_to_local = np.eye(4)
    model_to_local[:3, :3] = importer.MODEL_TO_BLENDER  # the mesh's own coordinates: Blender's axes
    world = obj.matrix_world @ Matrix((model_to_local @ settings.camera_to_model).tolist())
    camera.parent = top
    camera.matrix_parent_inverse = Matrix.Identity(4)
    camera.matrix_world = world

    notes: list[str] = []
    folder = Path(str(obj.get("facerecon_folder", "")))
    picture = photo_file(folder, importer.read_params(folder) if (folder / "params.json").is_file() else {})
    cam.background_images.clear()
    if picture is None:
        notes.append("the photo is not there any more: the camera has no background")
    else:
        image = bpy.data.images.load(str(picture), check_existing=True)
        bg = cam.background_images.new()
        bg.image = image
        bg.alpha = 1.0
        bg.frame_method = "STRETCH"  # the photo fills the camera's frame exactly
        bg.display_depth = "BACK"
        cam.show_background_images = True

    if make_active:
        scene = context.scene
        scene.camera = camera
        W, H = settings.resolution
        before = (scene.render.resolution_x, scene.render.resolution_y)
        if before != (W, H) or (scene.render.pixel_aspect_x, scene.render.pixel_aspect_y) != (1.0, 1.0):
            scene.render.resolution_x, scene.render.resolution_y = W, H
            scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
            notes.append(f"render size set to the photo's {W} x {H} (was {before[0]} x {before[1]})")
        look_through(context, camera)
    return PhotoCamera(camera, picture, notes)


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
