"""Does a network's backbone see expression and identity at all? Linear probes of its features.

    python tools/probe_features.py --checkpoint CKPT [--method deca] [--config YAML] [--people 400]
        [--cache DIR] [--descriptor] [--set KEY=VALUE ...]

Takes ``--people`` identity groups (two views of one person) of the corpus a training config
describes (its ``data:`` section, default ``train/configs/deca_coarse_v5.yaml``): rendered on
the fly from the config's validation seeds (people no network was trained on), or read from
the training split of a written corpus with ``--cache DIR`` (faster; people the network may
have seen). The crops go through the network (eval mode). Ridge regressions (features
standardised; λ chosen by 4-fold cross-validation over people
of the fitting part, or ``--ridge``) from the backbone's pooled features to the ground truth are fit
on three quarters of the people and scored on the rest (R², 1 = read exactly, 0 = no better
than the mean): ARKit expression weights, identity (the first ``--modes`` coefficients in
prior-std units) and the jaw rotation. Beside each, the R² of the network's own prediction.
With ``--descriptor``, the same probe of dlib's face-recognition descriptor of each crop
(``engine.encoders.load_face_recognition_net``) and the mean cosine between the descriptors
of one person's two views against two different people's.

Low R² from the features means the backbone does not represent the quantity: a head on top
cannot read it, whatever its loss weight (docs/training.md, "What the networks' features hold").
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


RIDGE_GRID = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def _ridge_fit(a: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mu, sd = a.mean(0), a.std(0) + 1e-8
    z, ym = (a - mu) / sd, y.mean(0)
    w = np.linalg.solve(z.T @ z + lam * np.eye(z.shape[1]), z.T @ (y - ym))
    return mu, sd, w, ym


def choose_ridge(x: np.ndarray, y: np.ndarray, folds: int = 4, grid=RIDGE_GRID) -> float:
    """The λ of ``grid`` with the best R² in ``folds``-fold cross-validation over whole people
    (rows in pairs) of the training rows only."""
    people = np.arange(len(x)) // 2
    fold = people % folds
    best, best_score = grid[0], -np.inf
    for lam in grid:
        sse = sst = 0.0
        for f in range(folds):
            tr, te = fold != f, fold == f
            mu, sd, w, ym = _ridge_fit(x[tr], y[tr], lam)
            sse += float(((((x[te] - mu) / sd) @ w + ym - y[te]) ** 2).sum())
            sst += float(((y[te] - ym) ** 2).sum())
        score = 1.0 - sse / max(sst, 1e-12)
        if score > best_score:
            best, best_score = lam, score
    return best


def ridge_r2(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
             lam: float | None = None) -> tuple[float, float]:
    """(held-out R² pooled over the target columns, λ) of a ridge regression ``y ≈ x W + b``
    fitted on the training rows (features standardised on them); ``lam`` None: chosen by
    :func:`choose_ridge` on the training rows."""
    if lam is None:
        lam = choose_ridge(x_train, y_train)
    mu, sd, w, ym = _ridge_fit(x_train, y_train, lam)
    return r2(((x_test - mu) / sd) @ w + ym, y_test, ym), lam


def r2(pred: np.ndarray, truth: np.ndarray, mean: np.ndarray | None = None) -> float:
    """``1 − SSE / SST`` pooled over columns (``mean``: the baseline's prediction, default the truth's mean)."""
    base = truth.mean(0) if mean is None else mean
    sst = float(((truth - base) ** 2).sum())
    return 1.0 - float(((pred - truth) ** 2).sum()) / max(sst, 1e-12)


@dataclass
class Probe:
    """What a probe run gathered: per crop, features, the network's predictions and the truth
    (rows in person order: the two views of person ``k`` are rows ``2k, 2k + 1``)."""

    features: np.ndarray      # (N, F)
    predicted: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    descriptors: np.ndarray | None = None  # (N, 128)


def gather(network, dataset, people: int, batch: int = 16, descriptor: bool = False, log=print) -> Probe:
    """Run ``network`` (a semantic-code method: MoFA, DECA) over the first ``people`` items of an
    identity-group ``dataset`` and keep features, predictions and ground truth."""
    import torch

    from engine.methods.base import flatten_groups

    net = None
    if descriptor:
        from engine.encoders import load_face_recognition_net
        from engine.encoders.face_chip import face_chip

        net = load_face_recognition_net(None).eval()
    std = network.head.identity_std.detach().double().cpu().numpy()
    feats, descs = [], []
    pred = {"expression": [], "identity": [], "jaw": []}
    truth = {"expression": [], "identity": [], "jaw": []}
    jaw = network.head.joint_names.index("jaw") if "jaw" in network.head.joint_names else None
    network.eval()
    with torch.no_grad():
        for s in range(0, people, batch):
            items = [dataset[i] for i in range(s, min(s + batch, people))]
            b = flatten_groups({k: torch.stack([it[k] for it in items]) for k in items[0] if torch.is_tensor(items[0][k])})
            images = b["image"].float()
            feats.append(network.encoder.backbone(images).double().numpy())
            params = network.decode(network.encode(images))
            pred["expression"].append(params.expression.double().numpy())
            pred["identity"].append(params.identity.double().numpy() / std)
            truth["expression"].append(b["gt_expression"].double().numpy())
            truth["identity"].append(b["gt_identity"].double().numpy() / std)
            if jaw is not None:
                pred["jaw"].append(params.pose[:, jaw].double().numpy())
                truth["jaw"].append(b["gt_pose"][:, jaw].double().numpy())
            if net is not None:
                descs.append(net(face_chip(images, b["landmarks"].float())).double().numpy())
            log(f"  {min(s + batch, people)}/{people} people", end="\r")
    log("")
    cat = {k: np.concatenate(v) for k, v in pred.items() if v}
    return Probe(np.concatenate(feats), cat, {k: np.concatenate(v) for k, v in truth.items() if v},
                 np.concatenate(descs) if descs else None)


def report(p: Probe, modes: int = 10, lam: float | None = None) -> list[str]:
    """The probe's lines: feature and head R² per quantity, held out by person."""
    n = len(p.features)
    cut = (3 * n // 4) // 2 * 2  # whole people in each part
    tr, te = slice(0, cut), slice(cut, n)
    lines = [f"features: {p.features.shape[1]}-d on {n} crops ({n // 2} people); probe fit on {cut // 2}, "
             f"scored on {(n - cut) // 2} others (ridge λ by 4-fold cross-validation on the first part"
             + (")" if lam is None else f"; fixed at {lam:g})")]
    rows = [("expression", "expression (ARKit weights)", None), ("identity", f"identity (first {modes} modes)", modes),
            ("jaw", "jaw rotation", None)]
    for key, label, k in rows:
        if key not in p.truth:
            continue
        y = p.truth[key][:, :k] if k else p.truth[key]
        yp = p.predicted[key][:, :k] if k else p.predicted[key]
        score, used = ridge_r2(p.features[tr], y[tr], p.features[te], y[te], lam)
        lines.append(f"  {label:28s} features R² {score:6.3f} (λ {used:g})"
                     f"  | the network's own head R² {r2(yp[te], y[te], y[tr].mean(0)):6.3f}")
    if p.descriptors is not None:
        d = p.descriptors
        yi = p.truth["identity"][:, :modes]
        ye = p.truth["expression"]
        dn = d / np.linalg.norm(d, axis=1, keepdims=True)
        same = float((dn[0::2] * dn[1::2]).sum(1).mean())
        other = float((dn[0::2] * np.roll(dn[1::2], 1, axis=0)).sum(1).mean())
        lines.append(f"  face-recognition descriptor ({d.shape[1]}-d): identity R² "
                     f"{ridge_r2(d[tr], yi[tr], d[te], yi[te], lam)[0]:.3f}, expression R² "
                     f"{ridge_r2(d[tr], ye[tr], d[te], ye[te], lam)[0]:.3f}; cosine of one person's two views "
                     f"{same:.3f}, of two people {other:.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a MoFA or DECA network (training or exported checkpoint)")
    ap.add_argument("--method", default="deca", help="its method (mofa or deca; default deca)")
    ap.add_argument("--config", default="train/configs/deca_coarse_v5.yaml",
                    help="training config whose data section describes the people (identity groups)")
    ap.add_argument("--people", type=int, default=400, help="identity groups (two views each; default 400)")
    ap.add_argument("--cache", default=None, help="read the training split of this written corpus instead of rendering")
    ap.add_argument("--modes", type=int, default=10)
    ap.add_argument("--ridge", type=float, default=None,
                    help="ridge λ on standardised features (default: chosen by cross-validation)")
    ap.add_argument("--descriptor", action="store_true", help="also probe dlib's face-recognition descriptor")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    a = ap.parse_args(argv)
    import torch

    from engine.data import build_dataset
    from engine.errors import UserError
    from engine.methods import learned_network
    from engine.train.config import ConfigError, load_config

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    try:
        if a.people < 4:
            raise UserError(f"--people must be at least 4, got {a.people}")
        network = learned_network(a.method, "open", a.checkpoint)
        if not hasattr(network, "encoder") or not hasattr(network.encoder, "backbone"):
            raise UserError(f"method {a.method!r}: its network has no encoder backbone to probe (MoFA, DECA have)")
        split = "train" if a.cache else "val"
        over = [f"data.options.cache={a.cache}" if a.cache else "data.options.cache=",
                f"data.{'n_samples' if a.cache else 'val_samples'}={a.people}", *a.set]
        cfg = load_config(a.config, over)
        if cfg.data.views_per_identity < 2:
            raise UserError(f"{a.config}: the probe needs identity groups (data.views_per_identity >= 2)")
        dataset = build_dataset(cfg.data, split, head=copy.deepcopy(network.head).cpu())
    except (UserError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{a.checkpoint} ({a.method}), {a.people} people of {a.config} "
          f"({'corpus ' + a.cache + ', training split' if a.cache else 'rendered from its validation seeds'})")
    probe = gather(network, dataset, a.people, descriptor=a.descriptor,
                   log=lambda *x, **k: print(*x, **k, file=sys.stderr))
    print("\n".join(report(probe, a.modes, a.ridge)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
