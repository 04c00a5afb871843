"""The Gauss–Newton Jacobian of the landmark stage (``FitConfig.landmark_solver = "lm"``).

The landmark term compares projected points embedded in the mesh (a triangle and
barycentric weights each) with detected ones. A point is a blend of its triangle's
corners, each skinned by linear blend skinning, and the rest-pose corners are linear in
the identity and expression coefficients ``c``; so for point ``i`` with corners ``a``

    ∂u_i/∂c = P_i · R · Σ_a b_ia · Σ_j w_aj · (R_j · basis_a + ∂t_j/∂joints · joint_basis)

(``P_i`` the 2×3 derivative of the pinhole projection at the point, ``R`` the camera
rotation, ``R_j, t_j`` joint ``j``'s rest-to-posed rotation and translation, ``w`` the
skinning weights). The joints' rest positions move with the shape too, and the
translations are linear in them for fixed rotations, which is the second term. Exact,
and one small batched product instead of a forward pass per coefficient.
"""

from __future__ import annotations

import torch

from engine.face import FaceParams
from engine.head.lbs import rigid_transforms
from engine.head.model import HeadModel
from engine.render.rotation import axis_angle_to_matrix


def projection_jacobian(points_cam: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 3)`` derivative of pixel coordinates with respect to camera-frame points
    ``(N, 3)`` for intrinsics ``K (3, 3)`` (the pinhole model of
    :meth:`engine.render.camera.PerspectiveCamera.project_camera`, skew included)."""
    X, Y, Z = points_cam.unbind(-1)
    fx, fy, s = K[0, 0], K[1, 1], K[0, 1]
    iz = 1.0 / Z
    zero = torch.zeros_like(Z)
    row_u = torch.stack([fx * iz, s * iz, -(fx * X + s * Y) * iz * iz], -1)
    row_v = torch.stack([zero, fy * iz, -fy * Y * iz * iz], -1)
    return torch.stack([row_u, row_v], 1)


class CoefficientJacobian:
    """``(N, 2, K_id + K_exp)`` Jacobian of projected embedded points with respect to the
    identity, then the expression coefficients (module docstring), for the points embedded
    by ``head.faces[tri] (N, 3)`` with ``bary (N, 3)``.

    Skinning is linear in the rest vertices, so with ``A_j`` held fixed
    ``Σ_a b_a M_a basis_a = Σ_j R_j · C_j`` where ``C_j = Σ_a b_a w_aj basis_a`` depends on
    the model and the embedding only: it is computed once here, and a call costs one
    ``(3, 3J) × (3J, N·K)`` product and the projection's chain rule."""

    def __init__(self, head: HeadModel, tri: torch.Tensor, bary: torch.Tensor) -> None:
        self.head = head
        corners = head.faces[tri]  # (N, 3)
        basis = torch.cat([head.identity_basis, head.expression_basis], 0)  # (K, V, 3)
        Bc = basis[:, corners]  # (K, N, 3 corners, 3)
        if head.n_joints:
            w = head.skin_weights[corners] * bary[..., None]  # (N, 3 corners, J)
        else:
            w = bary[..., None]
        C = torch.einsum("naj,knax->jxnk", w, Bc)  # (J, 3, N, K)
        self.n_points, self.n_coeffs = corners.shape[0], basis.shape[0]
        self.C = C.reshape(C.shape[0] * 3, -1).contiguous()  # (3J, N·K)
        self.point_weights = w.sum(1)  # (N, J): Σ_a b_a w_aj
        if head.n_joints:
            jb = torch.cat([head.joint_identity_basis, head.joint_expression_basis], 0)  # (K, J, 3)
            self.joint_basis = jb.reshape(jb.shape[0], -1).T.contiguous()  # (3J, K)

    @torch.no_grad()
    def __call__(self, params: FaceParams, points: torch.Tensor) -> torch.Tensor:
        """The Jacobian at ``params`` (batch of one) whose projected points are ``points
        (N, 3)`` (posed, model frame)."""
        head = self.head
        if head.n_joints:
            joints = head.rest_joints(params.identity, params.expression)
            rot = axis_angle_to_matrix(params.pose)
            _, A = rigid_transforms(rot, joints, head.joint_parents)
            Rj = A[0, :, :3, :3]  # (J, 3, 3)
        else:
            Rj = torch.eye(3, dtype=points.dtype, device=points.device)[None]
        D = (Rj.permute(1, 0, 2).reshape(3, -1) @ self.C).reshape(3, self.n_points, self.n_coeffs)  # Σ_j R_j C_j
        if head.n_joints:
            # the translations are linear in the rest joints: their derivative by differences
            J3 = joints.shape[1] * 3
            step = 0.01
            moved = joints.reshape(1, J3) + step * torch.cat([torch.zeros(1, J3, dtype=joints.dtype, device=joints.device),
                                                              torch.eye(J3, dtype=joints.dtype, device=joints.device)])
            _, A_all = rigid_transforms(rot.expand(J3 + 1, -1, -1, -1), moved.reshape(J3 + 1, -1, 3), head.joint_parents)
            t = A_all[:, :, :3, 3].reshape(J3 + 1, J3)
            dt = ((t[1:] - t[:1]) / step).T  # (3J out, 3J in)
            TJ = (dt @ self.joint_basis).reshape(-1, 3, self.n_coeffs)  # (J, 3, K)
            D = D + torch.einsum("nj,jxk->xnk", self.point_weights, TJ)
        cam = params.camera
        R, t, K = cam.R[0], cam.t[0], cam.K[0]
        Pj = projection_jacobian(points @ R.T + t, K) @ R  # (N, 2, 3)
        return torch.einsum("nax,xnk->nak", Pj, D)
