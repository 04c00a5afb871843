"""Expression recovery: how well a method gives back known ARKit weights.

    python -m engine.eval expressions [--n 100] [--seed 0] [--neutral 20] [--presets 3]
        [--expression-max 1.0] [--landmarks detected|gt] [--method fit] [--json]

Three kinds of synthetic faces from :mod:`engine.generator` (the basic generator, its
identity, pose, camera, light, albedo and background draws; only the expression differs):

* **strong**: ``--n`` faces with 1–3 random ARKit units (never ``jawOpen``, the jaw is a
  joint) each drawn from U(0, ``--expression-max``) and the jaw open in 60 % of faces (the
  protocol's draw with a larger maximum);
* **presets**: the issue's named expressions (broad smile with an open jaw, one-sided smile
  with a jaw shift, blink, raised brows, pucker, frown), each on ``--presets`` faces;
* **neutral**: ``--neutral`` faces with no expression and a closed jaw.

Each face is reconstructed (landmarks from the real detector by default) and scored:

* per ARKit unit, over the strong faces: Pearson correlation of fitted against true weights
  (units active in at least 3 faces) and the mean absolute error on the faces where the
  unit was active (true weight ≥ 0.1), with the mean true and fitted weight there (their
  ratio shows shrinkage);
* pooled over the active units of strong and preset faces: MAE and the least-squares
  slope of fitted on true through the origin (1 = no shrinkage), and the mean fitted weight
  on the units a face does not use (true weight 0: false activations);
* neutral faces: the mean activation (mean fitted weight over all units and faces) and the
  mean of each face's largest weight;
* the jaw angle (true vs fitted, degrees).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from engine.generator import SyntheticConfig
from engine.generator.basic import _aim, render_params, sample_params
from engine.head.model import HeadModel
from engine.eval.synthetic import predict_sample
from engine.methods.base import Predictor

ACTIVE = 0.1  # a unit counts as active in a face when its true weight is at least this

#: the issue's named expressions: ARKit weights and jaw opening (radians)
PRESETS: dict[str, tuple[dict[str, float], float]] = {
    "broad smile": ({"mouthSmileLeft": 0.9, "mouthSmileRight": 0.9, "cheekSquintLeft": 0.4,
                     "cheekSquintRight": 0.4}, 0.12),
    "one-sided smile + jaw shift": ({"mouthSmileLeft": 0.9, "jawLeft": 0.7}, 0.0),
    "blink": ({"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}, 0.0),
    "raised brows": ({"browInnerUp": 0.8, "browOuterUpLeft": 0.7, "browOuterUpRight": 0.7}, 0.0),
    "pucker": ({"mouthPucker": 0.9}, 0.0),
    "frown": ({"mouthFrownLeft": 0.8, "mouthFrownRight": 0.8, "browDownLeft": 0.6, "browDownRight": 0.6}, 0.0),
}


def per_unit_recovery(T: np.ndarray, P: np.ndarray, names: list[str]) -> list[dict[str, float | str | int]]:
    """Per unit k of true ``T (N, K)`` and fitted ``P (N, K)`` weights: how many faces use it
    (``active``: true ≥ :data:`ACTIVE`); with at least 3, the Pearson correlation of fitted on
    true over all faces (0 when the method never moves it); where active, the MAE and the
    mean true and fitted weight."""
    out = []
    for k, name in enumerate(names):
        act = T[:, k] >= ACTIVE
        row: dict[str, float | str | int] = {"unit": name, "active": int(act.sum())}
        if act.sum() >= 3 and T[:, k].std() > 0 and P[:, k].std() > 0:
            row["corr"] = float(np.corrcoef(T[:, k], P[:, k])[0, 1])
        elif act.sum() >= 3:
            row["corr"] = 0.0  # the method never moves this unit
        if act.any():
            row["mae_active"] = float(np.abs(P[act, k] - T[act, k]).mean())
            row["true_active"] = float(T[act, k].mean())
            row["fitted_active"] = float(P[act, k].mean())
        out.append(row)
    return out


def pooled_recovery(T: np.ndarray, P: np.ndarray) -> dict[str, float]:
    """Pooled over the active entries of true ``T (N, K)`` / fitted ``P (N, K)``: the MAE
    (``mae_active``), the least-squares slope of fitted on true through the origin
    (``slope_active``, 1 = no shrinkage), and the mean fitted weight where the true one is 0
    (``mean_inactive``: false activations). Empty when nothing is active."""
    act = T >= ACTIVE
    if not act.any():
        return {}
    t, p = T[act], P[act]
    inactive = T == 0  # units the face does not use at all
    return {"mae_active": float(np.abs(p - t).mean()), "slope_active": float((t * p).sum() / (t * t).sum()),
            "mean_inactive": float(np.abs(P[inactive]).mean()) if inactive.any() else 0.0}


@dataclass
class ExpressionFace:
    seed: int
    kind: str  # "strong", "neutral" or "preset:<name>"
    true: list[float]
    fitted: list[float]
    jaw_true_deg: float
    jaw_fit_deg: float
    seconds: float


@dataclass
class ExpressionReport:
    model: str
    method: str
    landmarks: str
    seed: int
    expression_max: float
    names: list[str]
    faces: list[ExpressionFace] = field(default_factory=list)
    detection_failures: int = 0

    def _arrays(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        rows = [f for f in self.faces if f.kind == kind or (kind == "preset" and f.kind.startswith("preset:"))]
        if not rows:
            return np.zeros((0, len(self.names))), np.zeros((0, len(self.names)))
        return np.array([f.true for f in rows]), np.array([f.fitted for f in rows])

    def per_unit(self) -> list[dict[str, float | str | int]]:
        """Per ARKit unit over the strong faces (see the module docstring)."""
        return per_unit_recovery(*self._arrays("strong"), self.names)

    def summary(self) -> dict[str, float]:
        units = self.per_unit()
        corr = [u["corr"] for u in units if "corr" in u]
        d: dict[str, float] = {"strong_faces": len(self._arrays("strong")[0]),
                               "preset_faces": len(self._arrays("preset")[0]),
                               "neutral_faces": len(self._arrays("neutral")[0]),
                               "detection_failures": self.detection_failures}
        if corr:
            d["units_scored"] = len(corr)
            d["corr_mean"] = float(np.mean(corr))
            d["corr_median"] = float(np.median(corr))
        for kind in ("strong", "preset"):
            d.update({f"{kind}_{k}": v for k, v in pooled_recovery(*self._arrays(kind)).items()})
        T, P = self._arrays("neutral")
        if len(P):
            d["neutral_mean_activation"] = float(np.abs(P).mean())
            d["neutral_mean_max"] = float(np.abs(P).max(1).mean())
        jt = np.array([f.jaw_true_deg for f in self.faces if f.kind == "strong"])
        jf = np.array([f.jaw_fit_deg for f in self.faces if f.kind == "strong"])
        if len(jt) > 2 and jt.std() > 0 and jf.std() > 0:
            d["jaw_corr"] = float(np.corrcoef(jt, jf)[0, 1])
            d["jaw_mae_deg"] = float(np.abs(jt - jf).mean())
        return d

    def per_preset(self) -> dict[str, dict[str, list[float]]]:
        """For each preset: its units' true weight and the fitted weights (mean over faces)."""
        out: dict[str, dict[str, list[float]]] = {}
        for name, (weights, jaw) in PRESETS.items():
            rows = [f for f in self.faces if f.kind == f"preset:{name}"]
            if not rows:
                continue
            P = np.array([f.fitted for f in rows])
            out[name] = {u: [w, float(P[:, self.names.index(u)].mean())] for u, w in weights.items()
                         if u in self.names}
            out[name]["jaw (deg)"] = [float(np.degrees(jaw)), float(np.mean([f.jaw_fit_deg for f in rows]))]
        return out

    def to_dict(self) -> dict:
        return {"model": self.model, "method": self.method, "landmarks": self.landmarks, "seed": self.seed,
                "expression_max": self.expression_max, "summary": self.summary(), "per_unit": self.per_unit(),
                "per_preset": self.per_preset(), "names": self.names, "faces": [asdict(f) for f in self.faces]}


def _jaw_deg(model: HeadModel, pose: torch.Tensor) -> float:
    if "jaw" not in model.joint_names or pose.numel() == 0:
        return 0.0
    return float(np.degrees(pose.reshape(-1, 3)[model.joint_names.index("jaw")].norm()))


@torch.no_grad()
def expression_sample(model: HeadModel, seed: int, cfg: SyntheticConfig, weights: dict[str, float] | None = None,
                      jaw: float | None = None):
    """The basic generator's face ``seed`` (under ``cfg``), optionally with its expression
    replaced by ``weights`` (ARKit name -> weight) and jaw opening ``jaw`` (radians)."""
    p = sample_params(model, seed, cfg)
    if weights is not None or jaw is not None:
        expr = torch.zeros(model.n_expression)
        for name, w in (weights or {}).items():
            expr[model.expression_names.index(name)] = w
        pose = torch.zeros(model.n_joints, 3)
        if jaw and "jaw" in model.joint_names:
            pose[model.joint_names.index("jaw"), 0] = jaw
        p.update(expression=expr, pose=pose,
                 t=_aim(model, p["identity"].double().numpy(), expr.double().numpy(), pose.double().numpy(),
                        p["R"], p["aim"]))
    return render_params(model, p, cfg, seed)


Job = tuple[str, int, SyntheticConfig, "dict[str, float] | None", "float | None"]


def expression_jobs(model: HeadModel, n: int = 100, seed: int = 0, neutral: int = 20, presets: int = 3,
                    expression_max: float = 1.0) -> list[Job]:
    """The benchmark's faces as ``(kind, face seed, generator config, preset weights or None,
    preset jaw or None)``: faces ``seed + k`` (strong, k < n), ``seed + 20000 + 1000 i + k``
    (preset i) and ``seed + 10000 + k`` (neutral); render one with :func:`expression_sample`."""
    strong_cfg = SyntheticConfig(n_expressions=(1, 3), expression_max=expression_max)
    neutral_cfg = SyntheticConfig(n_expressions=(0, 0), jaw_max_rad=0.0)
    jobs: list[Job] = [("strong", seed + k, strong_cfg, None, None) for k in range(n)]
    for i, (name, (weights, jaw)) in enumerate(PRESETS.items()):
        usable = {u: w for u, w in weights.items() if u in model.expression_names}
        if usable:
            jobs += [(f"preset:{name}", seed + 20000 + 1000 * i + k, neutral_cfg, usable, jaw) for k in range(presets)]
    jobs += [("neutral", seed + 10000 + k, neutral_cfg, None, None) for k in range(neutral)]
    return jobs


def evaluate_expressions(model: HeadModel, predictor: Predictor, n: int = 100, seed: int = 0, neutral: int = 20,
                         presets: int = 3, expression_max: float = 1.0, landmarks: str = "detected",
                         backend: str = "default", log: Callable[[str], None] | None = None) -> ExpressionReport:
    """Run the benchmark of the module docstring on :func:`expression_jobs` (deterministic)."""
    rep = ExpressionReport(model=model.name, method=str(getattr(predictor, "name", "?")), landmarks=landmarks,
                           seed=seed, expression_max=expression_max, names=list(model.expression_names))
    for kind, s, cfg, weights, jaw in expression_jobs(model, n, seed, neutral, presets, expression_max):
        sample = expression_sample(model, s, cfg, weights, jaw)
        predicted = predict_sample(predictor, sample, landmarks, backend)
        if predicted is None:
            rep.detection_failures += 1
            if log:
                log(f"face {s} ({kind}): detector found no face")
            continue
        fit, secs = predicted
        fit = fit.detach().cpu()
        true = sample.params.expression[0].tolist()
        fitted = fit.expression[0].tolist()
        rep.faces.append(ExpressionFace(s, kind, true, fitted, _jaw_deg(model, sample.params.pose[0]),
                                        _jaw_deg(model, fit.pose[0]), secs))
        if log:
            top = sorted(range(len(true)), key=lambda k: -max(true[k], fitted[k]))[:3]
            log(f"face {s} ({kind}): " + ", ".join(f"{rep.names[k]} {true[k]:.2f}->{fitted[k]:.2f}" for k in top)
                + f", jaw {rep.faces[-1].jaw_true_deg:.1f}->{rep.faces[-1].jaw_fit_deg:.1f} deg, {secs:.2f} s")
    return rep


def format_report(rep: ExpressionReport, all_units: bool = False) -> str:
    """Markdown tables: the summary, per-unit recovery (units active in the strong faces), presets."""
    d = rep.summary()
    lines = [f"expression recovery: method={rep.method} model={rep.model} landmarks={rep.landmarks} seed={rep.seed} "
             f"expression_max={rep.expression_max} strong={d['strong_faces']} presets={d['preset_faces']} "
             f"neutral={d['neutral_faces']} detector failures={d['detection_failures']}", ""]

    def g(key: str, fmt: str = "{:.3f}") -> str:
        return fmt.format(d[key]) if key in d else "–"

    lines += ["| figure | value |", "|---|---|",
              f"| per-unit correlation, mean (median) over {g('units_scored', '{:.0f}')} units | "
              f"{g('corr_mean')} ({g('corr_median')}) |",
              f"| strong faces: MAE on active units / slope fitted-on-true | {g('strong_mae_active')} / "
              f"{g('strong_slope_active')} |",
              f"| presets: MAE on active units / slope | {g('preset_mae_active')} / {g('preset_slope_active')} |",
              f"| strong faces: mean weight on unused units (true 0) | {g('strong_mean_inactive')} |",
              f"| neutral faces: mean activation / mean largest weight | {g('neutral_mean_activation')} / "
              f"{g('neutral_mean_max')} |",
              f"| jaw: correlation / MAE (deg) | {g('jaw_corr')} / {g('jaw_mae_deg', '{:.2f}')} |", ""]
    lines += ["| unit | active faces | correlation | MAE (active) | mean true (active) | mean fitted (active) |",
              "|---|---|---|---|---|---|"]
    for u in rep.per_unit():
        if not u["active"] and not all_units:
            continue
        c = f"{u['corr']:.2f}" if "corr" in u else "–"
        m = f"{u['mae_active']:.3f}" if "mae_active" in u else "–"
        ta = f"{u['true_active']:.2f}" if "true_active" in u else "–"
        fa = f"{u['fitted_active']:.2f}" if "fitted_active" in u else "–"
        lines.append(f"| {u['unit']} | {u['active']} | {c} | {m} | {ta} | {fa} |")
    presets = rep.per_preset()
    if presets:
        lines += ["", "| preset | unit: true -> fitted (mean over faces) |", "|---|---|"]
        for name, units in presets.items():
            lines.append(f"| {name} | " + ", ".join(f"{u} {t:.2f} -> {f:.2f}" for u, (t, f) in units.items()) + " |")
    return "\n".join(lines)
