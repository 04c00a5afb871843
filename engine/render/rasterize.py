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
    "texture",
    "face_neighbours",
    "antialias",
    "soft_silhouette",
]

_INT64_MAX = torch.iinfo(torch.int64).max
_ID_BITS = 31
_ID_MASK = (1 << _ID_BITS) - 1


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
    x_lo = torch.ceil(xs.amin(-1) - 0.5).clamp(0, W - 1)
    x_hi = torch.floor(xs.amax(-1) - 0.5).clamp(-1, W - 1)
    y_lo = torch.ceil(ys.amin(-1) - 0.5).clamp(0, H - 1)
    y_hi = torch.floor(ys.amax(-1) - 0.5).clamp(-1, H - 1)
    valid &= (x_hi >= x_lo) & (y_hi >= y_lo) & (xs.amax(-1) > 0) & (ys.amax(-1) > 0)
    bi, fi = valid.nonzero(as_tuple=True)
    zbuf = torch.full((B * H * W,), _INT64_MAX, dtype=torch.int64, device=dev)
    if bi.numel() == 0:
        return torch.full((B, H, W), -1, dtype=torch.int64, device=dev)
    x0 = x_lo[bi, fi]
    y0 = y_lo[bi, fi]
    bw = (x_hi[bi, fi] - x0 + 1).long()
    counts = bw * (y_hi[bi, fi] - y0 + 1).long()
    base = (bi * H + y0.long()) * W + x0.long()
    # Barycentrics and the depth key are affine in the pixel offset (i, j) inside the
    # bounding box: value = c + a*i + d*j. Coefficients are taken relative to the box
    # corner's pixel centre so float32 stays precise for small triangles.
    t = tri[bi, fi].to(torch.float64)  # (N, 3, 3); float64 only for this per-triangle setup
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
    kz = q[:, :1] + (q[:, 1:2] - q[:, :1]) * b1 + (q[:, 2:3] - q[:, :1]) * b2
    coef = torch.cat([b1, b2, kz], -1).to(torch.float32)  # (N, 9)
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    total = int(ends[-1])
    packed = torch.stack([starts, bw, base, fi], -1)
    # Split the triangle list so that each chunk expands to at most ~chunk_size candidates.
    n_chunks = max(1, -(-total // chunk_size))
    bounds = torch.searchsorted(ends, torch.arange(1, n_chunks, device=dev) * chunk_size).tolist()
    cuts = [0] + [int(b) for b in bounds] + [bi.numel()]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if hi <= lo:
            continue
        c = counts[lo:hi]
        n = int(ends[hi - 1] - starts[lo])
        local = torch.repeat_interleave(torch.arange(lo, hi, device=dev), c, output_size=n)
        ints = packed[local]  # one gather for the integer per-triangle data
        off = torch.arange(starts[lo], starts[lo] + n, device=dev) - ints[:, 0]
        w_ = ints[:, 1]
        j = torch.div(off, w_, rounding_mode="floor")
        i = off - j * w_
        cf = coef[local]
        fi_, fj = i.to(torch.float32), j.to(torch.float32)
        v1 = cf[:, 0] + cf[:, 1] * fi_ + cf[:, 2] * fj
        v2 = cf[:, 3] + cf[:, 4] * fi_ + cf[:, 5] * fj
        kz = cf[:, 6] + cf[:, 7] * fi_ + cf[:, 8] * fj
        eps = 1e-5
        inside = (v1 >= -eps) & (v2 >= -eps) & (v1 + v2 <= 1.0 + eps)
        pix = ints[:, 2] + j * W + i
        key = (_monotonic_key(kz) << _ID_BITS) | ints[:, 3]
        key = torch.where(inside, key, torch.full_like(key, _INT64_MAX))
        zbuf.scatter_reduce_(0, pix, key, reduce="amin")
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
    fg = (tri_id >= 0).view(-1).nonzero(as_tuple=True)[0]
    ftri = tri_id.view(-1)[fg]
    b = torch.div(fg, H * W, rounding_mode="floor")
    rem = fg - b * (H * W)
    py = torch.div(rem, W, rounding_mode="floor")
    px = rem - py * W
    t = screen[b[:, None], faces[ftri]]  # (N, 3, 3), differentiable
    sb = _screen_bary(t, px.to(screen.dtype) + 0.5, py.to(screen.dtype) + 0.5)
    bary, depth = _finish_bary(sb, t[..., 2], perspective)
    full_bary = screen.new_zeros(B * H * W, 3).index_put((fg,), bary).view(B, H, W, 3)
    full_depth = screen.new_zeros(B * H * W).index_put((fg,), depth).view(B, H, W)
    return Fragments(tri_id, full_bary, full_depth, screen, faces, perspective, fg, ftri, bary)


def interpolate(attr: Tensor, attr_faces: Tensor, fragments: Fragments) -> Tensor:
    """Interpolate per-vertex attributes ``(B, N, C)`` or ``(N, C)`` to pixels ``(B, H, W, C)``.

    ``attr_faces (F, 3)`` indexes ``attr`` per face corner: the mesh ``faces`` for
    per-vertex attributes, or ``face_uv`` for texture coordinates. Background pixels are 0.
    Differentiable w.r.t. ``attr`` and (through the barycentrics) the screen vertices.
    """
    B, H, W = fragments.tri_id.shape
    attr_faces = attr_faces.to(device=attr.device, dtype=torch.int64)
    corner = attr_faces[fragments.fg_tri]  # (N, 3)
    if attr.dim() == 2:
        vals = attr[corner]  # (N, 3, C)
    else:
        b = torch.div(fragments.fg_index, H * W, rounding_mode="floor")
        if attr.shape[0] == 1:
            b = torch.zeros_like(b)
        vals = attr[b[:, None], corner]
    out = (fragments.fg_bary.to(vals.dtype)[..., None] * vals).sum(1)
    full = out.new_zeros(B * H * W, out.shape[-1]).index_put((fragments.fg_index,), out)
    return full.view(B, H, W, -1)


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


def _aa_pairs(
    color: Tensor,
    fr: Fragments,
    contour: Tensor,
    depth_bg: Tensor,
    axis: int,
) -> tuple[Tensor, Tensor]:
    """Deltas for neighbouring pixel pairs along ``axis`` (2 = x, 1 = y) across a contour."""
    B, H, W = fr.tri_id.shape
    tri = fr.tri_id
    if axis == 2:
        ta, tb = tri[:, :, :-1], tri[:, :, 1:]
        da, db = depth_bg[:, :, :-1], depth_bg[:, :, 1:]
    else:
        ta, tb = tri[:, :-1, :], tri[:, 1:, :]
        da, db = depth_bg[:, :-1, :], depth_bg[:, 1:, :]
    cand = (ta != tb) & ((ta >= 0) | (tb >= 0))
    b, y, x = cand.nonzero(as_tuple=True)
    if b.numel() == 0:
        return b, color.new_zeros(0, color.shape[-1])
    step_y, step_x = (0, 1) if axis == 2 else (1, 0)
    a_front = da[b, y, x] <= db[b, y, x]
    # Front pixel p (covered, nearer) and back pixel q.
    py = torch.where(a_front, y, y + step_y)
    px = torch.where(a_front, x, x + step_x)
    qy = torch.where(a_front, y + step_y, y)
    qx = torch.where(a_front, x + step_x, x)
    T = tri[b, py, px]
    corners = fr.faces[T]  # (N, 3)
    ends = torch.stack([corners, corners.roll(-1, dims=1)], -1)  # (N, 3, 2)
    pts = fr.screen[b[:, None, None], ends, :2]  # (N, 3, 2, 2) differentiable
    is_contour = contour[b[:, None], T[:, None], torch.arange(3, device=T.device)[None, :]]
    # Segment from p's centre to q's centre, parametrised by s in [0, 1].
    pc = torch.stack([px, py], -1).to(pts.dtype) + 0.5
    dirv = torch.tensor([step_x, step_y], dtype=pts.dtype, device=pts.device)
    sign = torch.where(a_front, 1.0, -1.0).to(pts.dtype)[:, None]
    d = dirv[None, :] * sign  # (N, 2) unit step from p to q
    e0 = pts[:, :, 0]
    e = pts[:, :, 1] - e0  # (N, 3, 2)
    # Solve pc + s*d = e0 + r*e.
    den = d[:, None, 0] * e[..., 1] - d[:, None, 1] * e[..., 0]
    safe = torch.where(den.abs() > 1e-12, den, torch.ones_like(den))
    w = e0 - pc[:, None, :]
    s = (w[..., 0] * e[..., 1] - w[..., 1] * e[..., 0]) / safe
    r = (w[..., 0] * d[:, None, 1] - w[..., 1] * d[:, None, 0]) / safe
    ok = is_contour & (den.abs() > 1e-12) & (r >= 0) & (r <= 1) & (s >= 0) & (s <= 1)
    s_masked = torch.where(ok, s, torch.full_like(s, 2.0))
    s_min, k = s_masked.min(-1)
    hit = s_min <= 1.0
    if not bool(hit.any()):
        return b[:0], color.new_zeros(0, color.shape[-1])
    b, py, px, qy, qx, s_min = b[hit], py[hit], px[hit], qy[hit], qx[hit], s_min[hit]
    cp = color[b, py, px]
    cq = color[b, qy, qx]
    # 1-D box filter: the surface covers [.., s] along p->q. Pixel p spans [-0.5, 0.5],
    # q spans [0.5, 1.5]. If s < 0.5 p loses (0.5 - s); otherwise q gains (s - 0.5).
    into_p = s_min < 0.5
    amount = torch.where(into_p, 0.5 - s_min, s_min - 0.5)[:, None]
    delta = torch.where(into_p[:, None], amount * (cq - cp), amount * (cp - cq))
    ty = torch.where(into_p, py, qy)
    tx = torch.where(into_p, px, qx)
    return (b * H + ty) * W + tx, delta


def antialias(color: Tensor, fragments: Fragments, neighbours: Tensor | None = None) -> Tensor:
    """Analytic silhouette antialiasing of ``color (B, H, W, C)`` (nvdiffrast-style).

    For each pair of horizontally/vertically adjacent pixels showing different triangles,
    if a *contour* edge (open boundary, or front/back-facing transition) of the nearer
    pixel's triangle crosses the segment between their centres, the two colours are
    blended by the crossing position with a 1-pixel box filter. The crossing position is a
    differentiable function of the edge's screen vertices, which gives image-space losses
    gradients w.r.t. the silhouette. Pass ``neighbours = face_neighbours(faces)`` to reuse it.
    """
    faces = fragments.faces
    if neighbours is None:
        neighbours = face_neighbours(faces)
    with torch.no_grad():
        facing = signed_area2(fragments.screen.detach(), faces) < 0  # (B, F)
        nb = neighbours.clamp_min(0)
        contour = (neighbours[None] < 0) | (facing[:, nb] != facing[:, :, None])
        depth_bg = torch.where(fragments.mask, fragments.depth.detach(), torch.full_like(fragments.depth, float("inf")))
    B, H, W, C = color.shape
    idx_x, dx = _aa_pairs(color, fragments, contour, depth_bg, axis=2)
    idx_y, dy = _aa_pairs(color, fragments, contour, depth_bg, axis=1)
    flat = color.reshape(B * H * W, C)
    out = flat.index_add(0, torch.cat([idx_x, idx_y]), torch.cat([dx, dy]).to(flat.dtype))
    return out.view(B, H, W, C)


def soft_silhouette(fragments: Fragments, neighbours: Tensor | None = None) -> Tensor:
    """Antialiased coverage ``(B, H, W)`` in [0, 1] with gradients w.r.t. contour vertices."""
    m = fragments.mask.to(fragments.screen.dtype)[..., None]
    return antialias(m, fragments, neighbours)[..., 0].clamp(0.0, 1.0)
