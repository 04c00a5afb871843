"""Small textured meshes built in code for the generator's props (torso, hair, hats,
glasses, hands): a :class:`Mesh` has per-vertex UVs (``face_uv = faces``) into its own
texture. Builders here: :func:`grid_surface` (a surface from a grid of points, optionally
closed around), :func:`tube` (a circle swept along a path) and :func:`ellipsoid` (an
:func:`engine.render.meshes.icosphere` scaled). All faces are counter-clockwise seen from
outside (the side the normals point to).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.render.meshes import icosphere


@dataclass
class Mesh:
    """Vertices ``(V, 3)`` metres, faces ``(F, 3)``, per-vertex ``uv (V, 2)`` in [0, 1]."""

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray

    def transformed(self, R: np.ndarray, t: np.ndarray) -> "Mesh":
        """``R @ v + t`` for every vertex."""
        return Mesh(self.vertices @ np.asarray(R).T + np.asarray(t), self.faces, self.uv)


def orient(vertices: np.ndarray, faces: np.ndarray, outward: np.ndarray) -> np.ndarray:
    """``faces`` with each triangle flipped where its normal points against ``outward``
    (``(F, 3)`` per-face directions)."""
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = (n * outward).sum(1) < 0
    out = faces.copy()
    out[flip] = faces[flip][:, [0, 2, 1]]
    return out


def grid_surface(points: np.ndarray, wrap: bool = False, outward: np.ndarray | None = None,
                 v_rows: np.ndarray | None = None) -> Mesh:
    """A surface through ``points (R, C, 3)`` (rows × columns), quads split into triangles;
    ``wrap`` closes each row (through a seam column, a copy of column 0). UVs: ``u`` along columns, ``v``
    along rows (row 0 at v = 1, or ``v_rows (R,)``). Faces point away from the points'
    centroid, or along ``outward (3,)`` when given."""
    if wrap:  # a seam column (a copy of column 0 at u = 1) instead of joining the ends
        points = np.concatenate([points, points[:, :1]], 1)
    R, C = points.shape[:2]
    idx = np.arange(R * C).reshape(R, C)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    v = points.reshape(-1, 3).astype(np.float64)
    ref = v[faces].mean(1) - v.mean(0) if outward is None else np.broadcast_to(np.asarray(outward, float), (len(faces), 3))
    uu = np.linspace(0, 1, C)[None].repeat(R, 0)
    vv = (np.linspace(1, 0, R) if v_rows is None else np.asarray(v_rows, float))[:, None].repeat(C, 1)
    return Mesh(v.astype(np.float32), orient(v, faces, ref).astype(np.int64),
                np.stack([uu, vv], -1).reshape(-1, 2).astype(np.float32))


def tube(path: np.ndarray, radius: float, sides: int = 6, closed: bool = False) -> Mesh:
    """A tube of ``radius`` around the polyline ``path (K, 3)`` (``closed``: a ring)."""
    path = np.asarray(path, np.float64)
    nxt = np.roll(path, -1, 0) if closed else np.concatenate([path[1:], 2 * path[-1:] - path[-2:-1]])
    prv = np.roll(path, 1, 0) if closed else np.concatenate([2 * path[:1] - path[1:2], path[:-1]])
    tang = nxt - prv
    tang /= np.linalg.norm(tang, axis=1, keepdims=True).clip(1e-9)
    ref = np.where(np.abs(tang[:, 1:2]) < 0.9, np.array([[0.0, 1.0, 0.0]]), np.array([[1.0, 0.0, 0.0]]))
    n1 = np.cross(tang, ref)
    n1 /= np.linalg.norm(n1, axis=1, keepdims=True).clip(1e-9)
    n2 = np.cross(tang, n1)
    ang = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    centres = np.concatenate([path, path[:1]]) if closed else path
    ring = centres[:, None] + radius * (np.cos(ang)[None, :, None] * np.concatenate([n1, n1[:1]])[: len(centres), None]
                                        + np.sin(ang)[None, :, None] * np.concatenate([n2, n2[:1]])[: len(centres), None])
    m = grid_surface(ring, wrap=True)
    row = m.faces.min(1) // (sides + 1)
    m.faces = orient(m.vertices.astype(np.float64), m.faces, m.vertices[m.faces].mean(1) - centres[row])
    return m


def ellipsoid(centre: np.ndarray, radii: np.ndarray, subdivisions: int = 2) -> Mesh:
    """An icosphere scaled to ``radii (3,)`` around ``centre``; spherical UVs."""
    v, f = icosphere(subdivisions, dtype=torch.float64)
    v = v.numpy()
    uv = np.stack([0.5 + np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi), 0.5 + np.arcsin(np.clip(v[:, 1], -1, 1)) / np.pi], 1)
    return Mesh((v * np.asarray(radii) + np.asarray(centre)).astype(np.float32), f.numpy(), uv.astype(np.float32))


def merge(meshes: list[Mesh]) -> Mesh:
    """One mesh of several (UVs kept as they are)."""
    off = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    return Mesh(np.concatenate([m.vertices for m in meshes]).astype(np.float32),
                np.concatenate([m.faces + o for m, o in zip(meshes, off)]),
                np.concatenate([m.uv for m in meshes]).astype(np.float32))
