"""Rotation conversions shared by the renderer, the head models and fitting.

Axis-angle vectors are ``(..., 3)`` in radians (direction = axis, norm = angle); rotation
matrices are ``(..., 3, 3)`` and act on column vectors (``x' = R @ x``). All functions are
differentiable, including at zero angle (Taylor expansions avoid the 0/0 of Rodrigues).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "euler_to_matrix",
    "skew",
]


def skew(v: Tensor) -> Tensor:
    """Cross-product matrix ``[v]_x`` with ``[v]_x @ w == v × w``; ``(..., 3) -> (..., 3, 3)``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack(
        [torch.stack([o, -z, y], -1), torch.stack([z, o, -x], -1), torch.stack([-y, x, o], -1)],
        -2,
    )


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues' formula ``R = I + a [k]_x + b [k]_x²`` with ``a = sin θ/θ``, ``b = (1-cos θ)/θ²``.

    Written in terms of the unnormalised vector so the gradient at θ = 0 is exact.
    """
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / safe2)
    k = skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def _matrix_to_quaternion(R: Tensor) -> Tensor:
    """Robust (w, x, y, z) from a rotation matrix (Shepperd's method, branch-free)."""
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    # Four candidate (unnormalised) quaternions; pick the best conditioned per element.
    q_abs = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    ).clamp_min(1e-12).sqrt()
    r = R
    cand = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1),
            torch.stack([r[..., 2, 1] - r[..., 1, 2], q_abs[..., 1] ** 2, r[..., 1, 0] + r[..., 0, 1], r[..., 0, 2] + r[..., 2, 0]], -1),
            torch.stack([r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] + r[..., 0, 1], q_abs[..., 2] ** 2, r[..., 2, 1] + r[..., 1, 2]], -1),
            torch.stack([r[..., 1, 0] - r[..., 0, 1], r[..., 2, 0] + r[..., 0, 2], r[..., 2, 1] + r[..., 1, 2], q_abs[..., 3] ** 2], -1),
        ],
        -2,
    ) / (2.0 * q_abs[..., None])
    best = q_abs.argmax(-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    return q / q.norm(dim=-1, keepdim=True)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """Inverse of :func:`axis_angle_to_matrix`; angles in ``[0, π]``.

    Goes through a quaternion so that angles near 0 and near π are both stable.
    """
    q = _matrix_to_quaternion(R)
    q = torch.where(q[..., :1] < 0, -q, q)  # w >= 0 -> angle in [0, pi]
    xyz = q[..., 1:]
    s = xyz.norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(s, q[..., :1])
    small = s < 1e-6
    # For small angles, 2*atan2(s, w)/s ~ 2/w.
    factor = torch.where(small, 2.0 / q[..., :1], angle / torch.where(small, torch.ones_like(s), s))
    return xyz * factor


def euler_to_matrix(angles: Tensor, convention: str = "XYZ") -> Tensor:
    """Rotation from Euler angles (radians) about fixed model axes.

    ``convention`` names the axes in the order the angles are given; the matrix is the
    intrinsic product ``R = R_a0 @ R_a1 @ R_a2`` (e.g. ``"XYZ"`` = pitch, yaw, roll in
    the model frame of docs/conventions.md).
    """
    if len(convention) != 3 or any(c not in "XYZ" for c in convention):
        raise ValueError(f"convention must be three letters from XYZ, got {convention!r}")
    mats = []
    for i, axis in enumerate(convention):
        a = angles[..., i]
        c, s = torch.cos(a), torch.sin(a)
        one, zero = torch.ones_like(a), torch.zeros_like(a)
        if axis == "X":
            rows = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
        elif axis == "Y":
            rows = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
        else:
            rows = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
        mats.append(torch.stack([torch.stack(r, -1) for r in rows], -2))
    return mats[0] @ mats[1] @ mats[2]
