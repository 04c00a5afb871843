"""Differentiable renderer in pure PyTorch (see docs/renderer.md).

nvdiffrast-style pipeline ``rasterize -> interpolate -> texture -> antialias`` plus cameras,
SH shading, MoFA's per-vertex photometric sampling and UV-space operations.
"""

from .camera import (FRONTAL_R, Camera, PerspectiveCamera, WeakPerspectiveCamera, frontal_camera, frontal_rotation,
                     intrinsics, look_at)
from .rasterize import (
    Fragments,
    antialias,
    face_neighbours,
    interpolate,
    interpolate_foreground,
    rasterize,
    scatter_foreground,
    signed_area2,
    soft_silhouette,
    texture,
)
from .renderer import RenderOutput, render_mesh
from .rotation import axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle
from .shading import SH_CONSTANTS, camera_to_view, face_normals, sh_basis, shade_sh, vertex_normals
from .uv import (
    apply_displacement,
    displaced_uv_positions,
    normal_map_from_displacement,
    perturb_normals,
    rasterize_uv,
    sample_uv_cavity,
    sample_uv_gradient,
    sample_uv_map,
    unwrap_photo,
    uv_tangents,
    uv_to_texel,
    vertex_uv,
)
from .vertex_sampling import facing_camera, sample_image, splat_visibility, vertex_visibility

__all__ = [
    "Camera",
    "PerspectiveCamera",
    "WeakPerspectiveCamera",
    "frontal_camera",
    "frontal_rotation",
    "FRONTAL_R",
    "intrinsics",
    "look_at",
    "Fragments",
    "rasterize",
    "interpolate",
    "interpolate_foreground",
    "scatter_foreground",
    "texture",
    "antialias",
    "soft_silhouette",
    "face_neighbours",
    "signed_area2",
    "RenderOutput",
    "render_mesh",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "euler_to_matrix",
    "SH_CONSTANTS",
    "camera_to_view",
    "face_normals",
    "vertex_normals",
    "sh_basis",
    "shade_sh",
    "uv_to_texel",
    "rasterize_uv",
    "vertex_uv",
    "unwrap_photo",
    "sample_uv_map",
    "apply_displacement",
    "displaced_uv_positions",
    "normal_map_from_displacement",
    "uv_tangents",
    "sample_uv_gradient",
    "sample_uv_cavity",
    "perturb_normals",
    "sample_image",
    "vertex_visibility",
    "splat_visibility",
    "facing_camera",
]
