"""Contact sheets of the Cycles validation set and of every method on it (docs/evaluation.md).

    python tools/make_cycles_sheets.py --set data/cycles_val --pred runs/cycles_eval [--out docs]

* ``OUT/cycles_val_sheet.png``: the first 16 renders, labelled with the head pose, lens and
  true skin luminance;
* ``OUT/cycles_val_methods.png``: input / fit / learned (mofa) / hybrid overlays (grey
  geometry, detected landmarks green, the model's red) for six faces of the set spread over
  skin tone and yaw, and for the real example photos (``engine.photo.examples``: the
  astronaut, Grace Hopper). ``PRED/<method>/NNNNN.npz`` are the
  predictions written by ``python -m engine.eval cycles --save PRED/<method>``, and
  ``PRED/<method>.json`` their reports (``--json``), whose NoW-style errors label the tiles.
  The real photos are reconstructed here, and each method's head angles, eye-line angle and
  landmark distance to the detector are printed.

    python tools/make_cycles_sheets.py --photos-only --method mofa --method deca=CKPT ...

prints only those real-photo lines, for any methods (``NAME=CHECKPOINT`` for a network other
than the committed one), and writes no picture: how to judge a new network on real photos.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = (("fit", "fit"), ("mofa", "learned (mofa)"), ("hybrid", "hybrid"))


def _label(img: np.ndarray, lines: list[str]) -> np.ndarray:
    import cv2

    out = np.ascontiguousarray(img.copy())
    for k, text in enumerate(lines):  # bottom-left (the overlays' legend is top-left)
        org = (5, out.shape[0] - 8 - 15 * (len(lines) - 1 - k))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _tile(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    out = np.full((size, size, 3), 255, np.uint8)
    y0, x0 = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    out[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return out


def _grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    return np.concatenate([np.concatenate(r, 1) for r in rows], 0)


def render_sheet(set_dir: Path, size: int = 256) -> np.ndarray:
    from engine.eval.cycles_set import load_sample, set_indices

    tiles = []
    for i in set_indices(set_dir, 16):
        s = load_sample(set_dir, i)
        p, y, r = s.gt["angles_deg"]
        tiles.append(_label(_tile(s.image, size), [f"#{i}  yaw {y:+.0f} pitch {p:+.0f} roll {r:+.0f}",
                                                   f"{float(s.gt['focal_mm']):.0f} mm  skin L {float(s.gt['skin_luminance']):.2f}"]))
    while len(tiles) % 4:
        tiles.append(np.full((size, size, 3), 255, np.uint8))
    return _grid([tiles[k:k + 4] for k in range(0, len(tiles), 4)])


def overlay(head, params, image: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """The reconstruction output's overlay (engine.outputs.fit_overlay) of one prediction."""
    import torch

    from engine.face import FaceDecoder
    from engine.outputs import fit_overlay, render_geometry

    with torch.no_grad():
        dec = FaceDecoder(head)(params.to(dtype=torch.float32))
        grey, mask = render_geometry(dec)
        return fit_overlay(image, grey, mask, detected, dec.landmarks2d[0].numpy())


def pick_faces(reports: dict[str, dict], n: int = 6) -> list[int]:
    """Faces every method reconstructed, spread over true skin luminance (and yaw)."""
    common = set.intersection(*(set(f["index"] for f in r["faces"]) for r in reports.values()))
    faces = {f["index"]: f for f in next(iter(reports.values()))["faces"] if f["index"] in common}
    order = sorted(faces, key=lambda i: faces[i]["skin_true"])
    picks = [order[round(k * (len(order) - 1) / (n - 1))] for k in range(n)] if len(order) >= n else order
    return picks


def real_photo_rows(head, size: int, name: str,
                    methods: tuple[tuple[str, str, str | None], ...] | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Input + one overlay per method for the example photo ``name``, and a line per method;
    ``methods`` (method, label, checkpoint or None), default :data:`METHODS`."""
    import time

    from engine.eval.cycles import detect
    from engine.eval.cycles_set import head_angles
    from engine.methods import build_predictor
    from engine.methods.base import FaceObservation

    from engine.photo.examples import example_image

    rgb = example_image(name)
    det = detect(rgb)
    face = FaceObservation.from_detection(rgb, det)
    lm = face.landmarks68
    eye = np.degrees(np.arctan2(*(lm[45] - lm[36])[::-1]))
    lines = [f"{name}: detected eye line {eye:+.1f}° (image roll)"]
    # show the face: a square of 2.4x the landmarks' extent around their centre
    c = (lm.min(0) + lm.max(0)) / 2
    half = 1.2 * float((lm.max(0) - lm.min(0)).max())
    x0, y0 = (int(max(v - half, 0)) for v in c)
    x1, y1 = int(min(c[0] + half, rgb.shape[1])), int(min(c[1] + half, rgb.shape[0]))

    def crop(img: np.ndarray) -> np.ndarray:
        return img[y0:y1, x0:x1]

    row = [_label(_tile(crop(rgb), size), [f"{name} (input)"])]
    for method, label, ckpt in methods or tuple((m, lab, None) for m, lab in METHODS):
        predictor = build_predictor(method, head, checkpoint=ckpt)
        t0 = time.perf_counter()
        params = predictor(face).detach().cpu()
        secs = time.perf_counter() - t0
        from engine.face import FaceDecoder

        dec = FaceDecoder(head)(params)
        m = dec.landmarks2d[0].detach().numpy()
        p, y, r = head_angles(params.camera.R[0].double().numpy())
        m_eye = np.degrees(np.arctan2(*(m[45] - m[36])[::-1]))
        dist = float(np.linalg.norm(m - lm, axis=1).mean())
        iod = float(np.linalg.norm(lm[45] - lm[36]))
        jaw = float(params.pose[0, head.joint_names.index("jaw"), 0]) if "jaw" in head.joint_names else 0.0
        lines.append(f"  {label:15s} head pitch {p:+5.1f} yaw {y:+5.1f} roll {r:+5.1f} deg | model eye line {m_eye:+5.1f}° | "
                     f"landmarks {dist:5.1f} px from the detector's ({100 * dist / iod:4.1f} % of the eye distance) | "
                     f"jaw {np.degrees(jaw):4.1f}° | {secs:.2f} s")
        row.append(_label(_tile(crop(overlay(head, params, rgb, lm)), size),
                          [f"{name}: {label}", f"eye line {m_eye:+.0f} deg (detected {eye:+.0f})",
                           f"lmk {dist:.1f} px from detector"]))
    return row, lines


def photos_only(specs: list[str], size: int) -> int:
    """Print the real example photos' lines for ``specs`` (``NAME`` or ``NAME=CHECKPOINT``)."""
    from engine.errors import UserError
    from engine.head import load_head_model
    from engine.methods import get_method
    from engine.photo.examples import EXAMPLE_PHOTOS

    methods = []
    for spec in specs or [m for m, _ in METHODS]:
        name, _, ckpt = spec.partition("=")
        get_method(name)  # an unknown name is a clean error naming the methods
        if ckpt and not Path(ckpt).is_file():
            raise UserError(f"--method {spec}: no checkpoint file {ckpt}")
        methods.append((name, f"{name} ({ckpt})" if ckpt else name, ckpt or None))
    head = load_head_model("open")
    for photo in EXAMPLE_PHOTOS:
        print("\n".join(real_photo_rows(head, size, photo, tuple(methods))[1]))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="set_dir", help="the Cycles set (not needed with --photos-only)")
    ap.add_argument("--pred", help="folder with <method>/ predictions and <method>.json reports")
    ap.add_argument("--photos-only", action="store_true",
                    help="print the real example photos' lines for --method only; write no picture")
    ap.add_argument("--method", action="append", default=[], metavar="NAME[=CHECKPOINT]",
                    help="with --photos-only: a method (and its network), repeatable; default fit, mofa, hybrid")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args(argv)
    from engine.errors import UserError, cli_errors

    with cli_errors():
        if a.photos_only:
            return photos_only(a.method, a.size)
        if a.method:
            raise UserError("--method is for --photos-only (the sheets show fit, mofa and hybrid)")
        if not a.set_dir or not a.pred:
            raise UserError("give --set and --pred (or --photos-only)")
        from engine.eval.cycles import load_prediction
        from engine.eval.cycles_set import load_sample
        from engine.head import load_head_model
        from engine.outputs import write_png

        set_dir, pred, out = Path(a.set_dir), Path(a.pred), Path(a.out)
        write_png(out / "cycles_val_sheet.png", render_sheet(set_dir, a.size))
        reports = {}
        for name, _ in METHODS:
            p = pred / f"{name}.json"
            if not p.is_file():
                raise UserError(f"{p} is missing; run python -m engine.eval cycles --set {set_dir} --method {name} "
                                f"--json --save {pred / name} > {p}")
            reports[name] = json.loads(p.read_text())
        head = load_head_model(reports["fit"]["model"])
        rows = []
        for i in pick_faces(reports):
            s = load_sample(set_dir, i)
            yaw = float(s.gt["angles_deg"][1])
            row = [_label(_tile(s.image, a.size), [f"#{i} input, yaw {yaw:+.0f}", f"skin L {float(s.gt['skin_luminance']):.2f}"])]
            for name, label in METHODS:
                params, detected = load_prediction(pred / name / f"{i:05d}.npz")
                f = next(x for x in reports[name]["faces"] if x["index"] == i)
                row.append(_label(_tile(overlay(head, params, s.image, detected), a.size),
                                  [label, f"NoW {f['now_median_mm']:.2f} mm, pose err {f['rotation_err']:.0f} deg",
                                   f"lmk {f['landmark_px']:.1f} px"]))
            rows.append(row)
        from engine.photo.examples import EXAMPLE_PHOTOS

        lines = []
        for name in EXAMPLE_PHOTOS:
            row, text = real_photo_rows(head, a.size, name)
            rows.append(row)
            lines += text
        write_png(out / "cycles_val_methods.png", _grid(rows))
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
