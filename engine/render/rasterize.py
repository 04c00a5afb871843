"""Pure-PyTorch triangle rasteriser with differentiable interpolation and antialiasing.

The API follows nvdiffrast: ``rasterize -> interpolate -> texture -> antialias``.

* :func:`rasterize` decides, per pixel centre, which triangle is nearest. That choice is
  discrete and made without autograd. The barycentrics and depth it returns are then
  recomputed *with* autograd from the screen-space vertices at the pixel centres, so
  everything interpolated from them is differentiable w.r.t. vertex positions (like
  nvdiffrast's ``rast_out``), except for changes of the triangle id itself.
* :func:`antialias` blends colours across silhouette edges (nvdiffrast-style analytic
  antialiasing) so image-space losses also get gradients w.r.t. contour positions.

Implementation: per-triangle bounding boxes are expanded into (triangle, pixel) candidates
with ``repeat_interleave`` in chunks, edge functions are evaluated at pixel centres, and the
depth test is one ``scatter_reduce(amin)`` over an int64 key packing (depth, triangle id).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
import torch.nn.functional as Fn

__all__ = [
    "Fragments",
    "rasterize",
    "interpolate",
    "interpolate_foreground",
    "scatter_foreground",
    "texture",
    "face_neighbours",
    "antialias",
    "soft_silhouette",
]

_INT64_MAX = torch.iinfo(torch.int64).max
_ID_BITS = 31
_ID_MASK = (1 << _ID_BITS) - 1
_DENSE_MAX = 8  # boxes up to 8x8 pixels take the dense per-shape path ...
_DENSE_MIN_TRIANGLES = 1024  # ... when at least this many triangles share the box shape


@dataclass
class Fragments:
    """Rasteriser output for a batch of meshes.

    ``tri_id (B,H,W)`` int64 face index (-1 = background); ``bary (B,H,W,3)`` barycentrics
    (perspective-correct for perspective cameras; differentiable w.r.t. ``screen``);
    ``depth (B,H,W)`` camera depth (0 on background; differentiable). The remaining
    fields are what :func:`interpolate` and :func:`antialias` reuse.
    """

    tri_id: Tensor
    bary: Tensor
    depth: Tensor
    screen: Tensor  # (B, V, 3) [u, v, z] the fragments were computed from (keeps autograd)
    faces: Tensor  # (F, 3)
    perspective: bool
    fg_index: Tensor  # (N,) flat indices b*H*W + y*W + x of covered pixels
    fg_tri: Tensor  # (N,) their face index
    fg_bary: Tensor  # (N, 3) their barycentrics (differentiable)
    culled_backfaces: bool = False

    @property
    def mask(self) -> Tensor:
        """Coverage ``(B, H, W)`` bool."""
        return self.tri_id >= 0

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.tri_id.shape[1], self.tri_id.shape[2])


def _monotonic_key(depth: Tensor) -> Tensor:
    """Map float32 depths to int64 in [0, 2^32) with the same order (negatives included)."""
    bits = depth.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    mono = torch.where(bits >= 0, bits, -(bits & 0x7FFFFFFF))
    return mono + (1 << 31)


def signed_area2(screen: Tensor, faces: Tensor) -> Tensor:
    """Twice the signed screen-space area ``(B, F)``; negative = front-facing (CCW faces)."""
    t = screen[:, faces, :2]
    e1 = t[:, :, 1] - t[:, :, 0]
    e2 = t[:, :, 2] - t[:, :, 0]
    return e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]


def _screen_bary(tri: Tensor, px: Tensor, py: Tensor) -> Tensor:
    """Screen-space barycentrics ``(N, 3)`` of points ``(px, py)`` in triangles ``(N, 3, >=2)``.

    Coordinates are taken relative to vertex 0 to keep float32 precise for tiny triangles
    far from the image origin.
    """
    x0, y0 = tri[:, 0, 0], tri[:, 0, 1]
    e1x, e1y = tri[:, 1, 0] - x0, tri[:, 1, 1] - y0
    e2x, e2y = tri[:, 2, 0] - x0, tri[:, 2, 1] - y0
    den = e1x * e2y - e1y * e2x
    dx, dy = px - x0, py - y0
    b1 = (dx * e2y - dy * e2x) / den
    b2 = (e1x * dy - e1y * dx) / den
    return torch.stack([1.0 - b1 - b2, b1, b2], -1)


def _finish_bary(b: Tensor, z: Tensor, perspective: bool) -> tuple[Tensor, Tensor]:
    """Screen barycentrics -> (perspective-correct barycentrics, depth)."""
    if not perspective:
        return b, (b * z).sum(-1)
    w = b / z
    zinv = w.sum(-1, keepdim=True)
    return w / zinv, 1.0 / zinv[..., 0]


@torch.no_grad()
def _zbuffer(
    screen: Tensor,
    faces: Tensor,
    image_size: tuple[int, int],
    perspective: bool,
    cull_backfaces: bool,
    near: float,
    chunk_size: int,
) -> Tensor:
    """Nearest face id per pixel ``(B, H, W)`` (-1 background), without autograd."""
    B = screen.shape[0]
    H, W = image_size
    dev = screen.device
    tri = screen[:, faces]  # (B, F, 3, 3)
    xs, ys, zs = tri[..., 0], tri[..., 1], tri[..., 2]
    e1 = tri[:, :, 1, :2] - tri[:, :, 0, :2]
    e2 = tri[:, :, 2, :2] - tri[:, :, 0, :2]
    area2 = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    valid = (area2.abs() > 1e-10) & torch.isfinite(tri).all(-1).all(-1)
    if perspective:
        valid &= (zs > near).all(-1)
    if cull_backfaces:
        valid &= area2 < 0
    # Pixel (x, y) has its centre at (x + 0.5, y + 0.5).
    x_lo = torch.ceil(xs.amin(-1) - 0.5).clamp_min(0)
    x_hi = torch.floor(xs.amax(-1) - 0.5).clamp_max(W - 1)
    y_lo = torch.ceil(ys.amin(-1) - 0.5).clamp_min(0)
    y_hi = torch.floor(ys.amax(-1) - 0.5).clamp_max(H - 1)
    valid &= (x_hi >= x_lo) & (y_hi >= y_lo)  # off-screen triangles have empty boxes
    x_lo, x_hi = x_lo.clamp_max(W - 1), x_hi.clamp_min(0)
    y_lo, y_hi = y_lo.clamp_max(H - 1), y_hi.clamp_min(0)
    sel = valid.view(-1).nonzero(as_tuple=True)[0]  # flat b*F + f
    zbuf = torch.full((B * H * W,), _INT64_MAX, dtype=torch.int64, device=dev)
    if sel.numel() == 0:
        return torch.full((B, H, W), -1, dtype=torch.int64, device=dev)
    F = faces.shape[0]
    bi = torch.div(sel, F, rounding_mode="floor")
    fi = sel - bi * F
    box = torch.stack([x_lo, y_lo, x_hi, y_hi], -1).view(-1, 4).index_select(0, sel)
    x0, y0 = box[:, 0], box[:, 1]
    bw = (box[:, 2] - x0 + 1).long()
    counts = bw * (box[:, 3] - y0 + 1).long()
    base = (bi * H + y0.long()) * W + x0.long()
    # Barycentrics and the depth key are affine in the pixel offset (i, j) inside the
    # bounding box: value = c + a*i + d*j. Coefficients are taken relative to the box
    # corner's pixel centre so float32 stays precise for small triangles.
    t = tri.reshape(-1, 3, 3).index_select(0, sel).to(torch.float64)  # float64 only for this per-triangle setup
    ox, oy = x0.to(torch.float64) + 0.5, y0.to(torch.float64) + 0.5
    e1x, e1y = t[:, 1, 0] - t[:, 0, 0], t[:, 1, 1] - t[:, 0, 1]
    e2x, e2y = t[:, 2, 0] - t[:, 0, 0], t[:, 2, 1] - t[:, 0, 1]
    den = e1x * e2y - e1y * e2x
    dx0, dy0 = ox - t[:, 0, 0], oy - t[:, 0, 1]
    b1 = torch.stack([(dx0 * e2y - dy0 * e2x), e2y, -e2x], -1) / den[:, None]
    b2 = torch.stack([(e1x * dy0 - e1y * dx0), -e1y, e1x], -1) / den[:, None]
    z = t[..., 2]
    if perspective:
        q = -1.0 / z  # key = -1/z: smaller is nearer
    else:
        q = z
    kz = (q[:, 1:2] - q[:, :1]) * b1 + (q[:, 2:3] - q[:, :1]) * b2
    kz[:, 0] += q[:, 0]
    coef = torch.cat([b1, b2, kz], -1).to(torch.float32)  # (N, 9)
    eps = 1e-5

    def depth_test(v1: Tensor, v2: Tensor, kz: Tensor, pix: Tensor, fid: Tensor) -> None:
        inside = (v1 >= -eps) & (v2 >= -eps) & (v1 + v2 <= 1.0 + eps)
        key = (_monotonic_key(kz) << _ID_BITS) | fid
        key = torch.where(inside, key, torch.full_like(key, _INT64_MAX))
        zbuf.scatter_reduce_(0, pix.reshape(-1), key.reshape(-1), reduce="amin")

    # Small boxes (the vast majority): one dense (triangles x w*h) grid per box shape, so
    # per-triangle coefficients broadcast instead of being gathered per candidate.
    bh = counts // bw
    small = (bw <= _DENSE_MAX) & (bh <= _DENSE_MAX)
    shape_code = torch.where(small, (bw - 1) * _DENSE_MAX + (bh - 1), torch.full_like(bw, -1))
    order = torch.argsort(shape_code)
    codes, n_per = torch.unique_consecutive(shape_code[order], return_counts=True)
    pos = 0
    general = []  # large boxes, and shapes too rare to be worth their own kernels
    for code, cnt in zip(codes.tolist(), n_per.tolist()):
        idx_all = order[pos : pos + cnt]
        pos += cnt
        if code < 0 or cnt < _DENSE_MIN_TRIANGLES:
            general.append(idx_all)
            continue
        w, h = code // _DENSE_MAX + 1, code % _DENSE_MAX + 1
        ii = torch.arange(w * h, device=dev) % w
        jj = torch.arange(w * h, device=dev) // w
        fi_g, fj_g = ii.to(torch.float32)[None], jj.to(torch.float32)[None]
        offs = (jj * W + ii)[None]
        step = max(1, chunk_size // (w * h))
        for k0 in range(0, cnt, step):
            idx = idx_all[k0 : k0 + step]
            cf = coef.index_select(0, idx)
            v1 = cf[:, 0:1] + cf[:, 1:2] * fi_g + cf[:, 2:3] * fj_g
            v2 = cf[:, 3:4] + cf[:, 4:5] * fi_g + cf[:, 5:6] * fj_g
            kz = cf[:, 6:7] + cf[:, 7:8] * fi_g + cf[:, 8:9] * fj_g
            pix = base.index_select(0, idx)[:, None] + offs
            depth_test(v1, v2, kz, pix, fi.index_select(0, idx)[:, None])
    if not general:
        return torch.where(zbuf == _INT64_MAX, torch.full_like(zbuf, -1), zbuf & _ID_MASK).view(B, H, W)

    # General path: expand (triangle, pixel) candidates with repeat_interleave, in chunks.
    large = torch.cat(general)
    coef, counts, bw, base, fi = (x.index_select(0, large) for x in (coef, counts, bw, base, fi))
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    total = int(ends[-1])
    packed = torch.stack([starts, bw, base, fi], -1)
    n_chunks = max(1, -(-total // chunk_size))
    bounds = torch.searchsorted(ends, torch.arange(1, n_chunks, device=dev) * chunk_size).tolist()
    cuts = [0] + [int(b) for b in bounds] + [large.numel()]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if hi <= lo:
            continue
        c = counts[lo:hi]
        n = int(ends[hi - 1] - starts[lo])
        local = torch.repeat_interleave(torch.arange(lo, hi, device=dev), c, output_size=n)
        ints = packed.index_select(0, local)  # one gather for the integer per-triangle data
        off = torch.arange(starts[lo], starts[lo] + n, device=dev) - ints[:, 0]
        w_ = ints[:, 1]
        j = torch.div(off, w_, rounding_mode="floor")
        i = off - j * w_
        cf = coef.index_select(0, local)
        fi_, fj = i.to(torch.float32), j.to(torch.float32)
        v1 = cf[:, 0] + cf[:, 1] * fi_ + cf[:, 2] * fj
        v2 = cf[:, 3] + cf[:, 4] * fi_ + cf[:, 5] * fj
        kz = cf[:, 6] + cf[:, 7] * fi_ + cf[:, 8] * fj
        depth_test(v1, v2, kz, ints[:, 2] + j * W + i, ints[:, 3])
    ids = torch.where(zbuf == _INT64_MAX, torch.full_like(zbuf, -1), zbuf & _ID_MASK)
    return ids.view(B, H, W)


def rasterize(
    screen: Tensor,
    faces: Tensor,
    image_size: tuple[int, int],
    perspective: bool = True,
    cull_backfaces: bool = False,
    near: float = 1e-4,
    chunk_size: int = 1 << 22,
) -> Fragments:
    """Rasterise triangles given as screen vertices ``(B, V, 3) = [u, v, depth]``.

    ``u, v`` are pixels (centres at +0.5), depth in metres (camera ``z``; for weak
    perspective any monotonic depth). A pixel is covered when its centre lies inside a
    triangle (edges inclusive); the nearest depth wins. Triangles touching ``z <= near``
    are dropped when ``perspective`` (no clipping). ``cull_backfaces`` drops faces whose
    projection is clockwise on screen (seen from behind, given CCW faces).
    ``chunk_size`` bounds the candidate (triangle, pixel) pairs held in memory at once.
    """
    H, W = image_size
    B = screen.shape[0]
    faces = faces.to(device=screen.device, dtype=torch.int64)
    tri_id = _zbuffer(screen.detach(), faces, image_size, perspective, cull_backfaces, near, chunk_size)
    b, py, px = (tri_id >= 0).nonzero(as_tuple=True)
    fg = (b * H + py) * W + px
    ftri = tri_id.view(-1).index_select(0, fg)
    V = screen.shape[1]
    # Flat index_select: its backward is an index_add (much faster on CPU than index_put).
    corner = faces.index_select(0, ftri)
    t = screen.reshape(B * V, 3).index_select(0, (b[:, None] * V + corner).view(-1)).view(-1, 3, 3)
    sb = _screen_bary(t, px.to(screen.dtype) + 0.5, py.to(screen.dtype) + 0.5)
    bary, depth = _finish_bary(sb, t[..., 2], perspective)
    full_bary = screen.new_zeros(B * H * W, 3).index_put((fg,), bary).view(B, H, W, 3)
    full_depth = screen.new_zeros(B * H * W).index_put((fg,), depth).view(B, H, W)
    return Fragments(tri_id, full_bary, full_depth, screen, faces, perspective, fg, ftri, bary, cull_backfaces)


def interpolate_foreground(attr: Tensor, attr_faces: Tensor, fragments: Fragments) -> Tensor:
    """Like :func:`interpolate` but only for covered pixels: ``(N_fg, C)`` in the order of
    ``fragments.fg_index`` (cheaper when most of the image is background)."""
    H, W = fragments.image_size
    attr_faces = attr_faces.to(device=attr.device, dtype=torch.int64)
    corner = attr_faces.index_select(0, fragments.fg_tri)  # (N, 3)
    if attr.dim() == 2:
        attr = attr[None]
    N, C = attr.shape[1], attr.shape[2]
    if attr.shape[0] == 1:
        flat_idx = corner.reshape(-1)
    else:
        b = torch.div(fragments.fg_index, H * W, rounding_mode="floor")
        flat_idx = (b[:, None] * N + corner).reshape(-1)
    # Flat index_select: its backward is an index_add (much faster on CPU than index_put).
    vals = attr.reshape(-1, C).index_select(0, flat_idx).view(-1, 3, C)
    return (fragments.fg_bary.to(vals.dtype)[..., None] * vals).sum(1)


def scatter_foreground(values: Tensor, fragments: Fragments, background: Tensor | float = 0.0) -> Tensor:
    """Place per-covered-pixel ``values (N_fg, C)`` into ``(B, H, W, C)`` over ``background``."""
    B, H, W = fragments.tri_id.shape
    C = values.shape[-1]
    if isinstance(background, Tensor):
        full = background.to(values.dtype).expand(B, H, W, C).reshape(B * H * W, C)
    else:
        full = values.new_full((B * H * W, C), float(background))
    return full.index_put((fragments.fg_index,), values).view(B, H, W, C)


def interpolate(attr: Tensor, attr_faces: Tensor, fragments: Fragments) -> Tensor:
    """Interpolate per-vertex attributes ``(B, N, C)`` or ``(N, C)`` to pixels ``(B, H, W, C)``.

    ``attr_faces (F, 3)`` indexes ``attr`` per face corner: the mesh ``faces`` for
    per-vertex attributes, or ``face_uv`` for texture coordinates. Background pixels are 0.
    Differentiable w.r.t. ``attr`` and (through the barycentrics) the screen vertices.
    """
    return scatter_foreground(interpolate_foreground(attr, attr_faces, fragments), fragments)


def texture(tex: Tensor, uv: Tensor, mode: str = "bilinear") -> Tensor:
    """Sample ``tex (B, C, Ht, Wt)`` at ``uv (B, H, W, 2)`` in [0, 1], ``v`` up -> ``(B, H, W, C)``.

    Texel centres sit at ``((i + 0.5)/Wt, 1 - (j + 0.5)/Ht)``; borders are clamped.
    """
    grid = torch.stack([uv[..., 0] * 2.0 - 1.0, 1.0 - uv[..., 1] * 2.0], -1).to(tex.dtype)
    out = Fn.grid_sample(tex, grid, mode=mode, padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def face_neighbours(faces: Tensor) -> Tensor:
    """``(F, 3)`` index of the face across edge ``k = (v_k, v_{k+1})`` of each face, -1 if none."""
    F = faces.shape[0]
    a = faces
    b = faces.roll(-1, dims=1)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    key = (lo * (int(faces.max()) + 1) + hi).reshape(-1)
    order = torch.argsort(key, stable=True)
    sk = key[order]
    same = (sk[1:] == sk[:-1]).nonzero(as_tuple=True)[0]
    nb = torch.full((3 * F,), -1, dtype=torch.int64, device=faces.device)
    first, second = order[same], order[same + 1]
    nb[first] = torch.div(second, 3, rounding_mode="floor")
    nb[second] = torch.div(first, 3, rounding_mode="floor")
    return nb.view(F, 3)


def _aa_axis(
    color: Tensor,
    fr: Fragments,
    depth_bg: Tensor,
    edge_b: Tensor,
    edge_v: Tensor,
    axis: int,
    occlusion_margin: float,
) -> tuple[Tensor, Tensor]:
    """Colour deltas from contour edges crossing pixel pairs along ``axis`` (0 = x, 1 = y).

    For x pairs every contour edge crosses the horizontal lines through pixel-centre rows
    it spans; the crossing picks the pixel pair ``(x, x+1)`` around it. ``edge_v (E, 2)``
    holds directed edges (interior on their right in screen coordinates).
    """
    B, H, W, C = color.shape
    a_ax, o_ax = axis, 1 - axis  # coordinate along the pair / across it (the row coordinate)
    n_rows, n_cols = (H, W) if axis == 0 else (W, H)
    with torch.no_grad():
        pa = fr.screen[edge_b, edge_v[:, 0], :2].detach()
        pb = fr.screen[edge_b, edge_v[:, 1], :2].detach()
        lo = torch.ceil(torch.minimum(pa[:, o_ax], pb[:, o_ax]) - 0.5).clamp_min(0)
        hi = torch.floor(torch.maximum(pa[:, o_ax], pb[:, o_ax]) - 0.5).clamp_max(n_rows - 1)
        ok = (hi >= lo) & ((pb[:, o_ax] - pa[:, o_ax]).abs() > 1e-9)
        counts = torch.where(ok, hi - lo + 1, torch.zeros_like(lo)).long()
        n = int(counts.sum())
        if n == 0:
            return edge_b[:0], color.new_zeros(0, C)
        e_idx = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts, output_size=n)
        first = torch.cumsum(counts, 0) - counts
        row = lo.long()[e_idx] + (torch.arange(n, device=counts.device) - first[e_idx])
        A, Bp = pa[e_idx], pb[e_idx]
        rc = row.to(A.dtype) + 0.5
        tt = (rc - A[:, o_ax]) / (Bp[:, o_ax] - A[:, o_ax])
        xc = A[:, a_ax] + tt * (Bp[:, a_ax] - A[:, a_ax])
        left = torch.floor(xc - 0.5).long()
        inb = (left >= 0) & (left + 1 <= n_cols - 1)
        e_idx, row, left, xc, A, Bp = e_idx[inb], row[inb], left[inb], xc[inb], A[inb], Bp[inb]
        b = edge_b[e_idx]
        # Interior side: cross(B - A, c - A) < 0 for the left pixel centre.
        cl = torch.zeros_like(A)
        cl[:, a_ax] = left.to(A.dtype) + 0.5
        cl[:, o_ax] = row.to(A.dtype) + 0.5
        cr = (Bp[:, 0] - A[:, 0]) * (cl[:, 1] - A[:, 1]) - (Bp[:, 1] - A[:, 1]) * (cl[:, 0] - A[:, 0])

        def flat(col: Tensor) -> Tensor:
            return (b * H + row) * W + col if axis == 0 else (b * H + col) * W + row

        dflat = depth_bg.reshape(-1)
        tflat = fr.tri_id.reshape(-1)
        # A centre exactly on the edge belongs to the interior (edges are inclusive).
        p_is_left = (cr < 0) | ((cr == 0) & (tflat[flat(left)] >= 0))
        pc = torch.where(p_is_left, left, left + 1)
        qc = torch.where(p_is_left, left + 1, left)
        p_idx, q_idx = flat(pc), flat(qc)
        visible = (tflat[p_idx] >= 0) & ((tflat[q_idx] < 0) | (dflat[q_idx] > dflat[p_idx] + occlusion_margin))
        s_det = (xc - (pc.to(xc.dtype) + 0.5)).abs()
        keep = visible & (s_det <= 1.0)
        e_idx, row, pc, qc, p_idx, q_idx, s_det = (x[keep] for x in (e_idx, row, pc, qc, p_idx, q_idx, s_det))
        if e_idx.numel() == 0:
            return edge_b[:0], color.new_zeros(0, C)
        # One crossing per pixel pair: the outermost (largest s) contour edge.
        best = torch.full((B * H * W,), -1.0, dtype=s_det.dtype, device=s_det.device)
        key = torch.minimum(p_idx, q_idx)  # identifies the pixel pair
        best.scatter_reduce_(0, key, s_det, reduce="amax")
        cand = (s_det == best[key]).nonzero(as_tuple=True)[0]
        first_c = torch.full((B * H * W,), n, dtype=torch.int64, device=s_det.device)
        first_c.scatter_reduce_(0, key[cand], cand, reduce="amin")
        win = first_c[key[cand]] == cand
        sel = cand[win]
        e_idx, row, pc, qc, p_idx, q_idx = (x[sel] for x in (e_idx, row, pc, qc, p_idx, q_idx))
    # Differentiable crossing position s in pixels from p's centre towards q.
    eb = edge_b[e_idx]
    A = fr.screen[eb, edge_v[e_idx, 0], :2]
    Bp = fr.screen[eb, edge_v[e_idx, 1], :2]
    rc = row.to(A.dtype) + 0.5
    ev = Bp - A
    xc = A[:, a_ax] + (rc - A[:, o_ax]) / ev[:, o_ax] * ev[:, a_ax]
    direction = (qc - pc).to(A.dtype)
    s = (xc - (pc.to(A.dtype) + 0.5)) * direction
    # Weight by the squared component of the edge normal along the pair axis: an edge is
    # crossed by x pairs and by y pairs, and n_x² + n_y² = 1 counts its motion once
    # (a vertical edge is handled by x pairs alone, a 45° one half by each).
    weight = ev[:, o_ax] ** 2 / (ev * ev).sum(-1).clamp_min(1e-20)
    flat_c = color.reshape(B * H * W, C)
    cp, cq = flat_c[p_idx], flat_c[q_idx]
    # 1-D box filter: the surface covers [.., s] along p->q. Pixel p spans [-0.5, 0.5],
    # q spans [0.5, 1.5]. If s < 0.5 p loses (0.5 - s); otherwise q gains (s - 0.5).
    into_p = s < 0.5
    amount = (torch.where(into_p, 0.5 - s, s - 0.5) * weight)[:, None].to(color.dtype)
    delta = torch.where(into_p[:, None], amount * (cq - cp), amount * (cp - cq))
    return torch.where(into_p, p_idx, q_idx), delta


def antialias(
    color: Tensor,
    fragments: Fragments,
    neighbours: Tensor | None = None,
    occlusion_margin: float = 5e-3,
) -> Tensor:
    """Analytic silhouette antialiasing of ``color (B, H, W, C)`` (nvdiffrast-style).

    Contour edges (open borders of any face, or edges between a front- and a back-facing
    face, taken on the front face) are intersected with the lines through pixel centres. Where such an
    edge separates a covered pixel ``p`` from a neighbour ``q`` showing background or a
    surface more than ``occlusion_margin`` (depth units) farther away, the two colours are
    blended with a 1-pixel box filter according to the crossing position (the outermost
    crossing per pixel pair). The crossing is a differentiable function of the edge's
    screen vertices, which gives image-space losses gradients w.r.t. the silhouette.
    Pass ``neighbours = face_neighbours(faces)`` to reuse the adjacency.
    """
    faces = fragments.faces
    if neighbours is None:
        neighbours = face_neighbours(faces)
    with torch.no_grad():
        facing = signed_area2(fragments.screen.detach(), faces) < 0  # (B, F)
        nb = neighbours.clamp_min(0)
        # Open borders of any face (back faces are visible when not culled), and front-face
        # edges whose neighbour faces away.
        border = neighbours[None] < 0
        if fragments.culled_backfaces:
            border = border & facing[:, :, None]
        contour = border | (facing[:, :, None] & ~facing[:, nb])
        eb, ef, ek = contour.nonzero(as_tuple=True)
        edge_v = torch.stack([faces[ef, ek], faces[ef, (ek + 1) % 3]], -1)
        # Direct every edge so that its face's interior lies on its right on screen.
        back = ~facing[eb, ef]
        edge_v = torch.where(back[:, None], edge_v.flip(-1), edge_v)
        depth_bg = torch.where(fragments.mask, fragments.depth.detach(), torch.full_like(fragments.depth, float("inf")))
    B, H, W, C = color.shape
    idx_x, dx = _aa_axis(color, fragments, depth_bg, eb, edge_v, 0, occlusion_margin)
    idx_y, dy = _aa_axis(color, fragments, depth_bg, eb, edge_v, 1, occlusion_margin)
    flat = color.reshape(B * H * W, C)
    out = flat.index_add(0, torch.cat([idx_x, idx_y]), torch.cat([dx, dy]).to(flat.dtype))
    return out.view(B, H, W, C)


def soft_silhouette(fragments: Fragments, neighbours: Tensor | None = None) -> Tensor:
    """Antialiased coverage ``(B, H, W)`` in [0, 1] with gradients w.r.t. contour vertices."""
    m = fragments.mask.to(fragments.screen.dtype)[..., None]
    return antialias(m, fragments, neighbours)[..., 0].clamp(0.0, 1.0)
