"""Scores of an animation against ground truth (synthetic clips) and of its steadiness.

* :func:`expression_error_mm` — what the expression *does* to the face: the face-skin
  vertices of the true identity with the estimated vs the true expression and jaw (no head
  pose), mean distance in millimetres. Blendshape weights are not unique (two units can
  move the same vertices), so this is the error that matters to a viewer; the weight error
  (:func:`weight_error`) is reported next to it.
* :func:`rotation_error_deg` — geodesic angle between head rotations.
* :func:`jitter` — mean absolute second difference of curves over frames whose truth is
  still (the frame and both neighbours): noise that a still face should not show.
* :func:`lag_frames` — the shift (in frames) that best lines up an estimate's changes with
  the truth's over moving frames: how late a filter follows motion.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.head.model import HeadModel

__all__ = ["expression_error_mm", "jitter", "lag_frames", "rotation_error_deg", "weight_error"]


@torch.no_grad()
def expression_error_mm(head: HeadModel, identity: np.ndarray, expr_est: np.ndarray, pose_est: np.ndarray,
                        expr_gt: np.ndarray, pose_gt: np.ndarray) -> np.ndarray:
    """Per frame ``(T,)``: mean face-skin vertex distance (mm) between the true identity with
    the estimated and with the true expression + joint pose. identity (K_id,), expr (T, K_exp),
    pose (T, J, 3)."""
    f = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    T = len(expr_est)
    ident = f(identity)[None].expand(T, -1)
    skin = head.regions["face_skin"]
    v_est = head(ident, f(expr_est), f(pose_est)).vertices[:, skin]
    v_gt = head(ident, f(expr_gt), f(pose_gt)).vertices[:, skin]
    return ((v_est - v_gt).norm(dim=-1).mean(-1) * 1000.0).numpy()


def weight_error(est: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per frame ``(T,)``: mean absolute difference of the blendshape weights."""
    return np.abs(np.asarray(est) - np.asarray(gt)).mean(-1)


def rotation_error_deg(R_est: np.ndarray, R_gt: np.ndarray) -> np.ndarray:
    """Per frame ``(T,)``: angle of ``R_est @ R_gt.T`` in degrees (rotations ``(T, 3, 3)``)."""
    rel = np.einsum("tij,tkj->tik", np.asarray(R_est, np.float64), np.asarray(R_gt, np.float64))
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def jitter(curves: np.ndarray, still: np.ndarray) -> float:
    """Mean ``|x[i+1] - 2 x[i] + x[i-1]|`` over frames ``i`` still with both neighbours
    (curves ``(T, C)``, still ``(T,)`` bool); NaN when no such frame."""
    x = np.asarray(curves, np.float64).reshape(len(curves), -1)
    s = np.asarray(still, bool)
    ok = s[1:-1] & s[:-2] & s[2:]
    if not ok.any():
        return float("nan")
    d2 = np.abs(x[2:] - 2 * x[1:-1] + x[:-2])
    return float(d2[ok].mean())


def lag_frames(est: np.ndarray, gt: np.ndarray, moving: np.ndarray, max_shift: int = 8) -> int:
    """The shift ``s`` (frames) that best lines up the estimate's motion with the truth's:
    maximises the correlation of frame-to-frame changes ``est[i + s] - est[i + s - 1]`` and
    ``gt[i] - gt[i - 1]`` over moving frames ``i`` (positive = the estimate comes late).
    Changes, not values, so a constant offset of a curve does not pull the shift."""
    de = np.diff(np.asarray(est, np.float64).reshape(len(est), -1), axis=0)
    dg = np.diff(np.asarray(gt, np.float64).reshape(len(gt), -1), axis=0)
    idx = np.nonzero(np.asarray(moving, bool)[1:])[0]
    best, best_score = 0, -float("inf")
    for s in range(-max_shift, max_shift + 1):
        i = idx[(idx + s >= 0) & (idx + s < len(de))]
        if len(i) == 0:
            continue
        score = float((de[i + s] * dg[i]).sum())
        if score > best_score + 1e-12:
            best, best_score = s, score
    return best
