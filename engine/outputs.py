"""Writers for the reconstruction output folder (docs/conventions.md, last section).

``params.json`` and the overlay/summary PNGs live here so that the optimisation fitter and
the learned methods produce byte-compatible folders for the Blender add-on; the atomic
folder swap is :func:`engine.export.atomic.atomic_output_folder`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

PARAMS_VERSION = 1


def _tolist(x: Any) -> Any:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return np.round(x.astype(np.float64), 7).tolist() if x.dtype.kind == "f" else x.tolist()
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, Mapping):
        return {str(k): _tolist(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_tolist(v) for v in x]
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
    """Write ``params.json`` (pretty-printed, UTF-8)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(_tolist(params), fh, indent=1, ensure_ascii=False)
        fh.write("\n")


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] (or uint8) image -> uint8."""
    if img.dtype == np.uint8:
        return img
    return (np.clip(np.nan_to_num(img), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: str | os.PathLike[str], img: np.ndarray) -> None:
    """Save an RGB/grey image (uint8 or float [0, 1]) as PNG."""
    from PIL import Image

    Image.fromarray(to_uint8(img)).save(path, format="PNG", compress_level=4)


def png_bytes(img: np.ndarray) -> bytes:
    """PNG-encode an image in memory (for embedding in glTF)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format="PNG", compress_level=4)
    return buf.getvalue()


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


# ---------------------------------------------------------------------------- rendering + baking
def _rasterize_fit(model, vertices, R, t, K, size: tuple[int, int]):
    """Rasterise the fitted mesh through its camera: (fragments, camera-frame vertex normals)."""
    from engine.render.camera import PerspectiveCamera
    from engine.render.rasterize import rasterize
    from engine.render.shading import vertex_normals

    camera = PerspectiveCamera(K[None], R[None], t[None], size)
    frags = rasterize(camera.to_screen(vertices[None]), model.faces, size, perspective=True,
                      cull_backfaces=True)
    return frags, camera.rotate_normals(vertex_normals(vertices[None], model.faces))


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def render_textured(model, vertices, R, t, K, size: tuple[int, int], albedo_map, sh):
    """Render a fitted head: (colour, shading, albedo, mask) as numpy (H, W, ·) float.

    vertices (V, 3) model frame, R (3, 3), t (3,), K (3, 3) for an image of ``size`` (H, W),
    albedo_map (3, S, S) texture in [0, 1] (v up), sh (9, 3) raw view-frame SH.
    """
    import torch

    from engine.render.rasterize import interpolate, texture
    from engine.render.shading import camera_to_view, sh_basis

    with torch.no_grad():
        frags, n_cam = _rasterize_fit(model, vertices, R, t, K, size)
        pix_n = _unit(interpolate(camera_to_view(n_cam), model.faces, frags))
        shading = (sh_basis(pix_n) @ sh).clamp_min(0)[0]
        alb = texture(albedo_map[None], interpolate(model.uv[None], model.face_uv, frags))[0]
        mask = frags.mask[0]
        colour = (alb * shading) * mask[..., None]
        return (colour.numpy(), (shading * mask[..., None]).numpy(), (alb * mask[..., None]).numpy(),
                mask.numpy())


def render_geometry(model, vertices, R, t, K, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Grey, lit render of the fitted geometry alone: (H, W) intensity in [0, 1] and mask.

    A fixed headlight from the upper left plus ambient (not the fitted lighting), so that
    shape errors show as shading that does not match the photo.
    """
    import torch

    from engine.render.rasterize import interpolate

    with torch.no_grad():
        frags, n_cam = _rasterize_fit(model, vertices, R, t, K, size)  # normals in OpenCV camera axes
        pix_n = _unit(interpolate(n_cam, model.faces, frags)[0])
        light = torch.tensor([-0.4, -0.5, -1.0])  # towards the light: up-left, towards the camera
        light = light / light.norm()
        grey = 0.25 + 0.75 * (pix_n @ light).clamp_min(0)
        mask = frags.mask[0]
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

    geo = np.repeat(grey[..., None], 3, -1) * np.array([0.9, 0.9, 0.92])
    out = blend_overlay(photo, geo, mask, alpha=alpha)
    radius = max(1, round(max(out.shape[:2]) / 300))
    out = draw_points(out, detected_px, (40, 220, 40), radius)
    out = draw_points(out, model_px, (235, 40, 40), radius)
    scale = max(0.4, max(out.shape[:2]) / 1600)
    for i, (text, col) in enumerate((("detected landmarks", (40, 220, 40)), ("model landmarks", (235, 40, 40)))):
        org = (8, int(22 * scale * (i + 1) * 1.3))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, col, 1, cv2.LINE_AA)
    return out


def bake_albedo(model, vertices_px, visibility, shading_v, albedo_v, mirror, source, size: int = 512):
    """Bake a UV albedo texture (3, S, S) from the photo, completed by symmetry and the prior.

    vertices_px (V, 3) [u, v, depth] of the fitted vertices in the ``source`` image
    (1, 3, H, W) float [0, 1]; visibility (V,) in [0, 1]; shading_v (V, 3) the fitted SH
    shading per vertex; albedo_v (V, 3) the fitted, already completed per-vertex albedo
    (the prior where nothing was seen). Texels seen in the photo get photo / shading; the
    rest take the mirrored texel when that one was seen, otherwise the per-vertex albedo.
    """
    import cv2
    import torch

    from engine.render.rasterize import interpolate
    from engine.render.uv import rasterize_uv, sample_uv_map, unwrap_photo, vertex_uv

    with torch.no_grad():
        fr = rasterize_uv(model.uv, model.face_uv, size)
        tex, mask = unwrap_photo(source, vertices_px[None], visibility[None], model.faces, model.uv, model.face_uv,
                                 uv_size=size, uv_fragments=fr)
        shade_map = interpolate(shading_v[None], model.faces, fr)[0].permute(2, 0, 1)
        prior_map = interpolate(albedo_v[None], model.faces, fr)[0].permute(2, 0, 1)
        vis_map = interpolate(visibility[None, :, None].float(), model.faces, fr)[0, ..., 0]
        photo_alb = (tex[0] / shade_map.clamp_min(0.08)).clamp(0, 1)
        # soft confidence: visible, facing texels; eroded so silhouette texels do not bleed
        m = (mask[0, 0] * vis_map.clamp(0, 1)).numpy().astype(np.float32)
        m = cv2.erode(m, np.ones((3, 3), np.uint8))
        m = cv2.GaussianBlur(m, (0, 0), size / 256.0)
        conf = torch.from_numpy(m)
        # mirror: the same barycentrics on the mirrored vertices' UVs
        vuv = vertex_uv(model.uv, model.face_uv, model.faces, model.n_vertices)
        has_m = mirror >= 0
        mv = torch.where(has_m, mirror, torch.arange(len(mirror)))
        muv = interpolate(vuv[mv][None], model.faces, fr)  # (1, S, S, 2)
        mirrored = sample_uv_map(photo_alb[None], muv.reshape(1, -1, 2))[0].T.reshape(3, size, size)
        mconf = sample_uv_map(conf[None, None], muv.reshape(1, -1, 2))[0, :, 0].reshape(size, size)
        mconf = mconf * interpolate(has_m.float()[None, :, None], model.faces, fr)[0, ..., 0].clamp(0, 1)
        mconf = torch.minimum(mconf, 1 - conf)
        out = conf * photo_alb + mconf * mirrored + (1 - conf - mconf).clamp_min(0) * prior_map
        covered = fr.mask[0].numpy().astype(np.uint8)
        img = out.permute(1, 2, 0).numpy().astype(np.float32)
    # pad outside the layout so texture filtering at seams does not pick up black
    return to_uint8(pad_texture(img, covered > 0))


def pad_texture(img: np.ndarray, covered: np.ndarray, rounds: int = 6) -> np.ndarray:
    """Grow colours out of the UV islands (a few box-filter rounds), mean colour beyond."""
    import cv2

    out = img.copy()
    m = covered.astype(np.float32)
    mean = (img * m[..., None]).sum((0, 1)) / max(m.sum(), 1.0)
    for _ in range(rounds):
        num = cv2.blur(out * m[..., None], (5, 5))
        den = cv2.blur(m, (5, 5))
        grow = (den > 1e-3) & (m == 0)
        out[grow] = num[grow] / den[grow][:, None]
        m = np.maximum(m, grow.astype(np.float32))
    out[m == 0] = mean
    return out


# ---------------------------------------------------------------------------- rig.json
RIG_VERSION = 1
RIG_MIN_WEIGHT = 1e-3


def build_rig(model, identity, expression, pose, min_weight: float = RIG_MIN_WEIGHT) -> dict[str, Any]:
    """The ``rig.json`` dictionary: joints at rest, the fitted pose and sparse skin weights.

    ``head.glb`` holds the mesh with pose = 0, so the rig carries the fitted joint rotations
    separately (a DCC tool poses bones with it). Rest joints are those of the fitted identity
    and expression at pose 0 (model frame, metres); ``pose`` is the local axis-angle per joint
    (docs/conventions.md). Skin weights are listed per joint for the model's vertex order —
    dropping weights below ``min_weight`` (each vertex's kept weights are renormalised to sum
    to 1). Blender's glTF import welds ``head.glb``'s UV seams back to the model's vertex
    count but in its own order, so ``rest_vertices`` (the GLB's base mesh in model order)
    lets an importer match its vertices to the weights by position.
    identity (K_id,), expression (K_exp,), pose (J, 3) or empty.
    """
    import torch

    with torch.no_grad():
        dev = model.template.device
        ident = torch.as_tensor(identity, dtype=torch.float32, device=dev)[None]
        expr = torch.as_tensor(expression, dtype=torch.float32, device=dev)[None]
        joints = model(ident, expr, None).joints[0].cpu().numpy().astype(np.float64)
        rest = model(ident, None, None).vertices[0].cpu().numpy().astype(np.float64)
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
    }


def write_rig(path: str | os.PathLike[str], rig: Mapping[str, Any]) -> None:
    """Write ``rig.json`` (compact; skin-weight lists are long)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(_tolist(rig), fh, separators=(",", ":"))
        fh.write("\n")
