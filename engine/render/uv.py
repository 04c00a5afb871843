"""UV-space operations: rasterise in the texture layout, unwrap a photo, displacement maps.

UV convention (docs/conventions.md): ``uv`` in [0, 1], ``v`` up; texel ``(row j, col i)``
of an ``S × S`` map has its centre at ``u = (i + 0.5)/S``, ``v = 1 - (j + 0.5)/S``.
"""

from __future__ import annotations

import torch
from torch import Tensor
import torch.nn.functional as Fn

from .rasterize import Fragments, rasterize, texture
from .vertex_sampling import sample_image

__all__ = [
    "uv_to_texel",
    "rasterize_uv",
    "vertex_uv",
    "unwrap_photo",
    "sample_uv_map",
    "apply_displacement",
    "displaced_uv_positions",
    "normal_map_from_displacement",
    "dilate_uv",
    "interpolate_layout",
    "to_window",
    "uv_window",
    "window_to_full",
    "window_coordinates",
    "full_to_window",
    "uv_tangents",
    "sample_uv_gradient",
    "sample_uv_cavity",
    "perturb_normals",
]


def uv_to_texel(uv: Tensor, uv_size: int) -> Tensor:
    """UV ``(..., 2)`` -> texel-space pixel coordinates (``u·S``, ``(1 - v)·S``)."""
    return torch.stack([uv[..., 0] * uv_size, (1.0 - uv[..., 1]) * uv_size], -1)


def to_window(uv: Tensor, window: Tensor | tuple[float, float, float, float] | None) -> Tensor:
    """UV ``(..., 2)`` -> coordinates in a UV sub-rectangle ``window = (u0, v0, u1, v1)``
    (a detail map covering only that part of the layout: ``(0, 0)``-``(1, 1)`` inside it).
    ``window (B, 4)`` applies per batch item to ``uv (B, ..., 2)``; None = the whole layout."""
    if window is None:
        return uv
    w = torch.as_tensor(window, dtype=uv.dtype, device=uv.device)
    if w.dim() == 2:  # (B, 4) -> broadcast over uv's middle dimensions
        w = w.view(w.shape[0], *([1] * (uv.dim() - 2)), 4)
    lo, hi = w[..., :2], w[..., 2:]
    return (uv - lo) / (hi - lo)


def uv_window(uv: Tensor, face_uv: Tensor, faces: Tensor, region: Tensor, margin: float = 0.02) -> tuple[float, ...]:
    """The square UV sub-rectangle ``(u0, v0, u1, v1)`` around the triangles whose corners are
    all in ``region (V,)`` (bool), plus ``margin`` UV units each side: where a detail map
    of the face needs its texels (a whole-head layout spends most of its area elsewhere)."""
    keep = region.to(faces.device)[faces].all(1)
    if not keep.any():
        return (0.0, 0.0, 1.0, 1.0)
    t = uv[face_uv[keep]].reshape(-1, 2)
    lo, hi = t.min(0).values, t.max(0).values
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 + margin
    return (float(centre[0]) - half, float(centre[1]) - half, float(centre[0]) + half, float(centre[1]) + half)


def rasterize_uv(uv: Tensor, face_uv: Tensor, uv_size: int,
                 window: tuple[float, float, float, float] | None = None) -> Fragments:
    """Rasterise the UV layout itself: per texel the face id and barycentrics ``(1, S, S)``.

    Uses ``face_uv`` as the triangle list; interpolate per-vertex attributes with the mesh
    ``faces`` and these fragments (face ids are shared by both index lists). ``window``:
    rasterise only that UV sub-rectangle (:func:`to_window`) at ``S × S`` texels.
    """
    xy = uv_to_texel(to_window(uv, window), uv_size)
    screen = torch.cat([xy, torch.ones_like(xy[..., :1])], -1)[None]
    return rasterize(screen, face_uv, (uv_size, uv_size), perspective=False)


def vertex_uv(uv: Tensor, face_uv: Tensor, faces: Tensor, num_vertices: int) -> Tensor:
    """One UV per vertex ``(V, 2)``: that of the first triangle corner (in ``faces`` order)
    that uses it, so seams pick one side; vertices no triangle uses get (0, 0).

    Deterministic on every device and thread count: the first corner is found with a
    ``scatter_reduce`` minimum. (An indexed write ``out[v] = uv[t]`` with repeated ``v`` leaves
    which write wins unspecified: with two CPU threads it picked other seam sides from run to
    run, so the per-vertex albedo of the same synthetic face changed.)"""
    v = faces.reshape(-1).to(torch.int64)
    t = face_uv.reshape(-1).to(torch.int64)
    n = v.numel()
    first = torch.full((num_vertices,), n, dtype=torch.int64, device=v.device)
    first = first.scatter_reduce(0, v, torch.arange(n, device=v.device), reduce="amin")
    out = torch.zeros(num_vertices, 2, dtype=uv.dtype, device=uv.device)
    used = first < n
    out[used] = uv[t[first[used]]]
    return out


def interpolate_layout(attr: Tensor, faces: Tensor, fragments: Fragments) -> Tensor:
    """Per-vertex ``attr (B, V, C)`` interpolated over the UV layout's fragments (rasterised
    once, batch 1) for every item: ``(B, S, S, C)``, 0 outside the islands."""
    B, _, C = attr.shape
    H, W = fragments.image_size
    corner = faces.to(device=attr.device, dtype=torch.int64).index_select(0, fragments.fg_tri)  # (N, 3)
    vals = attr[:, corner.reshape(-1)].view(B, -1, 3, C)
    fg = (fragments.fg_bary.to(attr.dtype)[None, :, :, None] * vals).sum(2)  # (B, N, C)
    index = (fragments.fg_index % (H * W)).to(attr.device)
    out = attr.new_zeros(B, H * W, C).index_copy(1, index, fg)
    return out.view(B, H, W, C)


def unwrap_photo(
    image: Tensor,
    screen: Tensor,
    visibility: Tensor,
    faces: Tensor,
    uv: Tensor,
    face_uv: Tensor,
    uv_size: int = 256,
    depth_map: Tensor | None = None,
    depth_tolerance: float = 5e-3,
    uv_fragments: Fragments | None = None,
) -> tuple[Tensor, Tensor]:
    """Photo -> UV texture through the current fit (CEST's "illuminated texture").

    ``screen (B, V, 3)`` are the fitted vertices' ``[u, v, depth]`` in the photo,
    ``visibility (B, V)`` (bool or [0, 1]) per-vertex visibility. Each texel is mapped to
    the photo by interpolating ``screen`` over its UV triangle, then sampled bilinearly.
    The mask is 1 where the texel is covered by the layout, lands inside the photo and its
    interpolated visibility is >= 0.5; with ``depth_map (B, H, W)`` (rasterised depth, 0 =
    background) the texel's own depth must also be within ``depth_tolerance`` of it.
    Returns ``texture (B, C, S, S)`` (differentiable w.r.t. ``image`` and ``screen``) and
    ``mask (B, 1, S, S)``.
    """
    B = image.shape[0]
    H, W = image.shape[-2:]
    S = uv_size
    fr = uv_fragments if uv_fragments is not None else rasterize_uv(uv.to(screen.dtype), face_uv, S)
    pos = interpolate_layout(screen, faces, fr)  # (B, S, S, 3)
    vis = interpolate_layout(visibility.to(screen.dtype)[..., None], faces, fr)[..., 0]
    tex = sample_image(image, pos[..., :2].reshape(B, S * S, 2)).transpose(1, 2).reshape(B, -1, S, S)
    u, v, z = pos.unbind(-1)
    mask = fr.mask[:1].expand(B, S, S) & (vis >= 0.5) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    if depth_map is not None:
        px = u.detach().floor().long().clamp(0, W - 1)
        py = v.detach().floor().long().clamp(0, H - 1)
        b = torch.arange(B, device=image.device)[:, None, None]
        d = depth_map[b, py, px]
        mask &= (d > 0) & (z.detach() <= d + depth_tolerance)
    mask = mask[:, None].to(tex.dtype)
    return tex * mask, mask


def sample_uv_map(uv_map: Tensor, uv: Tensor) -> Tensor:
    """Bilinear samples ``(B, N, C)`` of ``uv_map (B, C, S, S)`` at UV points ``(B|1, N, 2)``."""
    B = uv_map.shape[0]
    uv = uv.expand(B, -1, -1) if uv.dim() == 3 else uv[None].expand(B, -1, -1)
    return texture(uv_map, uv[:, :, None, :])[:, :, 0, :]


def apply_displacement(
    vertices: Tensor,
    normals: Tensor,
    displacement: Tensor,
    vertex_uvs: Tensor,
    scale: float = 1.0,
) -> Tensor:
    """Offset vertices along their normals by a UV displacement map (DECA's detail, coarse).

    ``displacement (B, 1, S, S)`` in metres (times ``scale``), sampled at per-vertex UVs
    ``(V, 2)`` (see :func:`vertex_uv`). Differentiable w.r.t. all tensor inputs.
    """
    d = sample_uv_map(displacement, vertex_uvs)  # (B, V, 1)
    return vertices + normals * (scale * d)


def displaced_uv_positions(
    vertices: Tensor,
    normals: Tensor,
    displacement: Tensor,
    faces: Tensor,
    uv_fragments: Fragments,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Dense displacement through UV space (DECA's detail mesh).

    Rasterised UV layout ``uv_fragments`` (:func:`rasterize_uv` at the displacement map's
    size) -> per-texel base positions ``P`` and unit normals ``N`` ``(B, 3, S, S)``;
    returns ``(P + scale·d·N, N, mask (1, 1, S, S))``.
    """
    P = interpolate_layout(vertices, faces, uv_fragments).permute(0, 3, 1, 2)
    N = interpolate_layout(normals, faces, uv_fragments).permute(0, 3, 1, 2)
    N = N / N.norm(dim=1, keepdim=True).clamp_min(1e-12)
    mask = uv_fragments.mask[:, None].to(P.dtype)
    return P + scale * displacement * N * mask, N * mask, mask


def _central_diff(x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Derivatives along texel columns (u) and rows (v, pointing up).

    Central differences where both neighbours are valid, one-sided ones at the borders of
    the image or of ``mask`` (so UV-island borders do not difference against empty texels).
    """
    if mask is None:
        mask = torch.ones_like(x[:, :1])
    p = Fn.pad(x, (1, 1, 1, 1), mode="replicate")
    m = Fn.pad(mask, (1, 1, 1, 1), mode="constant", value=0.0)
    c = p[..., 1:-1, 1:-1]

    def one_axis(fwd: Tensor, bwd: Tensor, m_f: Tensor, m_b: Tensor) -> Tensor:
        # fwd/bwd are the neighbours in the direction of increasing u (or v).
        df, db = (fwd - c) * m_f, (c - bwd) * m_b
        return (df + db) / (m_f + m_b).clamp_min(1.0)

    du = one_axis(p[..., 1:-1, 2:], p[..., 1:-1, :-2], m[..., 1:-1, 2:], m[..., 1:-1, :-2])
    dv = one_axis(p[..., :-2, 1:-1], p[..., 2:, 1:-1], m[..., :-2, 1:-1], m[..., 2:, 1:-1])
    return du, dv


def normal_map_from_displacement(
    displacement: Tensor,
    texel_size: float | None = None,
    positions: Tensor | None = None,
    base_normals: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Unit normals ``(B, 3, S, S)`` of a displaced surface.

    * Tangent space (``texel_size`` metres per texel): ``n ∝ (-∂d/∂u, -∂d/∂v, 1)``, the usual
      normal map of a height field (``+Z`` = undisplaced normal, ``+X`` along ``u``, ``+Y``
      along ``v``).
    * Object space (``positions`` = displaced positions ``(B, 3, S, S)`` from
      :func:`displaced_uv_positions` and ``base_normals`` for orientation): the normal of the
      dense displaced surface ``∂P/∂u × ∂P/∂v``, flipped to agree with ``base_normals``;
      texels outside ``mask`` fall back to ``base_normals``. This is what DECA renders.
    """
    if positions is None:
        if texel_size is None:
            raise ValueError("give texel_size (tangent space) or positions (object space)")
        du, dv = _central_diff(displacement / texel_size)
        n = torch.cat([-du, -dv, torch.ones_like(du)], 1)
        return n / n.norm(dim=1, keepdim=True)
    pu, pv = _central_diff(positions, mask)
    n = torch.cross(pu, pv, dim=1)
    n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if base_normals is not None:
        flip = (n * base_normals).sum(1, keepdim=True) < 0
        n = torch.where(flip, -n, n)
        if mask is not None:
            n = torch.where(mask > 0, n, base_normals)
    return n


def dilate_uv(x: Tensor, mask: Tensor, iterations: int = 2) -> Tensor:
    """``x (B, C, S, S)`` with texels outside ``mask (1|B, 1, S, S)`` filled, ``iterations``
    rings deep, by the mean of their valid 3×3 neighbours (inside the mask ``x`` is kept):
    bilinear look-ups at the UV islands' borders then see no empty texels."""
    m = mask.to(x.dtype).expand(x.shape[0], 1, *x.shape[-2:])
    out = x * m
    k = x.new_ones(1, 1, 3, 3)
    C = x.shape[1]
    for _ in range(iterations):
        count = Fn.conv2d(m, k, padding=1)
        total = Fn.conv2d(out.reshape(-1, 1, *x.shape[-2:]), k, padding=1).reshape(x.shape)
        grow = (m == 0) & (count > 0)
        out = torch.where(grow.expand(-1, C, -1, -1), total / count.clamp_min(1.0), out)
        m = torch.where(grow, torch.ones_like(m), m)
    return out


def uv_tangents(vertices: Tensor, faces: Tensor, uv: Tensor, face_uv: Tensor) -> tuple[Tensor, Tensor]:
    """Per-face surface derivatives ``∂P/∂u`` and ``∂P/∂v`` ``(B, F, 3)`` (metres per UV unit)
    of the mesh ``vertices (B, V, 3)`` through its UV layout (``uv (T, 2)``, ``face_uv (F, 3)``).

    Each triangle maps linearly from UV to space: ``[P_u P_v] = [e1 e2] · [t1 t2]⁻¹`` with
    the corner differences ``e`` in space and ``t`` in UV. Triangles with a degenerate UV
    image (area below 1e-12) get zero derivatives.
    """
    p = vertices[:, faces]  # (B, F, 3, 3)
    t = uv.to(vertices.dtype)[face_uv]  # (F, 3, 2)
    e1, e2 = p[:, :, 1] - p[:, :, 0], p[:, :, 2] - p[:, :, 0]
    t1, t2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    det = t1[:, 0] * t2[:, 1] - t2[:, 0] * t1[:, 1]
    ok = det.abs() > 1e-12
    inv = torch.where(ok, 1.0 / torch.where(ok, det, torch.ones_like(det)), torch.zeros_like(det))[None, :, None]
    # [t1 t2]^-1 = [[t2v, -t2u], [-t1v, t1u]] / det (columns t1, t2)
    pu = (e1 * t2[None, :, 1:2] - e2 * t1[None, :, 1:2]) * inv
    pv = (e2 * t1[None, :, 0:1] - e1 * t2[None, :, 0:1]) * inv
    return pu, pv


def sample_uv_gradient(uv_map: Tensor, uv: Tensor, step_texels: float = 0.5) -> Tensor:
    """Derivatives ``(N, 2)`` (per UV unit, ``v`` up) of a one-channel map ``uv_map (1, 1, S, S)``
    at UV points ``(N, 2)``: central differences of bilinear samples ``step_texels`` either side
    (the default, half a texel, follows the bilinear surface's slope continuously). Batched:
    ``uv_map (B, 1, S, S)`` at ``uv (B, ..., 2)`` -> ``(B, ..., 2)``."""
    if uv.dim() == 2:
        return sample_uv_gradient(uv_map, uv[None], step_texels)[0]
    S = uv_map.shape[-1]
    h = step_texels / S
    B, shape = uv.shape[0], uv.shape[1:-1]
    off = torch.tensor([[h, 0.0], [-h, 0.0], [0.0, h], [0.0, -h]], dtype=uv.dtype, device=uv.device)
    pts = (uv.reshape(B, 1, -1, 2) + off[None, :, None]).reshape(B, -1, 2)
    d = sample_uv_map(uv_map.to(uv.dtype), pts)[..., 0].view(B, 4, -1)
    return torch.stack([d[:, 0] - d[:, 1], d[:, 2] - d[:, 3]], -1).view(B, *shape, 2) / (2 * h)


def sample_uv_cavity(uv_map: Tensor, uv: Tensor, radius_texels: float = 1.5) -> Tensor:
    """How far a one-channel map ``uv_map (1, 1, S, S)`` lies below its surroundings at UV points
    ``(N, 2)``: the bilinear sample minus the mean of eight samples on a ring of
    ``radius_texels`` ``(N,)`` (negative in grooves, positive on ridges)."""
    S = uv_map.shape[-1]
    ang = torch.arange(8, dtype=uv.dtype, device=uv.device) * (torch.pi / 4)
    off = torch.cat([torch.zeros(1, 2, dtype=uv.dtype, device=uv.device),
                     torch.stack([ang.cos(), ang.sin()], 1) * (radius_texels / S)])
    d = sample_uv_map(uv_map, (uv[None] + off[:, None]).reshape(1, -1, 2))[0, :, 0].view(9, -1)
    return d[0] - d[1:].mean(0)


def perturb_normals(normals: Tensor, tangent_u: Tensor, tangent_v: Tensor, grad: Tensor) -> Tensor:
    """Unit normals ``(N, 3)`` of a surface displaced along its normals by a UV height map
    (bump mapping), to first order in the displacement ``d``.

    ``normals (N, 3)`` of the base surface (need not be unit), its derivatives ``tangent_u``,
    ``tangent_v`` ``(N, 3)`` (``∂P/∂u``, ``∂P/∂v``, e.g. :func:`uv_tangents`) and the height
    map's derivatives ``grad (N, 2)`` = ``(∂d/∂u, ∂d/∂v)`` (e.g. :func:`sample_uv_gradient`).
    With ``P' = P + d·n``: ``P'_u × P'_v ≈ P_u × P_v + d_u (n × P_v) + d_v (P_u × n)``, divided
    by ``(P_u × P_v)·n`` so that mirrored UV islands keep the outward side. The same surface
    normal as :func:`normal_map_from_displacement` in object space, without the dense UV pass.
    """
    n = normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-12)
    area = (torch.cross(tangent_u, tangent_v, dim=1) * n).sum(1, keepdim=True)
    safe = torch.where(area.abs() > 1e-12, area, torch.ones_like(area))
    bump = (grad[:, :1] * torch.cross(n, tangent_v, dim=1) + grad[:, 1:] * torch.cross(tangent_u, n, dim=1)) / safe
    out = n + torch.where(area.abs() > 1e-12, bump, torch.zeros_like(bump))
    return out / out.norm(dim=1, keepdim=True).clamp_min(1e-12)


def full_to_window(uv_map: Tensor, window: Tensor | tuple[float, float, float, float], size: int) -> Tensor:
    """Resample a whole-layout UV map ``(B, C, S, S)`` onto a window ``(u0, v0, u1, v1)`` (or
    ``(B, 4)``) at ``size × size`` texels (bilinear, borders clamped)."""
    B = uv_map.shape[0]
    w = torch.as_tensor(window, dtype=uv_map.dtype, device=uv_map.device).reshape(-1, 4).expand(B, 4)
    c = (torch.arange(size, dtype=uv_map.dtype, device=uv_map.device) + 0.5) / size
    u = w[:, None, None, 0] + c[None, None, :] * (w[:, None, None, 2] - w[:, None, None, 0])
    v = w[:, None, None, 3] - c[None, :, None] * (w[:, None, None, 3] - w[:, None, None, 1])  # row 0 = top
    uv = torch.stack([u.expand(B, size, size), v.expand(B, size, size)], -1)
    return texture(uv_map, uv).permute(0, 3, 1, 2)


def window_coordinates(window: Tensor | tuple[float, float, float, float], size: int, batch: int = 1,
                       dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
                       ) -> tuple[Tensor, Tensor]:
    """Every texel centre of a whole ``size × size`` layout in the coordinates of ``window``
    (one ``(u0, v0, u1, v1)`` or ``(B, 4)``): ``inner (B, size, size, 2)`` (:func:`to_window`;
    row 0 = the top of UV space) and ``inside (B, size, size)`` bool, the texels the window
    covers (both coordinates in [0, 1])."""
    c = (torch.arange(size, dtype=dtype, device=device) + 0.5) / size
    u, v = torch.meshgrid(c, 1.0 - c, indexing="xy")  # (size, size): column -> u, row -> v (row 0 = top)
    w = torch.as_tensor(window, dtype=dtype, device=device).reshape(-1, 4).expand(batch, 4)
    inner = to_window(torch.stack([u, v], -1)[None].expand(batch, size, size, 2), w)
    return inner, ((inner >= 0) & (inner <= 1)).all(-1)


def window_to_full(window_map: Tensor, window: Tensor | tuple[float, float, float, float], size: int) -> Tensor:
    """A window's UV map ``(B, C, M, M)`` placed into a whole-layout map ``(B, C, size, size)``
    (bilinear; 0 outside the window)."""
    inner, inside = window_coordinates(window, size, window_map.shape[0], window_map.dtype, window_map.device)
    out = texture(window_map, inner).permute(0, 3, 1, 2)
    return out * inside[:, None].to(out.dtype)
