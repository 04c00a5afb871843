"""Regularisers for a free per-vertex albedo.

Our open head models have no albedo PCA, so the fitted reflectance is a per-vertex colour
kept plausible by three priors: smoothness along mesh edges (shading detail must not leak
into albedo), left/right symmetry through a mirror map computed from the template, and a
Gaussian skin-colour prior. Colours are in the photo's [0, 1] RGB space.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


def mesh_edges(faces: torch.Tensor) -> torch.Tensor:
    """Unique undirected edges (E, 2) int64 of a triangle mesh (F, 3)."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], dim=0)
    e = torch.sort(e, dim=1).values
    return torch.unique(e, dim=0)


def mirror_vertex_map(template: torch.Tensor, tolerance: float = 2e-3) -> torch.Tensor:
    """Index of each vertex's left/right mirror image (V,), -1 where there is none.

    Mirrors the template across the model's sagittal plane (x → -x, model frame) and takes
    the nearest vertex; matches farther than ``tolerance`` metres (asymmetric parts) get -1.
    Midline vertices map to themselves.
    """
    from scipy.spatial import cKDTree

    pts = template.detach().cpu().double().numpy()
    mirrored = pts * np.array([-1.0, 1.0, 1.0])
    dist, idx = cKDTree(pts).query(mirrored)
    idx = np.where(dist <= tolerance, idx, -1)
    return torch.from_numpy(idx.astype(np.int64)).to(template.device)


def albedo_smoothness(albedo: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean squared colour difference along mesh edges, (B,). albedo (B, V, C)."""
    d = albedo[:, edges[:, 0]] - albedo[:, edges[:, 1]]
    return (d**2).sum(-1).mean(-1)


def albedo_symmetry(albedo: torch.Tensor, mirror: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between each vertex and its mirror, (B,)."""
    ok = mirror >= 0
    src = torch.nonzero(ok).squeeze(-1)
    d = albedo[:, src] - albedo[:, mirror[src]]
    return (d**2).sum(-1).mean(-1) if src.numel() else albedo.new_zeros(albedo.shape[0])


@dataclass
class SkinColourPrior:
    """Gaussian prior on skin albedo in sRGB [0, 1].

    The default mean and covariance span light to dark skin tones: the main axis of
    variation is brightness with a warm (red-heavy) tint, so the covariance is elongated
    along (0.60, 0.57, 0.56) and tight across it. The values are a hand-set, documented
    choice (no measured albedo data set is used).
    """

    mean: tuple[float, float, float] = (0.62, 0.45, 0.38)
    axis: tuple[float, float, float] = (0.62, 0.58, 0.53)
    sigma_along: float = 0.22
    sigma_across: float = 0.05
    _precision: torch.Tensor | None = field(default=None, repr=False)

    def precision(self) -> torch.Tensor:
        """Inverse covariance (3, 3)."""
        if self._precision is None:
            a = torch.tensor(self.axis, dtype=torch.float64)
            a = a / a.norm()
            cov = self.sigma_across**2 * torch.eye(3, dtype=torch.float64) + (
                self.sigma_along**2 - self.sigma_across**2
            ) * torch.outer(a, a)
            self._precision = torch.linalg.inv(cov).float()
        return self._precision

    def mean_tensor(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.mean, dtype=like.dtype, device=like.device)


def skin_colour_prior(
    albedo: torch.Tensor, prior: SkinColourPrior | None = None, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean Mahalanobis distance² of per-vertex albedo to the skin prior, (B,).

    albedo (B, V, 3); weights (V,) or (B, V) select the skin vertices (default: all).
    """
    prior = prior or SkinColourPrior()
    d = albedo - prior.mean_tensor(albedo)
    P = prior.precision().to(albedo.device, albedo.dtype)
    m = torch.einsum("bvi,ij,bvj->bv", d, P, d)
    if weights is None:
        return m.mean(-1)
    w = weights.to(albedo.dtype).expand_as(m)
    return (m * w).sum(-1) / w.sum(-1).clamp_min(1e-12)
