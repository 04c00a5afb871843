"""MoFA's encoder: a CNN backbone and a linear head onto the semantic code.

The head is zero-initialised, so the first prediction is the all-zero code: the mean face,
centred in the crop, lit by ambient light (see :mod:`engine.encoders.code`). The depth
translation has its own one-output head so the trainer can give it a reduced learning
rate (MoFA trains depth more slowly: it is the least constrained part of the pose).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.encoders.code import CodeLayout, SemanticCode
from engine.encoders.resnet import build_backbone


class MofaEncoder(nn.Module):
    def __init__(self, layout: CodeLayout, backbone: str = "resnet18", width: float = 1.0,
                 norm: str = "batch") -> None:
        super().__init__()
        self.layout = layout
        self.backbone = build_backbone(backbone, width, norm)
        self.depth_index = layout.dim - 27 - 1  # translation z
        self.head = nn.Linear(self.backbone.out_features, layout.dim - 1)
        self.head_depth = nn.Linear(self.backbone.out_features, 1)
        for lin in (self.head, self.head_depth):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, images: Tensor) -> SemanticCode:
        """images (B, 3, H, W) RGB in [0, 1] -> :class:`SemanticCode` (float32)."""
        feat = self.backbone(images).float()
        rest = self.head(feat)
        z = self.head_depth(feat)
        k = self.depth_index
        vec = torch.cat([rest[:, :k], z, rest[:, k:]], dim=1)
        return self.layout.split(vec)

    def depth_parameters(self) -> list[nn.Parameter]:
        return list(self.head_depth.parameters())
