"""DECA detail on realistic generator faces with true detail (issue #14).

``python -m engine.eval detail --checkpoint CKPT [--n 40] [--seed 900000]``

Renders ``n`` faces of :func:`engine.generator.realistic.render_realistic` (open head model,
wrinkles and pores as a true UV displacement, framed like the detail stage's training crops:
faces 45-90 % of the frame, yaw within ±40°), runs the DECA network on each (true landmarks,
so that only the network is measured) and compares, over the face-skin texels of the UV
layout (:attr:`engine.methods.deca.Deca.detail_texels`):

* **detail error** (the true whole-layout map resampled onto the network's UV window):
  mean |D_pred − D_true| in mm, against the coarse reconstruction alone
  (D = 0: "without the detail stage"), and the correlation of the two maps' high-pass parts
  (the map minus its 5×5 local mean: wrinkles and pores, not the slow offsets);
* **photometric gain**: mean ℓ1 colour error over the face-skin pixels of the photo of the
  render with the detail normals and without them (same coarse face, same light): the
  fraction of the error the detail removes;
* **animated detail** (what Blender's sliders mix): for each wrinkle unit of the person's
  true detail model, the correlation between the network's delta ``D(code, unit = 1) −
  D(code, 0)`` (the face's own detail code) and the generator's true map of that unit, over
  the face texels; the median per unit over the faces, and over all units.

The seeds default to 900000 and up, far from the training corpus' item seeds (derived from
``data.seed`` per split). These are our own renders: the Cycles set judges geometry.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as Fn

from engine.head.model import HeadModel


@dataclass
class DetailScore:
    seed: int
    error_mm: float  # mean |D_pred - D_true| over the face texels
    baseline_mm: float  # mean |D_true| (the coarse reconstruction: no detail)
    highpass_corr: float  # correlation of the high-pass parts of D_pred and D_true
    photo_l1_with: float
    photo_l1_without: float
    wrinkle_mass: float  # summed weights of the true expression units that carry wrinkles
    seconds: float
    unit_corr: dict[str, float] = field(default_factory=dict)  # per wrinkle unit: network delta vs true map


@dataclass
class DetailReport:
    checkpoint: str
    n: int
    seed: int
    scores: list[DetailScore] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        if not self.scores:
            return {"faces": 0.0}
        col = lambda k: np.array([getattr(s, k) for s in self.scores])  # noqa: E731
        err, base = col("error_mm"), col("baseline_mm")
        w, wo = col("photo_l1_with"), col("photo_l1_without")
        strong = col("wrinkle_mass") >= 0.5
        out = {"faces": float(len(self.scores)), "error_mm": float(err.mean()), "baseline_mm": float(base.mean()),
               "error_ratio": float(err.mean() / max(base.mean(), 1e-12)),
               "better_than_none": float((err < base).mean()),
               "highpass_corr": float(np.median(col("highpass_corr"))),
               "photo_l1_with": float(w.mean()), "photo_l1_without": float(wo.mean()),
               "photo_gain": float(1.0 - w.mean() / max(wo.mean(), 1e-12)),
               "ms_network_median": float(np.median(col("seconds")) * 1000.0)}
        if strong.any():
            out["highpass_corr_wrinkled"] = float(np.median(col("highpass_corr")[strong]))
            out["faces_wrinkled"] = float(strong.sum())
        units = sorted({u for s in self.scores for u in s.unit_corr})
        if units:
            per = {u: float(np.median([s.unit_corr[u] for s in self.scores if u in s.unit_corr])) for u in units}
            out["unit_corr_median"] = float(np.median(list(per.values())))
            out.update({f"unit_corr/{u}": v for u, v in per.items()})
        return out

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "scores"}, "summary": self.summary(),
                "scores": [asdict(s) for s in self.scores]}


#: ARKit units whose wrinkles the generator draws (engine/generator/wrinkles.py)
WRINKLE_UNITS = ("browInnerUp", "browOuterUpLeft", "browOuterUpRight", "browDownLeft", "browDownRight",
                 "mouthSmileLeft", "mouthSmileRight", "cheekSquintLeft", "cheekSquintRight", "eyeSquintLeft",
                 "eyeSquintRight", "noseSneerLeft", "noseSneerRight", "mouthShrugLower")


def detail_config(image_size: int = 224):
    """The generator settings of this benchmark (framing like the detail stage's crops)."""
    from engine.generator.realistic import RealisticConfig

    return RealisticConfig(image_size=image_size, face_fraction=(0.45, 0.9), yaw_deg=40.0)


def _highpass(x: torch.Tensor) -> torch.Tensor:
    return x - Fn.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)


def _corr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    a, b = a[mask], b[mask]
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else 0.0


def evaluate_detail(model: HeadModel, network, n: int = 40, seed: int = 900000,
                    log: Callable[[str], None] | None = None) -> DetailReport:
    """Faces ``seed .. seed + n - 1`` through a DECA network with a detail stage."""
    from engine.errors import UserError
    from engine.generator.realistic import render_realistic
    from engine.losses.terms import detail_photometric
    from engine.render.uv import full_to_window

    if getattr(network, "detail_decoder", None) is None:
        raise UserError("the network has no detail stage (train it with train/configs/deca_detail.yaml)")
    rep = DetailReport(checkpoint=str(getattr(network, "source_path", "?")), n=n, seed=seed)
    texels = network.detail_texels[0, 0].bool()
    M = texels.shape[-1]
    names = list(model.expression_names)
    region = model.regions["face_skin"]
    cfg = detail_config()
    for k in range(n):
        sample = render_realistic(model, seed + k, cfg)
        truth = sample.params.displacement
        if truth is None:
            raise UserError("the generator made no true displacement (RealisticConfig.detail is off)")
        window = network.window_batch(1)
        truth = (full_to_window(truth.float(), window, M) if window is not None
                 else Fn.interpolate(truth.float(), size=(M, M), mode="area"))[0, 0]
        t0 = time.perf_counter()
        pred = network.predict_photo(sample.image, sample.landmarks2d.numpy())
        secs = time.perf_counter() - t0
        d = pred.displacement[0, 0]
        err = float((d - truth).abs()[texels].mean() * 1000.0)
        base = float(truth.abs()[texels].mean() * 1000.0)
        corr = _corr(_highpass(d[None, None])[0, 0], _highpass(truth[None, None])[0, 0], texels)
        image = torch.from_numpy(sample.image).permute(2, 0, 1).float().div(255.0)[None]
        with torch.no_grad():
            dec = network.decoder
            w = float(detail_photometric(dec(pred), image, region)[0])
            wo = float(detail_photometric(dec(pred.replace(displacement=None)), image, region)[0])
        expr = sample.params.expression[0]
        mass = float(sum(float(expr[names.index(u)]) for u in WRINKLE_UNITS if u in names))
        unit_corr: dict[str, float] = {}
        basis = getattr(sample, "wrinkles", None)
        if basis is not None:
            with torch.no_grad():
                units = [u for u in basis.units if u in names]
                E = len(names)
                eye = torch.zeros(len(units) + 1, E)
                for j, u in enumerate(units):
                    eye[j + 1, names.index(u)] = 1.0
                code = pred.detail_code.expand(len(units) + 1, -1)
                maps = network.detail_decoder(code, eye)
                deltas = (maps[1:] - maps[:1])[:, 0]
                for j, u in enumerate(units):
                    true_u = basis.units[u].float()
                    true_u = (full_to_window(true_u, window, M) if window is not None
                              else Fn.interpolate(true_u, size=(M, M), mode="area"))[0, 0]
                    unit_corr[u] = _corr(deltas[j], true_u, texels)
        rep.scores.append(DetailScore(seed + k, err, base, corr, w, wo, mass, secs, unit_corr))
        if log:
            log(f"face {seed + k}: detail error {err:.4f} mm (none: {base:.4f}), high-pass corr {corr:.3f}, "
                f"photo l1 {w:.4f} vs {wo:.4f} without, wrinkle units {mass:.2f}")
    return rep


def format_report(rep: DetailReport) -> str:
    d = rep.summary()
    if not d.get("faces"):
        return "detail: no faces"
    lines = [f"DECA detail on realistic generator faces: {int(d['faces'])} faces, checkpoint {rep.checkpoint}",
             f"  detail error {d['error_mm']:.4f} mm vs {d['baseline_mm']:.4f} mm without the detail stage "
             f"(ratio {d['error_ratio']:.3f}; better on {100 * d['better_than_none']:.0f} % of faces)",
             f"  high-pass correlation with the true detail: median {d['highpass_corr']:.3f}"
             + (f" ({d['highpass_corr_wrinkled']:.3f} on the {int(d['faces_wrinkled'])} faces with wrinkle "
                "units >= 0.5)" if "highpass_corr_wrinkled" in d else ""),
             f"  photometric l1 over face skin: {d['photo_l1_with']:.4f} with detail, {d['photo_l1_without']:.4f} "
             f"without (gain {100 * d['photo_gain']:.1f} %)",
             f"  network (coarse + detail, predict_photo) median {d['ms_network_median']:.1f} ms"]
    if "unit_corr_median" in d:
        per = {k.split("/", 1)[1]: v for k, v in d.items() if k.startswith("unit_corr/")}
        lines.append(f"  animated detail: network delta per unit vs the true unit map, correlation median "
                     f"{d['unit_corr_median']:.3f} over {len(per)} units: "
                     + ", ".join(f"{u} {v:.2f}" for u, v in sorted(per.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


__all__ = ["DetailReport", "DetailScore", "WRINKLE_UNITS", "detail_config", "evaluate_detail", "format_report"]
