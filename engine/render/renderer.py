"""One-call mesh rendering on top of the rasteriser: albedo × SH shading, masks, depth."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .camera import PerspectiveCamera, WeakPerspectiveCamera
from .rasterize import (
    Fragments,
    antialias as _antialias,
    face_neighbours,
    interpolate,
    interpolate_foreground,
    rasterize,
    scatter_foreground,
    texture as _texture,
)
from .shading import camera_to_view, shade_sh, vertex_normals
from .uv import perturb_normals, sample_uv_gradient, to_window, uv_tangents

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
    displacement: Tensor | None = None,
    displacement_window: Tensor | None = None,
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
    ``displacement (B, 1, S, S)``: a UV height map (metres along the normals; DECA's detail)
    that bends the per-pixel normals (:func:`engine.render.uv.perturb_normals`: the normal of
    the displaced surface to first order, from the map's gradient at each pixel's ``uv`` /
    ``face_uv`` and the triangle's UV tangents; a zero map leaves the shading as it is); with
    ``displacement_window (B, 4)`` the map covers only that UV sub-rectangle ``(u0, v0, u1,
    v1)`` and pixels outside it are not bent. Per-pixel shading only.
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
    # Per-pixel work runs on the covered pixels only (ordered as fr.fg_index).
    fg_b = torch.div(fr.fg_index, H * W, rounding_mode="floor")

    if texture is not None:
        if uv is None or face_uv is None:
            raise ValueError("texture rendering needs uv and face_uv")
        pix_uv = interpolate(uv.to(vertices.dtype), face_uv, fr)
        albedo_fg = _texture(texture, pix_uv).reshape(B * H * W, -1).index_select(0, fr.fg_index)
    else:
        vert_albedo = vertex_colors if vertex_colors is not None else torch.ones_like(vertices[:1])
        albedo_fg = interpolate_foreground(vert_albedo, faces, fr)

    n_fg = interpolate_foreground(n_view, faces, fr)
    if displacement is not None:
        if uv is None or face_uv is None:
            raise ValueError("a displacement map needs uv and face_uv")
        if shade_per != "pixel":
            raise ValueError("a displacement map is shaded per pixel (shade_per='pixel')")
        pix_uv = interpolate(uv.to(vertices.dtype), face_uv, fr) if texture is None else pix_uv
        grad = sample_uv_gradient(displacement.to(vertices.dtype), pix_uv.reshape(B, H * W, 2))
        if displacement_window is not None:  # the map's texels cover the window only
            win = displacement_window.to(vertices.dtype)
            inner = to_window(pix_uv.reshape(B, H * W, 2), win)
            grad = sample_uv_gradient(displacement.to(vertices.dtype), inner) / (win[:, None, 2:] - win[:, None, :2])
            grad = grad * ((inner >= 0) & (inner <= 1)).all(-1, keepdim=True).to(grad.dtype)
        grad_fg = grad.reshape(B * H * W, 2).index_select(0, fr.fg_index)
        tu, tv = uv_tangents(vertices, faces, uv, face_uv)  # (B, F, 3) model frame
        tu, tv = camera_to_view(camera.rotate_normals(tu)), camera_to_view(camera.rotate_normals(tv))
        tri = fr.fg_tri.to(torch.int64) + fg_b * tu.shape[1]
        n_fg = perturb_normals(n_fg, tu.reshape(-1, 3).index_select(0, tri), tv.reshape(-1, 3).index_select(0, tri),
                               grad_fg)
    n_fg = n_fg / n_fg.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if sh is None:
        shade_fg = torch.ones_like(albedo_fg)
        color_fg = albedo_fg
    elif shade_per == "vertex":
        vshade = shade_sh(n_view, sh, ambient)
        shade_fg = interpolate_foreground(vshade, faces, fr)
        if texture is None:
            color_fg = interpolate_foreground(vert_albedo.expand(B, -1, -1) * vshade, faces, fr)
        else:
            color_fg = albedo_fg * shade_fg
    elif shade_per == "pixel":
        # shade_sh with a per-pixel batch index: (N, 9) basis times each pixel's (9, 3) code.
        shade_fg = shade_sh(n_fg[:, None, :], sh.reshape(B, 9, 3)[fg_b], ambient)[:, 0]
        color_fg = albedo_fg * shade_fg
    else:
        raise ValueError(f"shade_per must be 'pixel' or 'vertex', got {shade_per!r}")

    if isinstance(background, Tensor) and background.dim() == 4:
        bg = background.permute(0, 2, 3, 1)
    else:
        bg = torch.as_tensor(background, dtype=color_fg.dtype, device=color_fg.device).reshape(-1).expand(3)
        bg = bg.reshape(1, 1, 1, 3)
    extra = [torch.ones_like(color_fg[:, :1])]  # coverage, antialiased below
    if region_mask is not None:
        rm = region_mask.to(vertices.dtype)
        rm = rm[None, :, None] if rm.dim() == 1 else rm[..., None]
        extra.append(interpolate_foreground(rm, faces, fr))
    stacked = torch.cat([scatter_foreground(color_fg, fr, bg), scatter_foreground(torch.cat(extra, -1), fr)], -1)
    if antialias:
        nb = neighbours if neighbours is not None else face_neighbours(fr.faces)
        stacked = _antialias(stacked, fr, nb)
    image, soft_mask = stacked[..., :3], stacked[..., 3:4].clamp(0.0, 1.0)
    region = stacked[..., 4:5] if region_mask is not None else None
    pix_n = scatter_foreground(n_fg, fr)
    albedo = scatter_foreground(albedo_fg, fr)
    shading = scatter_foreground(shade_fg, fr)
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
