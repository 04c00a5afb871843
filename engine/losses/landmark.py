"""Sparse landmark reprojection term (iBUG-68 layout)."""

from __future__ import annotations

import torch

# iBUG-68 groups: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67.
JAW = list(range(0, 17))
BROWS = list(range(17, 27))
NOSE = list(range(27, 36))
EYES = list(range(36, 48))
MOUTH = list(range(48, 68))


def landmark_weights_68(jaw: float = 0.5, brows: float = 1.0, nose: float = 1.0,
                        eyes: float = 1.0, mouth: float = 1.0) -> torch.Tensor:
    """Per-landmark weights (68,).

    The jawline points are silhouette points on a real face but fixed surface points in a
    static embedding, so they get a lower default weight; they are the least reliable
    correspondence under yaw.
    """
    w = torch.ones(68)
    w[JAW] = jaw
    w[BROWS] = brows
    w[NOSE] = nose
    w[EYES] = eyes
    w[MOUTH] = mouth
    return w


def landmark_loss(
    predicted: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    scale: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """Weighted mean squared landmark distance, (B,).

    predicted, target: (B, N, 2) in the same units (pixels or NDC). weights: (N,) or
    (B, N); a zero weight drops a landmark (e.g. one the detector did not see). ``scale``
    (a float or (B,)) divides the distances first, e.g. by the face size, so the value is
    resolution-independent.
    """
    if not torch.is_tensor(scale):
        scale = torch.tensor(float(scale), dtype=predicted.dtype, device=predicted.device)
    if scale.dim() > 0:
        scale = scale.reshape(-1, 1, 1)
    d2 = (((predicted - target) / scale) ** 2).sum(-1)
    if weights is None:
        return d2.mean(-1)
    w = weights.to(predicted.dtype).expand_as(d2)
    return (d2 * w).sum(-1) / w.sum(-1).clamp_min(1e-12)


#: iBUG-68 upper/lower eyelid pairs (0-based): right eye 37-41, 38-40; left eye 43-47, 44-46
EYELID_PAIRS = ((37, 41), (38, 40), (43, 47), (44, 46))


def eye_closure_loss(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                     scale: float = 1.0) -> torch.Tensor:
    """DECA's eye-closure term, (B,): the mean L1 difference between the model's and the
    target's upper-to-lower eyelid offsets (:data:`EYELID_PAIRS`, 2-D vectors as DECA
    compares them, so a closed eye has a well-defined gradient), divided by ``scale``.

    predicted, target: (B, 68, 2). weights: (68,) or (B, 68); a pair counts only when both
    of its landmarks have a non-zero weight (e.g. the detector saw them)."""
    up = torch.tensor([p[0] for p in EYELID_PAIRS], device=predicted.device)
    lo = torch.tensor([p[1] for p in EYELID_PAIRS], device=predicted.device)
    gap_pred = predicted[:, up] - predicted[:, lo]
    gap_true = target[:, up].to(predicted.dtype) - target[:, lo].to(predicted.dtype)
    err = (gap_pred - gap_true).abs().sum(-1) / float(scale)  # (B, 4)
    if weights is None:
        return err.mean(-1)
    w = weights.to(predicted.dtype).expand(predicted.shape[0], predicted.shape[1])
    valid = ((w[:, up] > 0) & (w[:, lo] > 0)).to(err.dtype)
    return (err * valid).sum(-1) / valid.sum(-1).clamp_min(1.0)
