"""NoW-style scorer: exact point-to-triangle distances, similarity alignment that undoes a
known transform, and an offset surface that scores its offset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.eval.now import SurfaceQuery, closest_points_on_triangles, now_error, sample_surface, scan_points


def _brute_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Independent reference: the plane projection when it falls inside the triangle, else
    the nearest of the three edge segments."""
    def seg(p, x, y):
        t = np.clip(np.einsum("...i,...i", p - x, y - x) / np.einsum("...i,...i", y - x, y - x), 0, 1)
        return np.linalg.norm(p - (x + t[..., None] * (y - x)), axis=-1)

    n = np.cross(b - a, c - a)
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    h = np.einsum("...i,...i", p - a, n)
    proj = p - h[..., None] * n
    # inside test with signed areas
    inside = np.ones(h.shape, bool)
    for x, y in ((a, b), (b, c), (c, a)):
        inside &= np.einsum("...i,...i", np.cross(y - x, proj - x), n) >= 0
    d_edges = np.minimum(np.minimum(seg(p, a, b), seg(p, b, c)), seg(p, c, a))
    return np.where(inside, np.abs(h), d_edges)


def test_closest_point_on_triangle_matches_reference():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 4000, 3))
    p = rng.normal(size=(4000, 3)) * 2
    q, bary = closest_points_on_triangles(p, a, b, c)
    d = np.linalg.norm(q - p, axis=1)
    assert np.allclose(d, _brute_distance(p, a, b, c), atol=1e-12)
    assert np.allclose(bary.sum(1), 1) and (bary > -1e-12).all()
    assert np.allclose(q, bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c)


def _sphere(level: int = 3) -> tuple[np.ndarray, np.ndarray]:
    from engine.render.meshes import icosphere

    v, f = icosphere(level, 1.0, dtype=torch.float64)
    return v.numpy(), f.numpy()


def test_surface_query_is_exact_and_not_a_vertex_distance():
    v, f = _sphere(2)
    v = v * 0.1 * np.array([1.0, 1.3, 0.8])  # an ellipsoid with uneven triangles
    rng = np.random.default_rng(1)
    p = rng.normal(size=(600, 3)) * 0.08
    q = SurfaceQuery(v, f, k=4, max_radius=0.01)  # few candidates: the re-check has work to do
    d, tri, bary = q.query(p)
    ref = _brute_distance(p[:, None], v[f][None, :, 0], v[f][None, :, 1], v[f][None, :, 2]).min(1)
    assert np.allclose(d, ref, atol=1e-12)
    assert np.allclose(np.linalg.norm(q.points(tri, bary) - p, axis=1), d, atol=1e-12)
    # points on a sphere of radius r + delta: distance to the faceted sphere lies between
    # delta and delta + the facets' sagitta; the nearest *vertex* is much further away
    v1, f1 = _sphere(4)
    r, delta = 0.1, 0.002
    dirs = rng.normal(size=(500, 3))
    pts = dirs / np.linalg.norm(dirs, axis=1, keepdims=True) * (r + delta)
    d1, _, _ = SurfaceQuery(v1 * r, f1).query(pts)
    edge = np.linalg.norm(v1[f1[:, 0]] - v1[f1[:, 1]], axis=1).max() * r
    sagitta = r - np.sqrt(r * r - (edge / np.sqrt(3)) ** 2)
    assert (d1 >= delta - 1e-12).all() and (d1 <= delta + sagitta + 1e-12).all()
    to_vertex = np.linalg.norm(pts[:, None] - v1[None] * r, axis=2).min(1)
    assert np.median(to_vertex - d1) > 0.5 * sagitta


@pytest.fixture(scope="module")
def face():
    """The open model's template and its NoW-style face region."""
    from engine.eval.cycles_set import face_region
    from engine.head import load_head_model

    head = load_head_model("open")
    with torch.no_grad():
        lm = head.landmarks(head.template[None])[0].double().numpy()
    return head.template.double().numpy(), head.faces.numpy(), lm, face_region(head)


def _random_similarity(seed: int) -> tuple[float, np.ndarray, np.ndarray]:
    from engine.render.rotation import axis_angle_to_matrix

    rng = np.random.default_rng(seed)
    R = axis_angle_to_matrix(torch.tensor(rng.normal(size=3) * 0.6)).numpy()
    return float(rng.uniform(0.7, 1.4)), R, rng.normal(size=3) * 0.3


def test_scaled_rotated_copy_scores_zero(face):
    v, f, lm, region = face
    scan = scan_points(v, f, region, 3000, seed=0)
    s, R, t = _random_similarity(2)
    pred = (v - 0.01) @ R.T * s + t  # the prediction lives in another frame and scale
    pred_lm = (lm - 0.01) @ R.T * s + t
    # landmarks a few mm off: ICP has to finish the job
    noisy = pred_lm + np.random.default_rng(3).normal(size=lm.shape) * 0.004 * s
    score = now_error(pred, f, noisy, scan, lm)
    assert score.median_mm < 1e-3 and score.p90_mm < 1e-2, (score.median_mm, score.p90_mm)
    assert score.transform.s == pytest.approx(1 / s, rel=1e-4)
    landmark_only = now_error(pred, f, noisy, scan, lm, icp=False)
    assert landmark_only.median_mm > 100 * score.median_mm


def test_offset_surface_scores_its_offset(face):
    v, f, lm, region = face
    from engine.render import vertex_normals

    n = vertex_normals(torch.tensor(v)[None], torch.tensor(f))[0].numpy()
    # the nose and its surroundings (within 25 mm of the tip) pushed out by 2 mm, the rest exact
    tip = lm[30]
    dist = np.linalg.norm(v - tip, axis=1)
    w = np.clip((0.03 - dist) / 0.005, 0, 1)  # 1 inside 25 mm, fading to 0 at 30 mm
    delta = 0.002
    pred = v + delta * w[:, None] * n
    scan = scan_points(v, f, region, 4000, seed=1)
    d_scan = np.linalg.norm(scan - tip, axis=1)
    core, far = d_scan < 0.015, d_scan > 0.045
    # exact landmarks pin the frame: the bump reads its offset, the rest reads zero
    pinned = now_error(pred, f, lm, scan, lm, icp=False)
    assert np.median(pinned.distances_mm[core]) == pytest.approx(delta * 1000, rel=0.03)
    assert np.median(pinned.distances_mm[far]) < 1e-6
    # ICP minimises the squared distances: it gives a little of the bump back to the rest
    score = now_error(pred, f, lm, scan, lm)
    assert np.median(score.distances_mm[core]) == pytest.approx(delta * 1000, rel=0.15)
    assert np.median(score.distances_mm[far]) < 0.1 * delta * 1000
    assert np.mean(score.distances_mm ** 2) < np.mean(pinned.distances_mm ** 2)


def test_sample_surface_is_area_uniform():
    # two triangles of a unit square, one four times the area of the other after scaling
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [0, 2, 0]], float)
    f = np.array([[0, 1, 2], [0, 3, 4]])
    p = sample_surface(v, f, 20000, seed=0)
    small = (p[:, 0] + p[:, 1] <= 1 + 1e-12)
    # the big triangle (area 2) contains the small one (area 0.5): 1/4 of its samples + all of the small one's
    assert small.mean() == pytest.approx((0.5 + 0.25 * 2) / 2.5, abs=0.015)
