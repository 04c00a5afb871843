"""The loss library: named terms over decoded faces, combined with weights from YAML.

A term is a small function ``term(inputs: LossInputs) -> Tensor (B,)`` over what
:class:`engine.face.FaceDecoder` produced and what the image says (the photo sampled at the
projected vertices, detected landmarks, contour points). Fitting and every learned method
pick terms by name with weights, e.g. a training config's

    model:
      losses: {photometric: 1.92, landmark: 300, identity_prior: 2.9e-5, expression_range: 1.0}

and :func:`weighted_sum` returns the weighted total and each term for logging. Terms:

=================  ==============================================================
photometric        MoFA's ℓ2,1 per-vertex colour residual over ``photo_weights``
landmark           weighted mean squared landmark distance (in ``landmark_scale`` units)
contour            detected contour points to the model's silhouette (along its normal)
identity_prior     Σ (identity / head.identity_std)²
expression_prior   Σ expression²
expression_l1      Σ |expression| (sparsity)
expression_range   squared excursion outside ``head.expression_range``
jaw_prior          squared jaw rotation (radians²)
reflectance_prior  Σ reflectance coefficients² (prior-std units)
=================  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as Fn
from torch import Tensor

from engine.errors import UserError
from engine.face.decoder import Decoded
from engine.losses.landmark import landmark_loss
from engine.losses.photometric import photometric_l21
from engine.losses.priors import range_penalty, tikhonov

__all__ = ["LossInputs", "TERMS", "contour_loss", "register_term", "weighted_sum", "check_weights"]


@dataclass
class LossInputs:
    """What the terms read. Only the fields a selected term needs must be set.

    ``decoded``: the decoder's output for the current parameters. ``observed (B, V, 3)``:
    the image sampled at the projected vertices (``decoded.sample(image)``), with
    ``photo_weights (B, V)`` in [0, 1] (visibility × region). ``landmarks (B, N, 2)``:
    target pixels for ``landmark_points (B, N, 2)`` (default ``decoded.landmarks2d``),
    weighted by ``landmark_weights (N,)|(B, N)``, distances divided by ``landmark_scale``
    (e.g. the crop size, so the term is resolution-independent). ``contour (B, M, 2)``:
    detected silhouette points in pixels, matched to vertices of
    ``decoded.silhouette(contour_band, contour_region)``.
    """

    decoded: Decoded
    observed: Tensor | None = None
    photo_weights: Tensor | None = None
    landmarks: Tensor | None = None
    landmark_points: Tensor | None = None
    landmark_weights: Tensor | None = None
    landmark_scale: float = 1.0
    contour: Tensor | None = None
    contour_band: float = 0.3
    contour_region: Tensor | None = None

    @property
    def params(self):
        return self.decoded.params

    @property
    def head(self):
        return self.decoded.head


def _need(value, name: str, term: str):
    if value is None:
        raise ValueError(f"loss term {term!r} needs LossInputs.{name}")
    return value


def _photometric(x: LossInputs) -> Tensor:
    obs = _need(x.observed, "observed", "photometric")
    w = _need(x.photo_weights, "photo_weights", "photometric")
    return photometric_l21(x.decoded.colour, obs, w)


def _landmark(x: LossInputs) -> Tensor:
    target = _need(x.landmarks, "landmarks", "landmark")
    pred = x.landmark_points if x.landmark_points is not None else x.decoded.landmarks2d
    s = float(x.landmark_scale)
    if s != 1.0:
        return landmark_loss(pred / s, target / s, x.landmark_weights)
    return landmark_loss(pred, target, x.landmark_weights)


def contour_loss(decoded: Decoded, contour: Tensor, band: float, region: Tensor | None = None) -> Tensor:
    """Mean squared distance ``(B,)``, along the model's 2-D outward normal, from each
    detected contour point ``(B, M, 2)`` to its nearest silhouette vertex (correspondence
    chosen anew at every call, without gradient); 0 where fewer than 3 candidates exist."""
    uv = decoded.uv
    cand = decoded.silhouette(band, region)
    out = []
    for b in range(uv.shape[0]):
        idx = torch.nonzero(cand[b])[:, 0]
        if idx.numel() < 3:
            out.append(uv.new_zeros(()))
            continue
        cuv = uv[b, idx]
        with torch.no_grad():
            nearest = torch.cdist(contour[b], cuv).argmin(1)
            n2 = Fn.normalize(decoded.normals_camera[b, idx[nearest], :2], dim=-1)
        r = ((cuv[nearest] - contour[b]) * n2).sum(-1)
        out.append((r**2).mean())
    return torch.stack(out)


def _contour(x: LossInputs) -> Tensor:
    return contour_loss(x.decoded, _need(x.contour, "contour", "contour"), x.contour_band, x.contour_region)


def _jaw_prior(x: LossInputs) -> Tensor:
    names = x.head.joint_names
    pose = x.params.pose
    if "jaw" not in names:
        return pose.new_zeros(pose.shape[0])
    return (pose[:, names.index("jaw")] ** 2).sum(-1)


def _reflectance_prior(x: LossInputs) -> Tensor:
    refl = _need(x.params.reflectance, "decoded.params.reflectance", "reflectance_prior")
    return tikhonov(refl.flatten(1))


TERMS: dict[str, Callable[[LossInputs], Tensor]] = {
    "photometric": _photometric,
    "landmark": _landmark,
    "contour": _contour,
    "identity_prior": lambda x: tikhonov(x.params.identity, x.head.identity_std),
    "expression_prior": lambda x: tikhonov(x.params.expression),
    "expression_l1": lambda x: x.params.expression.abs().sum(-1),
    "expression_range": lambda x: range_penalty(x.params.expression, x.head.expression_range),
    "jaw_prior": _jaw_prior,
    "reflectance_prior": _reflectance_prior,
}


def register_term(name: str, fn: Callable[[LossInputs], Tensor]) -> None:
    """Add a term (a method's own loss, e.g. CEST's clip consistency) under ``name``."""
    TERMS[name] = fn


def check_weights(weights: Mapping[str, float], where: str = "losses") -> dict[str, float]:
    """Validate a ``{term: weight}`` mapping from a config: known names, finite numbers."""
    import math

    out = {}
    for name, w in weights.items():
        if name not in TERMS:
            raise UserError(f"unknown loss term '{where}.{name}'; known terms: {', '.join(sorted(TERMS))}")
        try:
            value = float(w)
        except (TypeError, ValueError):
            raise UserError(f"loss weight '{where}.{name}' must be a number, got {w!r}") from None
        if not math.isfinite(value):
            raise UserError(f"loss weight '{where}.{name}' must be finite, got {w!r}")
        out[name] = value
    return out


def weighted_sum(weights: Mapping[str, float], inputs: LossInputs,
                 log: tuple[str, ...] = ()) -> tuple[Tensor, dict[str, Tensor]]:
    """``Σ weight · term`` per batch item ``(B,)`` over the terms with a non-zero weight, and
    every computed term (those plus the ``log``-only ones, weight or not) for logging."""
    total = None
    terms: dict[str, Tensor] = {}
    for name, w in weights.items():
        if w == 0 and name not in log:
            continue
        value = TERMS[name](inputs)
        terms[name] = value
        if w != 0:
            total = w * value if total is None else total + w * value
    for name in log:
        if name not in terms:
            terms[name] = TERMS[name](inputs)
    if total is None:
        total = inputs.params.identity.new_zeros(inputs.params.batch_size)
    return total, terms
