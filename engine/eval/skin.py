"""Skin-tone recovery on the realistic generator's faces (issue #17's light/albedo split).

``python -m engine.eval skin [--n 40] [--seed 0] [--method fit] [--landmarks gt|detected]``

Renders ``n`` faces of :func:`engine.generator.realistic.render_realistic` (open head model,
skin tones Fitzpatrick I-VI evenly, its lights, exposure and white-balance errors; yaw within
±40° and faces 35-70 % of a 320-px frame, like the Cycles validation set's framing), runs a
method on each and compares the **median Rec. 709 luma of the albedo over the face region**
(:func:`engine.eval.cycles_set.face_region`, the same measure as ``engine.eval cycles``)
between the reconstruction and the painted ground truth: Spearman rank correlation and the
least-squares slope of predicted on true luma across faces (1 = tones kept, 0 = every face
gets one colour). These are our own renders: use them to tune, and the Cycles set to judge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from engine.eval.cycles import face_luminance, tone_agreement
from engine.eval.cycles_set import face_region
from engine.eval.synthetic import predict_sample
from engine.head.model import HeadModel
from engine.methods.base import Predictor


@dataclass
class SkinScore:
    seed: int
    fitzpatrick: int
    skin_true: float
    skin_pred: float
    seconds: float


@dataclass
class SkinReport:
    model: str
    method: str
    landmarks: str
    n: int
    seed: int
    detection_failures: int = 0
    scores: list[SkinScore] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        t = np.array([s.skin_true for s in self.scores])
        p = np.array([s.skin_pred for s in self.scores])
        if len(t) < 3:
            return {"faces": float(len(t))}
        spearman, slope = tone_agreement(t, p)
        return {"faces": float(len(t)), "spearman": spearman, "slope": slope,
                "true_range": float(t.max() - t.min()), "pred_range": float(p.max() - p.min()),
                "mean_abs_error": float(np.abs(p - t).mean()), "seconds_median": float(np.median(
                    [s.seconds for s in self.scores]))}

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "scores"}, "summary": self.summary(),
                "scores": [asdict(s) for s in self.scores]}


def skin_config(image_size: int = 320):
    """The generator settings of this benchmark (framing like the Cycles set)."""
    from engine.generator.realistic import RealisticConfig

    return RealisticConfig(image_size=image_size, face_fraction=(0.35, 0.7), yaw_deg=40.0)


def evaluate_skin(model: HeadModel, predictor: Predictor, n: int = 40, seed: int = 0, landmarks: str = "gt",
                  backend: str = "default", log: Callable[[str], None] | None = None) -> SkinReport:
    """Faces ``seed .. seed + n - 1`` (deterministic)."""
    from engine.generator.realistic import render_realistic

    rep = SkinReport(model=model.name, method=str(getattr(predictor, "name", "?")), landmarks=landmarks, n=n, seed=seed)
    region = face_region(model)
    cfg = skin_config()
    for k in range(n):
        sample = render_realistic(model, seed + k, cfg)
        predicted = predict_sample(predictor, sample, landmarks, backend)
        if predicted is None:
            rep.detection_failures += 1
            continue
        fit, secs = predicted
        if fit.albedo is None:
            continue
        true = face_luminance(sample.params.albedo[0].numpy(), region)
        pred = face_luminance(fit.albedo[0].detach().cpu().numpy(), region)
        fitz = int(sample.attributes.get("fitzpatrick", 0))
        rep.scores.append(SkinScore(seed + k, fitz, true, pred, secs))
        if log:
            log(f"face {seed + k} (Fitzpatrick {fitz}): skin luma {pred:.3f} vs true {true:.3f}, {secs:.2f} s")
    return rep


def format_report(rep: SkinReport) -> str:
    d = rep.summary()
    if "spearman" not in d:
        return f"skin tone: too few faces ({int(d['faces'])})"
    return (f"skin tone on realistic generator faces: method={rep.method} model={rep.model} landmarks={rep.landmarks} "
            f"faces={int(d['faces'])} (detector misses {rep.detection_failures})\n"
            f"  Spearman {d['spearman']:.3f}  slope {d['slope']:.3f}  mean |error| {d['mean_abs_error']:.3f}  "
            f"true range {d['true_range']:.3f}, predicted range {d['pred_range']:.3f}  {d['seconds_median']:.2f} s/face")


__all__ = ["SkinReport", "SkinScore", "evaluate_skin", "format_report", "skin_config"]
