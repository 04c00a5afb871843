"""Texture baking: a UV albedo map from the photo through an estimate (``albedo.png``).

The UV layout of a head model never changes, so everything that depends only on it — which
triangle and barycentrics every texel has, where its mirror texel lies, which covered texel
pads each texel outside the islands — is computed once per (head model, size) and kept
(:func:`uv_layout`). A bake then works on the covered texels only:

1. per-vertex attributes (photo position, visibility, shading, fitted albedo) are
   interpolated to the texels in one gather;
2. the photo is sampled there and divided by the shading (where seen, with a soft
   confidence: visible, facing the camera (given ``facing``), eroded at the silhouette,
   feathered);
   With the photo's landmarks, a skin mask keeps hair, background and props out: outside the
   landmarks' hull only texels whose colour matches this face's skin (:func:`skin_probability`)
   are used; inside it the features (brows, eyes, lips, nose tip, beard zone:
   :func:`feature_weight`) always count, and the plain skin between them (forehead, the
   nose's bridge, under the eyes, cheeks) only where skin-coloured (a glasses frame, a strand
   of hair, a cast shadow or a highlight is left out);
3. texels not seen take their mirror texel's photo albedo when that one was seen; the rest
   is the face's median skin albedo, blended with the seen texels over several frequency
   bands (:func:`multiband_blend`: no seam where the photo ends) — or, without landmarks,
   the estimate's per-vertex albedo;
4. texels outside the UV islands copy their nearest covered texel (so mip-maps and bilinear
   filtering at seams never pick up a background colour).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as Fn
from torch import Tensor

from engine.render.uv import rasterize_uv, vertex_uv

__all__ = ["MOUTH_ALBEDO", "UVLayout", "bake_albedo", "eyelid_weight", "feature_weight", "flip_uv_map", "multiband_blend",
           "paint_parts", "skin_probability", "texture_image", "uv_layout"]


@dataclass
class UVLayout:
    """What a UV layout of ``size × size`` texels means for one head model (CPU tensors).

    ``texels (N,)`` flat indices of the covered texels; ``tri (N,)``/``bary (N, 3)`` their
    triangle and barycentrics; ``mirror_grid (N, 2)`` the ``grid_sample`` coordinates of each
    texel's mirror texel (same barycentrics on the mirror vertices' UVs) and ``has_mirror (N,)``
    how much of it has a mirror partner; ``pad_from (size·size,)`` for every texel the flat
    index of the nearest covered texel (itself when covered; -1 beyond the padding band);
    ``pad_dst``/``pad_src`` the texels outside the islands within that band and the covered
    texels they copy (:func:`texture_image`'s gather, flat indices);
    ``interpolation`` the sparse ``(N, V)`` matrix of the texels' barycentrics on their
    triangle's vertices (per-vertex values to texels in one product) and ``mirror_sampling``
    the sparse ``(N, N)`` bilinear weights of each texel's mirror sample on the covered texels
    (``grid_sample`` at ``mirror_grid`` of an image that is zero outside the islands) — the
    bake's two gathers as CSR products.
    """

    size: int
    texels: Tensor
    tri: Tensor
    bary: Tensor
    mirror_grid: Tensor
    has_mirror: Tensor
    pad_from: Tensor
    covered: np.ndarray  # (size, size) bool
    pad_dst: np.ndarray
    pad_src: np.ndarray
    interpolation: Tensor  # sparse CSR (N, V)
    mirror_sampling: Tensor  # sparse CSR (N, N)


_LOCK = threading.Lock()
PAD_BAND = 16  # texels (at 1024²) of edge padding around the UV islands


def uv_layout(model, size: int) -> UVLayout:
    """The (cached) :class:`UVLayout` of ``model`` at ``size`` texels (thread-safe)."""
    cache = model.__dict__.setdefault("_uv_layout_cache", {})
    with _LOCK:
        if size not in cache:
            cache[size] = _build_layout(model, size)
        return cache[size]


def _build_layout(model, size: int) -> UVLayout:
    import cv2

    with torch.no_grad():
        uv, face_uv, faces = model.uv.cpu(), model.face_uv.cpu(), model.faces.cpu()
        fr = rasterize_uv(uv, face_uv, size)
        mirror = model.mirror.cpu()
        has = mirror >= 0
        corner_uv = _mirror_corner_uv(uv, face_uv, faces, mirror, model.n_vertices)  # (F, 3, 2)
        corners = torch.cat([corner_uv, has[faces].float()[..., None]], -1)[fr.fg_tri]  # (N, 3, 3)
        m = (fr.fg_bary[:, :, None] * corners).sum(1)  # (N, 3): mirror UV and how much has a mirror
        mirror_grid = torch.stack([m[:, 0] * 2.0 - 1.0, 1.0 - m[:, 1] * 2.0], -1)
        covered = fr.mask[0].numpy()
    # nearest covered texel of every texel: OpenCV labels each pixel with its nearest zero pixel,
    # numbered in raster order from 1 (covered texels are the zeros and map to themselves)
    outside = (~covered).astype(np.uint8)
    dist, labels = cv2.distanceTransformWithLabels(outside, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    zeros = np.flatnonzero(outside.reshape(-1) == 0)
    pad_from = zeros[labels.reshape(-1) - 1] if len(zeros) else np.arange(size * size)
    # a band around the islands (enough for mip-maps down to 1/PAD_BAND) copies the edge; texels
    # farther out are never sampled and get the islands' mean colour (a clean texture image)
    pad_from = np.where(dist.reshape(-1) <= PAD_BAND * size / 1024.0, pad_from, -1)
    outside_flat = outside.reshape(-1).astype(bool)
    pad_dst = np.flatnonzero(outside_flat & (pad_from >= 0))
    layout = UVLayout(size=size, texels=fr.fg_index.clone(), tri=fr.fg_tri.clone(), bary=fr.fg_bary.clone(),
                      mirror_grid=mirror_grid, has_mirror=m[:, 2].clamp(0, 1),
                      pad_from=torch.from_numpy(pad_from.astype(np.int64)), covered=covered,
                      pad_dst=pad_dst, pad_src=pad_from[pad_dst],
                      interpolation=_csr(faces[fr.fg_tri].reshape(-1), fr.fg_bary.reshape(-1), 3,
                                         (len(fr.fg_index), model.n_vertices)),
                      mirror_sampling=_bilinear_matrix(mirror_grid, fr.fg_index, size))
    return layout


def _mirror_corner_uv(uv: Tensor, face_uv: Tensor, faces: Tensor, mirror: Tensor, n_vertices: int) -> Tensor:
    """``(F, 3, 2)``: for every corner of every triangle, the UV of its mirror vertex *in the
    mirror triangle* (the triangle whose vertices are the corners' mirrors): so a texel's mirror
    point stays inside one island even where a vertex has several UVs (seams, and the cuts of
    an export layout). Triangles without a mirror triangle fall back to one UV per vertex."""
    f = faces.numpy().astype(np.int64)
    m = mirror.numpy().astype(np.int64)
    fuv = face_uv.numpy().astype(np.int64)
    uvs = uv.numpy()
    partner = np.where(m >= 0, m, np.arange(len(m)))
    out = vertex_uv(uv, face_uv, faces, n_vertices).numpy()[partner[f]]  # the per-vertex fallback
    index = {tuple(sorted(tri)): i for i, tri in enumerate(f.tolist())}
    mf = partner[f]
    for i, tri in enumerate(mf.tolist()):
        j = index.get(tuple(sorted(tri)))
        if j is None or (m[f[i]] < 0).any():
            continue
        pos = [f[j].tolist().index(v) for v in tri]
        out[i] = uvs[fuv[j, pos]]
    return torch.from_numpy(np.ascontiguousarray(out, np.float32))


def _csr(columns: Tensor, values: Tensor, per_row: int, shape: tuple[int, int]) -> Tensor:
    """A sparse CSR float32 matrix with ``per_row`` entries in every row (``columns`` and
    ``values`` flat, row-major)."""
    import warnings

    rows = torch.arange(shape[0] + 1, dtype=torch.int64) * per_row
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(rows, columns.to(torch.int64).contiguous(),
                                       values.to(torch.float32).contiguous(), size=shape, check_invariants=False)


def _bilinear_matrix(grid: Tensor, texels: Tensor, size: int) -> Tensor:
    """The ``(N, N)`` weights of bilinear samples at ``grid (N, 2)`` ([-1, 1], ``grid_sample``'s
    convention: ``align_corners=False``, border padding) of a ``size × size`` image that is
    zero except at the flat ``texels (N,)``: ``M @ values(texels)`` = the samples."""
    x = (((grid[:, 0].double() + 1.0) * size - 1.0) / 2.0).clamp(0, size - 1)
    y = (((grid[:, 1].double() + 1.0) * size - 1.0) / 2.0).clamp(0, size - 1)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=size - 1), (y0 + 1).clamp(max=size - 1)
    slot = torch.full((size * size,), -1, dtype=torch.int64)
    slot[texels] = torch.arange(len(texels))
    cols = torch.stack([slot[y0 * size + x0], slot[y0 * size + x1], slot[y1 * size + x0], slot[y1 * size + x1]], 1)
    w = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
    off = cols < 0  # a corner outside the islands reads zero: weight 0 (on any column)
    return _csr(torch.where(off, 0, cols).reshape(-1), torch.where(off, 0.0, w).reshape(-1), 4, (len(texels), len(texels)))


def flip_uv_map(uv_map: Tensor, layout: UVLayout) -> Tensor:
    """The UV map of the left/right mirrored face (CEST's reflectance symmetry): every
    covered texel takes the (bilinear) value at its mirror texel (``layout.mirror_grid``),
    blended with its own value by ``layout.has_mirror`` (texels without a mirror partner keep
    theirs); texels outside the islands are unchanged. ``uv_map (B, C, S, S)`` with
    ``S == layout.size``; differentiable. An involution up to bilinear resampling:
    ``flip_uv_map(flip_uv_map(x)) ≈ x`` on covered texels."""
    B, C, H, W = uv_map.shape
    if H != layout.size or W != layout.size:
        raise ValueError(f"uv_map is {H}x{W}, the layout is {layout.size}x{layout.size}")
    dev, dt = uv_map.device, uv_map.dtype
    flat = uv_map.reshape(B, C, H * W)
    # texels around the islands copy their nearest covered texel first, so that bilinear
    # samples at island borders do not mix in texels outside the layout
    src = layout.pad_from.to(dev)
    padded = flat.index_select(2, torch.where(src >= 0, src, torch.arange(H * W, device=dev))).view(B, C, H, W)
    grid = layout.mirror_grid.to(dev, dt)[None, :, None, :].expand(B, -1, -1, -1)
    mirrored = Fn.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0]
    texels = layout.texels.to(dev)
    has = layout.has_mirror.to(dev, dt)
    values = has * mirrored + (1.0 - has) * flat[:, :, texels]
    return flat.index_copy(2, texels, values).reshape(B, C, H, W)


def _sample(image: Tensor, grid: Tensor) -> Tensor:
    """Bilinear samples ``(N, C)`` of ``image (C, H, W)`` at ``grid (N, 2)`` in [-1, 1]."""
    out = Fn.grid_sample(image[None], grid[None, :, None, :].to(image.dtype), mode="bilinear",
                         padding_mode="border", align_corners=False)
    return out[0, :, :, 0].T


def texture_image(values: np.ndarray, layout: UVLayout, beyond: np.ndarray | None = None) -> np.ndarray:
    """The ``(size, size, C)`` texture image of per-texel ``values (N, C)`` (any dtype, texel
    order of ``layout.texels``): texels outside the UV islands take their nearest covered
    texel's value within a band of ``PAD_BAND`` texels (per 1024) around the islands, and
    ``beyond (C,)`` farther out (default: the islands' mean value, truncated to ``values``'
    dtype like ``astype``)."""
    values = np.ascontiguousarray(values)
    n, C = values.shape
    size = layout.size
    if beyond is None:
        beyond = (np.ones(n, np.float64) @ values.astype(np.float64, copy=False)) / max(n, 1)
    mean = np.asarray(beyond).astype(values.dtype)
    flat = np.empty((size * size, C), values.dtype)
    for c in range(C):  # one channel at a time: ~10x faster than broadcasting a (C,) row
        flat[:, c] = mean[c]
    rows = _items(flat)
    rows[layout.texels.numpy()] = _items(values)
    rows[layout.pad_dst] = rows[layout.pad_src]
    return flat.reshape(size, size, C)


def _items(a: np.ndarray) -> np.ndarray:
    """A C-contiguous ``(M, C)`` array as ``(M,)`` opaque items of C values (a view): numpy
    gathers and scatters one element per row instead of C, several times faster."""
    return a.view(f"V{a.itemsize * a.shape[-1]}")[:, 0]


def _rows_at(a: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``a[index]`` for a C-contiguous ``(M, C)`` array, gathered as whole rows (:func:`_items`)."""
    return _items(a)[index].view(a.dtype).reshape(-1, a.shape[-1])


def skin_features(rgb: Tensor, eps: float = 0.02) -> Tensor:
    """(N, 3) sRGB [0, 1] -> (N, 3) log red/green and blue/green chromaticities and log luma:
    a space where one person's skin under one light is a compact cluster."""
    r, g, b = rgb.unbind(-1)
    luma = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return torch.stack([torch.log((r + eps) / (g + eps)), torch.log((b + eps) / (g + eps)), torch.log(luma + eps)], -1)


def skin_probability(colours: Tensor, reference: Tensor, keep: float = 2.0, drop: float = 3.5) -> Tensor:
    """How skin-like each colour ``(N, 3)`` is, in [0, 1], given this face's skin ``reference
    (M, 3)`` (sRGB albedo, [0, 1]): the robust distance (median / scaled MAD per feature of
    :func:`skin_features`, with floors) is 1 up to ``keep`` and falls linearly to 0 at
    ``drop``. Hair, background and props differ from the face's skin in brightness or hue."""
    f, ref = skin_features(colours), skin_features(reference)
    med = ref.median(0).values
    floor = torch.tensor([0.04, 0.04, 0.10], dtype=f.dtype)
    scale = torch.maximum((ref - med).abs().median(0).values * 1.4826, floor)
    d = (((f - med) / scale) ** 2).sum(-1).sqrt()
    return ((drop - d) / (drop - keep)).clamp(0, 1)


def multiband_blend(known: np.ndarray, fill: np.ndarray, weight: np.ndarray, band: int = 16,
                    where: np.ndarray | None = None, shape: tuple[int, int] | None = None,
                    extend: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Blend ``known`` ``(H, W, 3)`` over ``fill`` (a colour ``(3,)`` or an image) with weight ``weight (H, W)``
    in [0, 1] in two frequency bands (Burt & Adelson's multi-band blending): detail finer than
    ``band`` texels switches with the weight itself, the overall colour with the weight
    low-passed over ``band`` texels — so a seen region meets its fill without a step, and unseen
    texels of ``known`` (weight 0) never count. The low pass is a normalised convolution at
    1/``band`` resolution (cheap at 1024²). ``where`` (flat texel indices) limits the result to
    those texels: returns ``(len(where), 3)`` instead of the image. With ``shape = (H, W)`` as
    well, ``known (N, 3)``, ``weight (N,)`` and an image ``fill (N, 3)`` are given at the texels
    ``where`` only (every other texel is unseen: weight 0); ``extend = (dst, src)`` (flat
    indices, e.g. :meth:`engine.export.uv_pack.ExportLayout.seam_extension`) then copies texels
    across cut seams before the low pass, so it runs over the surface as if uncut."""
    import cv2

    if shape is not None and where is None:
        raise ValueError("multiband_blend: texel values (shape=...) need their flat indices (where=...)")
    H, W = shape if shape is not None else weight.shape
    small = (max(1, W // band), max(1, H // band))

    def low(x: np.ndarray) -> np.ndarray:
        y = cv2.resize(x, small, interpolation=cv2.INTER_AREA)
        y = cv2.GaussianBlur(y, (0, 0), 1.0)
        return cv2.resize(y, (W, H), interpolation=cv2.INTER_LINEAR)

    known = np.ascontiguousarray(known, np.float32)
    w = np.ascontiguousarray(weight, np.float32)
    if shape is not None:  # per-texel values: the weight and weighted colour as images for the low pass
        w_img = np.zeros(H * W, np.float32)
        w_img[where] = w
        kw_img = np.zeros((H * W, 3), np.float32)
        _items(kw_img)[where] = _items((torch.from_numpy(known) * torch.from_numpy(w)[:, None]).numpy())
        if extend is not None:
            w_img[extend[0]] = w_img[extend[1]]
            kw_img[extend[0]] = kw_img[extend[1]]
        low_w, low_kw = low(w_img.reshape(H, W)), low(kw_img.reshape(H, W, 3))
    else:
        low_w, low_kw = low(w), low(known * w[..., None])
        if where is not None:
            w, known = w.reshape(-1)[where], _rows_at(known.reshape(-1, 3), where)
    if where is not None:  # only the texels asked for
        low_w = low_w.reshape(-1)[where]
        low_kw = _rows_at(low_kw.reshape(-1, 3), where)
    # the per-texel arithmetic in torch: numpy broadcasts an (N, 1) weight over (N, 3) slowly
    low_w_t = torch.from_numpy(np.clip(low_w, 0.0, 1.0))[..., None]
    low_known = torch.from_numpy(low_kw) / low_w_t.clamp_min(1e-4)  # the seen colour's low band, where any was seen
    fill = np.asarray(fill, np.float32)
    if fill.ndim > 1 and shape is None:  # a fill image (H, W, 3) or (H·W, 3)
        fill = fill.reshape(-1, 3)
        fill = fill[where] if where is not None else fill.reshape(H, W, 3)
    fill_t = torch.from_numpy(np.ascontiguousarray(fill)).expand_as(low_known)
    # detail of the seen texels at full weight + low band blended with the low-passed weight
    out = torch.lerp(fill_t, low_known, low_w_t)
    out += torch.from_numpy(w)[..., None] * (torch.from_numpy(known) - low_known)
    return out.numpy()


#: a vertex's displacement under a full blink (mm) below which it is not eyelid, above which it is
EYELID_MM = (2.0, 5.0)
#: ... and above which it is the lid's margin, which keeps the photo's lash line (a blink
#: carries it down to the closed lid's edge, where lashes belong)
MARGIN_MM = (9.5, 11.5)


def eyelid_weight(model) -> Tensor:
    """``(V,)`` in [0, 1]: how much each vertex is eyelid skin that a blink pulls over the eye
    (a smoothstep of its displacement under ``eyeBlinkLeft`` / ``eyeBlinkRight`` between
    :data:`EYELID_MM`, falling back to 0 at the lid's margin, :data:`MARGIN_MM`, which keeps the
    photo's lash line). With the eyes open in the photo those vertices lie folded at the lash
    line, so the photo gives them the lashes' and the eye's dark, which a blink spreads over
    the closed lid as a dark smudge: the texture takes them from the skin fill instead
    (multiply the bake's visibility by ``1 − eyelid_weight``). Also when the fit reads the eyes
    as (partly) closed: a closed lid is skin, and a fitted blink is often a squint or detector
    noise. Eyeballs get 0; a model without ARKit blink units gets all zeros."""
    from engine.generator.layout import smoothstep
    from engine.head.arkit import arkit_name

    names = [arkit_name(n) for n in model.expression_names]
    w = torch.zeros(model.n_vertices)
    for unit in ("eyeBlinkLeft", "eyeBlinkRight"):
        if unit not in names:
            continue
        d = model.expression_basis[names.index(unit)].detach().float().cpu().norm(dim=-1) * 1000.0
        w = torch.maximum(w, smoothstep(*EYELID_MM, d) * (1 - smoothstep(*MARGIN_MM, d)))
    eyes = getattr(model, "regions", {}).get("eyes")
    if eyes is not None:
        w[eyes.cpu()] = 0.0
    return w


#: :func:`feature_weight`'s zones (metres on the template): the brows' band around the brow
#: landmarks' line (below it, above it), where the photo's hair colour belongs; each eye's
#: ellipse around its landmark contour (how far beyond it: sideways, above, below), where the
#: lids, lashes, eyeliner and the eye do
BROW_BAND_M = (0.009, 0.005)
EYE_ZONE_M = (0.007, 0.004, 0.0025)
FEATURE_RAMP_M = 0.002  # soft edge of every feature zone


def feature_weight(model) -> Tensor:
    """``(V,)`` in [0, 1]: 1 where a photo colour unlike the face's skin belongs in the texture
    inside the face — brows, eyes with their lids and lashes, lips, the nose's tip, wings and
    nostrils, the beard and moustache zones (:func:`engine.generator.layout.feature_zones` on
    the model's template and its iBUG-68 points), the eyeballs and the mouth — and 0 on the
    plain skin between them (forehead, temples, the nose's bridge, cheeks, under the eyes).
    There :func:`bake_albedo` keeps only skin-coloured photo texels even inside the landmarks'
    hull: a glasses frame, a strand of hair or a finger in front of the cheek is left out of
    the texture (the mirror texel or the skin fill takes its place). Kept per model (the
    template never changes)."""
    from engine.generator.layout import feature_zones, smoothstep
    from engine.generator.texels import model_cache

    cache = model_cache(model)
    if "texture_features" in cache:
        return cache["texture_features"]
    with torch.no_grad():
        P = model.template.detach().cpu().double().numpy()
        lm = model.landmarks(model.template[None])[0].detach().double().cpu().numpy()
    z = feature_zones(P, lm)
    ramp = FEATURE_RAMP_M
    off, along = z["brow_offset"], z["brow_along"]
    brows = ((1 - smoothstep(BROW_BAND_M[0], BROW_BAND_M[0] + ramp, -off))
             * (1 - smoothstep(BROW_BAND_M[1], BROW_BAND_M[1] + ramp, off))
             * smoothstep(-0.4, -0.2, along) * (1 - smoothstep(1.2, 1.4, along)))

    def ellipse(centre: np.ndarray, half_w: float, half_h: float) -> np.ndarray:  # seen from the front
        r = np.sqrt(((P[:, 0] - centre[0]) / half_w) ** 2 + ((P[:, 1] - centre[1]) / half_h) ** 2)
        return 1 - smoothstep(1.0, 1.0 + ramp / half_h, r)

    def eye(c: np.ndarray) -> np.ndarray:  # around one eye's contour, on the front of the face
        half_w, half_h = 0.5 * np.ptp(c[:, 0]) + EYE_ZONE_M[0], 0.5 * np.ptp(c[:, 1])
        upper = P[:, 1] > c[:, 1].mean()  # the upper half reaches further (eyeliner, lid)
        zone = np.where(upper, ellipse(c.mean(0), half_w, half_h + EYE_ZONE_M[1]),
                        ellipse(c.mean(0), half_w, half_h + EYE_ZONE_M[2]))
        return zone * (P[:, 2] > c[:, 2].min() - 0.012)

    eyes = np.maximum(eye(lm[36:42]), eye(lm[42:48]))
    mouth = lm[48:60]  # the lips and a margin around them
    lips = ellipse(mouth.mean(0), 0.5 * np.ptp(mouth[:, 0]) + 0.003, 0.5 * np.ptp(mouth[:, 1]) + 0.003)
    # the nose's tip, wings and nostrils (often redder or shinier than the cheeks); its bridge,
    # where glasses rest, is plain skin
    nose = np.maximum(ellipse(lm[33], 0.5 * np.ptp(lm[31:36, 0]) + 0.003, 0.005),
                      ellipse(0.5 * (lm[30] + lm[33]), 0.5 * np.ptp(lm[31:36, 0]) + 0.004, 0.5 * (lm[29, 1] - lm[33, 1])))
    w = np.maximum.reduce([brows, eyes, lips, nose, z["beard"], z["moustache"]]).astype(np.float32)
    w = torch.from_numpy(w)
    for region in ("eyes", "mouth_interior", "teeth"):
        if region in getattr(model, "regions", {}):
            w[model.regions[region].cpu()] = 1.0
    cache["texture_features"] = w
    return w


#: facing (cosine between a vertex's normal and the view ray) below which a photo texel has
#: no weight, and above which it has full weight (smoothstep between)
FACING_RAMP = (0.15, 0.45)


def _hull_mask(landmarks_px: Tensor, H: int, W: int) -> np.ndarray:
    """(H, W) bool: the convex hull of the 68 landmarks (jaw line and brows: the inner face,
    whose features — brows, eyes, lips — belong in the texture whatever their colour)."""
    import cv2

    pts = np.round(landmarks_px.detach().cpu().numpy()[:, :2]).astype(np.int32)
    mask = np.zeros((H, W), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(pts), 1)
    return mask.astype(bool)


def bake_albedo(model, vertices_px: Tensor, visibility: Tensor, shading_v: Tensor, albedo_v: Tensor,
                source: Tensor, size: int = 1024, landmarks_px: Tensor | None = None,
                fill_map: Tensor | None = None, facing: Tensor | None = None,
                features: Tensor | None = None) -> np.ndarray:
    """Bake a UV albedo texture, uint8 ``(size, size, 3)`` (v up: row 0 is the top of UV space).

    ``vertices_px (V, 3)`` are ``[u, v, depth]`` of the estimate's vertices in the ``source``
    image ``(1, 3, H, W)`` float [0, 1]; ``visibility (V,)`` in [0, 1]; ``shading_v (V, 3)``
    the estimate's SH shading per vertex (≥ 0); ``albedo_v (V, 3)`` its completed per-vertex
    albedo (the fallback where nothing was seen, when no skin mask is made).
    ``model`` is a head model, or its export layout (:func:`engine.export.uv_pack.export_layout`:
    the texture is then baked in the files' layout, its filters running across the seams it cut).
    ``landmarks_px (68, 2)`` in ``source``'s pixels turn on the skin mask and the skin fill:
    outside the landmarks' hull only skin-coloured photo texels are used (hair, background
    and props are left out), and unseen texels are the face's own median skin albedo, blended
    in by :func:`multiband_blend`. ``fill_map (1, 3, h, w)`` (a method's own UV reflectance map,
    e.g. CEST's) replaces that skin colour as the fill where the photo saw nothing, except
    where it does not look like its own skin at the texels the photo saw (hair or background in
    the map): there its skin colour fills.
    ``facing (V,)``: each vertex's ``n · (towards the eye)`` in ``source``'s camera
    (:meth:`engine.face.Decoded.facing`); photo texels then count less the more edge-on they
    were seen (no weight below :data:`FACING_RAMP`'s first value, full weight above its second),
    so the silhouette's blurred, background-mixed and badly shaded pixels give way to the mirror
    texel or the fill instead of leaving a dark seam where the photo ends.
    ``features (V,)`` (:func:`feature_weight`): inside the hull, too, only skin-coloured photo
    texels are used where it is 0 (plain skin: a glasses frame or a strand of hair there is
    left out); where it is 1 (brows, eyes, lips...) every photo texel counts, as before.
    See the module docstring for the steps.
    """
    import cv2

    lay = uv_layout(model, size)
    # an export layout (engine.export.uv_pack) cut some islands apart: filters run across the
    # cuts, and their sizes follow its denser face (the same millimetres on the face as before)
    extend = model.seam_extension(size) if hasattr(model, "seam_extension") else None
    gain = float(getattr(model, "face_texel_gain", 1.0))
    k = 2 * int(round(gain)) + 1  # the erosion's kernel: 3 texels in the model's own layout
    with torch.no_grad():
        H, W = source.shape[-2:]
        if facing is None:
            facing_w = torch.ones_like(visibility, dtype=torch.float32)
        else:  # photo texels seen edge-on are unreliable: their weight falls to 0 towards the silhouette
            from engine.generator.layout import smoothstep

            facing_w = smoothstep(*FACING_RAMP, facing.float().to(visibility.device))
        feature_w = torch.ones_like(facing_w) if features is None else features.float().to(facing_w.device)
        attrs = torch.cat([vertices_px[:, :2], visibility[:, None].float(), shading_v, albedo_v, facing_w[:, None],
                           feature_w[:, None]], -1).float().cpu()
        t = lay.interpolation @ attrs  # (N, 11): every texel's barycentric mix of its triangle's vertices
        u, v, vis, shade, prior, facing_t = t[:, 0], t[:, 1], t[:, 2], t[:, 3:6], t[:, 6:9], t[:, 9]
        feature_t = t[:, 10].clamp(0, 1)
        grid = torch.stack([u * (2.0 / W) - 1.0, v * (2.0 / H) - 1.0], -1)
        photo = _sample(source[0].float().cpu(), grid)
        inside = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (vis >= 0.5)
        photo_alb = (photo / shade.clamp_min(0.08)).clamp(0, 1)
        seen = inside.float() * vis.clamp(0, 1) * facing_t
        fill, skin_w = None, None
        if landmarks_px is not None:
            hull = _hull_mask(landmarks_px, H, W)
            ui = u.round().long().clamp(0, W - 1).numpy()
            vi = v.round().long().clamp(0, H - 1).numpy()
            in_hull = torch.from_numpy(hull[vi, ui]) & inside
            is_ref = in_hull & (vis > 0.5)
            if int((is_ref & (feature_t < 0.5)).sum()) >= 50:  # the face's skin: its plain skin, not its features
                is_ref = is_ref & (feature_t < 0.5)
            ref = photo_alb[is_ref]
            if len(ref) >= 50:
                p_skin = skin_probability(photo_alb, ref)
                # inside the hull the features count whatever their colour, plain skin only when skin-coloured
                skin_w = torch.where(in_hull, feature_t + (1 - feature_t) * p_skin, p_skin)
                fill = ref[p_skin[is_ref] > 0.5].median(0).values
        # soft confidence: visible, facing texels; eroded so silhouette texels do not bleed
        conf_img = np.zeros(size * size, np.float32)
        conf_img[lay.texels.numpy()] = seen.numpy()
        if extend is not None:  # the image filters below run across cut seams
            conf_img[extend[0]] = conf_img[extend[1]]
        conf_img = cv2.erode(conf_img.reshape(size, size), np.ones((k, k), np.uint8))
        conf_img = cv2.GaussianBlur(conf_img, (0, 0), gain * size / 256.0)
        conf = torch.from_numpy(conf_img.reshape(-1))[lay.texels]
        if skin_w is not None:  # applied after the feathering: a masked texel keeps no weight at all
            skin_img = np.ones(size * size, np.float32)
            skin_img[lay.texels.numpy()] = skin_w.numpy()
            if extend is not None:
                skin_img[extend[0]] = skin_img[extend[1]]
            skin_img = cv2.erode(skin_img.reshape(size, size), np.ones((k, k), np.uint8))
            sigma = gain * size / 512.0
            # feathered (no hard line where the hull ends); on the plain skin inside the hull half
            # as much, or a thin gap (a glasses frame left out) would get a third of its weight back
            if features is None:  # no plain skin told apart: one feathering everywhere
                skin_img = cv2.GaussianBlur(skin_img, (0, 0), sigma)
            else:
                plain = np.zeros(size * size, np.float32)
                plain[lay.texels.numpy()] = (in_hull.float() * (1 - feature_t)).numpy()
                plain = cv2.GaussianBlur(plain.reshape(size, size), (0, 0), sigma)
                skin_img = (plain * cv2.GaussianBlur(skin_img, (0, 0), sigma / 2)
                            + (1 - plain) * cv2.GaussianBlur(skin_img, (0, 0), sigma))
            conf = conf * torch.from_numpy(skin_img.reshape(-1))[lay.texels]
        # mirror texels: the photo albedo and the confidence there (one sampling pass)
        m = lay.mirror_sampling @ torch.cat([photo_alb, conf[:, None]], -1)
        mirrored, mconf = m[:, :3], m[:, 3] * lay.has_mirror
        mconf = torch.minimum(mconf, 1 - conf)
        c = conf[:, None]
        if fill is None:
            out = c * photo_alb + mconf[:, None] * mirrored + (1 - c - mconf[:, None]).clamp_min(0) * prior
            return _texture_uint8(out.numpy(), lay)
        # seen (photo or mirror) over the skin fill, multi-band
        known_w = (c + mconf[:, None]).clamp(0, 1)[:, 0]
        known = ((c * photo_alb + mconf[:, None] * mirrored) / (c + mconf[:, None]).clamp_min(1e-4)).clamp(0, 1)
    fill_np = fill.numpy()
    if fill_map is not None:  # the method's UV map at texture size, at the covered texels
        fm = Fn.interpolate(fill_map.detach().float().cpu(), size=(size, size), mode="bilinear", align_corners=False)
        method_fill = fm[0].permute(1, 2, 0).reshape(-1, 3).clamp(0, 1)[lay.texels]
        # the map must look like its own skin where the photo saw skin: where it holds hair or
        # background instead (a network's reflectance beyond what its losses constrain: a dark
        # cap on the scalp) its skin colour takes over
        own_skin = method_fill[(c[:, 0] > 0.5) & (skin_w > 0.5)]
        if len(own_skin) >= 50:
            p_fill = skin_probability(method_fill, own_skin)[:, None]
            method_fill = p_fill * method_fill + (1 - p_fill) * own_skin.median(0).values[None]
        fill_np = method_fill.numpy()
    band = max(4, int(gain * size / 64))  # 16 texels at 1024² in the model's own layout
    blended = multiband_blend(known.numpy(), fill_np, known_w.numpy(), band=band,
                              where=lay.texels.numpy(), shape=(size, size), extend=extend)
    return _texture_uint8(blended, lay)


#: sRGB albedo painted into the texture where Blender gives a part its own material
MOUTH_ALBEDO = (0.30, 0.09, 0.08)  # mouth cavity, gums, tongue (the add-on's MOUTH_RGB)


def paint_parts(image: np.ndarray, layout_model, head, iris_rgb, sclera_rgb) -> np.ndarray:
    """Paint, in place, the parts of a baked albedo ``image (size, size, 3)`` uint8 that the
    photo does not colour: the eyeballs (sclera, the photo's iris around a pupil:
    :func:`engine.generator.eyes.eye_albedo`, at each texel's direction from its eyeball's
    centre), the mouth interior (:data:`MOUTH_ALBEDO`) and the teeth
    (:data:`engine.head.teeth.TEETH_ALBEDO`); their padding follows. ``layout_model`` is the
    layout the image was baked in (a head model or its export layout) and ``head`` the head
    model of its triangles (rest positions, regions). Files opened outside Blender (``head.glb``
    in another program, ``summary.png``) then show eyes, not skin-coloured eyeballs; Blender
    gives these parts their own materials and does not read them. Only an export layout whose
    islands were packed apart (:attr:`engine.export.uv_pack.ExportLayout.packed`) is painted.
    Returns ``image``."""
    from engine.generator.eyes import eye_albedo, eye_frames, eye_look_from_colours
    from engine.head.teeth import TEETH_ALBEDO

    if not getattr(layout_model, "packed", False):
        return image  # a model's own layout may share UV space between parts (ICT's eyes and face)
    size = image.shape[0]
    lay = uv_layout(layout_model, size)
    faces = head.faces.cpu().numpy()
    tri = lay.tri.numpy()
    rows = image.reshape(-1, 3)
    texels = lay.texels.numpy()
    part = np.zeros(len(tri), np.int8)  # 1 eyes, 2 mouth, 3 teeth (later ones win)
    for k, name in ((1, "eyes"), (2, "mouth_interior"), (3, "teeth")):
        if name in head.regions:
            part[head.regions[name].cpu().numpy()[faces].all(1)[tri]] = k
    colours = {2: MOUTH_ALBEDO, 3: TEETH_ALBEDO}
    for k, rgb in colours.items():
        rows[texels[part == k]] = np.round(np.asarray(rgb) * 255.0).astype(np.uint8)
    eyes = np.flatnonzero(part == 1)
    if len(eyes):
        frames = eye_frames(head)
        X = head.template.detach().cpu().double().numpy()
        position = np.einsum("nc,ncd->nd", lay.bary.numpy()[eyes].astype(np.float64), X[faces[tri[eyes]]])
        d = position - frames.centres[np.where(position[:, 0] > 0, 0, 1)]
        d /= np.linalg.norm(d, axis=1, keepdims=True).clip(1e-9)
        look = eye_look_from_colours(iris_rgb, sclera_rgb, float(frames.radii.mean()))
        rows[texels[eyes]] = np.round(eye_albedo(d, look) * 255.0).astype(np.uint8)
    items = _items(rows)
    items[lay.pad_dst] = items[lay.pad_src]
    return image


def _texture_uint8(values: np.ndarray, layout: UVLayout) -> np.ndarray:
    """:func:`texture_image` of per-texel [0, 1] colours as uint8 (rounded; the colour beyond
    the padding band is the mean of the rounding values, truncated)."""
    scaled = np.clip(values, 0.0, 1.0) * 255.0 + 0.5
    beyond = (np.ones(len(scaled), np.float64) @ scaled.astype(np.float64)) / max(len(scaled), 1)
    return texture_image(scaled.astype(np.uint8), layout, beyond=beyond)


