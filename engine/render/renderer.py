"""One-call mesh rendering on top of the rasteriser: albedo × SH shading, masks, depth."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .camera import PerspectiveCamera, WeakPerspectiveCamera
from .rasterize import Fragments, antialias as _antialias, face_neighbours, interpolate, rasterize, texture as _texture
from .shading import camera_to_view, shade_sh, vertex_normals

__all__ = ["RenderOutput", "render_mesh"]


@dataclass
class RenderOutput:
    """Images are channels-first like photos; per-pixel maps are ``(B, H, W[, C])``."""

    image: Tensor  # (B, 3, H, W) shaded colour composited over the background
    mask: Tensor  # (B, 1, H, W) coverage in [0, 1] (antialiased at the contour if requested)
    depth: Tensor  # (B, H, W) camera depth, 0 on background
    normals: Tensor  # (B, 3, H, W) unit normals in the view frame (+Y up, +Z to the camera)
    albedo: Tensor  # (B, 3, H, W) unshaded colour (0 on background)
    shading: Tensor  # (B, 3, H, W) SH shading (0 on background; 1 when no SH is given)
    tri_id: Tensor  # (B, H, W) int64, -1 = background
    region: Tensor | None  # (B, 1, H, W) interpolated region mask, when one was given
    fragments: Fragments


def render_mesh(
    vertices: Tensor,
    faces: Tensor,
    camera: PerspectiveCamera | WeakPerspectiveCamera,
    vertex_colors: Tensor | None = None,
    texture: Tensor | None = None,
    uv: Tensor | None = None,
    face_uv: Tensor | None = None,
    sh: Tensor | None = None,
    ambient: float = 1.0,
    region_mask: Tensor | None = None,
    background: Tensor | float = 0.0,
    antialias: bool = True,
    cull_backfaces: bool = True,
    shade_per: str = "pixel",
    neighbours: Tensor | None = None,
) -> RenderOutput:
    """Render model-frame ``vertices (B, V, 3)`` with ``faces (F, 3)`` through ``camera``.

    Colour comes from ``vertex_colors (B|1, V, 3)`` or from ``texture (B, 3, S, S)`` sampled
    at ``uv (T, 2)`` / ``face_uv (F, 3)`` (v up); neither -> white. ``sh (B, 9, 3)`` or
    ``(B, 27)`` lights it with Lambertian SH in the view frame (:func:`shade_sh`, MoFA's
    ``ambient`` offset); ``None`` leaves it unshaded. ``shade_per`` = ``"pixel"`` shades
    interpolated normals, ``"vertex"`` shades vertices and interpolates colours (Gouraud,
    like MoFA's per-vertex model). ``region_mask (V,)`` or ``(B, V)`` is interpolated as an
    extra channel (e.g. ``face_skin``). ``background`` is a constant or ``(B, 3, H, W)``.
    ``cull_backfaces`` (default on) is right for closed or outward-facing surfaces and
    halves the rasterisation work; turn it off to see inner sides through holes.
    """
    H, W = camera.image_size
    B = vertices.shape[0]
    normals = vertex_normals(vertices, faces)
    pts_cam = camera.to_camera(vertices)
    uvp, z = camera.project_camera(pts_cam)
    screen = torch.cat([uvp, z[..., None]], -1)
    fr = rasterize(screen, faces, (H, W), perspective=camera.perspective, cull_backfaces=cull_backfaces)
    n_view = camera_to_view(camera.rotate_normals(normals))
    mask = fr.mask[..., None].to(vertices.dtype)  # (B, H, W, 1)

    if texture is not None:
        if uv is None or face_uv is None:
            raise ValueError("texture rendering needs uv and face_uv")
        pix_uv = interpolate(uv.to(vertices.dtype), face_uv, fr)
        albedo = _texture(texture, pix_uv)
        vert_albedo = None
    else:
        vert_albedo = vertex_colors if vertex_colors is not None else torch.ones_like(vertices[:1])
        albedo = None

    pix_n = interpolate(n_view, faces, fr)
    pix_n = pix_n / pix_n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if sh is None:
        shading = mask.expand(B, H, W, 3)
        color = albedo if albedo is not None else interpolate(vert_albedo, faces, fr)
    elif shade_per == "vertex":
        vshade = shade_sh(n_view, sh, ambient)
        shading = interpolate(vshade, faces, fr)
        if albedo is None:
            color = interpolate(vert_albedo.expand(B, -1, -1) * vshade, faces, fr)
        else:
            color = albedo * shading
    elif shade_per == "pixel":
        shading = shade_sh(pix_n, sh, ambient) * mask
        if albedo is None:
            albedo = interpolate(vert_albedo, faces, fr)
        color = albedo * shading
    else:
        raise ValueError(f"shade_per must be 'pixel' or 'vertex', got {shade_per!r}")
    if albedo is None:
        albedo = interpolate(vert_albedo, faces, fr)
    albedo = albedo * mask

    if isinstance(background, Tensor) and background.dim() == 4:
        bg = background.permute(0, 2, 3, 1).to(color.dtype)
    else:
        bg = torch.as_tensor(background, dtype=color.dtype, device=color.device)
    image = color * mask + bg * (1.0 - mask)
    region = None
    if region_mask is not None:
        rm = region_mask.to(vertices.dtype)
        rm = rm[None, :, None] if rm.dim() == 1 else rm[..., None]
        region = interpolate(rm, faces, fr)
    soft_mask = mask
    if antialias:
        nb = neighbours if neighbours is not None else face_neighbours(fr.faces)
        stacked = torch.cat([image, mask] + ([region] if region is not None else []), -1)
        stacked = _antialias(stacked, fr, nb)
        image, soft_mask = stacked[..., :3], stacked[..., 3:4].clamp(0.0, 1.0)
        if region is not None:
            region = stacked[..., 4:5]
    perm = lambda x: x.permute(0, 3, 1, 2)  # noqa: E731
    return RenderOutput(
        image=perm(image),
        mask=perm(soft_mask),
        depth=fr.depth,
        normals=perm(pix_n * mask),
        albedo=perm(albedo),
        shading=perm(shading),
        tri_id=fr.tri_id,
        region=perm(region) if region is not None else None,
        fragments=fr,
    )
