"""MoFA's per-vertex photometric path: sample the photo at projected vertices + visibility."""

from __future__ import annotations

import torch
from torch import Tensor
import torch.nn.functional as Fn

from .camera import PerspectiveCamera, WeakPerspectiveCamera
from .rasterize import rasterize
from .shading import vertex_normals

__all__ = ["sample_image", "vertex_visibility"]


def sample_image(image: Tensor, points_px: Tensor, mode: str = "bilinear") -> Tensor:
    """Bilinear samples ``(B, N, C)`` of ``image (B, C, H, W)`` at pixel positions ``(B, N, 2)``.

    Pixel-centre convention: ``(x + 0.5, y + 0.5)`` returns pixel ``[y, x]`` exactly.
    Differentiable w.r.t. the image and the positions; outside the image the border is
    repeated (mask such points with :func:`vertex_visibility`).
    """
    H, W = image.shape[-2:]
    grid = torch.stack([points_px[..., 0] * (2.0 / W) - 1.0, points_px[..., 1] * (2.0 / H) - 1.0], -1)
    out = Fn.grid_sample(image, grid[:, :, None, :].to(image.dtype), mode=mode, padding_mode="border", align_corners=False)
    return out[..., 0].transpose(1, 2)


@torch.no_grad()
def vertex_visibility(
    vertices: Tensor,
    faces: Tensor,
    camera: PerspectiveCamera | WeakPerspectiveCamera,
    tolerance: float = 5e-3,
    normals: Tensor | None = None,
    cull_backfaces: bool = True,
) -> Tensor:
    """Visible vertices ``(B, V)`` bool: front-facing, inside the image and not occluded.

    ``vertices`` are model-frame ``(B, V, 3)``. Front-facing: the camera-frame normal
    points towards the eye. Occlusion: the vertex depth is at most ``tolerance`` (metres)
    behind the farthest rasterised depth among the four pixel centres around it
    (background counts as unoccluded), so partly occluded vertices count as visible.
    ``cull_backfaces`` leaves back faces out of the depth buffer (twice as fast; only
    matters when an inner side seen through a hole could occlude). Not differentiable.
    """
    H, W = camera.image_size
    if normals is None:
        normals = vertex_normals(vertices, faces)
    pts_cam = camera.to_camera(vertices)
    n_cam = camera.rotate_normals(normals)
    front = (n_cam * camera.view_directions(pts_cam)).sum(-1) > 0
    uv, z = camera.project_camera(pts_cam)
    screen = torch.cat([uv, z[..., None]], -1)
    frags = rasterize(screen, faces, (H, W), perspective=camera.perspective, cull_backfaces=cull_backfaces)
    depth = torch.where(frags.mask, frags.depth, torch.full_like(frags.depth, float("inf")))
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
    # The four pixel centres around the vertex straddle it; on a steep but unoccluded
    # surface at least one of them is not nearer than the vertex, under an occluder all are.
    x0 = (uv[..., 0] - 0.5).floor().long()
    y0 = (uv[..., 1] - 0.5).floor().long()
    b = torch.arange(vertices.shape[0], device=vertices.device)[:, None]
    far = torch.full_like(z, -float("inf"))
    for dy in (0, 1):
        for dx in (0, 1):
            far = torch.maximum(far, depth[b, (y0 + dy).clamp(0, H - 1), (x0 + dx).clamp(0, W - 1)])
    unoccluded = z <= far + tolerance
    if camera.perspective:
        unoccluded &= z > 0
    return front & inside & unoccluded
