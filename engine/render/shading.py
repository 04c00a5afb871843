"""Normals and Lambertian shading under 3-band spherical-harmonics lighting.

SH convention (Ramamoorthi & Hanrahan, "An efficient representation for irradiance
environment maps", 2001): the 9 real SH ``Y_lm`` in the order
``[Y00, Y1-1, Y10, Y11, Y2-2, Y2-1, Y20, Y21, Y22]`` = ``[1, y, z, x, xy, yz, 3z²-1, xz, x²-y²]``
(times their normalisation constants), each multiplied by the clamped-cosine convolution
factor ``Â_l / π`` (1, 2/3, 1/4). With this basis, ``shading = Σ_k L_k · basis_k(n)`` is the
outgoing radiance of a white Lambertian surface lit by the environment ``Σ L_lm Y_lm``, so
``colour = albedo · shading``.

Normals are expressed in the *view frame* by default: the OpenCV camera frame with Y and Z
flipped (+X right, +Y up, +Z towards the camera). For a frontal camera this is the model
frame, so "light from above" is a positive coefficient 1 (``y``) in either case.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "face_normals",
    "vertex_normals",
    "sh_basis",
    "shade_sh",
    "SH_CONSTANTS",
    "camera_to_view",
]

_C0 = 0.5 / math.sqrt(math.pi)  # 0.282095
_C1 = math.sqrt(3.0 / (4.0 * math.pi))  # 0.488603
_C2 = 0.5 * math.sqrt(15.0 / math.pi)  # 1.092548
_C20 = 0.25 * math.sqrt(5.0 / math.pi)  # 0.315392
_C22 = 0.25 * math.sqrt(15.0 / math.pi)  # 0.546274
_A = (1.0, 2.0 / 3.0, 0.25)  # Â_l / π for l = 0, 1, 2

#: Per-coefficient factors ``(Â_l/π)·c_lm`` that multiply the polynomial terms.
SH_CONSTANTS = (
    _A[0] * _C0,
    _A[1] * _C1,
    _A[1] * _C1,
    _A[1] * _C1,
    _A[2] * _C2,
    _A[2] * _C2,
    _A[2] * _C20,
    _A[2] * _C2,
    _A[2] * _C22,
)


def _flat_corner_index(faces: Tensor, B: int, V: int) -> Tensor:
    """``(B·3F,)`` the triangle corners of every batch item as rows of a flat ``(B·V, 3)``
    vertex buffer. Gathers and scatters along dim 0 of that buffer are what is fast on the CPU
    (along dim 1 of ``(B, V, 3)``, ``index_add`` — the gather's backward — is ~2-6x slower)."""
    idx = faces.reshape(-1).to(torch.int64)
    if B == 1:
        return idx
    return (idx[None] + V * torch.arange(B, device=faces.device)[:, None]).reshape(-1)


def face_normals(vertices: Tensor, faces: Tensor, normalize: bool = True) -> Tensor:
    """Per-face normals ``(B, F, 3)``; unnormalised ones have length 2·area."""
    # one gather of all corners (the same values as the per-column gathers
    # ``vertices[:, faces[:, i]]``, ~2x faster forward on the CPU, a little faster backward)
    B, V = vertices.shape[:2]
    corners = vertices.reshape(B * V, 3).index_select(0, _flat_corner_index(faces, B, V))
    v0, v1, v2 = corners.view(B, -1, 3, 3).unbind(2)
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    if normalize:
        n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-20)
    return n


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals ``(B, V, 3)`` for counter-clockwise faces."""
    fn = face_normals(vertices, faces, normalize=False)  # area-weighted
    B, V = vertices.shape[:2]
    # scatter over one flat (B·V, 3) buffer (see _flat_corner_index)
    contrib = fn[:, :, None, :].expand(B, fn.shape[1], 3, 3).reshape(-1, 3)
    n = torch.zeros(B * V, 3, dtype=vertices.dtype, device=vertices.device).index_add(
        0, _flat_corner_index(faces, B, V), contrib)
    n = n.reshape(B, V, 3)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-20)


def vertex_normals_np(vertices, faces):
    """:func:`vertex_normals` of one mesh given as numpy arrays: (V, 3) float64 array."""
    import numpy as np

    v = torch.from_numpy(np.ascontiguousarray(vertices, np.float64))[None]
    return vertex_normals(v, torch.from_numpy(np.ascontiguousarray(faces, np.int64)))[0].numpy()


def camera_to_view(normals_cam: Tensor) -> Tensor:
    """OpenCV camera frame -> view frame (+Y up, +Z towards the camera)."""
    return normals_cam * torch.tensor([1.0, -1.0, -1.0], dtype=normals_cam.dtype, device=normals_cam.device)


def sh_basis(normals: Tensor) -> Tensor:
    """The 9 irradiance-convolved SH basis values ``(..., 9)`` of unit normals ``(..., 3)``."""
    x, y, z = normals.unbind(-1)
    c = SH_CONSTANTS
    return torch.stack(
        [
            torch.full_like(x, c[0]),
            c[1] * y,
            c[2] * z,
            c[3] * x,
            c[4] * x * y,
            c[5] * y * z,
            c[6] * (3.0 * z * z - 1.0),
            c[7] * x * z,
            c[8] * (x * x - y * y),
        ],
        -1,
    )


def rotate_sh_about_view_axis(sh: Tensor, angle: Tensor | float) -> Tensor:
    """SH lighting ``(B, 9, 3)`` of a scene turned by ``angle`` (radians, counter-clockwise
    seen from the camera) about the view axis (+Z towards the camera): shading a normal ``n``
    with the result equals shading ``Rz(-angle) n`` with ``sh``. Used when an estimate made in
    a rolled crop is mapped back to the photo (the image turned, so its light turned too)."""
    a = torch.as_tensor(angle, dtype=sh.dtype, device=sh.device)
    c1, s1, c2, s2 = torch.cos(a), torch.sin(a), torch.cos(2 * a), torch.sin(2 * a)
    out = sh.clone()
    # band 1 (basis y, z, x): (x, y) turn like a vector
    x, y = sh[:, 3], sh[:, 1]
    out[:, 3], out[:, 1] = c1 * x - s1 * y, s1 * x + c1 * y
    # band 2 (xy, yz, 3z²-1, xz, x²-y²): (xz, yz) turn by the angle, (x²-y², 2xy) by twice it
    xz, yz = sh[:, 7], sh[:, 5]
    out[:, 7], out[:, 5] = c1 * xz - s1 * yz, s1 * xz + c1 * yz
    # basis xy carries c4 and x²-y² carries c8 = c4 / 2: rotate in the common (2xy, x²-y²) frame
    k = SH_CONSTANTS[4] / SH_CONSTANTS[8]
    u, v = sh[:, 8], sh[:, 4] * (k / 2.0)
    u2, v2 = c2 * u - s2 * v, s2 * u + c2 * v
    out[:, 8], out[:, 4] = u2, v2 * (2.0 / k)
    return out


def shade_sh(normals: Tensor, sh: Tensor, ambient: float = 1.0) -> Tensor:
    """Lambertian SH shading ``(B, ..., 3)`` (RGB) of unit normals ``(B, ..., 3)``.

    ``sh`` is ``(B, 9, 3)`` (coefficient, RGB) or ``(B, 27)`` (the same, flattened
    coefficient-major). MoFA's convention: coefficient 0 gets a constant offset
    ``ambient / SH_CONSTANTS[0]`` so that an all-zero code renders uniform shading
    ``ambient`` (a lit face) instead of black; pass ``ambient=0`` for raw coefficients.
    """
    B = normals.shape[0]
    sh = sh.reshape(B, 9, 3)
    if ambient:
        offset = torch.zeros(9, 1, dtype=sh.dtype, device=sh.device)
        offset[0, 0] = ambient / SH_CONSTANTS[0]
        sh = sh + offset
    basis = sh_basis(normals)  # (B, ..., 9)
    flat = basis.reshape(B, -1, 9)
    return torch.bmm(flat, sh).reshape(*normals.shape[:-1], 3)
