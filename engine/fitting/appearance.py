"""Closed-form reflectance and lighting given geometry (MoFA's model, solved linearly).

Per vertex and channel ``c = a · (B(n) · L)``: for a fixed albedo ``a`` the SH lighting
``L`` (9 per channel) is a linear least-squares problem; for fixed lighting the albedo is
a per-vertex division regularised towards a prior colour. Alternating the two a few times
converges in milliseconds, far faster than gradient descent on the same unknowns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.losses.albedo import SkinColourPrior


@dataclass
class Appearance:
    """Per-vertex albedo (V, 3), raw SH lighting (9, 3) and the global skin colour (3,)."""

    albedo: torch.Tensor
    sh: torch.Tensor
    skin_colour: torch.Tensor


def solve_sh(basis: torch.Tensor, albedo: torch.Tensor, observed: torch.Tensor, weights: torch.Tensor,
             reg: float = 1e-3, level: float = 0.8, level_weight: float = 0.0) -> torch.Tensor:
    """Weighted ridge solve of ``observed ≈ albedo * (basis @ L)``; returns L (9, 3).

    basis (N, 9), albedo/observed (N, 3), weights (N,). ``reg`` damps the higher bands
    more than the ambient term (scaled by band index) so a few visible vertices cannot
    produce wild lighting. ``level_weight`` > 0 adds the light-level prior
    ``level_weight · Σw · (mean_w(basis @ L) − level)²`` per channel: the weighted mean
    shading of the solved vertices is pulled towards ``level``, which fixes the scale that
    albedo × light leaves free.
    """
    damp = torch.tensor([0.0, 1, 1, 1, 4, 4, 4, 4, 4], dtype=basis.dtype, device=basis.device)
    wsum = weights.sum().clamp_min(1.0)
    mean_basis = (basis * weights[:, None]).sum(0) / wsum  # (9,)
    out = []
    for k in range(3):
        A = basis * albedo[:, k : k + 1]  # (N, 9)
        Aw = A * weights[:, None]
        M = A.T @ Aw + reg * wsum * torch.diag(damp + 1e-6)
        rhs = Aw.T @ observed[:, k]
        if level_weight > 0:
            M = M + level_weight * wsum * torch.outer(mean_basis, mean_basis)
            rhs = rhs + level_weight * wsum * level * mean_basis
        out.append(torch.linalg.solve(M, rhs))
    return torch.stack(out, -1)


def solve_albedo(shading: torch.Tensor, observed: torch.Tensor, weights: torch.Tensor,
                 target: torch.Tensor, prior_weight: float) -> torch.Tensor:
    """Per-vertex ``argmin_a w (a s - c)² + λ (a - target)²`` = ``(w s c + λ m)/(w s² + λ)``."""
    w = weights[:, None]
    return (w * shading * observed + prior_weight * target) / (w * shading**2 + prior_weight)


def neighbour_average_matrix(edges: torch.Tensor, n_vertices: int) -> torch.Tensor:
    """Sparse (V, V) row-normalised adjacency: ``A @ x`` averages each vertex's neighbours."""
    i = torch.cat([edges[:, 0], edges[:, 1]])
    j = torch.cat([edges[:, 1], edges[:, 0]])
    deg = torch.zeros(n_vertices, dtype=torch.float32, device=edges.device).index_add_(
        0, i, torch.ones_like(i, dtype=torch.float32))
    vals = 1.0 / deg.clamp_min(1.0)[i]
    return torch.sparse_coo_tensor(torch.stack([i, j]), vals, (n_vertices, n_vertices),
                                   check_invariants=False).coalesce()


def symmetric_albedo(albedo: torch.Tensor, weights: torch.Tensor, mirror: torch.Tensor,
                     strength: float = 1.0) -> torch.Tensor:
    """Blend each vertex's albedo (V, 3) towards the weighted mean of itself and its mirror
    partner (reflectance symmetry, as in CEST's flip consistency).

    ``weights`` (V,) say how well each vertex was seen (visibility × facing): a vertex seen
    badly takes mostly its partner's colour, two equally seen partners meet halfway.
    ``mirror`` (V,) is the partner index (−1 = none: unchanged); ``strength`` 0 returns
    ``albedo``, 1 the symmetric albedo.
    """
    has = mirror >= 0
    partner = torch.where(has, mirror, torch.arange(len(mirror), device=mirror.device))
    w_self = weights.clamp_min(1e-3)
    w_partner = weights[partner].clamp_min(1e-3) * has.to(weights.dtype)
    sym = (w_self[:, None] * albedo + w_partner[:, None] * albedo[partner]) / (w_self + w_partner)[:, None]
    return albedo + strength * (sym - albedo)


def clamp_to_prior(colour: torch.Tensor, prior: SkinColourPrior, max_mahalanobis: float = 3.0) -> torch.Tensor:
    """Pull a colour (3,) back onto the prior's ``max_mahalanobis`` ellipsoid if outside it."""
    mean = prior.mean_tensor(colour)
    d = colour - mean
    m = torch.sqrt(d @ prior.precision().to(colour) @ d)
    if m > max_mahalanobis:
        d = d * (max_mahalanobis / m)
    return mean + d


def fill_albedo(albedo: torch.Tensor, confidence: torch.Tensor, mirror: torch.Tensor,
                default: torch.Tensor, adjacency: torch.Tensor | None, smooth_iters: int = 2) -> torch.Tensor:
    """Complete a per-vertex albedo where it was not observed.

    Vertices with low ``confidence`` (V,) in [0, 1] take their mirror partner's colour when
    the partner was observed, otherwise the ``default`` skin colour; then a few rounds of
    neighbour averaging (the smoothness prior) blend the seams, weighted by confidence so
    observed vertices keep their colour.
    """
    conf = confidence.clamp(0, 1)
    has_m = mirror >= 0
    m_idx = torch.where(has_m, mirror, torch.arange(len(mirror), device=mirror.device))
    m_conf = torch.where(has_m, conf[m_idx], torch.zeros_like(conf))
    fill = torch.where((m_conf > conf)[:, None], albedo[m_idx], default.expand_as(albedo))
    fill_conf = torch.maximum(conf, m_conf)
    a = conf[:, None] * albedo + (1 - conf[:, None]) * torch.where(
        (m_conf > 0)[:, None], fill, default.expand_as(albedo))
    # unobserved on both sides -> default; blend in proportion to the partner's confidence
    a = torch.where((fill_conf > 0)[:, None], a, default.expand_as(albedo))
    if adjacency is not None:
        keep = fill_conf.clamp(0, 1)[:, None] * 0.5
        for _ in range(smooth_iters):
            a = keep * a + (1 - keep) * torch.sparse.mm(adjacency, a)
    return a


def fit_appearance(basis: torch.Tensor, observed: torch.Tensor, weights: torch.Tensor, skin: torch.Tensor,
                   mirror: torch.Tensor, adjacency: torch.Tensor | None, prior: SkinColourPrior,
                   rounds: int = 3, prior_weight: float = 0.05, sh_reg: float = 1e-3,
                   albedo_init: torch.Tensor | None = None, light_level: float = 0.8,
                   light_level_weight: float = 0.0) -> Appearance:
    """Alternate SH and albedo solves over all vertices.

    basis (V, 9) SH basis of the current normals (view frame), observed (V, 3) the photo
    sampled at the projected vertices, weights (V,) in [0, 1] (visibility × facing),
    skin (V,) bool: vertices whose colour is skin (used for the lighting solve and the
    global skin colour; eyes, lips and hair still get an observed albedo).
    ``light_level`` / ``light_level_weight``: the light-level prior of :func:`solve_sh`.
    """
    V = basis.shape[0]
    mean = prior.mean_tensor(basis)
    sw = weights * skin.to(weights.dtype)
    albedo = mean.expand(V, 3).clone() if albedo_init is None else albedo_init.clone()
    skin_colour = mean
    sh = torch.zeros(9, 3, dtype=basis.dtype, device=basis.device)
    for _ in range(max(1, rounds)):
        sh = solve_sh(basis, albedo, observed, sw, sh_reg, light_level, light_level_weight)
        shading = (basis @ sh).clamp_min(0.05)
        raw = observed / shading
        if sw.sum() > 0:
            skin_colour = clamp_to_prior(torch.median(raw[sw > 0.3], dim=0).values if (sw > 0.3).sum() > 10
                                         else (raw * sw[:, None]).sum(0) / sw.sum(), prior)
        albedo = solve_albedo(shading, observed, weights, skin_colour.expand(V, 3), prior_weight)
        albedo = fill_albedo(albedo.clamp(0, 1), weights, mirror, skin_colour, adjacency, smooth_iters=1)
    return Appearance(albedo=albedo.clamp(0, 1), sh=sh, skin_colour=skin_colour)
