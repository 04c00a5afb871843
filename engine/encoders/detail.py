"""DECA's detail networks: an image encoder onto a detail code and a decoder from (detail
code, expression, jaw pose) onto a UV displacement map.

* :class:`DetailEncoder` — crops ``(B, 3, S, S)`` in [0, 1] -> detail code ``(B, D)``
  (:class:`engine.encoders.unet.ConvEncoder`: strided convolutions, pooling, a
  zero-initialised linear head, so the first code is 0).
* :class:`DetailDecoder` — ``(code (B, D), expression (B, E), jaw (B, 3))`` -> displacement
  ``(B, 1, M, M)`` in **metres** along the coarse surface's normals, bounded by
  ``max_m · tanh``: a linear layer onto an ``8 × 8`` feature grid, then bilinear ×2
  up-sampling + 3×3 convolutions (two on the two coarsest levels, one above) to ``M`` texels. The output convolution is
  zero-initialised, so an untrained decoder displaces nothing.

Conditioning the decoder on the expression and the jaw (and not only on the person's
code) is what lets wrinkles animate: the same code decoded with another expression gives
that expression's wrinkles (:func:`expression_detail_maps` exports them per unit).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
import torch.nn.functional as Fn

from engine.encoders.unet import ConvEncoder

__all__ = ["DetailDecoder", "DetailEncoder", "expression_detail_maps"]


class DetailEncoder(nn.Module):
    """Image -> detail code (zero at initialisation)."""

    def __init__(self, code_dim: int = 128, width: int = 16, depth: int = 5) -> None:
        super().__init__()
        self.net = ConvEncoder(3, code_dim, width=width, depth=depth)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.net((images - self.mean) / self.std)


class DetailDecoder(nn.Module):
    """(detail code, expression, jaw rotation) -> UV displacement (metres, ``|d| < max_m``)."""

    def __init__(self, code_dim: int, n_expression: int, uv_size: int = 128, max_m: float = 0.002,
                 width: int = 64, jaw_dims: int = 3) -> None:
        super().__init__()
        levels = math.log2(uv_size / 8)
        if uv_size < 16 or levels != int(levels):
            raise ValueError(f"detail uv_size must be a power of two >= 16, got {uv_size}")
        self.code_dim, self.n_expression, self.jaw_dims = int(code_dim), int(n_expression), int(jaw_dims)
        self.uv_size, self.max_m = int(uv_size), float(max_m)
        self.width = int(width)
        self.fc = nn.Linear(self.code_dim + self.n_expression + self.jaw_dims, self.width * 64)
        blocks, c = [], self.width
        for k in range(int(levels)):
            c_out = max(8, self.width >> (k + 1) if k < 3 else self.width >> 3)
            layers = [nn.Conv2d(c, c_out, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            if k < 2:  # a second convolution on the coarse levels only (the fine ones are the costly ones)
                layers += [nn.Conv2d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            blocks.append(nn.Sequential(*layers))
            c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Conv2d(c, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, code: Tensor, expression: Tensor, jaw: Tensor | None = None) -> Tensor:
        B = code.shape[0]
        if jaw is None:
            jaw = code.new_zeros(B, self.jaw_dims)
        x = torch.cat([code, expression[:, :self.n_expression].to(code.dtype), jaw.reshape(B, -1).to(code.dtype)], -1)
        y = Fn.leaky_relu(self.fc(x), 0.2).view(B, self.width, 8, 8)
        for block in self.blocks:
            y = block(Fn.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False))
        return self.max_m * torch.tanh(self.out(y))


@torch.no_grad()
def expression_detail_maps(decoder: DetailDecoder, code: Tensor, names: list[str], jaw_rad: float = 0.0,
                           jaw_axis: int = 0, top: int = 8, min_mean_m: float = 0.0,
                           region: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
    """One person's detail as the add-on animates it: the neutral map ``D(code, 0, 0)``
    ``(1, 1, M, M)``, per-unit deltas ``D(code, e_k = 1) − D(code, 0)`` for the ``top``
    units whose delta is largest (mean |Δ| over ``region (1, 1, M, M)`` when given, else
    the whole map; units under ``min_mean_m`` are left out), and the jaw's delta
    ``D(code, jaw = jaw_rad about axis jaw_axis) − D(code, 0)`` (None for ``jaw_rad = 0``).
    Mixing them linearly with the shape-key values approximates ``D`` at any pose; the exact
    map is :class:`DetailDecoder` itself ("bake detail for this pose")."""
    code = code[:1]
    E = decoder.n_expression
    zero_e = code.new_zeros(1, E)
    neutral = decoder(code, zero_e)
    eye = torch.eye(E, dtype=code.dtype, device=code.device)
    deltas = decoder(code.expand(E, -1), eye) - neutral  # (E, 1, M, M)
    w = region if region is not None else torch.ones_like(neutral)
    score = (deltas.abs() * w).sum((1, 2, 3)) / w.sum().clamp_min(1e-12)
    order = [int(i) for i in torch.argsort(score, descending=True)[:top] if float(score[i]) > min_mean_m]
    units = {names[i]: deltas[i:i + 1] for i in order}
    jaw = None
    if jaw_rad:
        j = code.new_zeros(1, decoder.jaw_dims)
        j[0, jaw_axis] = jaw_rad
        jaw = decoder(code, zero_e, j) - neutral
    return neutral, units, jaw
