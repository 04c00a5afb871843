"""Writers for the reconstruction output folder (docs/conventions.md, last section).

:func:`write_outputs` writes a whole folder from a :class:`engine.face.FaceParams` (and
nothing else), so every method — fit, learned, hybrid — produces the same folder for the
Blender add-on: meshes, albedo texture, rig, ``params.json``, overlay/summary previews.
The atomic folder swap is :func:`engine.export.atomic.atomic_output_folder` (re-exported here).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from engine.errors import OutputFolderError  # noqa: F401 (re-exported)
from engine.export.atomic import atomic_output_folder  # noqa: F401 (re-exported)

PARAMS_VERSION = 1


def _tolist(x: Any) -> Any:
    """JSON-ready copy: tensors/arrays to (rounded) lists, numpy scalars to Python numbers."""
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return np.round(x.astype(np.float64), 7).tolist() if x.dtype.kind == "f" else x.tolist()
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (list, tuple)):  # before the Mapping check: an ABC check per item is slow
        if all(type(v) in (float, int) for v in x):  # long numeric lists: nothing to convert
            return list(x)
        return [_tolist(v) for v in x]
    if isinstance(x, dict) or isinstance(x, Mapping):
        return {str(k): _tolist(v) for k, v in x.items()}
    return x


def build_params(
    *,
    model: str,
    image_size: tuple[int, int],
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    identity: Sequence[float],
    expression: Mapping[str, float],
    pose: Mapping[str, Sequence[float]],
    sh: np.ndarray,
    landmarks68_image_px: np.ndarray,
    landmarks68_camera: np.ndarray,
    timings: Mapping[str, float],
    photo: str,
    method: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``params.json`` dictionary with shapes checked (see docs/conventions.md)."""
    K, R, t = np.asarray(K, float), np.asarray(R, float), np.asarray(t, float)
    sh = np.asarray(sh, float)
    lm2, lm3 = np.asarray(landmarks68_image_px, float), np.asarray(landmarks68_camera, float)
    if K.shape != (3, 3) or R.shape != (3, 3) or t.shape != (3,):
        raise ValueError(f"bad camera shapes K{K.shape} R{R.shape} t{t.shape}")
    if sh.shape != (9, 3):
        raise ValueError(f"sh must be (9, 3), got {sh.shape}")
    if lm2.shape != (68, 2) or lm3.shape != (68, 3):
        raise ValueError(f"landmarks must be (68, 2)/(68, 3), got {lm2.shape}/{lm3.shape}")
    params: dict[str, Any] = {
        "version": PARAMS_VERSION,
        "model": model,
        "method": method,
        "photo": photo,
        "image_size": [int(image_size[0]), int(image_size[1])],
        "K": K,
        "R": R,
        "t": t,
        "identity": list(identity),
        "expression": dict(expression),
        "pose": {k: list(v) for k, v in pose.items()},
        "sh": sh,
        "sh_convention": "raw 3-band SH (Ramamoorthi-Hanrahan, irradiance-convolved basis of "
        "engine.render.shading.sh_basis, no ambient offset) in the view frame "
        "(+X right, +Y up, +Z towards the camera); colour = albedo * basis(n) @ sh",
        "landmarks68_image_px": lm2,
        "landmarks68_camera": lm3,
        "timings": {k: round(float(v), 4) for k, v in timings.items()},
        "units": "metres; camera frame OpenCV (x right, y down, z forward); X_cam = R @ X_model + t",
    }
    if extra:
        params.update(extra)
    return _tolist(params)


def write_params(path: str | os.PathLike[str], params: Mapping[str, Any]) -> None:
    """Write ``params.json`` (UTF-8): one top-level key per line, each value compact (readable,
    and encoded by the C JSON encoder, which ``indent`` would bypass)."""
    data = _tolist(params)
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in data.items())
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("{\n" + body + "\n}\n")


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] (or uint8) image -> uint8."""
    if img.dtype == np.uint8:
        return img
    return (np.clip(np.nan_to_num(img), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: str | os.PathLike[str], img: np.ndarray) -> None:
    """Save an RGB/grey image (uint8 or float [0, 1]) as PNG (:func:`png_bytes`)."""
    Path(path).write_bytes(png_bytes(img))


def png_bytes(img: np.ndarray) -> bytes:
    """PNG-encode an RGB/grey image (uint8 or float [0, 1]) in memory, fast
    (:func:`engine.export.png.encode_png`: zlib level 1; also what ``head.glb`` embeds)."""
    from engine.export.png import encode_png

    return encode_png(to_uint8(img))


def write_photo_jpeg(path: str | os.PathLike[str], rgb: np.ndarray, max_side: int, quality: int = 90) -> None:
    """Save the photo as the engine read it (upright: EXIF orientation applied, alpha on white)
    as a JPEG no larger than ``max_side``: ``photo.jpg``, the background a program shows behind
    the head seen through the photo's camera (``params.json``'s ``K`` scales to its size)."""
    import cv2

    from engine.photo import downscale

    rgb, _ = downscale(rgb, max_side)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"could not encode {path}")
    Path(path).write_bytes(buf.tobytes())


def blend_overlay(photo: np.ndarray, render: np.ndarray, mask: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Render blended over the photo where ``mask`` (H, W) is set; uint8 (H, W, 3)."""
    p = photo.astype(np.float32) / 255.0 if photo.dtype == np.uint8 else photo.astype(np.float32)
    r = render.astype(np.float32) / 255.0 if render.dtype == np.uint8 else render.astype(np.float32)
    m = np.clip(mask.astype(np.float32), 0, 1)[..., None] * alpha
    return to_uint8(p * (1 - m) + r * m)


def side_by_side(images: Sequence[np.ndarray], height: int = 256, labels: Sequence[str] | None = None) -> np.ndarray:
    """Resize each image to ``height`` and place them left to right, optionally labelled."""
    import cv2

    tiles = []
    for i, img in enumerate(images):
        img = to_uint8(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        h, w = img.shape[:2]
        tile = cv2.resize(img, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)
        tile = np.ascontiguousarray(tile)
        if labels is not None:
            cv2.putText(tile, labels[i], (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(tile, labels[i], (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


# ---------------------------------------------------------------------------- previews
#: towards the light of the geometry preview, view frame (+Y up, +Z to the camera): upper left
_HEADLIGHT = (-0.4, 0.5, 1.0)


@dataclass
class ShadedView:
    """The part of a textured render that does not need the texture (first item, numpy):
    ``shading (H, W, 3)`` SH shading ≥ 0 (0 off the face), ``mask (H, W)`` bool and
    ``uv (1, H, W, 2)`` every pixel's texture coordinates (a tensor, for :func:`texture_view`)."""

    shading: np.ndarray
    mask: np.ndarray
    uv: Any


def shade_view(decoded) -> ShadedView:
    """Rasterise and light decoded faces (first item) with their SH lighting, no antialiasing,
    before their texture exists: the texture is applied afterwards by :func:`texture_view`
    (nvdiffrast's rasterise / interpolate / texture verbs, split at the texture). Together the
    two give what ``decoded.render(antialias=False)`` gives with an ``albedo_map``."""
    import torch

    from engine.export.uv_pack import export_layout
    from engine.head.teeth import with_teeth
    from engine.render import interpolate

    with torch.no_grad():
        out = decoded.render(antialias=False)
        mask = out.fragments.mask[0]
        shading = out.shading[0].permute(1, 2, 0).clamp_min(0) * mask[..., None].float()
        exported = export_layout(with_teeth(decoded.head))  # albedo.png's layout (the model's faces come first)
        face_uv = exported.face_uv[:decoded.head.n_faces]  # (all of them for the files' mesh itself)
        uv = interpolate(exported.uv.to(shading.dtype), face_uv, out.fragments)[:1]
        return ShadedView(shading.numpy(), mask.numpy(), uv)


def texture_view(view: ShadedView, albedo_map) -> tuple[np.ndarray, np.ndarray]:
    """(colour, albedo) ``(H, W, 3)`` of a :func:`shade_view` with ``albedo_map (1, 3, S, S)``
    (0 off the face)."""
    import torch

    from engine.render import texture

    with torch.no_grad():
        albedo = texture(albedo_map.to(view.uv.dtype), view.uv)[0].numpy() * view.mask[..., None]
    return albedo * view.shading, albedo


def render_geometry(decoded, head_box: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Grey, lit render of the decoded geometry alone (first item): (H, W) intensity in
    [0, 1] and mask. A fixed headlight from the upper left plus ambient (not the fitted
    lighting), so that shape errors show as shading that does not match the photo.
    ``head_box`` (perspective cameras): rasterise only the head's projected bounding box (the
    same pixels, less to rasterise when the head fills a small part of a large image)."""
    import torch

    from engine.render.camera import PerspectiveCamera

    if head_box and isinstance(decoded.camera, PerspectiveCamera):
        H, W = decoded.camera.image_size
        with torch.no_grad():
            px = decoded.uv[0].detach().cpu().numpy()
        x0, y0 = np.clip(np.floor(px.min(0)).astype(int) - 1, 0, [W, H])
        x1, y1 = np.clip(np.ceil(px.max(0)).astype(int) + 1, 0, [W, H])
        grey, mask = np.zeros((H, W), np.float32), np.zeros((H, W), bool)
        if x1 > x0 and y1 > y0:
            inner = decoded.decoder(decoded.params.replace(camera=decoded.camera.window(x0, y0, x1 - x0, y1 - y0)))
            grey[y0:y1, x0:x1], mask[y0:y1, x0:x1] = render_geometry(inner)
        return grey, mask
    with torch.no_grad():
        out = decoded.render(lit=False, antialias=False)
        light = torch.tensor(_HEADLIGHT)
        light = light / light.norm()
        n = out.normals[0].permute(1, 2, 0)
        mask = out.fragments.mask[0]
        grey = 0.25 + 0.75 * (n @ light).clamp_min(0)
        return (grey * mask).numpy(), mask.numpy()


def draw_points(img: np.ndarray, points: np.ndarray, colour: tuple[int, int, int], radius: int = 2) -> np.ndarray:
    """Filled dots (uint8 copy) at ``points`` (N, 2) in pixel-edge coordinates."""
    import cv2

    out = np.ascontiguousarray(to_uint8(img).copy())
    r = max(1, radius)
    for x, y in np.asarray(points, np.float64):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(out, (int(round(x * 4 - 2)), int(round(y * 4 - 2))), r * 4, colour, -1, cv2.LINE_AA, shift=2)
    return out


def fit_overlay(photo: np.ndarray, grey: np.ndarray, mask: np.ndarray, detected_px: np.ndarray,
                model_px: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Semi-transparent grey geometry over the photo, detected landmarks (green) and the
    fitted model's landmarks (red); a legend in the corner."""
    import cv2

    out = np.array(to_uint8(photo))
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows):  # blended inside the geometry's bounding box only: the photo is unchanged elsewhere
        win = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        geo = grey[win][..., None] * np.array([0.9, 0.9, 0.92], np.float32)
        out[win] = blend_overlay(photo[win], geo, mask[win], alpha=alpha)
    radius = max(1, round(max(out.shape[:2]) / 300))
    out = draw_points(out, detected_px, (40, 220, 40), radius)
    out = draw_points(out, model_px, (235, 40, 40), radius)
    scale = max(0.4, max(out.shape[:2]) / 1600)
    for i, (text, col) in enumerate((("detected landmarks", (40, 220, 40)), ("model landmarks", (235, 40, 40)))):
        org = (8, int(22 * scale * (i + 1) * 1.3))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, col, 1, cv2.LINE_AA)
    return out


# ---------------------------------------------------------------------------- rig.json
RIG_VERSION = 1
RIG_MIN_WEIGHT = 1e-3


def rest_geometry(model, identity, expression) -> tuple[np.ndarray, np.ndarray]:
    """``(joints, vertices)`` at pose 0: the rest joints of the fitted identity and expression
    (J, 3) and the identity-only mesh (V, 3) — ``head.glb``'s base mesh and ``rig.json``'s
    ``rest_joints`` / ``rest_vertices`` (model frame, metres, float32)."""
    import torch

    with torch.no_grad():
        dev = model.template.device
        ident = torch.as_tensor(identity, dtype=torch.float32, device=dev)[None]
        expr = torch.as_tensor(expression, dtype=torch.float32, device=dev)[None]
        joints = model(ident, expr, None).joints[0].cpu().numpy()
        vertices = model(ident, None, None).vertices[0].cpu().numpy()
    return joints, vertices


def build_rig(model, identity, expression, pose, min_weight: float = RIG_MIN_WEIGHT,
              rest: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """The ``rig.json`` dictionary: joints at rest, the fitted pose and sparse skin weights.

    ``head.glb``'s mesh is at pose = 0 (its skeleton's nodes hold the fitted pose), so the rig
    carries the fitted joint rotations separately (a DCC tool poses bones with it). Rest joints are those of the fitted identity
    and expression at pose 0 (model frame, metres); ``pose`` is the local axis-angle per joint
    (docs/conventions.md). Skin weights are listed per joint for the model's vertex order —
    dropping weights below ``min_weight`` (each vertex's kept weights are renormalised to sum
    to 1). Blender's glTF import welds ``head.glb``'s UV seams back to the model's vertex
    count but in its own order, so ``rest_vertices`` (the GLB's base mesh in model order)
    lets an importer match its vertices to the weights by position.
    identity (K_id,), expression (K_exp,), pose (J, 3) or empty. ``rest``: the pair
    (:func:`rest_geometry`) when the caller has it already (the output folder's GLB uses it too).
    """
    import torch

    joints, rest = rest_geometry(model, identity, expression) if rest is None else rest
    joints = np.asarray(joints, np.float64)
    rest = np.asarray(rest, np.float64)
    with torch.no_grad():
        w = model.skin_weights.detach().cpu().numpy().astype(np.float64)
    w = np.where(w >= min_weight, w, 0.0)
    total = w.sum(1, keepdims=True)
    w = np.where(total > 0, w / np.maximum(total, 1e-12), 0.0)
    names = list(model.joint_names)
    pose_np = np.asarray(pose.detach().cpu() if hasattr(pose, "detach") else pose, np.float64).reshape(-1, 3)
    if pose_np.shape[0] not in (0, len(names)):
        raise ValueError(f"pose has {pose_np.shape[0]} joints, the model has {len(names)}")
    if pose_np.shape[0] == 0:
        pose_np = np.zeros((len(names), 3))
    weights = {}
    for j, name in enumerate(names):
        idx = np.nonzero(w[:, j])[0]
        weights[name] = {"vertices": idx.astype(np.int64).tolist(), "weights": np.round(w[idx, j], 6).tolist()}
    return {
        "version": RIG_VERSION,
        "units": "metres, model frame (+X subject's left, +Y up, +Z out of the face)",
        "n_vertices": int(w.shape[0]),
        "joint_names": names,
        "joint_parents": [int(p) for p in model.joint_parents.detach().cpu().tolist()],
        "rest_joints": np.round(joints, 7).tolist(),
        "pose": {name: np.round(pose_np[j], 7).tolist() for j, name in enumerate(names)},
        "pose_convention": "local axis-angle (radians) in model-frame axes at rest, composed along "
        "joint_parents (smplx-style LBS); head.glb is the mesh at pose 0",
        "skin_weights": weights,
        "rest_vertices": np.round(rest, 7).tolist(),
        "skin_min_weight": float(min_weight),
        "regions": material_regions(model),
        "regions_convention": "vertex indices in the model's order; a face belongs to a region when all "
        "its vertices do (later regions win: teeth are part of mouth_interior)",
    }


#: Vertex regions ``rig.json`` lists for per-region materials (eyes, mouth, teeth), in order.
MATERIAL_REGIONS = ("eyes", "mouth_interior", "teeth")


def material_regions(model) -> dict[str, list[int]]:
    """Vertex indices (model order) of the regions that get their own material in a DCC tool:
    ``eyes`` (eyeballs), ``mouth_interior`` (cavity, gums, tongue, teeth) and, for a model
    with teeth (ICT's, or those :func:`engine.head.teeth.with_teeth` adds), ``teeth``. Empty
    regions are left out."""
    masks = {k: model.regions[k].detach().cpu().numpy().astype(bool) for k in MATERIAL_REGIONS
             if k in model.regions}
    return {k: np.flatnonzero(m).astype(np.int64).tolist() for k, m in masks.items() if m.any()}


def _json_default(x: Any) -> Any:
    """``json.dumps(default=)``: what the C encoder cannot write itself, as :func:`_tolist` makes it."""
    out = _tolist(x)
    if out is x:
        raise TypeError(f"{type(x).__name__} is not JSON serialisable")
    return out


def write_rig(path: str | os.PathLike[str], rig: Mapping[str, Any]) -> None:
    """Write ``rig.json`` (compact; skin-weight lists are long). Plain lists go to the C
    encoder as they are; arrays, tensors and numpy scalars through :func:`_json_default`."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(rig, separators=(",", ":"), default=_json_default) + "\n")

# ---------------------------------------------------------------------------- the whole folder
#: the ``albedo.png`` sides offered (``reconstruct --texture-size``, the add-on's Texture menu)
TEXTURE_SIZES = (512, 1024, 2048)  # 4096 took 16 s and 5 GB for the layout


@dataclass
class OutputOptions:
    """Sizes of what :func:`write_outputs` writes."""

    texture_size: int = 1024  # albedo.png side (texels): one of TEXTURE_SIZES
    overlay_max_side: int = 1024  # overlay.png is the photo reduced to at most this side
    photo_max_side: int = 2048  # photo.jpg (the photo upright, for a camera's background) at most this side
    crop_scale: float = 1.7  # face crops (texture source, summary) relative to the landmark box

    def __post_init__(self) -> None:
        from engine.errors import UserError

        if self.texture_size not in TEXTURE_SIZES:
            raise UserError(f"texture size {self.texture_size!r}: choose one of "
                            f"{', '.join(map(str, TEXTURE_SIZES))} texels")


def prepare_outputs(model, options: OutputOptions | None = None) -> threading.Thread:
    """Make in a background thread what :func:`write_outputs` needs for ``model`` whatever the
    photo — the skin mask's feature zones (:func:`engine.texture.feature_weight`), the UV layout
    (:func:`engine.texture.uv_layout`) and the OBJs' texture-coordinate
    and face lines (:func:`engine.export.obj.topology_text`) — e.g. while a fit runs on the
    other core, so that writing the folder later finds them ready."""
    from engine.export.obj import topology_text
    from engine.export.uv_pack import export_layout
    from engine.head.teeth import with_teeth
    from engine.texture import feature_weight, uv_layout

    size = (options or OutputOptions()).texture_size

    def prepare() -> None:
        feature_weight(model)
        files_model = with_teeth(model)
        exp = export_layout(files_model)
        uv_layout(exp, size)
        exp.seam_extension(size)
        topology_text(files_model.faces.cpu().numpy(), exp.uv.numpy(), exp.face_uv.numpy())

    thread = threading.Thread(target=prepare, daemon=True, name="prepare-outputs")
    thread.start()
    return thread


def expression_morph_targets(model, identity, pose) -> dict[str, np.ndarray]:
    """Per-expression vertex deltas at the fitted identity and joint pose (model frame).

    LBS is affine in the rest-pose vertices, so an expression's displacement after skinning
    is its basis rotated by the skinning rotations: exact when joints do not move with the
    expression (the model's joint-expression basis is ignored here). identity (K_id,),
    pose (J, 3) or empty for the rest pose.
    """
    import torch

    from engine.head.lbs import rigid_transforms
    from engine.render.rotation import axis_angle_to_matrix

    with torch.no_grad():
        if pose.numel():
            joints = model.rest_joints(identity[None])
            _, T = rigid_transforms(axis_angle_to_matrix(pose[None]), joints, model.joint_parents)
            Rv = torch.einsum("vj,jxy->vxy", model.skin_weights, T[0, :, :3, :3])
            basis = torch.einsum("vxy,kvy->kvx", Rv, model.expression_basis)
        else:
            basis = model.expression_basis
    return {name: basis[i].cpu().numpy() for i, name in enumerate(model.expression_names)}


def _shading_at_eyes(model, shading, visibility) -> np.ndarray:
    """(3,) the estimate's median shading over the visible eyeball vertices (over the visible
    face skin when fewer than 8 eyeball vertices are visible: closed eyes)."""
    import torch

    seen = visibility > 0.5
    for region in ("eyes", "face_skin"):
        m = seen & model.regions[region].to(seen.device) if region in model.regions else None
        if m is not None and int(m.sum()) >= 8:
            return torch.median(shading[m].float(), 0).values.cpu().numpy()
    return np.ones(3)


def write_outputs(folder: str | os.PathLike[str], model, params, photo, method: str,
                  options: OutputOptions | None = None, extra: Mapping[str, Any] | None = None,
                  timings: dict[str, float] | None = None, detail: Any = None,
                  detail_checkpoint: str | None = None) -> dict[str, Any]:
    """Write every file of the output folder except ``params.json`` from a
    :class:`engine.face.FaceParams` (batch of one, the photo's frame: ``photo.rgb``'s pixels)
    and return the ``params.json`` dictionary (``extra`` merged into it).

    The albedo texture is baked from the photo where the face was seen (photo / shading),
    completed by symmetry and the estimate's per-vertex albedo elsewhere. ``timings``, when
    given, receives the seconds of each part (``texture``, ``meshes``, ``previews``, ``glb``,
    ``eyes``, ``params``) for benchmarks: wall time of this thread. Two background threads
    overlap it: one rasterises the summary's view and writes ``overlay.png`` while the texture
    is baked, then the OBJs and ``rig.json`` (``meshes``: what is left to wait for); the other
    packs ``head.glb``'s mesh and morph targets during the bake, then encodes ``albedo.png`` and
    finishes ``head.glb`` while the summary is made (``glb``: what is left). ``params.json``'s ``eyes`` holds the iris
    and sclera colour estimated from the photo (:func:`engine.photo.eyes.estimate_eye_colours`),
    divided by the estimate's shading at the eyes (:meth:`engine.photo.eyes.EyeColours.unlit`).
    ``detail`` (:class:`engine.methods.deca.DetailMaps`, from a method with a detail stage)
    adds ``displacement.png``, ``detail/*.png`` and their ``params.json`` entries
    (:func:`engine.export.detail.write_detail_maps`; ``detail_checkpoint`` = the network file).
    Torch runs with one intra-op thread meanwhile (:func:`engine.threads.torch_threads`): the
    threads above already use both cores, and the bake's small tensor operations run slower
    split over several threads.
    """
    from engine.threads import torch_threads

    with torch_threads(1):
        return _write_folder(folder, model, params, photo, method, options, extra, timings, detail, detail_checkpoint)


def _write_folder(folder, model, params, photo, method, options, extra, timings, detail,
                  detail_checkpoint) -> dict[str, Any]:
    """:func:`write_outputs`' body (its arguments, in its order)."""
    import time

    import torch

    from engine.export.gltf import write_glb
    from engine.export.obj import write_obj
    from engine.export.uv_pack import export_layout, to_export_layout
    from engine.face import FaceDecoder
    from engine.head.teeth import TEETH_ALBEDO, extend_vertices, pad_vertices, with_teeth
    from engine.photo import align_crop, downscale, landmark_box
    from engine.photo.eyes import estimate_eye_colours
    from engine.render.camera import PerspectiveCamera
    from engine.texture import bake_albedo, eyelid_weight, feature_weight, paint_parts

    opt = options or OutputOptions()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)  # before the background jobs write into it
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + now - clock[0]
        clock[0] = now

    cpu_model = model.to("cpu") if model.template.device.type != "cpu" else model
    p = params.detach().cpu().select(0)
    decoder = FaceDecoder(cpu_model)
    dec = decoder(p)
    cam = p.camera
    R, t, K = cam.R[0], cam.t[0], cam.K[0]
    # the files' mesh: the model, plus teeth where it has none (engine.head.teeth); the estimate
    # is decoded with the model itself, and the teeth (vertices after the model's) follow it
    files_model = with_teeth(cpu_model)
    with torch.no_grad():
        verts = extend_vertices(dec.vertices[0], files_model, p.identity, p.expression, p.pose)
    faces = files_model.faces
    exported = export_layout(files_model)  # the files' texture layout: the face gets the texels
    uv, face_uv = exported.uv, exported.face_uv
    img = photo.rgb
    H, W = img.shape[:2]
    lm = p.landmarks[0].numpy() if p.landmarks is not None else dec.landmarks2d[0].numpy()

    def through(camera_K: torch.Tensor, size: tuple[int, int]):
        """The estimate seen through another camera matrix / image size (crops, overlays)."""
        return decoder(p.replace(camera=PerspectiveCamera(camera_K[None], R[None], t[None], size)))

    # --- overlay.png on the (possibly reduced) photo, in a background thread: it needs only the
    # estimate, so it overlaps the texture bake and the meshes (torch, OpenCV and PNG encoding
    # release the GIL). The textured render reproduces the photo almost exactly (the texture is
    # baked from it), so the overlay shows the geometry alone, grey under a fixed light, with
    # both landmark sets.
    def write_overlay() -> None:
        photo_small, _ = downscale(img, opt.overlay_max_side)
        oh, ow = photo_small.shape[:2]
        with torch.no_grad():
            grey, mask = render_geometry(through(torch.diag(torch.tensor([ow / W, oh / H, 1.0])) @ K, (oh, ow)),
                                         head_box=True)
        model_px = lm_px.numpy() * (ow / W)
        write_png(folder / "overlay.png", fit_overlay(photo_small, grey, mask, lm * (ow / W), model_px))
        write_photo_jpeg(folder / "photo.jpg", img, opt.photo_max_side)

    from concurrent.futures import Future, ThreadPoolExecutor, wait

    lm_px = dec.landmarks2d[0]  # made here, in this thread, before the jobs below read it
    # --- the face crop the albedo is baked from: enough pixels for the texture size, but no
    # more than the photo has there (upsampling adds no detail, only memory and time)
    box = landmark_box(lm)
    native = int(np.ceil(max(box[2] - box[0], box[3] - box[1]) * opt.crop_scale))
    crop = align_crop(img, box, size=max(64, min(int(opt.texture_size * 1.5), native)), scale=opt.crop_scale)
    # --- the summary's view of the estimate on the same crop at 256 px: rasterised and lit in
    # the background first (only its texture must wait for the bake)
    small = crop.resized(256)
    Ac = torch.tensor(np.vstack([small.matrix, [0.0, 0.0, 1.0]]), dtype=torch.float32)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="overlay")
    # (the files' mesh, teeth included, as the files show it: its geometry and light only, the
    # texture comes from albedo.png; the estimate's per-vertex fields are the model's)
    files_view = p.replace(albedo=None, reflectance=None, albedo_map=None, visibility=None,
                           camera=PerspectiveCamera((Ac @ K)[None], R[None], t[None], (256, 256)))
    summary_job = pool.submit(lambda: shade_view(FaceDecoder(files_model)(files_view)))
    overlay_job = pool.submit(write_overlay)

    # --- the OBJs (they name albedo.png, written below) and rig.json, after the overlay in the
    # same background thread: neither needs the texture, but formatting their text holds the
    # GIL for milliseconds at a time, which would stall the bake's many short array operations
    # (measured: a Python-bound thread slows the bake 20x), so they wait until it is done: until
    # baked_albedo holds the texture, or the bake's error
    pose = p.pose[0]
    identity, expression = p.identity[0], p.expression[0]

    camera_verts = cam.to_camera(verts[None])[0].numpy()  # made here, not in the job

    baked_albedo: Future = Future()
    rest: Future = Future()  # rest_geometry(), made by the GLB's job and used by rig.json's

    def write_meshes_and_rig() -> None:
        wait([baked_albedo])
        write_obj(folder / "head.obj", verts.numpy(), faces.numpy(), uv.numpy(), face_uv.numpy(),
                  texture_path=folder / "albedo.png")
        write_obj(folder / "head_camera.obj", camera_verts, faces.numpy(), uv.numpy(),
                  face_uv.numpy(), texture_path=folder / "albedo.png", material_name="head_camera")
        write_rig(folder / "rig.json", build_rig(files_model, identity, expression, pose, rest=rest.result()))

    meshes_job = pool.submit(write_meshes_and_rig)
    pool.shutdown(wait=False)  # the jobs run on; their results (or errors) are collected below

    # --- head.glb (the mesh at pose 0: sliders at zero = neutral; rig.json carries the joints,
    # skin weights and the fitted pose so Blender poses bones instead of a baked jaw/neck) in a
    # second background thread, started now: the mesh and its morph targets are packed while
    # the texture bakes, then it encodes albedo.png (which the GLB embeds) once the bake is done
    weights = {n: float(v) for n, v in zip(model.expression_names, expression.tolist())}

    def write_png_and_glb() -> None:
        from engine.video.formats import rotvec_to_quaternion

        try:
            joints, base = rest_geometry(files_model, identity, expression)  # rig.json's too
        except BaseException as exc:
            rest.set_exception(exc)
            raise
        rest.set_result((joints, base))
        targets = expression_morph_targets(files_model, identity, pose.new_zeros(0))
        rotvecs = pose.detach().cpu().double().numpy().reshape(-1, 3)
        # the skeleton for any glTF program, posed as fitted (Blender's add-on builds its own from rig.json)
        skin = {"joint_names": list(files_model.joint_names), "joint_parents": files_model.joint_parents.tolist(),
                "rest_joints": joints, "weights": files_model.skin_weights.numpy(),
                "rotations": (rotvec_to_quaternion(rotvecs)[:, [1, 2, 3, 0]] if len(rotvecs) else None)}

        def albedo_png() -> bytes:
            png = png_bytes(baked_albedo.result())
            (folder / "albedo.png").write_bytes(png)
            return png

        write_glb(folder / "head.glb", base, faces.numpy(), uv.numpy(), face_uv.numpy(),
                  morph_targets=targets, texture_png=albedo_png, morph_weights=weights, skin=skin)

    glb_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="glb")
    glb_job = glb_pool.submit(write_png_and_glb)
    glb_pool.shutdown(wait=False)

    # --- albedo texture from the face crop
    try:
        A = torch.tensor(np.vstack([crop.matrix, [0.0, 0.0, 1.0]]), dtype=torch.float32)
        src = through(A @ K, crop.image.shape[:2])
        visibility = p.visibility[0] if p.visibility is not None else dec.visibility()[0].float()
        # eyelids folded at the lash line in the photo take the skin fill (no smudge on a blink)
        visibility = visibility.float() * (1.0 - eyelid_weight(cpu_model).to(visibility.device))
        albedo_v = dec.albedo[0] if dec.albedo is not None else torch.full_like(dec.vertices[0], 0.6)
        source = torch.from_numpy(crop.image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        lm_crop = torch.from_numpy(lm[:, :2].astype(np.float32)) @ A[:2, :2].T + A[:2, 2]
        fill_map = None if p.albedo_map is None else to_export_layout(p.albedo_map, files_model)

        def pad(values: torch.Tensor, fill) -> torch.Tensor:  # the teeth see no photo: the fill colours them
            return pad_vertices(values, files_model, fill)

        albedo_img = bake_albedo(exported, pad(src.screen[0], 0.0), pad(visibility, 0.0),
                                 pad(src.shading[0].clamp_min(0), 1.0), pad(albedo_v, TEETH_ALBEDO),
                                 source, opt.texture_size, landmarks_px=lm_crop,
                                 fill_map=fill_map,  # a method's own UV reflectance (CEST) fills the unseen
                                 facing=pad(src.facing()[0], 0.0),
                                 features=pad(feature_weight(cpu_model), 1.0))  # glasses left out of plain skin
        # eyes (the photo's iris), mouth and teeth painted: the files look right outside Blender
        # too; the eye colours with the light taken out, as the skin's (the shading at the eyes)
        eyes = estimate_eye_colours(img, lm).unlit(_shading_at_eyes(cpu_model, src.shading[0], visibility))
        paint_parts(albedo_img, exported, files_model, eyes.iris_rgb, eyes.sclera_rgb)
        baked_albedo.set_result(albedo_img)
    except BaseException as exc:
        baked_albedo.set_exception(exc)  # both jobs end with it; the error surfaces here
        raise
    albedo_map = torch.from_numpy(albedo_img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    lap("texture")

    # --- summary on the face crop (overlay.png: above)
    view = summary_job.result()  # rasterised and lit in the background while the texture was baked
    colour, alb = texture_view(view, albedo_map)
    shading, mask = view.shading, view.mask
    # raw SH shading is mostly ambient and exceeds 1 (the albedo absorbs the light's scale):
    # stretch its 1st..99th percentile over the face to black..white so it is not blown out
    lum = shading.mean(-1)
    lo, hi = (np.percentile(lum[mask], [1, 99]) if mask.any() else (0.0, 1.0))
    grey = np.repeat((np.clip((lum - lo) / max(hi - lo, 1e-6), 0, 1) * mask)[..., None], 3, -1)
    ccrop = small.image.astype(np.float32) / 255.0
    render_on = np.where(mask[..., None], colour, ccrop * 0.3)
    write_png(folder / "summary.png", side_by_side([ccrop, render_on, grey, alb], 256,
                                                   ["photo", "render", "shading p1-p99", "albedo"]))
    lap("previews")
    overlay_job.result()  # written in the background while the texture was baked
    meshes_job.result()
    lap("meshes")  # what is left to wait for of the overlay, the OBJs and rig.json
    glb_job.result()  # albedo.png and head.glb, written in the background meanwhile
    lap("glb")  # what is left of the PNG encoding and head.glb when the rest is done

    # --- eye colours (iris, sclera) from the photo inside the eye contours (painted into the
    # texture above), for the eye material
    eyes = eyes.to_json()
    lap("eyes")

    # --- animated detail (DECA): neutral displacement + per-unit deltas
    detail_entries: dict[str, Any] = {}
    if detail is not None:
        from engine.export.detail import write_detail_maps

        detail_entries = write_detail_maps(folder, detail, files_model, method, detail_checkpoint)
        lap("detail")

    # --- parameters; photo.rgb may be a reduced copy of the original file: report in original pixels
    inv = 1.0 / photo.scale
    K_orig = torch.diag(torch.tensor([inv, inv, 1.0])) @ K
    pose_dict = {name: pose[j].tolist() for j, name in enumerate(model.joint_names)} if pose.numel() else {}
    out = build_params(
        model=model.name, image_size=photo.original_size, K=K_orig.numpy(), R=R.numpy(), t=t.numpy(),
        identity=identity.tolist(), expression=weights, pose=pose_dict, sh=p.sh[0].numpy(),
        landmarks68_image_px=(lm_px * inv).numpy(), landmarks68_camera=(dec.landmarks3d[0] @ R.T + t).numpy(),
        timings=p.timings, photo=str(photo.path), method=method,
        extra={"landmarks68_detected_px": lm * inv, "fit_losses": p.losses, "eyes": eyes, **detail_entries,
               **(extra or {})},
    )
    lap("params")
    return out
