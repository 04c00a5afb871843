"""Derive the MediaPipe face-mesh -> iBUG-68 mapping from real photos (rerunnable).

Procedure (docs/photo_intake.md):
1. Photos that ship in installed packages: scikit-image's astronaut and camera,
   matplotlib's grace_hopper, and scikit-image's LFW subset (the 100 face crops, 25 px,
   padded and upscaled ×8); the three large photos also flipped, rotated ±12° and
   scaled ×0.6/×1.6.
2. On each, dlib (HOG + 68-point predictor) and MediaPipe (face detection + mesh on the
   crop) run independently; faces are paired by box overlap.
3. Every pair is put in a face-normalised frame from dlib's points: eye midpoint at the
   origin, eye line horizontal, outer-eye-corner distance (IOD) = 1.
4. For each iBUG point, greedy least squares picks 1-3 mesh vertices (of the first 468,
   so meshes without iris points work too) and non-negative weights summing to 1 that
   best predict dlib's point; a vertex is added only if it cuts the error by >= 5 %.
   Pairs whose error under a first fit exceeds 3x the median are dropped (a failed
   detector on a profile would bias the fit) and the fit is redone.
5. The mapping is written with per-point residuals (mean error in % IOD) on all data and
   on the astronaut family held out from the fit.

Usage: python tools/derive_mediapipe_ibug68.py [--out engine/assets/mediapipe_to_ibug68.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.detect.backends.dlib_backend import DlibBackend  # noqa: E402
from engine.detect.backends.mediapipe_backend import MediaPipeBackend  # noqa: E402

N_MESH = 468
N_CANDIDATES = 16
MAX_VERTICES = 3
MIN_GAIN = 0.05


def source_images() -> list[tuple[str, str, np.ndarray]]:
    """(family, name, rgb) for every image used."""
    import cv2
    import matplotlib
    import skimage.data

    out = []
    bases = [("astronaut", skimage.data.astronaut())]
    cam = skimage.data.camera()
    bases.append(("camera", np.repeat(cam[:, :, None], 3, axis=2)))
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.is_file():
        from engine.photo import load_image

        bases.append(("grace_hopper", load_image(hopper).rgb))
    for fam, img in bases:
        out.append((fam, fam, img))
        out.append((fam, fam + "-flip", np.ascontiguousarray(img[:, ::-1])))
        h, w = img.shape[:2]
        for ang in (-12, 12):
            m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0)
            out.append((fam, f"{fam}-rot{ang}", cv2.warpAffine(img, m, (w, h),
                                                              borderMode=cv2.BORDER_REPLICATE)))
        for sc in (0.6, 1.6):
            out.append((fam, f"{fam}-x{sc}", cv2.resize(img, None, fx=sc, fy=sc,
                                                       interpolation=cv2.INTER_AREA if sc < 1
                                                       else cv2.INTER_CUBIC)))
    lfw = np.load(Path(skimage.data.__file__).parent / "lfw_subset.npy")[:100]
    for i, face in enumerate(lfw):
        g = (face * 255).astype(np.uint8)
        g = cv2.copyMakeBorder(g, 8, 8, 8, 8, cv2.BORDER_REPLICATE)
        g = cv2.resize(g, None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC)
        out.append(("lfw", f"lfw{i:03d}", np.repeat(g[:, :, None], 3, axis=2)))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def collect(images) -> list[dict]:
    dl, mp = DlibBackend(), MediaPipeBackend(map_to_ibug=False)
    pairs = []
    for fam, name, img in images:
        d_faces = dl.detect(img)
        m_faces = [f for f in mp.detect(img) if f.landmarks_native is not None]
        for d in d_faces:
            best = max(m_faces, key=lambda m: iou(d.box, m.box), default=None)
            if best is None or iou(d.box, best.box) < 0.3:
                continue
            pairs.append({"family": fam, "name": name, "ibug": d.landmarks68,
                          "mesh": best.landmarks_native[:N_MESH, :2]})
    return pairs


def normalise(pair: dict) -> tuple[np.ndarray, np.ndarray]:
    """Both point sets in dlib's face frame (eye midpoint origin, eye line = +x, IOD = 1)."""
    d = pair["ibug"]
    le, re = d[36:42].mean(0), d[42:48].mean(0)
    origin = 0.5 * (le + re)
    ang = np.arctan2(re[1] - le[1], re[0] - le[0])
    c, s = np.cos(-ang), np.sin(-ang)
    rot = np.array([[c, -s], [s, c]]) / np.linalg.norm(d[36] - d[45])
    return (d - origin) @ rot.T, (pair["mesh"] - origin) @ rot.T


def convex_fit(target: np.ndarray, verts: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights w >= 0, sum 1 minimising sum_samples |verts @ w - target|^2.

    target (S, 2), verts (S, K, 2). Solved as NNLS with the sum-to-one constraint as a
    heavily weighted extra row (exact enough at 1e4)."""
    from scipy.optimize import nnls

    s, k, _ = verts.shape
    a = verts.transpose(0, 2, 1).reshape(2 * s, k)
    b = target.reshape(2 * s)
    big = 1e4
    w, _ = nnls(np.vstack([a, big * np.ones((1, k))]), np.concatenate([b, [big]]))
    w = w / w.sum()
    err = np.linalg.norm(np.einsum("skd,k->sd", verts, w) - target, axis=1).mean()
    return w, float(err)


def fit_point(tgt: np.ndarray, mesh: np.ndarray) -> tuple[list[int], np.ndarray, float]:
    """Greedy 1-3 vertex convex combination for one iBUG point. tgt (S,2), mesh (S,468,2)."""
    dist = np.linalg.norm(mesh - tgt[:, None, :], axis=2).mean(0)
    cands = list(np.argsort(dist)[:N_CANDIDATES])
    chosen = [int(cands[0])]
    weights, err = np.ones(1), float(dist[cands[0]])
    while len(chosen) < MAX_VERTICES:
        best = None
        for c in cands:
            if c in chosen:
                continue
            trial = chosen + [int(c)]
            w, e = convex_fit(tgt, mesh[:, trial])
            if best is None or e < best[2]:
                best = (trial, w, e)
        if best is None or best[2] > err * (1 - MIN_GAIN):
            break
        chosen, weights, err = best
    keep = weights > 1e-4
    chosen = [v for v, k in zip(chosen, keep) if k]
    weights = weights[keep] / weights[keep].sum()
    return chosen, weights, err


def fit_all(pairs: list[dict]) -> list[tuple[list[int], np.ndarray, float]]:
    norm = [normalise(p) for p in pairs]
    tgt = np.stack([n[0] for n in norm])    # (S, 68, 2)
    mesh = np.stack([n[1] for n in norm])   # (S, 468, 2)
    return [fit_point(tgt[:, i], mesh) for i in range(68)]


def evaluate(fits, pairs: list[dict]) -> np.ndarray:
    """Per-point mean error (IOD units) of the mapping on ``pairs``."""
    w = np.zeros((68, N_MESH))
    for i, (verts, weights, _) in enumerate(fits):
        w[i, verts] = weights
    errs = []
    for p in pairs:
        d, m = normalise(p)
        errs.append(np.linalg.norm(w @ m - d, axis=1))
    return np.mean(errs, axis=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "engine/assets/mediapipe_to_ibug68.json"))
    args = ap.parse_args(argv)
    t0 = time.time()
    images = source_images()
    pairs = collect(images)
    fams = sorted({p["family"] for p in pairs})
    counts = {f: sum(p["family"] == f for p in pairs) for f in fams}
    print(f"{len(images)} images -> {len(pairs)} dlib/mediapipe face pairs ({counts}) "
          f"in {time.time() - t0:.0f} s")
    # Robustness: a pair where dlib or the mesh failed (e.g. a profile) would bias the
    # fit; drop pairs whose error under a first fit is over 3x the median, then refit.
    first = fit_all(pairs)
    pair_err = np.array([evaluate(first, [p]).mean() for p in pairs])
    cut = 3.0 * float(np.median(pair_err))
    dropped = [p["name"] for p, e in zip(pairs, pair_err) if e > cut]
    pairs = [p for p, e in zip(pairs, pair_err) if e <= cut]
    print(f"dropped {len(dropped)} outlier pairs (> {cut * 100:.1f} % IOD): {dropped}")
    fams = sorted({p["family"] for p in pairs})
    held = [p for p in pairs if p["family"] == "astronaut"]
    rest = [p for p in pairs if p["family"] != "astronaut"]
    heldout = evaluate(fit_all(rest), held) if held and rest else None
    fits = fit_all(pairs)
    train = evaluate(fits, pairs)
    per_fam = {f: float(evaluate(fits, [p for p in pairs if p["family"] == f]).mean() * 100)
               for f in fams}
    print(f"mean error, all data (fit): {train.mean() * 100:.2f} % IOD; per family: "
          + ", ".join(f"{k} {v:.2f}" for k, v in per_fam.items()))
    if heldout is not None:
        print(f"astronaut family held out of the fit: {heldout.mean() * 100:.2f} % IOD "
              f"(jaw 0-16: {heldout[:17].mean() * 100:.2f}, inner 17-67: "
              f"{heldout[17:].mean() * 100:.2f})")
    data = {
        "description": "MediaPipe face mesh (468/478 points) to iBUG-68: each iBUG point is a "
                       "convex combination of mesh vertices, derived by "
                       "tools/derive_mediapipe_ibug68.py against dlib's 68-point predictor.",
        "source_convention": "mediapipe-478",
        "num_source_points": N_MESH,
        "num_pairs": len(pairs),
        "dropped_outlier_pairs": dropped,
        "families": {f: sum(p["family"] == f for p in pairs) for f in fams},
        "mean_error_iod_percent": round(float(train.mean() * 100), 3),
        "heldout_astronaut_error_iod_percent":
            None if heldout is None else round(float(heldout.mean() * 100), 3),
        "error_per_family_iod_percent": {k: round(v, 3) for k, v in per_fam.items()},
        "points": [
            {"ibug": i, "vertices": [int(v) for v in verts],
             "weights": [round(float(x), 6) for x in weights],
             "residual_iod_percent": round(float(train[i] * 100), 3),
             "heldout_residual_iod_percent":
                 None if heldout is None else round(float(heldout[i] * 100), 3)}
            for i, (verts, weights, _) in enumerate(fits)
        ],
    }
    # Rounded weights must still sum to 1 exactly enough for the loader.
    for p in data["points"]:
        p["weights"][-1] = round(1.0 - sum(p["weights"][:-1]), 6)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
