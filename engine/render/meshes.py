"""Small procedural meshes (counter-clockwise faces seen from outside) for tests and benchmarks."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["icosphere", "cube", "uv_sphere"]


def icosphere(subdivisions: int = 2, radius: float = 1.0, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Unit icosahedron subdivided ``subdivisions`` times: ``(V, 3)`` vertices, ``(F, 3)`` faces.

    Faces = 20·4^s (s = 4 -> 5,120; s = 5 -> 20,480).
    """
    p = (1.0 + math.sqrt(5.0)) / 2.0
    verts = [
        (-1, p, 0), (1, p, 0), (-1, -p, 0), (1, -p, 0),
        (0, -1, p), (0, 1, p), (0, -1, -p), (0, 1, -p),
        (p, 0, -1), (p, 0, 1), (-p, 0, -1), (-p, 0, 1),
    ]
    faces = [
        (0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11),
        (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6), (7, 1, 8),
        (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9),
        (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1),
    ]
    v = [tuple(c / math.sqrt(1 + p * p) for c in x) for x in verts]
    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}

        def mid(i: int, j: int) -> int:
            key = (min(i, j), max(i, j))
            if key not in cache:
                a, b = v[i], v[j]
                m = [(a[k] + b[k]) / 2 for k in range(3)]
                n = math.sqrt(sum(c * c for c in m))
                v.append(tuple(c / n for c in m))
                cache[key] = len(v) - 1
            return cache[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    return torch.tensor(v, dtype=dtype) * radius, torch.tensor(faces, dtype=torch.int64)


def cube(size: float = 1.0, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Axis-aligned cube centred at the origin with edge ``size``: 8 vertices, 12 triangles."""
    h = size / 2
    v = torch.tensor([[x, y, z] for x in (-h, h) for y in (-h, h) for z in (-h, h)], dtype=dtype)
    # vertex index = 4*ix + 2*iy + iz
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = []
    for a, b, c, d in quads:
        f += [(a, b, c), (a, c, d)]
    faces = torch.tensor(f, dtype=torch.int64)
    # Make every face counter-clockwise seen from outside (normal along the centroid).
    tri = v[faces]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    flip = (n * tri.mean(1)).sum(-1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return v, faces


def uv_sphere(n_lat: int = 16, n_lon: int = 32, radius: float = 1.0, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Latitude/longitude sphere with a seam: ``vertices, faces, uv (T, 2), face_uv (F, 3)``.

    ``u`` goes with longitude (0 at -Z, increasing towards +X), ``v`` from 0 at the south
    pole (-Y) to 1 at the north pole (+Y), OBJ convention.
    """
    verts, uvs = [], []
    for i in range(n_lat + 1):
        theta = math.pi * i / n_lat  # 0 = north pole
        for j in range(n_lon + 1):
            phi = 2 * math.pi * j / n_lon
            verts.append((radius * math.sin(theta) * math.sin(phi), radius * math.cos(theta), -radius * math.sin(theta) * math.cos(phi)))
            uvs.append((j / n_lon, 1.0 - i / n_lat))
    faces = []
    for i in range(n_lat):
        for j in range(n_lon):
            a = i * (n_lon + 1) + j
            b, c, d = a + 1, a + n_lon + 1, a + n_lon + 2
            if i > 0:
                faces.append((a, c, b))
            if i < n_lat - 1:
                faces.append((b, c, d))
    v = torch.tensor(verts, dtype=dtype)
    uv = torch.tensor(uvs, dtype=dtype)
    f = torch.tensor(faces, dtype=torch.int64)
    # Orientation check: make faces CCW seen from outside.
    tri = v[f]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    if ((n * tri.mean(1)).sum(-1) < 0).float().mean() > 0.5:
        f = f[:, [0, 2, 1]]
    # Seam vertices are duplicated (j = 0 and j = n_lon), so uv indices equal vertex indices;
    # weld positions so the geometry is closed while UVs keep the seam.
    weld = torch.arange(v.shape[0])
    for i in range(n_lat + 1):
        weld[i * (n_lon + 1) + n_lon] = i * (n_lon + 1)
    for j in range(n_lon + 1):
        weld[j] = 0
        weld[n_lat * (n_lon + 1) + j] = n_lat * (n_lon + 1)
    used, inverse = torch.unique(weld, return_inverse=True)
    faces_geo = inverse[f]
    return v[used], faces_geo, uv, f
