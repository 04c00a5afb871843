"""``hybrid``: a learned method's prediction refined by a short fit (any learned method)."""

from __future__ import annotations

import dataclasses
from typing import Any

from engine.face import FaceParams
from engine.methods.base import FaceObservation, Predictor, ProgressFn
from engine.methods.fit import FitPredictor

METHOD = {
    "name": "hybrid",
    "kind": "hybrid",
    "label": "Hybrid (learned start + fit)",
    "description": "A learned method (--init, default mofa) starts the fit, which then runs a shorter schedule.",
    "needs": "what its learned method needs (a checkpoint)",
    "entry": "HybridPredictor",
    "order": 15,
}


#: the FitConfig fields a hybrid takes from its own ``hybrid_*`` fields (hybrid_config)
HYBRID_FIELDS = {"shape_iters": "hybrid_shape_iters", "expression_reweight_iters": "hybrid_reweight_iters",
                 "joint_iters": "hybrid_joint_iters", "init_intrinsics": "hybrid_intrinsics"}
#: every FitConfig field hybrid_config replaces (pose_iters is 0: the network gives the pose)
SCHEDULE_FIELDS = ("pose_iters", *HYBRID_FIELDS)


def hybrid_config(base: Any = None) -> Any:
    """Fitter schedule for a hybrid: the network's prediction replaces the PnP start and the
    pose-only stage; the landmark, reweighted-ℓ1 and joint stages and the intrinsics come
    from the ``hybrid_*`` fields."""
    from engine.fitting import FitConfig

    cfg = base or FitConfig()
    return dataclasses.replace(cfg, pose_iters=0, **{fit: getattr(cfg, own) for fit, own in HYBRID_FIELDS.items()})


def landmark_disagreement(estimate: FaceParams, head: Any, landmarks68: Any) -> float:
    """The median distance between an estimate's projected iBUG-68 landmarks and detected
    ``landmarks68 (68, 2)`` (the same pixels), over the detected landmarks' box size: ~0.03 for
    a network and a detector that agree, 0.1-0.35 where the detector is lost."""
    import numpy as np
    import torch

    from engine.face import FaceDecoder

    with torch.no_grad():
        model_lm = FaceDecoder(head)(estimate).landmarks2d[0].detach().cpu().numpy()
    lm = np.asarray(landmarks68, np.float64)[:, :2]
    return float(np.median(np.linalg.norm(model_lm - lm, axis=1)) / max(float(np.ptp(lm, 0).max()), 1.0))


class HybridPredictor:
    """``init`` (a learned :class:`Predictor`) then :class:`FitPredictor` from its estimate;
    where the detector's landmarks disagree with the start's by more than
    ``hybrid_lost_landmarks`` (the detector is lost), only the appearance is fitted."""

    def __init__(self, init: Predictor, head: Any, config: Any = None) -> None:
        self.init = init
        self.head = head
        self.name = f"hybrid({init.name})"
        cfg = hybrid_config(config)
        self.fit = FitPredictor(head, cfg)
        self.lost_at = cfg.hybrid_lost_landmarks
        self.appearance_only = FitPredictor(head, dataclasses.replace(cfg, shape_iters=0, joint_iters=0))

    def __call__(self, face: FaceObservation, progress: ProgressFn | None = None) -> FaceParams:
        start = self.init(face)
        apart = landmark_disagreement(start, self.head, face.landmarks68)
        lost = self.lost_at > 0 and apart > self.lost_at
        out = (self.appearance_only if lost else self.fit)(face, progress=progress, init=start)
        out.timings = {**start.timings, **out.timings}
        out.losses = {**out.losses, "landmark_disagreement": apart, "landmarks_lost": float(lost)}
        return out
