"""A tiny numpy z-buffer rasteriser for the head package's own tools (landmark fitting,
documentation sheets). Not differentiable and not the engine's renderer (engine.render):
it only has to draw a shaded, optionally textured head and tell which triangle and
barycentrics every pixel sees, so that detections can be back-projected onto the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.render.shading import vertex_normals_np as vertex_normals


@dataclass
class Raster:
    """Per-pixel triangle id (-1 = background), barycentrics (H, W, 3), camera depth."""

    tri: np.ndarray
    bary: np.ndarray
    depth: np.ndarray


def look_at_frontal(yaw_deg: float = 0.0, pitch_deg: float = 0.0, distance: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV camera (R, t) looking at the model-frame origin, rotated by yaw/pitch around it."""
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    Ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    R = np.diag([1.0, -1.0, -1.0]) @ Rx @ Ry
    return R, np.array([0.0, 0.0, distance])


def project(vertices: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Model-frame points (N, 3) -> (N, 3) pixel u, v and camera depth z."""
    cam = vertices @ R.T + t
    uv = cam @ K.T
    return np.concatenate([uv[:, :2] / uv[:, 2:3], cam[:, 2:3]], 1)


def rasterize(vertices: np.ndarray, faces: np.ndarray, R: np.ndarray, t: np.ndarray,
              K: np.ndarray, height: int, width: int, cull_back: bool = False) -> Raster:
    """Z-buffer rasterisation with pixel centres at integer + 0.5.

    cull_back skips triangles seen from behind (faces counter-clockwise from outside).
    """
    p = project(vertices, R, t, K)
    tri = -np.ones((height, width), np.int64)
    bary = np.zeros((height, width, 3))
    depth = np.full((height, width), np.inf)
    P = p[faces]  # (F, 3, 3)
    x0 = np.clip(np.floor(P[:, :, 0].min(1) - 0.5), 0, width).astype(int)
    x1 = np.clip(np.ceil(P[:, :, 0].max(1) + 0.5), 0, width).astype(int)
    y0 = np.clip(np.floor(P[:, :, 1].min(1) - 0.5), 0, height).astype(int)
    y1 = np.clip(np.ceil(P[:, :, 1].max(1) + 0.5), 0, height).astype(int)
    keep = (x1 > x0) & (y1 > y0) & (P[:, :, 2].min(1) > 0)
    if cull_back:  # outside-CCW triangles facing the camera have a negative signed area here
        e1, e2 = P[:, 1, :2] - P[:, 0, :2], P[:, 2, :2] - P[:, 0, :2]
        keep &= (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) < 0
    for f in np.nonzero(keep)[0]:
        (ax, ay, az), (bx, by, bz), (cx, cy, cz) = P[f]
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if abs(area) < 1e-12:
            continue
        xs = np.arange(x0[f], x1[f]) + 0.5
        ys = np.arange(y0[f], y1[f]) + 0.5
        X, Y = np.meshgrid(xs, ys)
        w0 = ((bx - X) * (cy - Y) - (by - Y) * (cx - X)) / area
        w1 = ((cx - X) * (ay - Y) - (cy - Y) * (ax - X)) / area
        w2 = 1.0 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        if not inside.any():
            continue
        # perspective-correct barycentrics and depth
        q = np.stack([w0 / az, w1 / bz, w2 / cz], -1)
        z = 1.0 / q.sum(-1)
        q = q * z[..., None]
        sl = (slice(y0[f], y1[f]), slice(x0[f], x1[f]))
        closer = inside & (z < depth[sl])
        depth[sl][closer] = z[closer]
        tri[sl][closer] = f
        bary[sl][closer] = q[closer]
    return Raster(tri=tri, bary=bary, depth=depth)


def shade(raster: Raster, vertices: np.ndarray, faces: np.ndarray, R: np.ndarray,
          colors: np.ndarray | None = None, uv: np.ndarray | None = None,
          face_uv: np.ndarray | None = None, texture: np.ndarray | None = None,
          background: float = 1.0, smooth: bool = True) -> np.ndarray:
    """Lambert-shaded RGB float image in [0, 1] from a raster.

    colors: per-vertex RGB (V, 3); texture: (h, w, 3) float sampled with per-corner uv.
    """
    H, W = raster.tri.shape
    img = np.full((H, W, 3), background, np.float64)
    m = raster.tri >= 0
    f = raster.tri[m]
    b = raster.bary[m]
    if smooth:
        n = vertex_normals(vertices, faces)
        nrm = (n[faces[f]] * b[..., None]).sum(1)
    else:
        v = vertices[faces[f]]
        nrm = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    nrm = nrm / np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    view = -(R.T @ np.array([0.0, 0.0, 1.0]))  # towards the camera, model frame
    light = view + R.T @ np.array([-0.3, -0.5, 0.0])
    light /= np.linalg.norm(light)
    lam = np.abs(nrm @ light) * 0.75 + 0.25
    alb = np.full((len(f), 3), 0.8)
    if colors is not None:
        alb = (colors[faces[f]] * b[..., None]).sum(1)
    if texture is not None and uv is not None and face_uv is not None:
        tuv = (uv[face_uv[f]] * b[..., None]).sum(1)
        th, tw = texture.shape[:2]
        px = np.clip((tuv[:, 0] * tw).astype(int), 0, tw - 1)
        py = np.clip(((1 - tuv[:, 1]) * th).astype(int), 0, th - 1)
        alb = alb * texture[py, px]
    img[m] = np.clip(alb * lam[:, None], 0, 1)
    return img


def save_panels(panels: list, path) -> None:
    """Paste equally sized PIL images side by side into one PNG sheet at ``path``."""
    from pathlib import Path

    from PIL import Image

    width, height = panels[0].size
    sheet = Image.new("RGB", (width * len(panels), height), "white")
    for i, panel in enumerate(panels):
        sheet.paste(panel, (i * width, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
