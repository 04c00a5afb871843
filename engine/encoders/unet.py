"""Small image-to-image and image-to-vector networks for UV-space estimators (CEST's
reflectance U-Net over the unwrapped texture, its light estimator)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
import torch.nn.functional as Fn

from engine.encoders.resnet import in_weight_format

__all__ = ["UNet", "ConvEncoder"]


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    groups = min(8, max(1, cout // 4))
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(groups, cout),
                         nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A U-Net of ``depth`` levels (``width·2^k`` channels at level k; input side divisible
    by ``2^depth``). The output convolution is zero-initialised: the first prediction is 0."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        ch = [width * 2**k for k in range(depth + 1)]
        self.stem = nn.Sequential(_block(in_channels, ch[0]), _block(ch[0], ch[0]))
        self.down = nn.ModuleList(nn.Sequential(_block(ch[k], ch[k + 1], 2), _block(ch[k + 1], ch[k + 1]))
                                  for k in range(depth))
        self.up = nn.ModuleList(nn.Sequential(_block(ch[k + 1] + ch[k], ch[k]), _block(ch[k], ch[k]))
                                for k in reversed(range(depth)))
        self.out = nn.Conv2d(ch[0], out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.stem(in_weight_format(x, self.stem[0][0]))]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.up:
            skip = skips.pop()
            y = Fn.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, skip], 1))
        return self.out(y)


class ConvEncoder(nn.Module):
    """Strided convolutions, global average pooling and a zero-initialised linear head onto
    ``out_features`` (the first prediction is 0)."""

    def __init__(self, in_channels: int, out_features: int, width: int = 16, depth: int = 4) -> None:
        super().__init__()
        layers, c = [], in_channels
        for k in range(depth):
            layers.append(_block(c, width * 2 ** min(k, 3), 2))
            c = width * 2 ** min(k, 3)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, out_features)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(in_weight_format(x, self.features[0][0])))
