"""The shared head-model module (see docs/conventions.md and docs/head_models.md).

Every adapter (open, ICT, FLAME) converts its source into one dictionary of numpy arrays
(:class:`HeadModelArrays` keys) and builds a :class:`HeadModel` from it, so fitting,
rendering and export code never branches on the model kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import nn

from engine.errors import ModelFileError
from engine.head.lbs import rigid_transforms, skin
from engine.render.rotation import axis_angle_to_matrix

#: Vertex regions every head model must provide (a checked contract: a missing one is a
#: ModelFileError at load time). ``skin``: every skin vertex (face, scalp, ears, neck);
#: ``face_skin``: the part of it a face photo shows (photometric terms); ``scalp_neck`` the
#: rest; ``eyes`` eyeballs; ``mouth_interior`` mouth cavity, teeth, tongue (may be empty).
REGION_NAMES = ("skin", "face_skin", "eyes", "mouth_interior", "scalp_neck")

#: Seed of the fixed direction that orients identity modes (:func:`basis_signature`).
SIGNATURE_SEED = 20261129


def basis_signature(basis: np.ndarray) -> np.ndarray:
    """``(K,)`` float64: each mode of a ``(K, V, 3)`` basis projected on one fixed pseudo-random
    ``(V, 3)`` direction (seeded by :data:`SIGNATURE_SEED`). Its signs identify the modes'
    orientation: an SVD may return any mode negated (LAPACK's choice depends on the thread
    count), so the open model's build makes every signature positive, and a network records
    the signature of the basis it learnt on (``identity_signature``) so its codes keep their
    meaning on a head model built elsewhere."""
    b = np.asarray(basis, np.float64)
    r = np.random.default_rng(SIGNATURE_SEED).standard_normal(b.shape[1:])
    return b.reshape(b.shape[0], -1) @ r.reshape(-1)


# Arrays every adapter must provide (numpy, before conversion to buffers).
REQUIRED_ARRAYS = (
    "template",  # (V, 3) metres, model frame
    "faces",  # (F, 3)
    "uv",  # (T, 2)
    "face_uv",  # (F, 3)
    "identity_basis",  # (K_id, V, 3)
    "identity_std",  # (K_id,)
    "expression_basis",  # (K_exp, V, 3)
    "expression_range",  # (K_exp, 2)
    "joint_template",  # (J, 3) rest joints of the template
    "joint_identity_basis",  # (K_id, J, 3) joint motion per identity coefficient
    "joint_expression_basis",  # (K_exp, J, 3)
    "joint_parents",  # (J,)
    "skin_weights",  # (V, J)
    "lmk_faces",  # (68,)
    "lmk_bary",  # (68, 3)
)


@dataclass
class HeadOutput:
    """Result of :meth:`HeadModel.forward`: posed vertices (B, V, 3) and joints (B, J, 3)."""

    vertices: torch.Tensor
    joints: torch.Tensor


class HeadModel(nn.Module):
    """A linear morphable head with LBS joints, in metres in the shared model frame.

    ``forward(identity, expression, pose)``: identity (B, K_id), expression (B, K_exp),
    pose (B, J, 3) axis-angle local joint rotations; ``None`` means zeros.
    """

    def __init__(
        self,
        name: str,
        arrays: Mapping[str, np.ndarray],
        expression_names: list[str],
        joint_names: list[str],
        regions: Mapping[str, np.ndarray],
        info: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__()
        missing = [k for k in REQUIRED_ARRAYS if k not in arrays]
        if missing:
            raise ModelFileError(f"head model {name!r} is missing the arrays {', '.join(missing)}")
        self.name = name
        self.expression_names = list(expression_names)
        self.joint_names = list(joint_names)
        self.info = dict(info or {})
        f32 = lambda k: torch.as_tensor(np.asarray(arrays[k], dtype=np.float32))  # noqa: E731
        i64 = lambda k: torch.as_tensor(np.asarray(arrays[k], dtype=np.int64))  # noqa: E731
        for key in ("template", "uv", "identity_basis", "identity_std", "expression_basis",
                    "expression_range", "joint_template", "joint_identity_basis",
                    "joint_expression_basis", "skin_weights", "lmk_bary"):
            self.register_buffer(key, f32(key))
        for key in ("faces", "face_uv", "joint_parents", "lmk_faces"):
            self.register_buffer(key, i64(key))
        # FLAME-style pose correctives: (P, V, 3) over flattened (R - I) of joints 1..J-1.
        pose_basis = arrays.get("pose_basis")
        if pose_basis is None:
            pose_basis = np.zeros((0,) + tuple(np.shape(arrays["template"])), np.float32)
        self.register_buffer("pose_basis", torch.as_tensor(np.asarray(pose_basis, np.float32)))
        self.region_names = list(regions)
        for key, mask in regions.items():
            self.register_buffer(f"region_{key}", torch.as_tensor(np.asarray(mask, dtype=bool)))
        self._check()

    # ------------------------------------------------------------------ properties
    @property
    def regions(self) -> dict[str, torch.Tensor]:
        """Vertex masks (V,) bool by region name (face_skin, eyes, mouth_interior, scalp_neck...)."""
        return {k: getattr(self, f"region_{k}") for k in self.region_names}

    @property
    def mirror(self) -> torch.Tensor:
        """Each vertex's left/right mirror partner (V,) int64, -1 where there is none
        (:func:`engine.losses.mirror_vertex_map` of the template; computed once, not saved)."""
        cached = self.__dict__.get("_mirror_cache")
        if cached is None or cached.device != self.template.device:
            from engine.losses.albedo import mirror_vertex_map

            cached = mirror_vertex_map(self.template)
            self.__dict__["_mirror_cache"] = cached
        return cached

    def identity_signature(self) -> torch.Tensor:
        """``(K_id,)`` :func:`basis_signature` of the identity basis (float32, on the model's device)."""
        sig = basis_signature(self.identity_basis.detach().cpu().numpy())
        return torch.as_tensor(sig, dtype=torch.float32, device=self.identity_basis.device)

    @property
    def n_vertices(self) -> int:
        return int(self.template.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def n_identity(self) -> int:
        return int(self.identity_basis.shape[0])

    @property
    def n_expression(self) -> int:
        return int(self.expression_basis.shape[0])

    @property
    def n_joints(self) -> int:
        return int(self.joint_template.shape[0])

    def _check(self) -> None:
        """Shape and region contract (docs/conventions.md); a violation is a ModelFileError
        naming what is wrong, so a broken model file fails at load time, not mid-fit."""
        V = self.n_vertices
        K, E, J = self.n_identity, self.n_expression, self.n_joints
        expected = {
            "template": (V, 3), "identity_basis": (K, V, 3), "identity_std": (K,),
            "expression_basis": (E, V, 3), "expression_range": (E, 2),
            "joint_identity_basis": (K, J, 3), "joint_expression_basis": (E, J, 3),
            "joint_parents": (J,), "skin_weights": (V, J), "lmk_faces": (68,), "lmk_bary": (68, 3),
            "face_uv": tuple(self.faces.shape),
        }
        problems = [f"{k} has shape {tuple(getattr(self, k).shape)}, expected {shape}"
                    for k, shape in expected.items() if tuple(getattr(self, k).shape) != shape]
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            problems.append(f"faces has shape {tuple(self.faces.shape)}, expected (F, 3)")
        elif self.faces.numel() and (int(self.faces.min()) < 0 or int(self.faces.max()) >= V):
            problems.append(f"faces index vertices outside 0..{V - 1}")
        if len(self.expression_names) != E:
            problems.append(f"{len(self.expression_names)} expression names for {E} expressions")
        if len(self.joint_names) != J:
            problems.append(f"{len(self.joint_names)} joint names for {J} joints")
        if self.pose_basis.shape[0] not in (0, 9 * max(J - 1, 0)):
            problems.append(f"pose_basis has {self.pose_basis.shape[0]} correctives, expected 0 or {9 * max(J - 1, 0)}")
        missing = [r for r in REGION_NAMES if r not in self.region_names]
        if missing:
            problems.append(f"regions {', '.join(missing)} are missing (every head model provides "
                            f"{', '.join(REGION_NAMES)})")
        for r in self.region_names:
            if tuple(getattr(self, f"region_{r}").shape) != (V,):
                problems.append(f"region {r} has shape {tuple(getattr(self, f'region_{r}').shape)}, expected ({V},)")
        if problems:
            raise ModelFileError(f"head model {self.name!r} is malformed: {'; '.join(problems[:3])}"
                                 + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""))

    # ------------------------------------------------------------------ evaluation
    def _coeffs(self, x: torch.Tensor | None, n: int, batch: int) -> torch.Tensor:
        if x is None:
            return self.template.new_zeros(batch, n)
        if x.ndim != 2 or x.shape[1] != n:
            raise ValueError(f"expected coefficients of shape (B, {n}), got {tuple(x.shape)}")
        return x.to(self.template.dtype)

    def forward(
        self,
        identity: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
        pose: torch.Tensor | None = None,
    ) -> HeadOutput:
        return self._evaluate(identity, expression, pose, self.template, self.identity_basis,
                              self.expression_basis, self.pose_basis, self.skin_weights)

    def rest_joints(self, identity: torch.Tensor | None = None,
                    expression: torch.Tensor | None = None) -> torch.Tensor:
        """Rest-pose joint positions ``(B, J, 3)`` of a shape and expression (the joints
        move with both; None = zeros)."""
        batch = next((t.shape[0] for t in (identity, expression) if t is not None), 1)
        beta = self._coeffs(identity, self.n_identity, batch)
        psi = self._coeffs(expression, self.n_expression, batch)
        return (self.joint_template[None]
                + torch.einsum("bk,kjc->bjc", beta, self.joint_identity_basis)
                + torch.einsum("bk,kjc->bjc", psi, self.joint_expression_basis))

    def vertex_subset(self, vertex_ids: torch.Tensor) -> "VertexSubset":
        """This model evaluated at the vertices ``vertex_ids (N,)`` only (the same values as
        ``forward(...).vertices[:, vertex_ids]``, in a fraction of the time when N is small):
        e.g. CEST's unwrap, which needs only the face window's vertices."""
        return VertexSubset(self, vertex_ids)

    def _evaluate(self, identity, expression, pose, template, identity_basis, expression_basis, pose_basis,
                  skin_weights) -> HeadOutput:
        """:meth:`forward` over the given vertex buffers (all of them, or a subset's)."""
        batch = next((t.shape[0] for t in (identity, expression, pose) if t is not None), 1)
        beta = self._coeffs(identity, self.n_identity, batch)
        psi = self._coeffs(expression, self.n_expression, batch)
        v = (template[None]
             + torch.einsum("bk,kvc->bvc", beta, identity_basis)
             + torch.einsum("bk,kvc->bvc", psi, expression_basis))
        J = self.n_joints
        if J == 0:
            return HeadOutput(vertices=v, joints=v.new_zeros(batch, 0, 3))
        joints = self.rest_joints(beta, psi)
        if pose is None:
            return HeadOutput(vertices=v, joints=joints)
        if pose.shape[1:] != (J, 3):
            raise ValueError(f"expected pose of shape (B, {J}, 3), got {tuple(pose.shape)}")
        rot = axis_angle_to_matrix(pose.to(v.dtype))
        if pose_basis.shape[0] > 0:
            eye = torch.eye(3, dtype=v.dtype, device=v.device)
            feat = (rot[:, 1:] - eye).reshape(batch, -1)
            v = v + torch.einsum("bp,pvc->bvc", feat, pose_basis)
        posed_joints, transforms = rigid_transforms(rot, joints, self.joint_parents)
        return HeadOutput(vertices=skin(v, skin_weights, transforms), joints=posed_joints)

    def landmarks(self, vertices: torch.Tensor) -> torch.Tensor:
        """iBUG-68 landmarks (B, 68, 3) from vertices (B, V, 3) via the barycentric embedding."""
        tri = vertices[:, self.faces[self.lmk_faces]]  # (B, 68, 3, 3)
        return (tri * self.lmk_bary[None, :, :, None]).sum(2)

    def summary(self) -> dict[str, object]:
        """JSON-friendly description (used by ``python -m engine.head info``)."""
        t = self.template
        return {
            "model": self.name,
            "n_vertices": self.n_vertices,
            "n_faces": self.n_faces,
            "n_uv": int(self.uv.shape[0]),
            "n_identity": self.n_identity,
            "n_expression": self.n_expression,
            "expression_names": self.expression_names,
            "joint_names": self.joint_names,
            "joint_parents": self.joint_parents.tolist(),
            "n_landmarks": int(self.lmk_faces.shape[0]),
            "n_pose_correctives": int(self.pose_basis.shape[0]),
            "regions": {k: int(m.sum()) for k, m in self.regions.items()},
            "bbox_min_m": [round(float(x), 4) for x in t.min(0).values],
            "bbox_max_m": [round(float(x), 4) for x in t.max(0).values],
            **self.info,
        }


class VertexSubset:
    """A head model evaluated at some of its vertices (:meth:`HeadModel.vertex_subset`): the
    per-vertex buffers sliced once, the joints and coefficients as the full model's."""

    def __init__(self, head: HeadModel, vertex_ids: torch.Tensor) -> None:
        ids = torch.as_tensor(vertex_ids, dtype=torch.int64, device=head.template.device)
        self.head, self.vertex_ids = head, ids
        self.template = head.template[ids]
        self.identity_basis = head.identity_basis[:, ids].contiguous()
        self.expression_basis = head.expression_basis[:, ids].contiguous()
        self.pose_basis = head.pose_basis[:, ids].contiguous()
        self.skin_weights = head.skin_weights[ids]

    def __call__(self, identity: torch.Tensor | None = None, expression: torch.Tensor | None = None,
                 pose: torch.Tensor | None = None) -> HeadOutput:
        """Posed vertices ``(B, N, 3)`` of the subset (and all joints), as :meth:`HeadModel.forward`."""
        return self.head._evaluate(identity, expression, pose, self.template, self.identity_basis,
                                   self.expression_basis, self.pose_basis, self.skin_weights)
