"""The texels of a head model's UV layout, in template space (computed once per model).

Procedural painting needs, for every texel of the albedo map, where it lies on the head:
:func:`texel_geometry` rasterises the model's UV layout with :func:`engine.render.rasterize_uv`
and keeps, for the covered texels only, their triangle's vertices and barycentrics, their
template position (metres, model frame) and soft region weights. Per-vertex fields
(seam-free noise, region masks) are carried to texels by barycentric interpolation, and
:meth:`TexelGeometry.to_image` writes per-texel values into an ``S × S`` map whose islands are
padded by a few texels (so bilinear lookups near UV seams do not pick up empty texels).

Results are cached on the head model object (like the decoder's per-vertex UVs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.head.model import HeadModel
from engine.render import rasterize_uv

#: Albedo-map sizes the generator paints at (the smallest one whose face texels are at most
#: :data:`TARGET_TEXEL_M` wide is used).
PAINT_SIZES = (256, 384, 512, 768, 1024)
TARGET_TEXEL_M = 2.0e-3
PAD_TEXELS = 4


def model_cache(head: HeadModel) -> dict:
    """A per-model dictionary for template-only data of the generator (not saved with it)."""
    cache = head.__dict__.get("_realistic_generator_cache")
    if cache is None or cache.get("_device") != head.template.device:
        cache = {"_device": head.template.device}
        head.__dict__["_realistic_generator_cache"] = cache
    return cache


def face_metres_per_uv(head: HeadModel) -> float:
    """How many metres one UV unit spans on the face skin (sqrt of the area ratio)."""
    faces = head.faces.cpu().numpy()
    fuv = head.face_uv.cpu().numpy()
    X = head.template.cpu().numpy().astype(np.float64)
    uv = head.uv.cpu().numpy().astype(np.float64)
    sel = head.regions["face_skin"].cpu().numpy()[faces].all(1)
    t = X[faces[sel]]
    a3 = np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum()
    u = uv[fuv[sel]]
    e1, e2 = u[:, 1] - u[:, 0], u[:, 2] - u[:, 0]
    a2 = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum()
    return float(np.sqrt(a3 / max(a2, 1e-12)))


def paint_size(head: HeadModel) -> int:
    """The albedo-map size the generator paints this model at (see :data:`PAINT_SIZES`)."""
    cache = model_cache(head)
    if "paint_size" not in cache:
        m = face_metres_per_uv(head)
        cache["paint_size"] = next((s for s in PAINT_SIZES if m / s <= TARGET_TEXEL_M), PAINT_SIZES[-1])
    return cache["paint_size"]


@dataclass
class TexelGeometry:
    """Covered texels of an ``S × S`` UV map: flat ``index`` (row·S + col), the triangle's
    ``vertex`` ids and ``bary`` weights, template ``position`` (N, 3) metres, and the
    padding band (``fill_index`` texels copy the value of covered texel ``fill_source``)."""

    size: int
    index: np.ndarray  # (N,) int64
    vertex: np.ndarray  # (N, 3) int64
    bary: np.ndarray  # (N, 3) float32
    position: np.ndarray  # (N, 3) float32
    fill_index: np.ndarray  # (M,) int64
    fill_source: np.ndarray  # (M,) int64, into the covered list
    weights: "scipy.sparse.csr_matrix"  # (N, V) barycentric interpolation matrix

    @property
    def n(self) -> int:
        return int(self.index.shape[0])

    def interpolate(self, per_vertex: np.ndarray) -> np.ndarray:
        """Per-vertex values ``(V,)`` or ``(V, C)`` -> per-texel ``(N,)`` or ``(N, C)``."""
        return np.asarray(self.weights @ np.asarray(per_vertex, np.float32), np.float32)

    def to_image(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Per-texel ``(N, C)`` -> channels-first ``(C, S, S)`` float32 map, islands padded,
        ``fill`` elsewhere."""
        S = self.size
        vt = np.ascontiguousarray(values.T, np.float32)
        out = np.full((vt.shape[0], S * S), fill, np.float32)
        out[:, self.index] = vt
        out[:, self.fill_index] = vt[:, self.fill_source]
        return out.reshape(-1, S, S)


def texel_geometry(head: HeadModel, size: int) -> TexelGeometry:
    """The covered texels of ``head``'s UV layout at ``size`` (cached per model and size)."""
    cache = model_cache(head)
    key = ("texels", size)
    if key in cache:
        return cache[key]
    from scipy import ndimage, sparse

    with torch.no_grad():
        fr = rasterize_uv(head.uv.float().cpu(), head.face_uv.cpu(), size)
    tri = fr.tri_id[0].reshape(-1)
    index = (tri >= 0).nonzero()[:, 0]
    t = tri[index]
    vertex = head.faces.cpu()[t].numpy()
    bary = fr.bary[0].reshape(-1, 3)[index].numpy().astype(np.float32)
    X = head.template.cpu().numpy()
    position = (X[vertex] * bary[..., None]).sum(1).astype(np.float32)
    covered = (tri >= 0).numpy().reshape(size, size)
    dist, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
    band = (~covered) & (dist <= PAD_TEXELS)
    fill_index = np.flatnonzero(band)
    src_flat = (iy * size + ix).reshape(-1)[fill_index]
    lookup = np.full(size * size, -1, np.int64)
    lookup[index.numpy()] = np.arange(index.numel())
    n = index.numel()
    weights = sparse.csr_matrix((bary.reshape(-1), vertex.reshape(-1), np.arange(0, 3 * n + 1, 3)),
                                shape=(n, head.n_vertices))
    geo = TexelGeometry(size, index.numpy(), vertex, bary, position, fill_index, lookup[src_flat], weights)
    cache[key] = geo
    return geo
