"""A compact ResNet-18/34 (He et al. 2016) in pure PyTorch, trained from scratch.

Why our own: the PyPI torchvision 0.28.0 wheel installs beside torch 2.13.0+cpu but fails
to import (``operator torchvision::nms does not exist``: its C++ ops target the CUDA
build), timm pulls a different torch, and pretrained weights cannot be downloaded here.
The layout follows torchvision's ``resnet18``/``resnet34`` (7×7 stem, four stages of basic
blocks, global average pooling) with a width multiplier for small committed models and a
choice of BatchNorm or GroupNorm (small per-GPU batches).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

DEPTHS = {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


def in_weight_format(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``x`` in the memory format of ``conv``'s weight: channels-last when the network was
    converted (``LearnedMethod.load``: ~25 % faster convolutions on one CPU thread), else as
    it is. The values are the same either way."""
    if conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous():
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _norm(kind: str, c: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(c)
    if kind == "group":
        return nn.GroupNorm(min(32, max(1, c // 4)), c)
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, cout)
        # zero-init the last norm's scale: each block starts as identity (stable from scratch)
        nn.init.zeros_(self.bn2.weight)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))

    def forward(self, x: Tensor) -> Tensor:
        idt = x if self.down is None else self.down(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + idt)


class ResNet(nn.Module):
    """Feature extractor: (B, 3, H, W) in [0, 1] -> (B, ``out_features``)."""

    def __init__(self, depth: str = "resnet18", width: float = 1.0, norm: str = "batch") -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"unknown backbone {depth!r}; choose one of {', '.join(DEPTHS)}")
        chans = [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(nn.Conv2d(3, chans[0], 7, 2, 3, bias=False), _norm(norm, chans[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], chans[0]
        self.first_stage_blocks = DEPTHS[depth][0]  # the trunk / rest split
        for i, (c, n) in enumerate(zip(chans, DEPTHS[depth])):
            for j in range(n):
                layers.append(BasicBlock(cin, c, 2 if (j == 0 and i > 0) else 1, norm))
                cin = c
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # ImageNet-like input normalisation as fixed buffers (inputs are [0, 1] RGB)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.rest(self.trunk(x))

    def trunk(self, x: Tensor) -> Tensor:
        """The feature map after the stem and the first stage (stride 4)."""
        x = self.stem(in_weight_format((x - self.mean) / self.std, self.stem[0]))
        return self.layers[:self.first_stage_blocks](x)

    def rest(self, x: Tensor) -> Tensor:
        """The pooled features from :meth:`trunk`'s map: the remaining stages."""
        return self.pool(self.layers[self.first_stage_blocks:](x)).flatten(1)


def build_backbone(name: str = "resnet18", width: float = 1.0, norm: str = "batch") -> ResNet:
    """Backbone by name (``resnet10``, ``resnet18``, ``resnet34``)."""
    return ResNet(name, width, norm)
