"""MoFA's robust photometric term.

Tewari et al. (2017), eq. 5: the sum over visible vertices of the ℓ2 norm (not squared) of
the RGB residual, normalised by the number of visible vertices. The unsquared norm (an
ℓ2,1 norm over the residual matrix) is robust to occluders and unmodelled colours: each
outlier vertex costs linearly, not quadratically.
"""

from __future__ import annotations

import torch


def photometric_l21(
    rendered: torch.Tensor,
    observed: torch.Tensor,
    visible: torch.Tensor,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Mean ℓ2 norm of per-vertex RGB residuals over visible vertices.

    rendered, observed: (B, V, C) colours (the model's shaded albedo and the photo sampled
    at the projected vertex positions). visible: (B, V) bool or float weights in [0, 1]
    (visibility times region mask). Returns (B,); zero where nothing is visible.
    ``eps`` keeps the gradient finite at a zero residual.
    """
    w = visible.to(rendered.dtype)
    norm = torch.sqrt(((rendered - observed) ** 2).sum(-1) + eps)
    return (norm * w).sum(-1) / w.sum(-1).clamp_min(1.0)


def photometric_l1(
    rendered: torch.Tensor,
    observed: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """Masked ℓ1 colour residual (CEST's photometric loss): the weighted mean over vertices
    of the mean absolute RGB difference. ``weights (B, V)`` bool or [0, 1] (visibility times
    the face region). Returns (B,); zero where nothing is weighted."""
    w = weights.to(rendered.dtype)
    err = (rendered - observed).abs().mean(-1)
    return (err * w).sum(-1) / w.sum(-1).clamp_min(1.0)
