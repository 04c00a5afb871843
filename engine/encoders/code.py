"""MoFA's semantic code: the vector the encoder predicts, split into named parts.

identity (K_id, in prior std units), expression (K_exp, ARKit weights), reflectance
(K_refl × 3, in prior std units of the reflectance basis), rotation (3, axis-angle in the
model frame, applied before the frontal camera flip), translation (3, metres, camera
frame; offsets from the canonical ``(0, 0, depth)``), sh (27 = 9 coefficients × RGB,
offsets from MoFA's ambient light).  All zeros = mean face, centred, ambient-lit.
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

    @property
    def batch_size(self) -> int:
        return self.identity.shape[0]

    def detach(self) -> "SemanticCode":
        return SemanticCode(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def to(self, *args, **kwargs) -> "SemanticCode":
        return SemanticCode(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class CodeLayout:
    """Sizes of the code parts; ``split`` turns a (B, D) vector into a :class:`SemanticCode`."""

    n_identity: int
    n_expression: int
    n_reflectance: int

    @property
    def sizes(self) -> list[int]:
        return [self.n_identity, self.n_expression, 3 * self.n_reflectance, 3, 3, 27]

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def split(self, vec: torch.Tensor) -> SemanticCode:
        ident, expr, refl, rot, trans, sh = torch.split(vec, self.sizes, dim=-1)
        B = vec.shape[0]
        return SemanticCode(ident, expr, refl.reshape(B, self.n_reflectance, 3), rot, trans,
                            sh.reshape(B, 9, 3))

    def zeros(self, batch: int, device=None, dtype=torch.float32) -> SemanticCode:
        return self.split(torch.zeros(batch, self.dim, device=device, dtype=dtype))
