"""NoW-style geometric error: scan-to-mesh distance after a similarity alignment.

As in the NoW benchmark (Sanyal et al., CVPR 2019), the ground truth is a *scan* (here:
points sampled uniformly by area on the ground-truth head's face region) and the
prediction is a *mesh* of any topology:

1. similarity alignment of the predicted mesh to the scan, initialised from seven
   landmarks (eye corners, nose tip, mouth corners; :data:`NOW_LANDMARKS`) with
   :func:`engine.eval.synthetic.umeyama`, then refined ICP-style: each scan point's closest
   point on the predicted *surface* (a point inside a triangle, not a vertex) is its
   correspondence, and Gauss-Newton steps on the similarity (point-to-plane) minimise the
   sum of squared scan-to-surface distances until it stops improving;
2. the error of each scan point is its distance to the aligned predicted surface, in mm;
   a face's score is the median / mean / 90th percentile over its points.

Everything is float64 numpy; the closest-point query is exact (candidate triangles from a
k-d tree over triangle centroids, with a bound that falls back to a radius search whenever
a triangle outside the first candidates could still be closer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.eval.synthetic import umeyama

#: iBUG-68 indices of NoW's seven alignment landmarks: outer/inner eye corners, nose tip, mouth corners.
NOW_LANDMARKS = (36, 39, 42, 45, 30, 48, 54)


@dataclass
class Similarity:
    """``x -> s · R x + t``."""

    s: float
    R: np.ndarray
    t: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self.s * np.asarray(x, np.float64) @ self.R.T + self.t


@dataclass
class NowScore:
    """One face: per-point distances (mm) of the scan to the aligned prediction."""

    distances_mm: np.ndarray
    transform: Similarity
    iterations: int

    @property
    def median_mm(self) -> float:
        return float(np.median(self.distances_mm))

    @property
    def mean_mm(self) -> float:
        return float(np.mean(self.distances_mm))

    @property
    def p90_mm(self) -> float:
        return float(np.quantile(self.distances_mm, 0.9))


def closest_points_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest point of triangle ``(a, b, c)`` to ``p`` (all ``(..., 3)``): ``(points, barycentrics)``.

    Ericson, *Real-Time Collision Detection*, 5.1.5: the Voronoi region of ``p`` (a vertex,
    an edge or the face) decides the answer; vectorised with ``np.select`` in Ericson's order.
    """
    p, a, b, c = (np.asarray(x, np.float64) for x in (p, a, b, c))
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = np.einsum("...i,...i", ab, ap), np.einsum("...i,...i", ac, ap)
    bp = p - b
    d3, d4 = np.einsum("...i,...i", ab, bp), np.einsum("...i,...i", ac, bp)
    cp = p - c
    d5, d6 = np.einsum("...i,...i", ab, cp), np.einsum("...i,...i", ac, cp)
    vc = d1 * d4 - d3 * d2
    vb = d5 * d2 - d1 * d6
    va = d3 * d6 - d5 * d4
    tiny = 1e-300
    v_ab = d1 / np.where(np.abs(d1 - d3) > tiny, d1 - d3, tiny)
    w_ac = d2 / np.where(np.abs(d2 - d6) > tiny, d2 - d6, tiny)
    e43, e56 = d4 - d3, d5 - d6
    w_bc = e43 / np.where(np.abs(e43 + e56) > tiny, e43 + e56, tiny)
    denom = va + vb + vc
    denom = np.where(np.abs(denom) > tiny, denom, tiny)
    v_in, w_in = vb / denom, vc / denom
    conds = [(d1 <= 0) & (d2 <= 0),
             (d3 >= 0) & (d4 <= d3),
             (vc <= 0) & (d1 >= 0) & (d3 <= 0),
             (d6 >= 0) & (d5 <= d6),
             (vb <= 0) & (d2 >= 0) & (d6 <= 0),
             (va <= 0) & (e43 >= 0) & (e56 >= 0)]
    zero, one = np.zeros_like(d1), np.ones_like(d1)
    v = np.select(conds, [zero, one, v_ab, zero, zero, 1 - w_bc], v_in)
    w = np.select(conds, [zero, zero, zero, one, w_ac, w_bc], w_in)
    bary = np.stack([1 - v - w, v, w], -1)
    return a + v[..., None] * ab + w[..., None] * ac, bary


class SurfaceQuery:
    """Exact closest points on a triangle mesh ``(vertices (V, 3), faces (F, 3))``.

    Triangles larger than ``max_radius`` are split (midpoint subdivision: the same surface
    in smaller pieces) so that a k-d tree over piece centroids gives tight candidates; a
    point whose best candidate could still be beaten by a piece outside its ``k`` nearest
    is re-checked against every piece within its best distance + the largest piece radius.
    Answers are given on the original triangles (ids and barycentrics)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, k: int = 24, max_radius: float = 0.004) -> None:
        from scipy.spatial import cKDTree

        self.vertices = np.asarray(vertices, np.float64)
        self.faces = np.asarray(faces, np.int64)
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or not len(self.faces):
            raise ValueError(f"faces must be a non-empty (F, 3) array, got shape {self.faces.shape}")
        # pieces: (P, 3, 3) corners as barycentrics of their parent triangle
        parent = np.arange(len(self.faces))
        corners = np.broadcast_to(np.eye(3), (len(self.faces), 3, 3)).copy()
        done_p, done_c = [], []
        for _ in range(12):
            pts = np.einsum("pkj,pjc->pkc", corners, self.vertices[self.faces[parent]])
            rad = np.linalg.norm(pts - pts.mean(1, keepdims=True), axis=2).max(1)
            big = rad > max_radius
            done_p.append(parent[~big])
            done_c.append(corners[~big])
            if not big.any():
                break
            c, par = corners[big], parent[big]
            m01, m12, m20 = (c[:, 0] + c[:, 1]) / 2, (c[:, 1] + c[:, 2]) / 2, (c[:, 2] + c[:, 0]) / 2
            corners = np.concatenate([np.stack(q, 1) for q in ((c[:, 0], m01, m20), (m01, c[:, 1], m12),
                                                               (m20, m12, c[:, 2]), (m01, m12, m20))])
            parent = np.tile(par, 4)
        else:
            done_p.append(parent)
            done_c.append(corners)
        self.parent = np.concatenate(done_p)
        self.corners = np.concatenate(done_c)
        self.pieces = np.einsum("pkj,pjc->pkc", self.corners, self.vertices[self.faces[self.parent]])
        centroids = self.pieces.mean(1)
        self.radius = float(np.linalg.norm(self.pieces - centroids[:, None], axis=2).max())
        self.tree = cKDTree(centroids)
        self.k = min(k, len(self.parent))

    def _best(self, p: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Best of candidate pieces ``cand (N, k)`` for points ``p (N, 3)``: distance, piece, barycentrics."""
        tri = self.pieces[cand]
        q, bary = closest_points_on_triangles(p[:, None], tri[..., 0, :], tri[..., 1, :], tri[..., 2, :])
        d = np.linalg.norm(q - p[:, None], axis=-1)
        j = np.argmin(d, axis=1)
        rows = np.arange(len(p))
        return d[rows, j], cand[rows, j], bary[rows, j]

    def query(self, points: np.ndarray, exact: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(distances (N,), triangle ids (N,), barycentrics (N, 3))`` of the closest surface
        points; ``exact=False`` skips the re-check (the best of the ``k`` nearest pieces:
        what an ICP iteration needs, not what a score needs)."""
        p = np.asarray(points, np.float64)
        dc, cand = self.tree.query(p, k=self.k)
        if self.k == 1:
            dc, cand = dc[:, None], cand[:, None]
        dist, piece, bary = self._best(p, cand)
        if exact and self.k < len(self.parent):
            # any piece outside the k candidates is at least (its centroid distance − radius) away
            unsure = np.flatnonzero(dist > dc[:, -1] - self.radius)
            if len(unsure):
                balls = self.tree.query_ball_point(p[unsure], dist[unsure] + self.radius)
                sizes = np.array([len(b) for b in balls])
                flat = np.concatenate([np.asarray(b, np.int64) for b in balls])
                owner = np.repeat(np.arange(len(unsure)), sizes)
                tri = self.pieces[flat]
                q, bb = closest_points_on_triangles(p[unsure][owner], tri[:, 0], tri[:, 1], tri[:, 2])
                d = np.linalg.norm(q - p[unsure][owner], axis=-1)
                starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
                best = np.minimum.reduceat(d, starts)
                # index of each group's minimum
                is_min = d == np.repeat(best, sizes)
                first = np.full(len(unsure), -1)
                hits = np.flatnonzero(is_min)
                first[owner[hits][::-1]] = hits[::-1]
                better = best < dist[unsure]
                u = unsure[better]
                dist[u], piece[u], bary[u] = best[better], flat[first[better]], bb[first[better]]
        # barycentrics on the original triangle: corners are barycentric rows of the parent
        return dist, self.parent[piece], np.einsum("nk,nkj->nj", bary, self.corners[piece])

    def points(self, tri: np.ndarray, bary: np.ndarray, vertices: np.ndarray | None = None) -> np.ndarray:
        """Surface points given by triangle ids and barycentrics (optionally on other vertex positions)."""
        v = self.vertices if vertices is None else np.asarray(vertices, np.float64)
        return np.einsum("nk,nkc->nc", bary, v[self.faces[tri]])


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points uniformly by area on a triangle mesh (deterministic for ``seed``)."""
    v = np.asarray(vertices, np.float64)
    tri = v[np.asarray(faces, np.int64)]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if not len(tri) or area.sum() <= 0:
        raise ValueError("cannot sample an empty or degenerate surface")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tri), size=n, p=area / area.sum())
    r1, r2 = rng.uniform(size=(2, n))
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    return np.einsum("nk,nkc->nc", w, tri[pick])


def region_faces(faces: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Triangles whose three vertices are in the vertex mask."""
    faces = np.asarray(faces, np.int64)
    return faces[np.asarray(mask, bool)[faces].all(1)]


def scan_points(vertices: np.ndarray, faces: np.ndarray, mask: np.ndarray, n: int = 5000, seed: int = 0) -> np.ndarray:
    """The NoW-style "scan": ``n`` area-uniform points on the face region ``mask`` of a mesh."""
    return sample_surface(vertices, region_faces(faces, mask), n, seed)


def _rodrigues(w: np.ndarray) -> np.ndarray:
    a = float(np.linalg.norm(w))
    if a < 1e-15:
        return np.eye(3)
    k = w / a
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * Kx + (1 - np.cos(a)) * Kx @ Kx


def align_to_scan(pred_vertices: np.ndarray, pred_faces: np.ndarray, pred_landmarks: np.ndarray,
                  scan: np.ndarray, scan_landmarks: np.ndarray, landmarks: tuple[int, ...] = NOW_LANDMARKS,
                  max_iters: int = 40, tol: float = 1e-5, icp: bool = True,
                  query: SurfaceQuery | None = None) -> tuple[Similarity, int]:
    """Similarity taking the predicted mesh onto the scan: from the landmarks (``(68, 3)``
    each, the ``landmarks`` subset used), then minimising the sum of squared scan-to-surface
    distances by Gauss-Newton (point-to-plane ICP: each scan point's residual is its distance
    to its closest point on the transformed surface, along the line joining them, or the
    triangle normal when it lies on the surface). Returns the transform and the iterations."""
    pv = np.asarray(pred_vertices, np.float64)
    scan = np.asarray(scan, np.float64)
    ids = list(landmarks)
    s, R, t = umeyama(np.asarray(pred_landmarks, np.float64)[ids], np.asarray(scan_landmarks, np.float64)[ids])
    T = Similarity(s, R, t)
    if not icp:
        return T, 0
    q = query or SurfaceQuery(pv, pred_faces)
    tri_n = np.cross(pv[q.faces[:, 1]] - pv[q.faces[:, 0]], pv[q.faces[:, 2]] - pv[q.faces[:, 0]])
    tri_n /= np.maximum(np.linalg.norm(tri_n, axis=1, keepdims=True), 1e-300)
    prev = np.inf
    it = 0
    for it in range(1, max_iters + 1):
        # closest points on the transformed surface = the transform of those on the original
        # surface to the scan mapped back (distances scale by s)
        back = ((scan - T.t) @ T.R) / T.s
        d, tri, bary = q.query(back, exact=False)
        err = float(np.mean((d * T.s) ** 2))
        if np.isfinite(prev) and prev - err <= tol * prev:
            break
        prev = err
        c = T.apply(q.points(tri, bary))
        diff = c - scan
        dist = np.linalg.norm(diff, axis=1)
        on = dist < 1e-12
        u = np.where(on[:, None], tri_n[tri] @ T.R.T, diff / np.maximum(dist, 1e-300)[:, None])
        mu = c.mean(0)
        cc = c - mu
        J = np.concatenate([np.cross(cc, u), u, np.einsum("ij,ij->i", u, cc)[:, None]], 1)
        r = np.einsum("ij,ij->i", u, diff)
        x = np.linalg.lstsq(J, -r, rcond=None)[0]
        Rw, es = _rodrigues(x[:3]), float(np.exp(x[6]))
        T = Similarity(T.s * es, Rw @ T.R, mu + es * Rw @ (T.t - mu) + x[3:6])
    return T, it


def now_error(pred_vertices: np.ndarray, pred_faces: np.ndarray, pred_landmarks: np.ndarray,
              scan: np.ndarray, scan_landmarks: np.ndarray, icp: bool = True,
              query: SurfaceQuery | None = None) -> NowScore:
    """Align the prediction to the scan (:func:`align_to_scan`) and measure each scan
    point's distance to the aligned predicted surface (mm). Inputs in metres."""
    q = query or SurfaceQuery(pred_vertices, pred_faces)
    T, iters = align_to_scan(pred_vertices, pred_faces, pred_landmarks, scan, scan_landmarks, icp=icp, query=q)
    back = ((np.asarray(scan, np.float64) - T.t) @ T.R) / T.s
    d, _, _ = q.query(back)
    return NowScore(distances_mm=(d * T.s * 1000.0).astype(np.float32), transform=T, iterations=iters)
