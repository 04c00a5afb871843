"""Statistical priors on model coefficients."""

from __future__ import annotations

import torch


def tikhonov(coeffs: torch.Tensor, std: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of squared coefficients in units of their prior std, (B,).

    With ``β_k ~ N(0, std_k²)`` this is the negative log prior up to a factor of 2.
    ``std`` (K,) defaults to ones (pre-scaled modes).
    """
    if std is not None:
        coeffs = coeffs / std.to(coeffs.dtype).clamp_min(1e-12)
    return (coeffs**2).sum(-1)


def range_penalty(coeffs: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """Squared distance outside per-coefficient ranges, (B,).

    bounds: (K, 2) [low, high] (e.g. [0, 1] for ARKit blendshapes). Zero inside the range,
    so it only pushes back coefficients that leave it.
    """
    low = bounds[:, 0].to(coeffs.dtype)
    high = bounds[:, 1].to(coeffs.dtype)
    below = (low - coeffs).clamp_min(0.0)
    above = (coeffs - high).clamp_min(0.0)
    return (below**2 + above**2).sum(-1)
