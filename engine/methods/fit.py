"""``fit``: analysis-by-synthesis (:mod:`engine.fitting`) as a predictor."""

from __future__ import annotations

from typing import Any

from engine.face import FaceParams
from engine.methods.base import FaceObservation, ProgressFn

METHOD = {
    "name": "fit",
    "kind": "fit",
    "label": "Fit (analysis by synthesis)",
    "description": "Optimise the head model against the landmarks and the photo's colours (about 0.75 s per face).",
    "needs": "nothing beyond the head model",
    "entry": "FitPredictor",
    "order": 10,
}


class FitPredictor:
    """``fit_photo`` with the detector's dense points when the head model embeds them."""

    name = "fit"

    def __init__(self, head: Any, config: Any = None) -> None:
        from engine.fitting import FitConfig

        self.head = head
        self.config = config or FitConfig()

    def __call__(self, face: FaceObservation, progress: ProgressFn | None = None,
                 init: FaceParams | None = None) -> FaceParams:
        from engine.fitting import fit_photo

        return fit_photo(self.head, face.image, face.landmarks68, self.config, progress=progress,
                         native=face.native, native_convention=face.convention, init=init)
