"""MoFA's per-vertex photometric path: sample the photo at projected vertices + visibility."""

from __future__ import annotations

import torch
from torch import Tensor
import torch.nn.functional as Fn

from .camera import PerspectiveCamera, WeakPerspectiveCamera
from .rasterize import rasterize
from .shading import vertex_normals

__all__ = ["sample_image", "vertex_visibility", "splat_visibility", "facing_camera"]


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


def facing_camera(camera: PerspectiveCamera | WeakPerspectiveCamera, points_cam: Tensor, normals: Tensor) -> Tensor:
    """``(B, V)`` bool: the model-frame ``normals`` point towards the eye from the
    camera-frame points ``points_cam (B, V, 3)`` (front-facing vertices)."""
    return (camera.rotate_normals(normals) * camera.view_directions(points_cam)).sum(-1) > 0


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
    front = facing_camera(camera, pts_cam, normals)
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


@torch.no_grad()
def splat_visibility(
    screen: Tensor,
    front: Tensor,
    image_size: tuple[int, int],
    cells: int = 48,
    tolerance: float = 0.02,
) -> Tensor:
    """Visible vertices ``(B, V)`` bool by a vertex-splat depth test: no triangles rasterised.

    ``screen (B, V, 3)`` are the vertices' ``[u, v, depth]`` (pixels of ``image_size (H,
    W)``, camera depth in metres) and ``front (B, V)`` bool marks the front-facing ones
    (as in :func:`vertex_visibility`). Occlusion: the image is cut into ``cells × cells``
    cells, each keeps the nearest depth of the front-facing vertices that project into it
    (one ``scatter_reduce``), and a vertex is occluded when it lies more than ``tolerance``
    behind its cell's nearest vertex. The cells must be large enough that an occluder (the
    nose of a turned face) puts vertices into the cells it covers, and the tolerance larger
    than the depth a steep surface spans across one cell. On held-out generator faces at
    128 px, 48 cells and 2 cm mark 0.8 % of the face skin visible and 0.9 % hidden where a
    128-px z-buffer does not (the 64-px z-buffer: 0.7 % and 0.1 %), in a fraction of its
    time (CEST's unwrap at inference). Not differentiable.
    """
    H, W = image_size
    u, v, z = screen.unbind(-1)
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (z > 0)
    cx = (u * (cells / W)).floor().long().clamp(0, cells - 1)
    cy = (v * (cells / H)).floor().long().clamp(0, cells - 1)
    cell = cy * cells + cx
    # only front-facing vertices inside the image occlude (a back face is never nearer than
    # the front surface in front of it)
    seen = front & inside
    key = torch.where(seen, z, torch.full_like(z, float("inf")))
    nearest = torch.full((z.shape[0], cells * cells), float("inf"), dtype=z.dtype, device=z.device)
    nearest = nearest.scatter_reduce(1, cell, key, reduce="amin")
    return seen & (z <= nearest.gather(1, cell) + tolerance)
