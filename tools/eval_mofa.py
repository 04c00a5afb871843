"""MoFA's synthetic protocol for a learned checkpoint: before (zero code) vs after training.

    python tools/eval_mofa.py --checkpoint engine/assets/mofa_open_default.pt [--n 100] [--seed 0]
        [--size 224] [--landmarks gt|detected] [--generator basic|realistic] [--json]

Faces ``seed .. seed+n-1`` of :mod:`engine.generator` (``--generator realistic``: of
:mod:`engine.generator.realistic`, whole photo-like frames; the evaluation seeds; the training
corpus uses seeds ≥ 1234·10⁷, so they are disjoint) are rendered at ``--size`` px, cropped
around their landmarks exactly as at inference (``Mofa.predict_photo``:
ground-truth 2-D landmarks by default, or the real detector's), encoded once and scored by
``engine.eval.synthetic.score_fit``: geometric error (mm, face skin after similarity
alignment), photometric error (mean |render − image| over the rendered face-skin pixels)
and landmark error (px at ``--size``). "before" is the same network untrained: its
zero-initialised head outputs the all-zero code (mean face, centred, ambient light).
Prints a table with the paper's numbers (Tewari et al. 2017, their synthetic set) beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAPER = {"geometric_mm": (21.6, 4.5), "photometric": (0.33, 0.05), "landmark_px": (31.6, 3.9)}
KEYS = ("geometric_mm", "photometric", "landmark_px")
IDENTITY_MODES = 6  # identity modes whose prediction-truth correlation is printed


def _render(head, seed: int, size: int, generator: str):
    if generator == "realistic":
        from engine.generator.realistic import RealisticConfig, render_realistic

        return render_realistic(head, seed, RealisticConfig(image_size=size))
    from engine.generator import SyntheticConfig, render_sample

    return render_sample(head, seed, SyntheticConfig(image_size=size))


def evaluate(model, n: int, seed: int, size: int, landmarks: str = "gt", generator: str = "basic") -> dict:
    """Per-face scores of ``model`` (a :class:`engine.methods.mofa.Mofa`) on faces seed..seed+n-1."""
    from engine.eval.synthetic import geometric_error_mm, score_fit

    head = model.head
    rows, failures, secs = [], 0, []
    ident_pred, ident_true = [], []
    std = head.identity_std.detach().cpu()
    for k in range(n):
        s = _render(head, seed + k, size, generator)
        if landmarks == "gt":
            lm = s.landmarks2d.numpy()
        else:
            from engine.detect import detect_faces

            faces = detect_faces(s.image)
            if not faces or faces[0].landmarks68 is None:
                failures += 1
                continue
            lm = faces[0].landmarks68[:, :2]
        t0 = time.perf_counter()
        fit = model.predict_photo(s.image, lm)
        secs.append(time.perf_counter() - t0)
        geo, photo, lmk = score_fit(head, s, fit)
        ident_pred.append((fit.identity[0].detach().cpu() / std).numpy())
        ident_true.append((s.params.identity[0].detach().cpu() / std).numpy())
        base = geometric_error_mm(head, head.template.detach().cpu(), s.vertices)
        rows.append({"seed": seed + k, "geometric_mm": geo, "photometric": photo, "landmark_px": lmk,
                     "mean_face_mm": base})
    out = {"faces": len(rows), "detection_failures": failures,
           "predict_ms_mean": 1000 * float(np.mean(secs)) if secs else float("nan")}
    for key in KEYS + ("mean_face_mm",):
        v = np.array([r[key] for r in rows])
        out[f"{key}_mean"], out[f"{key}_median"] = float(v.mean()), float(np.median(v))
    # how much identity the network reads: per-mode correlation of its coefficients (prior-std
    # units) with the truth, and the spread of its predictions (the truth's is ~1)
    P, T = np.array(ident_pred), np.array(ident_true)
    k = min(IDENTITY_MODES, P.shape[1]) if len(P) > 2 else 0
    out["identity_corr"] = [float(np.corrcoef(P[:, i], T[:, i])[0, 1]) if P[:, i].std() > 0 else 0.0 for i in range(k)]
    out["identity_pred_std"] = [float(P[:, i].std()) for i in range(k)]
    out["rows"] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="training or exported MoFA checkpoint")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=224, help="render size of the evaluation images")
    ap.add_argument("--landmarks", choices=("gt", "detected"), default="gt")
    ap.add_argument("--generator", choices=("basic", "realistic"), default="basic",
                    help="the evaluation faces: the basic generator's (default) or the realistic one's")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the full result as JSON")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from engine.errors import cli_errors
    from engine.methods.mofa import Mofa

    with cli_errors():
        trained = Mofa.load(a.checkpoint)
        untrained = Mofa(trained.cfg, head=trained.head).eval()  # zero head -> zero code
        res = {"before": evaluate(untrained, a.n, a.seed, a.size, a.landmarks, a.generator),
               "after": evaluate(trained, a.n, a.seed, a.size, a.landmarks, a.generator)}
    if a.json:
        print(json.dumps({"checkpoint": a.checkpoint, "n": a.n, "seed": a.seed, "size": a.size,
                          "landmarks": a.landmarks, "generator": a.generator, **res}))
        return 0
    print(f"MoFA synthetic protocol ({a.generator} generator): {a.n} faces, seeds {a.seed}..{a.seed + a.n - 1}, {a.size} px, "
          f"{a.landmarks} landmarks for the crop, checkpoint {a.checkpoint}")
    print(f"{'':22s}{'geometric mm':>20s}{'photometric':>20s}{'landmark px':>20s}")
    print(f"{'':22s}" + "{:>20s}".format("mean / median") * 3)
    for name in ("before", "after"):
        r = res[name]
        cells = "".join(f"{r[k + '_mean']:>11.3f} / {r[k + '_median']:<6.3f}" for k in KEYS)
        label = "before (zero code)" if name == "before" else "after (trained)"
        print(f"{label:22s}{cells}")
    paper = "".join(f"{PAPER[k][0]:>11.2f} -> {PAPER[k][1]:<5.2f}" for k in KEYS)
    print(f"{'paper (before->after)':22s}{paper}")
    r = res["after"]
    print(f"mean face (template) geometric error: {r['mean_face_mm_mean']:.3f} mm mean; "
          f"predict_photo {r['predict_ms_mean']:.1f} ms/face; detection failures {r['detection_failures']}")
    if r["identity_corr"]:
        print("identity read by the network, modes 0-{}: correlation with the truth {}; spread of the "
              "predictions (prior std units; the truth's ~1) {}".format(
                  len(r["identity_corr"]) - 1, " ".join(f"{c:+.2f}" for c in r["identity_corr"]),
                  " ".join(f"{v:.2f}" for v in r["identity_pred_std"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
