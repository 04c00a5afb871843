"""Reflectance, light and geometry of learned networks on held-out identity groups (issue #13).

``python -m engine.eval reflectance --checkpoint CKPT [--checkpoint CKPT ...] [--n 48] [--cache DIR]``

The held-out identity groups of the realistic generator (``split="val"``: seeds disjoint from
every training item; ``views`` photos of one person each — same identity and painted skin,
other expression, pose, camera, light and background), cut into detector-like crops
exactly as the CEST training config cuts them (``train/configs/cest_open.yaml``'s data
options, :data:`HELD_OUT`), rendered live or read from a cache written by
``python -m engine.data.synthetic --identities``. Each network (any learned method: CEST,
IEST, MoFA, DECA) estimates every crop on its own; per view, over the face-skin vertices:

* **reflectance error** (scale-invariant): mean |s·ρ̂ − ρ| over vertices and channels, with
  the one scale s per view that best fits ρ̂ to the true albedo ρ (what the photo cannot
  tell apart from the light's brightness is not counted); also without s (``raw``);
* **skin tone**: Spearman rank correlation and slope of the estimated on the true median
  skin luma across all views (:func:`engine.eval.cycles.tone_agreement`);
* **cross-view consistency**: mean |ρ̂_i − ρ̂_j| between the views of one person (the same
  skin under other lights; 0 = the reflectance does not follow the light);
* **photometric error**: mean ℓ1 between the decoded vertex colours and the photo at the
  visible face-skin vertices not hidden by props (the training objective's measure);
* **geometry**: mean face-skin vertex error after similarity alignment (mm,
  :func:`engine.eval.synthetic.geometric_error_mm`); **landmarks**: mean px at the crop size.

These are our own renders: the Cycles set (``python -m engine.eval cycles``) judges geometry,
landmarks and skin tone on images the generator did not make.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine.eval.cycles import face_luminance, tone_agreement
from engine.eval.synthetic import geometric_error_mm

#: the held-out data: the CEST training config's identity groups and crops (val split)
HELD_OUT = {"views": 3, "corpus_seed": 1234, "frame_size": 224,
            "options": {"face_fraction": [0.3, 0.9]},
            "crop": {"frame_size": 224, "scale": 1.25, "centre_jitter": 0.02, "scale_bias": -0.057,
                     "scale_jitter": 0.06}}


@dataclass
class ViewScore:
    group: int
    view: int
    reflectance_si: float
    reflectance_raw: float
    skin_true: float
    skin_pred: float
    photometric: float
    geometric_mm: float
    landmark_px: float


@dataclass
class ReflectanceReport:
    checkpoint: str
    method: str
    independent: bool
    n: int
    scores: list[ViewScore] = field(default_factory=list)
    consistency: list[float] = field(default_factory=list)  # per group: mean |rho_i - rho_j| over view pairs

    def summary(self) -> dict[str, float]:
        if not self.scores:
            return {"views": 0.0}
        col = lambda k: np.array([getattr(s, k) for s in self.scores])  # noqa: E731
        rho, slope = tone_agreement(col("skin_true"), col("skin_pred"))
        return {"views": float(len(self.scores)), "reflectance_si": float(col("reflectance_si").mean()),
                "reflectance_raw": float(col("reflectance_raw").mean()),
                "consistency": float(np.mean(self.consistency)) if self.consistency else float("nan"),
                "skin_spearman": rho, "skin_slope": slope, "photometric": float(col("photometric").mean()),
                "geometric_mm_median": float(np.median(col("geometric_mm"))),
                "landmark_px_median": float(np.median(col("landmark_px")))}

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k not in ("scores", "consistency")},
                "summary": self.summary(), "consistency": self.consistency,
                "scores": [asdict(s) for s in self.scores]}


def held_out_groups(head, n: int, image_size: int, cache: str | Path | None = None):
    """The first ``n`` held-out identity groups as crops of ``image_size`` px."""
    from engine.data import SyntheticIdentities

    return SyntheticIdentities(head, n, HELD_OUT["views"], image_size, HELD_OUT["corpus_seed"], "val",
                               generator="realistic", crop=HELD_OUT["crop"], cache=cache,
                               **HELD_OUT["options"])


def scale_invariant_error(pred: torch.Tensor, true: torch.Tensor) -> float:
    """mean |s·pred − true| with the least-squares scalar s (pred, true: (N, 3))."""
    s = float((pred * true).sum() / (pred * pred).sum().clamp_min(1e-12))
    return float((s * pred - true).abs().mean())


@torch.no_grad()
def evaluate_reflectance(network, n: int = 48, cache: str | Path | None = None, checkpoint: str = "",
                         log: Callable[[str], None] | None = None, groups=None) -> ReflectanceReport:
    """Score one network (a :class:`engine.methods.base.LearnedMethod`) on ``n`` held-out groups."""
    head = network.head
    data = groups if groups is not None else held_out_groups(head, n, network.image_size, cache)
    skin = head.regions["face_skin"].cpu()
    region = skin.numpy()
    rep = ReflectanceReport(checkpoint=checkpoint, method=network.name,
                            independent=bool(getattr(network.cfg, "independent", False)), n=min(n, len(data)))
    for g in range(rep.n):
        item = data[g]
        images = item["image"].float()
        params = network.decode(network.encode(images))
        dec = network.decoder(params)
        albedo = dec.albedo.float().clamp(0, 1)
        vis = dec.visibility(size=(64, 64)) & skin[None]
        hidden = dec.covered(item["occlusion_mask"]) if "occlusion_mask" in item else None
        observed = dec.sample(images)
        gt_vertices = head(item["gt_identity"].float(), item["gt_expression"].float(),
                           item["gt_pose"].float() if head.n_joints else None).vertices
        for k in range(images.shape[0]):
            p, t = albedo[k][skin], item["gt_albedo"][k].float()[skin]
            w = vis[k] if hidden is None else vis[k] & ~hidden[k]
            photo = float((dec.colour[k] - observed[k]).abs().mean(-1)[w].mean()) if w.any() else float("nan")
            rep.scores.append(ViewScore(
                group=g, view=k, reflectance_si=scale_invariant_error(p, t), reflectance_raw=float((p - t).abs().mean()),
                skin_true=face_luminance(item["gt_albedo"][k].numpy(), region),
                skin_pred=face_luminance(albedo[k].numpy(), region), photometric=photo,
                geometric_mm=geometric_error_mm(head, dec.vertices[k].cpu(), gt_vertices[k].cpu()),
                landmark_px=float((dec.landmarks2d[k] - item["landmarks"][k]).norm(dim=-1).mean())))
        K = images.shape[0]
        pairs = [(i, j) for i in range(K) for j in range(i + 1, K)]
        rep.consistency.append(float(np.mean([float((albedo[i][skin] - albedo[j][skin]).abs().mean())
                                              for i, j in pairs])) if pairs else float("nan"))
        if log:
            last = rep.scores[-K:]
            log(f"group {g}: reflectance {np.mean([s.reflectance_si for s in last]):.4f} (scale-invariant), "
                f"consistency {rep.consistency[-1]:.4f}, geometry {np.mean([s.geometric_mm for s in last]):.2f} mm")
    return rep


def load_network(path: str | Path):
    """Any learned method's network from its checkpoint (the method named in the file)."""
    from engine.errors import ModelFileError
    from engine.methods import learned_network
    from engine.train.state import load_checkpoint_file

    data = load_checkpoint_file(path)
    name = data.get("method")
    if not isinstance(name, str):
        raise ModelFileError(f"{path} is not a network checkpoint (it names no method)")
    head_model = data.get("export", {}).get(name, {}).get("head_model", "open")
    return learned_network(name, head_model, path)


def _short_name(checkpoint: str) -> str:
    """A run's folder name for its ``final.pt`` / ``checkpoints/ckpt_*.pt``, else the file name."""
    if not checkpoint:
        return "-"
    p = Path(checkpoint)
    if p.name == "final.pt" or p.parent.name == "checkpoints":
        run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
        return f"{run.name}/{p.name}"
    return p.name


def format_table(reports: list[ReflectanceReport]) -> str:
    head = ("| network | method | views | reflectance error (scale-inv.) | raw | cross-view |ρi−ρj| | "
            "skin Spearman / slope | photometric ℓ1 | geometry median mm | landmarks median px |")
    rows = [head, "|" + "---|" * 10]
    for r in reports:
        d = r.summary()
        label = f"{r.method}{' (IEST)' if r.independent else ''}"
        rows.append(f"| {_short_name(r.checkpoint)} | {label} | {int(d['views'])} | "
                    f"{d['reflectance_si']:.4f} | {d['reflectance_raw']:.4f} | {d['consistency']:.4f} | "
                    f"{d['skin_spearman']:.3f} / {d['skin_slope']:.3f} | {d['photometric']:.4f} | "
                    f"{d['geometric_mm_median']:.2f} | {d['landmark_px_median']:.2f} |")
    return "\n".join(rows)


__all__ = ["HELD_OUT", "ReflectanceReport", "ViewScore", "evaluate_reflectance", "format_table", "held_out_groups",
           "load_network", "scale_invariant_error"]
