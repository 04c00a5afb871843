"""Batched linear blend skinning in the style of the ``smplx`` package.

All head models share this code path: shape blendshapes, joints that move linearly with
the shape coefficients, optional pose correctives (FLAME) and LBS over a kinematic tree.
"""

from __future__ import annotations

import torch


def rigid_transforms(rot_mats: torch.Tensor, joints: torch.Tensor, parents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Compose local joint rotations along the kinematic tree.

    rot_mats (B, J, 3, 3), joints (B, J, 3) rest positions, parents (J,) with -1 for roots
    (parents must precede children). Returns posed joints (B, J, 3) and the relative
    transforms (B, J, 4, 4) that map rest-pose points to posed points.
    """
    B, J = joints.shape[:2]
    rel = joints.clone()
    par = parents.tolist()
    for j, p in enumerate(par):
        if p >= 0:
            rel[:, j] = joints[:, j] - joints[:, p]
    local = torch.zeros(B, J, 4, 4, dtype=joints.dtype, device=joints.device)
    local[..., :3, :3] = rot_mats
    local[..., :3, 3] = rel
    local[..., 3, 3] = 1.0
    chain: list[torch.Tensor] = []
    for j, p in enumerate(par):
        chain.append(local[:, j] if p < 0 else chain[p] @ local[:, j])
    world = torch.stack(chain, dim=1)
    posed_joints = world[..., :3, 3]
    # remove the rest-pose joint location so the transform applies to rest-pose vertices
    offset = (world[..., :3, :3] @ joints[..., None])[..., 0]
    transforms = world.clone()
    transforms[..., :3, 3] = world[..., :3, 3] - offset
    return posed_joints, transforms


def skin(vertices: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning: vertices (B, V, 3), weights (V, J), transforms (B, J, 4, 4)."""
    T = torch.einsum("vj,bjxy->bvxy", weights, transforms[..., :3, :])
    return (T[..., :3] @ vertices[..., None])[..., 0] + T[..., 3]
