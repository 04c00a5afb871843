"""One identity per clip, from estimates on key frames.

Key frames are spread evenly over the frames where the person was tracked
(:func:`key_frame_positions`); each is reconstructed on its own by the chosen method (fit,
hybrid or a network), and their identity coefficients are combined by
:func:`combine_identities`: a weighted mean in prior-std units where each key frame weighs
by how well its estimate explains its landmarks (``1 / (e² + e0²)``, ``e`` the landmark RMS
over the inter-ocular distance), refined by iteratively reweighted least squares with Cauchy
weights (scale: twice the median distance to the mean) so that a key frame whose identity lies far from the others (a blink, a face half
out of view, a bad detection) barely counts. Why not one joint multi-frame fit: the
per-frame fits already exist for the other frames' warm start, the mean of K independent
estimates cuts their noise by about √K, and the robust weights handle outliers; the
measured gain is in docs/video.md.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.face import FaceDecoder, FaceParams
from engine.head.model import HeadModel

__all__ = ["combine_identities", "key_frame_positions", "landmark_rms"]


def key_frame_positions(tracked: np.ndarray, n_keys: int) -> list[int]:
    """Up to ``n_keys`` positions among the ``True`` entries of ``tracked (T,)``, spread evenly
    (first and last tracked frames included)."""
    idx = np.nonzero(np.asarray(tracked, bool))[0]
    if len(idx) == 0 or n_keys < 1:
        return []
    if len(idx) <= n_keys:
        return idx.tolist()
    pick = np.round(np.linspace(0, len(idx) - 1, n_keys)).astype(int)
    return sorted(set(idx[pick].tolist()))


@torch.no_grad()
def landmark_rms(head: HeadModel, params: FaceParams, landmarks68: np.ndarray) -> float:
    """RMS distance between the estimate's projected iBUG-68 landmarks and the detected ones,
    in units of the detected inter-ocular distance (outer eye corners)."""
    from engine.detect import inter_ocular

    p = params.to(head.template.device)
    pred = FaceDecoder(head)(p).landmarks2d[0].cpu().numpy()
    lm = np.asarray(landmarks68, np.float64)[:, :2]
    return float(np.sqrt(((pred - lm) ** 2).sum(-1).mean()) / max(inter_ocular(lm), 1.0))


def combine_identities(identities: np.ndarray, errors: np.ndarray, std: np.ndarray, error_floor: float = 0.02,
                       scale: float | None = None, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Robust weighted mean of ``identities (K, K_id)`` (see the module docstring).

    ``errors (K,)``: landmark RMS per key frame (inter-ocular units), ``std (K_id,)``: the
    identity prior std, ``scale``: the Cauchy scale of the distance to the mean in prior-std
    units (RMS over coefficients; default twice the median distance). Returns (identity (K_id,), final weights (K,) summing to 1).
    """
    X = np.asarray(identities, np.float64) / np.asarray(std, np.float64)[None]
    base = 1.0 / (np.asarray(errors, np.float64) ** 2 + error_floor**2)
    w = base / base.sum()
    mean = (w[:, None] * X).sum(0)
    for _ in range(iterations if len(X) > 2 else 0):
        d = np.sqrt(((X - mean) ** 2).mean(1))
        c = scale if scale is not None else max(2.0 * float(np.median(d)), 1e-6)
        w = base / (1.0 + (d / c) ** 2)
        w = w / w.sum()
        mean = (w[:, None] * X).sum(0)
    return mean * np.asarray(std, np.float64), w
