"""MoFA's synthetic ground-truth protocol for the fitter.

Render N faces with known identity, expression, jaw, pose, lighting, albedo and background
(:mod:`engine.generator`), reconstruct each one with a predictor (any registered method,
:mod:`engine.methods`; the fit by default), and report

* geometric error (mm): mean point-to-point distance over the face-skin vertices after a
  similarity (Umeyama) alignment of the fitted mesh to the ground truth;
* photometric error: mean |render − image| in [0, 1] RGB over the fitted face-skin pixels;
* landmark error (px): mean distance between the fitted model's projected landmarks and
  the ground-truth projected landmarks, at the render size (224 px by default);

each as mean and median over faces. The fitter is run twice per face: on landmarks from the
real detector (the honest setting) and on the ground-truth 2-D landmarks (fitting alone).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from engine.face import FaceDecoder, FaceParams
from engine.fitting import FitConfig
from engine.generator import SyntheticConfig, render_colours, render_sample, vertex_colours
from engine.head.model import HeadModel
from engine.methods.base import FaceObservation, Predictor


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising ||s R src + t − dst||² (Umeyama 1991); src/dst (N, 3)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var = (a**2).sum() / len(src)
    s = float(np.trace(np.diag(D) @ S) / var)
    t = mu_d - s * R @ mu_s
    return s, R, t


@dataclass
class FaceScore:
    seed: int
    source: str  # "detected" | "gt"
    geometric_mm: float
    photometric: float
    landmark_px: float
    seconds: float
    mean_face_mm: float  # baseline: the template (zero coefficients), same alignment
    true_yaw_deg: float | None = None  # the head's yaw when the generator records it (realistic)


#: |yaw| bands of the realistic generator's faces in the printed summary (degrees)
YAW_BANDS = ((0.0, 30.0), (30.0, 60.0), (60.0, 91.0))


@dataclass
class EvalReport:
    n: int
    seed: int
    model: str
    image_size: int
    scores: list[FaceScore] = field(default_factory=list)
    detection_failures: int = 0
    missed_yaw_deg: list[float] = field(default_factory=list)  # the yaw of faces the detector missed, when known

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for src in ("detected", "gt"):
            rows = [s for s in self.scores if s.source == src]
            if not rows:
                continue
            d: dict[str, float] = {"faces": len(rows)}
            for key in ("geometric_mm", "photometric", "landmark_px", "seconds", "mean_face_mm"):
                vals = np.array([getattr(r, key) for r in rows])
                d[f"{key}_mean"] = float(vals.mean())
                d[f"{key}_median"] = float(np.median(vals))
            out[src] = d
        return out

    def by_yaw(self) -> dict[str, list[dict[str, float]]]:
        """Per source, per |yaw| band of :data:`YAW_BANDS` (faces whose yaw is known): faces,
        median geometric error, mean-face error and landmark error. Empty when no yaw is known."""
        out: dict[str, list[dict[str, float]]] = {}
        for src in ("detected", "gt"):
            rows = [s for s in self.scores if s.source == src and s.true_yaw_deg is not None]
            bands = []
            for lo, hi in YAW_BANDS:
                r = [s for s in rows if lo <= abs(s.true_yaw_deg) < hi]
                missed = sum(lo <= abs(y) < hi for y in self.missed_yaw_deg) if src == "detected" else 0
                if r or missed:
                    bands.append({"lo": lo, "hi": hi, "faces": len(r), "detector_misses": missed,
                                  **{f"{key}_median": float(np.median([getattr(s, key) for s in r])) if r else float("nan")
                                     for key in ("geometric_mm", "mean_face_mm", "landmark_px")}})
            if bands:
                out[src] = bands
        return out

    def to_dict(self) -> dict:
        return {"n": self.n, "seed": self.seed, "model": self.model, "image_size": self.image_size,
                "detection_failures": self.detection_failures, "summary": self.summary(), "by_yaw": self.by_yaw(),
                "faces": [asdict(s) for s in self.scores]}


def geometric_error_mm(model: HeadModel, vertices: torch.Tensor, gt_vertices: torch.Tensor) -> float:
    """Mean face-skin point-to-point distance (mm) after similarity alignment."""
    face = model.regions["face_skin"].cpu().numpy()
    gt = gt_vertices.numpy()[face].astype(np.float64)
    est = vertices.numpy()[face].astype(np.float64)
    s, R, t = umeyama(est, gt)
    return float(np.linalg.norm((s * est @ R.T + t) - gt, axis=1).mean() * 1000.0)


def score_fit(model: HeadModel, sample, estimate: FaceParams) -> tuple[float, float, float]:
    """(geometric mm, photometric, landmark px) of an estimate (batch of one) against a
    synthetic sample: the estimate is decoded and rendered like the sample was."""
    dec = FaceDecoder(model)(estimate.detach().cpu())
    geo = geometric_error_mm(model, dec.vertices[0], sample.vertices)
    rgb, _, region = render_colours(dec, vertex_colours(dec), model.regions["face_skin"])
    rgb, region = rgb[0].numpy(), region[0].numpy()
    img = sample.image.astype(np.float32) / 255.0
    photo = float(np.abs(rgb - img)[region].mean()) if region.any() else float("nan")
    lmk = float((dec.landmarks2d[0] - sample.landmarks2d).norm(dim=-1).mean())
    return geo, photo, lmk


def fit_predictor(model: HeadModel, config: FitConfig | None = None) -> Predictor:
    """The analysis-by-synthesis fitter as a predictor (uses the detector's native points)."""
    from engine.methods.fit import FitPredictor

    return FitPredictor(model, config)


def observe_sample(sample, landmarks: str = "detected", backend: str = "default") -> FaceObservation | None:
    """A synthetic sample as a method sees it: its true 2-D landmarks (``"gt"``) or the
    detector's first face with iBUG-68 landmarks (``"detected"``); None when the detector
    finds none."""
    if landmarks == "gt":
        return FaceObservation(sample.image, sample.landmarks2d.numpy())
    from engine.detect import detect_faces

    faces = [f for f in detect_faces(sample.image, backend=backend) if f.landmarks68 is not None]
    return FaceObservation.from_detection(sample.image, faces[0]) if faces else None


def predict_sample(predictor: Predictor, sample, landmarks: str = "detected",
                   backend: str = "default") -> tuple[FaceParams, float] | None:
    """:func:`observe_sample`, then the predictor, timed: ``(estimate, seconds)``, or None when
    the detector finds no face."""
    face = observe_sample(sample, landmarks, backend)
    if face is None:
        return None
    t0 = time.perf_counter()
    fit = predictor(face)
    return fit, time.perf_counter() - t0


def evaluate_synthetic(model: HeadModel, n: int = 50, seed: int = 0, config: FitConfig | None = None,
                       synth: Any = None, sources: tuple[str, ...] = ("detected", "gt"),
                       backend: str = "default", log: Callable[[str], None] | None = None,
                       predictor: Predictor | None = None) -> EvalReport:
    """Run the protocol on faces ``seed .. seed + n − 1`` (deterministic).

    ``synth`` is the generator's config: a :class:`engine.generator.SyntheticConfig` (the
    basic generator, the default) or a :class:`engine.generator.realistic.RealisticConfig`
    (whole photo-like frames: any pose, props, lights; ``engine.data.synthetic.generator_config``
    builds either from options). ``predictor`` (:func:`engine.methods.build_predictor`)
    replaces the fitter (e.g. a learned or hybrid method); default :func:`fit_predictor` with
    ``config``.
    """
    synth = synth or SyntheticConfig()
    if isinstance(synth, SyntheticConfig):
        render = render_sample
    else:
        from engine.generator.realistic import render_realistic as render
    predictor = predictor or fit_predictor(model, config)
    report = EvalReport(n=n, seed=seed, model=model.name, image_size=synth.image_size)
    for k in range(n):
        sample = render(model, seed + k, synth)
        angles = (getattr(sample, "attributes", None) or {}).get("head_angles_deg")
        yaw = float(angles[1]) if angles is not None else None
        for src in sources:
            predicted = predict_sample(predictor, sample, src, backend)
            if predicted is None:
                report.detection_failures += 1
                if yaw is not None:
                    report.missed_yaw_deg.append(yaw)
                if log:
                    log(f"face {seed + k}: detector found no face")
                continue
            fit, secs = predicted
            geo, photo, lmk = score_fit(model, sample, fit)
            base = geometric_error_mm(model, model.template.detach().cpu(), sample.vertices)
            report.scores.append(FaceScore(seed + k, src, geo, photo, lmk, secs, base, yaw))
            if log:
                log(f"face {seed + k} [{src}]: {geo:.2f} mm, photometric {photo:.3f}, landmarks {lmk:.2f} px, "
                    f"{secs:.2f} s")
    return report
