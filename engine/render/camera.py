"""Cameras: full perspective (OpenCV intrinsics/extrinsics) and weak perspective.

Conventions (docs/conventions.md): a model-frame point maps to the OpenCV camera frame by
``X_cam = R @ X + t`` (+X right, +Y down, +Z forward); pixels ``u = fx·x/z + cx``,
``v = fy·y/z + cy`` with pixel centres at integer + 0.5.

Both cameras expose the same small interface the renderer needs:

* ``to_camera(points) -> (B, N, 3)`` points in the (OpenCV-oriented) camera frame,
* ``project(points) -> (uv (B, N, 2) pixels, depth (B, N))``,
* ``to_screen(points) -> (B, N, 3)`` = ``[u, v, depth]``, the rasteriser's input,
* ``rotate_normals(normals) -> (B, N, 3)`` normals in the camera frame,
* ``view_directions(points_cam) -> (B, N, 3)`` unit vectors from the surface towards the eye,
* ``perspective`` (bool): whether depth interpolation must be perspective-correct.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "PerspectiveCamera",
    "WeakPerspectiveCamera",
    "Camera",
    "intrinsics",
    "look_at",
    "frontal_camera",
    "frontal_rotation",
    "FRONTAL_R",
]

# OpenCV camera of a viewer in front of the face: model +Y up -> camera +Y down, etc.
# The one definition of the frontal rotation; use ``frontal_rotation()`` for a tensor.
FRONTAL_R = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))


def frontal_rotation(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """``R (3, 3)`` of a camera looking at the face from the front (model +Z towards it)."""
    return torch.tensor(FRONTAL_R, dtype=dtype, device=device)


def intrinsics(
    fx: Tensor | float,
    fy: Tensor | float | None = None,
    cx: Tensor | float | None = None,
    cy: Tensor | float | None = None,
    image_size: tuple[int, int] = (224, 224),
    batch_size: int = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Build ``K (B, 3, 3)``; the principal point defaults to the image centre ``(W/2, H/2)``."""
    H, W = image_size
    fy = fx if fy is None else fy
    cx = W / 2.0 if cx is None else cx
    cy = H / 2.0 if cy is None else cy
    vals = [torch.as_tensor(v, dtype=dtype, device=device).reshape(-1).expand(batch_size) for v in (fx, fy, cx, cy)]
    K = torch.zeros(batch_size, 3, 3, dtype=dtype, device=device)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2] = vals
    K[:, 2, 2] = 1.0
    return K


class _Projection:
    """What both cameras share: model-frame points -> pixels by ``to_camera`` then
    ``project_camera`` (each camera defines those two)."""

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Model-frame points -> ``(uv (B, N, 2) in pixels, depth (B, N) in metres)``."""
        return self.project_camera(self.to_camera(points))

    def to_screen(self, points: Tensor) -> Tensor:
        """``[u, v, z]`` per point, the rasteriser's input ``(B, N, 3)``."""
        uv, z = self.project(points)
        return torch.cat([uv, z[..., None]], -1)


@dataclass
class PerspectiveCamera(_Projection):
    """Pinhole camera with intrinsics ``K (B,3,3)``, rotation ``R (B,3,3)``, translation ``t (B,3)``.

    Lens distortion is not modelled. Points behind the camera (z <= 0) project to
    meaningless pixels; the rasteriser drops triangles that touch ``z <= near``.
    """

    K: Tensor
    R: Tensor
    t: Tensor
    image_size: tuple[int, int]

    perspective = True

    @property
    def batch_size(self) -> int:
        return self.R.shape[0]

    def to_camera(self, points: Tensor) -> Tensor:
        """Model frame ``(B, N, 3)`` -> OpenCV camera frame ``(B, N, 3)``."""
        return points @ self.R.transpose(-1, -2) + self.t[:, None, :]

    def project_camera(self, points_cam: Tensor) -> tuple[Tensor, Tensor]:
        """Camera-frame points -> pixel coordinates ``(B, N, 2)`` and depth ``z`` ``(B, N)``."""
        z = points_cam[..., 2]
        xy = points_cam[..., :2] / z[..., None]
        f = torch.stack([self.K[:, 0, 0], self.K[:, 1, 1]], -1)[:, None, :]
        c = torch.stack([self.K[:, 0, 2], self.K[:, 1, 2]], -1)[:, None, :]
        skew = self.K[:, 0, 1][:, None]
        uv = xy * f + c
        uv = torch.stack([uv[..., 0] + skew * xy[..., 1], uv[..., 1]], -1)
        return uv, z

    def rotate_normals(self, normals: Tensor) -> Tensor:
        """Model-frame normals -> camera frame (rotation only)."""
        return normals @ self.R.transpose(-1, -2)

    def view_directions(self, points_cam: Tensor) -> Tensor:
        """Unit vectors from camera-frame surface points towards the optical centre."""
        return -points_cam / points_cam.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "PerspectiveCamera":
        return PerspectiveCamera(self.K.to(device, dtype), self.R.to(device, dtype), self.t.to(device, dtype), self.image_size)

    def resized(self, image_size: tuple[int, int]) -> "PerspectiveCamera":
        """The same view rendered at another resolution ``(H, W)`` (intrinsics scaled)."""
        H, W = self.image_size
        h, w = image_size
        scale = torch.tensor([w / W, h / H, 1.0], dtype=self.K.dtype, device=self.K.device)
        return PerspectiveCamera(self.K * scale[None, :, None], self.R, self.t, (h, w))

    def window(self, x0: int, y0: int, width: int, height: int) -> "PerspectiveCamera":
        """The ``width × height`` pixels from ``(x0, y0)`` (top left, pixel edges) of this
        camera's image as an image of their own: the principal point shifted, nothing else."""
        K = self.K.clone()
        K[:, 0, 2] -= float(x0)
        K[:, 1, 2] -= float(y0)
        return PerspectiveCamera(K, self.R, self.t, (int(height), int(width)))


@dataclass
class WeakPerspectiveCamera(_Projection):
    """Scaled orthographic camera of CEST/DECA: ``u_ndc = s·x + tx``, ``v_ndc = -(s·y) + ty``.

    ``scale (B,)`` and ``translation (B, 2)`` act on model-frame (or already posed)
    points; NDC spans ``[-1, 1]`` over the image with ``+v`` down, so pixels are
    ``u = (u_ndc + 1)·W/2``, ``v = (v_ndc + 1)·H/2``. The camera frame is the model frame
    with Y and Z flipped (OpenCV orientation, like a frontal camera), and the depth used
    for visibility is ``depth_offset - z`` in metres (only its order matters).
    """

    scale: Tensor
    translation: Tensor
    image_size: tuple[int, int]
    depth_offset: float = 10.0

    perspective = False

    @property
    def batch_size(self) -> int:
        return self.scale.shape[0]

    def to_camera(self, points: Tensor) -> Tensor:
        """Model frame -> camera orientation ``(x, -y, depth_offset - z)``."""
        return torch.stack([points[..., 0], -points[..., 1], self.depth_offset - points[..., 2]], -1)

    def project_camera(self, points_cam: Tensor) -> tuple[Tensor, Tensor]:
        H, W = self.image_size
        s = self.scale[:, None]
        u_ndc = s * points_cam[..., 0] + self.translation[:, None, 0]
        v_ndc = s * points_cam[..., 1] + self.translation[:, None, 1]
        uv = torch.stack([(u_ndc + 1.0) * (W / 2.0), (v_ndc + 1.0) * (H / 2.0)], -1)
        return uv, points_cam[..., 2]

    def rotate_normals(self, normals: Tensor) -> Tensor:
        return torch.stack([normals[..., 0], -normals[..., 1], -normals[..., 2]], -1)

    def view_directions(self, points_cam: Tensor) -> Tensor:
        d = torch.zeros_like(points_cam)
        d[..., 2] = -1.0
        return d

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "WeakPerspectiveCamera":
        return WeakPerspectiveCamera(self.scale.to(device, dtype), self.translation.to(device, dtype), self.image_size, self.depth_offset)

    def resized(self, image_size: tuple[int, int]) -> "WeakPerspectiveCamera":
        """The same view at another resolution ``(H, W)`` (NDC does not depend on it)."""
        return WeakPerspectiveCamera(self.scale, self.translation, tuple(image_size), self.depth_offset)


Camera = PerspectiveCamera | WeakPerspectiveCamera


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """OpenCV extrinsics ``(R (B,3,3), t (B,3))`` of a camera at ``eye`` looking at ``target``.

    ``up`` (default model +Y) ends up pointing to the top of the image (camera -Y).
    """
    if up is None:
        up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
    z = target - eye
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.cross(z, up.expand_as(z), dim=-1)  # camera right = forward × up
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    y = torch.cross(z, x, dim=-1)  # camera down
    R = torch.stack([x, y, z], -2)  # rows are the camera axes in model coordinates
    t = -(R @ eye[..., None])[..., 0]
    return R, t


def frontal_camera(
    distance: float = 1.0,
    focal_px: float = 1000.0,
    image_size: tuple[int, int] = (224, 224),
    batch_size: int = 1,
    center: tuple[float, float, float] = (0.0, 0.0, 0.0),
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> PerspectiveCamera:
    """Camera on the model's +Z axis, ``distance`` metres from ``center``, looking at it."""
    R = torch.tensor(FRONTAL_R, dtype=dtype, device=device).expand(batch_size, 3, 3).clone()
    c = torch.tensor(center, dtype=dtype, device=device)
    t = (torch.tensor([0.0, 0.0, distance], dtype=dtype, device=device) - R[0] @ c).expand(batch_size, 3).clone()
    K = intrinsics(focal_px, image_size=image_size, batch_size=batch_size, dtype=dtype, device=device)
    return PerspectiveCamera(K, R, t, image_size)
