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


class HybridPredictor:
    """``init`` (a learned :class:`Predictor`) then :class:`FitPredictor` from its estimate."""

    def __init__(self, init: Predictor, head: Any, config: Any = None) -> None:
        self.init = init
        self.head = head
        self.name = f"hybrid({init.name})"
        self.fit = FitPredictor(head, hybrid_config(config))

    def __call__(self, face: FaceObservation, progress: ProgressFn | None = None) -> FaceParams:
        start = self.init(face)
        out = self.fit(face, progress=progress, init=start)
        out.timings = {**start.timings, **out.timings}
        return out
