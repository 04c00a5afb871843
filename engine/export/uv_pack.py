"""The texture layout of the output files: the head model's UV islands cut and re-packed so
that the face gets the texels.

A head model's own UV layout is what its networks work in (CEST's reflectance maps, DECA's
detail maps, the generator's painted albedo) and stays as it is. The open head's layout
(MakeHuman's) covers only a fifth of the texture, and its face skin 4 %: a 1024² ``albedo.png``
gave the face about 220 texels from ear to ear, whatever the photo's resolution. The files
an artist opens (``albedo.png``, ``displacement.png``, ``detail/*.png``, ``head.obj``,
``head.glb``, ``animation.glb``) use an **export layout** made from it once per model
(:func:`export_layout`):

1. the face skin (triangles whose corners are all in the model's ``face_skin`` region, the
   part a photo shows) is cut out of its island, so it can be scaled on its own;
2. every island gets a texel density relative to the face's: face skin 1, the rest of the
   head (scalp, neck, ears: mostly the skin fill) :data:`REST_DENSITY`, parts with their own
   material in Blender (mouth interior) :data:`OWN_MATERIAL_DENSITY` (eyeballs and teeth: 3.);
3. each eyeball's island is laid out anew (:data:`EYE_DENSITY`): the model's own eye UVs (the
   open head's: a sliver of 56 × 5 texels for both eyes at 1024²) leave no room for an iris, so
   the eyeball is unrolled around its forward axis (Lambert's azimuthal equal-area projection
   about its centre: the pupil in the middle of a disc, the back of the eye at its rim), at
   the face skin's texels per millimetre times its density, and the eyes can be painted
   (:func:`engine.texture.paint_parts`); each tooth (:mod:`engine.head.teeth`) likewise, by
   its projection on its own main plane (:data:`TEETH_DENSITY`);
4. the islands' boxes are shelf-packed into the unit square with a margin, at the largest
   common scale that fits (bisection). Where that gains the face less than :data:`MIN_GAIN`
   (linear) the model's own layout is the export layout (ICT's layout is already face-centred:
   1.08).

The export layout is used like a head model by :func:`engine.texture.uv_layout` (it has
``uv``, ``face_uv``, ``faces``, ``mirror``, ``n_vertices``), so textures bake straight into
it; maps made in the model's layout are carried over by :func:`to_export_layout`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as Fn
from torch import Tensor

__all__ = ["EYE_DENSITY", "ExportLayout", "OWN_MATERIAL_DENSITY", "REST_DENSITY", "TEETH_DENSITY", "export_layout",
           "to_export_layout"]

REST_DENSITY = 0.45  # scalp, neck, ears: texels per UV unit relative to the face skin's
OWN_MATERIAL_DENSITY = 0.15  # mouth interior: Blender gives it its own material
EYE_DENSITY = 0.5  # eyeballs, re-projected (below): an iris about 20 texels wide at 1024²
TEETH_DENSITY = 0.5  # teeth, re-projected: an incisor about 12 texels wide at 1024²
MARGIN = 12.0 / 1024.0  # UV units between packed islands (the bake pads 16 texels at 1024²)
MIN_GAIN = 1.25  # below this gain in the face's texels per UV unit (linear) the model's layout is kept


@dataclass(eq=False)
class ExportLayout:
    """A head model's export UV layout (see the module docstring). ``uv (T, 2)`` export
    coordinates (``v`` up), ``face_uv (F, 3)`` per-corner indices into them (the model's
    ``faces`` order), ``source_uv (T, 2)`` each export UV vertex's coordinate in the model's
    own layout, ``island (T,)`` its island and ``density (I,)`` each island's texel density
    relative to the face skin's; ``face_texel_gain`` the face skin's texels per UV unit over
    the model layout's (linear)."""

    uv: Tensor
    face_uv: Tensor
    source_uv: Tensor
    island: Tensor
    density: Tensor
    face_texel_gain: float
    faces: Tensor
    mirror: Tensor
    n_vertices: int
    island_lo: np.ndarray  # (I, 2) each island's lower-left corner in the model layout
    island_scale: np.ndarray  # (I,) export UV units per model UV unit
    island_corner: np.ndarray  # (I, 2) its lower-left corner in the export layout
    source: object = None  # the head model
    affine: np.ndarray | None = None  # (I,) bool: the island is the model layout's, moved and scaled (not laid out anew)

    @property
    def packed(self) -> bool:
        """The islands were packed apart (not the model's own layout kept as it is)."""
        return self.face_texel_gain != 1.0 or bool(self.affine is not None and not self.affine.all())

    def seam_extension(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(dst, src) flat texel indices at ``size``: texels just outside an island where it was
        cut from its neighbour (the face skin's border) and the texels across the cut that
        continue the surface there. Copying ``src`` into ``dst`` before an image-space filter
        (erosion, blur, the multi-band low pass of :func:`engine.texture.bake_albedo`) makes the
        filter see the surface as continuous, so no seam appears where the two islands meet
        (cached per size)."""
        cache = self.__dict__.setdefault("_seam_extension", {})
        if size not in cache:
            cache[size] = _seam_extension(self, size)
        return cache[size]


_LOCK = threading.Lock()


def export_layout(model) -> ExportLayout:
    """The (cached) export layout of ``model`` (a head model with ``uv``, ``face_uv``,
    ``faces``, ``mirror``, ``n_vertices`` and a ``regions`` dict)."""
    with _LOCK:
        cached = model.__dict__.get("_export_layout")
        if cached is None:
            cached = _build(model)
            model.__dict__["_export_layout"] = cached
        return cached


def _islands(face_uv: np.ndarray, n_uv: int) -> tuple[np.ndarray, int]:
    """Connected components of UV vertices joined by triangles: (island of each UV vertex, count)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a, b = np.concatenate([face_uv[:, 0], face_uv[:, 1], face_uv[:, 2]]), np.concatenate(
        [face_uv[:, 1], face_uv[:, 2], face_uv[:, 0]])
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n_uv, n_uv))
    count, labels = connected_components(graph, directed=False)
    return labels, count


def _shelf_pack(sizes: np.ndarray, margin: float) -> tuple[np.ndarray, float]:
    """Shelf packing of boxes ``sizes (I, 2)`` (width, height) into rows of width 1, tallest
    first: (lower-left corners (I, 2), total height)."""
    order = np.argsort(-sizes[:, 1], kind="stable")
    corners = np.zeros_like(sizes)
    x, y, row_h = margin, margin, 0.0
    for i in order:
        w, h = sizes[i]
        if x + w + margin > 1.0 and x > margin:  # next shelf
            y += row_h + margin
            x, row_h = margin, 0.0
        corners[i] = (x, y)
        x += w + margin
        row_h = max(row_h, h)
    return corners, y + row_h + margin


def _build(model) -> ExportLayout:
    uv = model.uv.detach().cpu().double().numpy()
    face_uv = model.face_uv.detach().cpu().numpy().astype(np.int64)
    faces = model.faces.detach().cpu().numpy().astype(np.int64)
    regions = getattr(model, "regions", {}) or {}

    def region_faces(name: str) -> np.ndarray:
        r = regions.get(name)
        return np.zeros(len(faces), bool) if r is None else r.detach().cpu().numpy()[faces].all(1)

    face_skin = region_faces("face_skin")
    own = region_faces("eyes") | region_faces("mouth_interior") | region_faces("teeth")
    # 1. cut the face skin out: UV vertices it shares with other triangles get a copy for those
    shared = np.intersect1d(face_uv[face_skin].ravel(), face_uv[~face_skin].ravel())
    remap = np.arange(len(uv))
    remap[shared] = len(uv) + np.arange(len(shared))
    new_face_uv = face_uv.copy()
    new_face_uv[~face_skin] = remap[face_uv[~face_skin]]
    source = np.concatenate([uv, uv[shared]])
    # 2. islands and their densities
    island, count = _islands(new_face_uv, len(source))
    tri_island = island[new_face_uv[:, 0]]
    density = np.full(count, REST_DENSITY)
    eye_tris, teeth_tris = region_faces("eyes"), region_faces("teeth")
    affine = np.ones(count, bool)
    kind = np.zeros(count, np.int8)  # 1: an eyeball, 2: a tooth (laid out anew)
    coords = source.copy()  # each UV vertex's place within its island, in the model layout's units
    for k in range(count):
        tris = tri_island == k
        if face_skin[tris].any():
            density[k] = 1.0
        elif tris.any() and eye_tris[tris].all():
            density[k], affine[k], kind[k] = EYE_DENSITY, False, 1
        elif tris.any() and teeth_tris[tris].all():
            density[k], affine[k], kind[k] = TEETH_DENSITY, False, 2
        elif own[tris].all():
            density[k] = OWN_MATERIAL_DENSITY
    if not affine.all():
        _lay_out_anew(model, coords, new_face_uv, faces, tri_island, kind, face_skin)
    # (UV vertices no triangle uses are islands of their own: they are not packed)
    packed = np.bincount(tri_island, minlength=count) > 0
    lo, hi = np.zeros((count, 2)), np.zeros((count, 2))
    for k in np.flatnonzero(packed):
        pts = coords[np.unique(new_face_uv[tri_island == k])]
        lo[k], hi[k] = pts.min(0), pts.max(0)
    extent = (hi - lo) * density[:, None]
    # 3. the largest common scale whose shelf packing fits the unit square
    low, high = 0.0, 1.0 / max(float(extent.max()), 1e-9)
    for _ in range(40):
        mid = 0.5 * (low + high)
        if _shelf_pack(extent[packed] * mid, MARGIN)[1] <= 1.0:
            low = mid
        else:
            high = mid
    corners = np.zeros((count, 2))
    corners[packed] = _shelf_pack(extent[packed] * low, MARGIN)[0]
    scale = low * density  # export UV units per model UV unit, per island
    if low < MIN_GAIN:  # the model's own layout already gives the face its texels (e.g. ICT): keep it
        island, count = _islands(face_uv, len(uv))
        return ExportLayout(uv=model.uv.detach().cpu().float(), face_uv=torch.from_numpy(face_uv),
                            source_uv=model.uv.detach().cpu().float(), island=torch.from_numpy(island),
                            density=torch.ones(count), face_texel_gain=1.0, faces=model.faces.detach().cpu(),
                            mirror=model.mirror.detach().cpu(), n_vertices=int(model.n_vertices),
                            island_lo=np.zeros((count, 2)), island_scale=np.ones(count),
                            island_corner=np.zeros((count, 2)), source=model)
    out = (coords - lo[island]) * scale[island][:, None] + corners[island]
    return ExportLayout(uv=torch.from_numpy(out).float(), face_uv=torch.from_numpy(new_face_uv),
                        source_uv=torch.from_numpy(source).float(), island=torch.from_numpy(island),
                        density=torch.from_numpy(density).float(), face_texel_gain=float(low),
                        faces=model.faces.detach().cpu(), mirror=model.mirror.detach().cpu(),
                        n_vertices=int(model.n_vertices), island_lo=lo, island_scale=scale,
                        island_corner=corners, source=model, affine=affine)


def _lay_out_anew(model, coords: np.ndarray, face_uv: np.ndarray, faces: np.ndarray, tri_island: np.ndarray,
                  kind: np.ndarray, face_skin: np.ndarray) -> None:
    """Lay the UV vertices (in ``coords``, in place) of the eye islands (``kind`` 1) and the
    teeth's (2) out anew, in model-layout units at the face skin's UV units per metre: an
    eyeball by Lambert's azimuthal equal-area projection of the template about its centre and
    forward axis (+Z), a tooth by its projection on its two main axes."""
    from engine.generator.eyes import eye_frames

    X = model.template.detach().cpu().double().numpy()
    uv = coords
    # the face skin's UV units per metre (square root of the area ratio)
    tri = face_skin.nonzero()[0]
    area = lambda p: 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=-1)  # noqa: E731
    a3 = area(X[faces[tri]])
    p2 = np.concatenate([uv[face_uv[tri]], np.zeros((len(tri), 3, 1))], -1)
    per_metre = float(np.sqrt(area(p2).sum() / max(a3.sum(), 1e-12)))
    frames = eye_frames(model) if (kind == 1).any() else None
    for k in np.flatnonzero(kind == 2):
        tris = np.flatnonzero(tri_island == k)
        corner_uv, corner_v = face_uv[tris].ravel(), faces[tris].ravel()
        p = X[corner_v] - X[corner_v].mean(0)
        axes = np.linalg.svd(p, full_matrices=False)[2][:2]  # the tooth's two longest extents
        uv[corner_uv] = p @ axes.T * per_metre
    for k in np.flatnonzero(kind == 1):
        tris = np.flatnonzero(tri_island == k)
        corner_uv, corner_v = face_uv[tris].ravel(), faces[tris].ravel()
        centre = frames.centres[0 if X[corner_v, 0].mean() > 0 else 1]
        d = X[corner_v] - centre
        r = np.linalg.norm(d, axis=1).clip(1e-9)
        theta = np.arccos(np.clip(d[:, 2] / r, -1, 1))
        phi = np.arctan2(d[:, 1], d[:, 0])
        rho = 2.0 * r * np.sin(0.5 * theta)  # metres on the disc
        new = (np.stack([rho * np.cos(phi), rho * np.sin(phi)], -1) * per_metre).reshape(-1, 3, 2)
        if np.sum(np.sign(_signed_area(new)) * np.sign(_signed_area(uv[face_uv[tris]]))) < 0:
            new[..., 0] *= -1.0  # keep the model layout's orientation (a texture is not mirrored)
        uv[corner_uv] = new.reshape(-1, 2)


def _signed_area(p: np.ndarray) -> np.ndarray:
    """Twice the signed area of UV triangles ``(N, 3, 2)`` (positive: counter-clockwise)."""
    a, b, c = p[:, 0], p[:, 1], p[:, 2]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def _seam_extension(exp: ExportLayout, size: int) -> tuple[np.ndarray, np.ndarray]:
    """See :meth:`ExportLayout.seam_extension`."""
    from engine.texture import uv_layout

    lay = uv_layout(exp, size)
    model_lay = uv_layout(exp.source, size)
    tri_island = exp.island.numpy()[exp.face_uv.numpy()[:, 0]]
    texel_tri = np.full(size * size, -1, np.int64)
    texel_tri[lay.texels.numpy()] = lay.tri.numpy()
    dst = lay.pad_dst
    near = tri_island[texel_tri[lay.pad_src]]  # the island each padding texel belongs to
    if exp.affine is not None:  # an island laid out anew (an eyeball, a tooth) continues nowhere else
        keep = exp.affine[near]
        dst, near = dst[keep], near[keep]
    rows, cols = np.divmod(dst, size)
    q = np.stack([(cols + 0.5) / size, 1.0 - (rows + 0.5) / size], -1)
    m = (q - exp.island_corner[near]) / exp.island_scale[near][:, None] + exp.island_lo[near]  # model-layout UV
    mi = np.floor(m[:, 0] * size).astype(np.int64)
    mj = np.floor((1.0 - m[:, 1]) * size).astype(np.int64)
    inside = (mi >= 0) & (mi < size) & (mj >= 0) & (mj < size)
    model_tri = np.full(size * size, -1, np.int64)
    model_tri[model_lay.texels.numpy()] = model_lay.tri.numpy()
    model_bary = np.zeros((size * size, 3), np.float64)
    model_bary[model_lay.texels.numpy()] = model_lay.bary.numpy()
    flat = np.where(inside, mj.clip(0, size - 1) * size + mi.clip(0, size - 1), 0)
    tri = np.where(inside, model_tri[flat], -1)
    across = (tri >= 0) & (tri_island[np.maximum(tri, 0)] != near)  # the surface continues in another island
    corners = exp.uv.numpy().astype(np.float64)[exp.face_uv.numpy()[tri[across]]]  # (K, 3, 2)
    target = (model_bary[flat[across]][:, :, None] * corners).sum(1)
    ti = np.floor(target[:, 0] * size).astype(np.int64).clip(0, size - 1)
    tj = np.floor((1.0 - target[:, 1]) * size).astype(np.int64).clip(0, size - 1)
    src = tj * size + ti
    ok = lay.covered.reshape(-1)[src]
    return dst[across][ok], src[ok]


def to_export_layout(maps: Tensor, model, size: int | None = None) -> Tensor:
    """Maps ``(B, C, S, S)`` in ``model``'s own UV layout -> the same maps ``(B, C, size,
    size)`` in its export layout (``size`` default ``S``): every texel of an export island
    samples (bilinearly) the model-layout map where its surface point lies; texels outside
    the islands are padded from the nearest covered texel
    (:func:`engine.texture.texture_image`)."""
    from engine.texture import texture_image, uv_layout

    lay_in = uv_layout(model, int(maps.shape[-1]))
    B, C, S, _ = maps.shape
    size = int(size or S)
    exp = export_layout(model)
    lay = uv_layout(exp, size)
    with torch.no_grad():
        flat = maps.detach().float().cpu().reshape(B, C, S * S)
        src = lay_in.pad_from  # islands' borders padded first: samples there do not read empty texels
        flat = flat.index_select(2, torch.where(src >= 0, src, torch.arange(S * S)))
        corners = exp.source_uv[exp.face_uv[lay.tri]]  # (N, 3, 2)
        st = (lay.bary[:, :, None] * corners).sum(1)
        grid = torch.stack([st[:, 0] * 2.0 - 1.0, 1.0 - st[:, 1] * 2.0], -1)[None, :, None, :].expand(B, -1, -1, -1)
        values = Fn.grid_sample(flat.reshape(B, C, S, S), grid, mode="bilinear", padding_mode="border",
                                align_corners=False)[..., 0]  # (B, C, N)
    images = [texture_image(v.T.numpy(), lay) for v in values]  # (size, size, C) each
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def layout_report(model, size: int = 1024) -> str:
    """Lines comparing the model's own layout with its export layout at ``size`` texels:
    coverage and face-skin texels (``python -m engine.export.uv_pack [--model M] [--size S]``)."""
    from engine.texture import uv_layout

    exp = export_layout(model)
    lines = [f"{getattr(model, 'name', 'model')}: {len(exp.density)} islands in the export layout, the face's "
             f"texels per UV unit x{exp.face_texel_gain:.2f} (linear)"]
    face_tris = model.regions["face_skin"][model.faces] if "face_skin" in model.regions else None
    for label, m in (("model layout ", model), ("export layout", exp)):
        lay = uv_layout(m, size)
        face = int(face_tris[lay.tri].all(1).sum()) if face_tris is not None else 0
        lines.append(f"  {label} at {size}²: coverage {100 * len(lay.texels) / size ** 2:.1f} %, "
                     f"face-skin texels {face:,}")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    from engine.errors import cli_errors
    from engine.head import load_head_model

    ap = argparse.ArgumentParser(description="The export UV layout of a head model against its own.")
    ap.add_argument("--model", default="open", choices=["open", "ict", "flame"])
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--size", type=int, default=1024)
    a = ap.parse_args()
    with cli_errors():
        print(layout_report(load_head_model(a.model, a.model_path), a.size))
