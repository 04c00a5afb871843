"""MoFA's semantic code: the vector the encoder predicts, split into named parts.

identity (K_id, in prior std units), expression (K_exp, ARKit weights), reflectance
(K_refl × 3, in prior std units of the reflectance basis), rotation (3, axis-angle in the
model frame, applied before the frontal camera flip), translation (3, metres, camera
frame; offsets from the canonical ``(0, 0, depth)``), sh (27 = 9 coefficients × RGB,
offsets from MoFA's ambient light), and optionally pose (``n_pose`` = 3 × the number of
articulated joints a method predicts, axis-angle; DECA's jaw). All zeros = mean face,
centred, ambient-lit, mouth closed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class SemanticCode:
    identity: torch.Tensor  # (B, K_id)
    expression: torch.Tensor  # (B, K_exp)
    reflectance: torch.Tensor  # (B, K_refl, 3)
    rotation: torch.Tensor  # (B, 3)
    translation: torch.Tensor  # (B, 3)
    sh: torch.Tensor  # (B, 9, 3)
    pose: torch.Tensor | None = None  # (B, n_pose // 3, 3) axis-angle of the predicted joints, if any
    detail: torch.Tensor | None = None  # (B, D) DECA's detail code, from a separate detail encoder

    @property
    def batch_size(self) -> int:
        return self.identity.shape[0]

    def detach(self) -> "SemanticCode":
        return SemanticCode(**{k: v.detach() for k, v in self.as_dict().items()})

    def to(self, *args, **kwargs) -> "SemanticCode":
        return SemanticCode(**{k: v.to(*args, **kwargs) for k, v in self.as_dict().items()})

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The parts present (``pose`` only when the layout has one)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class CodeLayout:
    """Sizes of the code parts; ``split`` turns a (B, D) vector into a :class:`SemanticCode`."""

    n_identity: int
    n_expression: int
    n_reflectance: int
    n_pose: int = 0  # 3 × predicted joints, between reflectance and rotation (0: MoFA's layout)

    @property
    def sizes(self) -> list[int]:
        return [self.n_identity, self.n_expression, 3 * self.n_reflectance, self.n_pose, 3, 3, 27]

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def split(self, vec: torch.Tensor) -> SemanticCode:
        ident, expr, refl, pose, rot, trans, sh = torch.split(vec, self.sizes, dim=-1)
        B = vec.shape[0]
        return SemanticCode(ident, expr, refl.reshape(B, self.n_reflectance, 3), rot, trans,
                            sh.reshape(B, 9, 3), pose.reshape(B, -1, 3) if self.n_pose else None)

    def zeros(self, batch: int, device=None, dtype=torch.float32) -> SemanticCode:
        return self.split(torch.zeros(batch, self.dim, device=device, dtype=dtype))
