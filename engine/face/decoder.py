"""``FaceDecoder``: the one image-formation model shared by fitting, learning, data and outputs.

    params (FaceParams) --head model--> vertices, joints --camera--> pixels, depth
                        --normals + SH--> shading --reflectance--> albedo, colour
                        --rasteriser--> visibility, images

``FaceDecoder(head, reflectance=None)(params) -> Decoded``. :class:`Decoded` computes each
quantity on first use and keeps it (the landmark stage of a fit never pays for shading,
a render never pays for landmarks), so one object serves every consumer:

* per-vertex (MoFA's model, the fitter's photometric term): ``vertices``, ``normals``,
  ``uv``/``depth`` (projected pixels), ``sh_basis``, ``shading``, ``albedo``, ``colour``,
  ``sample(image)`` (the photo at the projected vertices), ``visibility(...)``;
* landmarks: ``landmarks3d``/``landmarks2d`` (iBUG-68) and ``points(tri, bary)`` for any
  embedded point set (dense detector embeddings), ``silhouette(band)`` for contour terms;
* images: ``render(...)`` through :func:`engine.render.render_mesh` (per-vertex albedo or
  the UV ``albedo_map``, SH shading, antialiasing, region masks);
* detail (DECA): ``params.displacement`` (a UV map, metres along the normal; over the UV
  window ``params.displacement_window`` when given) moves the vertices and bends the normals
  ``render`` shades with per pixel (``render_mesh(displacement=...)``).

All tensors are batch-first and differentiable w.r.t. ``params`` except ``visibility``.
"""

from __future__ import annotations

from functools import cached_property
from typing import Protocol

import torch
from torch import Tensor, nn

from engine.face.params import FaceParams
from engine.head.model import HeadModel
from engine.render import (RenderOutput, facing_camera, rasterize_uv, render_mesh, sample_image, sample_uv_map,
                           sh_basis, splat_visibility, vertex_normals, vertex_uv, vertex_visibility)
from engine.render.rasterize import Fragments
from engine.render.uv import to_window
from engine.render.shading import camera_to_view

__all__ = ["Decoded", "FaceDecoder", "ReflectanceModel"]


class ReflectanceModel(Protocol):
    """Maps reflectance coefficients ``(B, K, 3)`` to per-vertex albedo ``(B, V, 3)``."""

    def __call__(self, coefficients: Tensor) -> Tensor: ...


class FaceDecoder(nn.Module):
    """Decode :class:`FaceParams` with one head model (and an optional reflectance model).

    ``reflectance`` turns ``params.reflectance`` coefficients into per-vertex albedo (e.g.
    MoFA's :class:`engine.face.reflectance.LaplacianReflectance`); an explicit
    ``params.albedo`` always wins, then ``params.reflectance``, then ``params.albedo_map``
    sampled at each vertex's UV.
    """

    def __init__(self, head: HeadModel, reflectance: ReflectanceModel | None = None) -> None:
        super().__init__()
        self.head = head
        self.reflectance = reflectance

    @property
    def vertex_uv(self) -> Tensor:
        """One UV per vertex ``(V, 2)`` (seams pick one side), for per-vertex map lookups;
        computed once per head model (kept on it, not saved with it)."""
        h = self.head
        cached = h.__dict__.get("_vertex_uv_cache")
        if cached is None or cached.device != h.template.device:
            cached = vertex_uv(h.uv, h.face_uv, h.faces, h.n_vertices)
            h.__dict__["_vertex_uv_cache"] = cached
        return cached

    def uv_fragments(self, size: int, window: Tensor | tuple[float, ...] | None = None) -> Fragments:
        """The head's UV layout rasterised at ``size × size`` texels, over the UV sub-rectangle
        ``window = (u0, v0, u1, v1)`` when given (batch 1; cached on the head model per size,
        window and device, like :attr:`vertex_uv`)."""
        h = self.head
        cache = h.__dict__.setdefault("_uv_fragments_cache", {})
        win = None if window is None else tuple(round(float(x), 6) for x in torch.as_tensor(window).reshape(-1)[:4])
        key = (int(size), win, str(h.template.device))
        if key not in cache:
            cache[key] = rasterize_uv(h.uv.to(h.template.dtype), h.face_uv, int(size), win)
        return cache[key]

    def forward(self, params: FaceParams) -> "Decoded":
        return Decoded(self, params)


class Decoded:
    """Everything :class:`FaceDecoder` derives from one :class:`FaceParams` (lazy, cached).

    Frames: ``vertices``/``normals`` in the model frame (metres), ``*_camera`` in the
    OpenCV camera frame, ``uv`` in image pixels of ``params.camera.image_size``.
    """

    def __init__(self, decoder: FaceDecoder, params: FaceParams) -> None:
        self.decoder = decoder
        self.head = decoder.head
        self.params = params
        self.camera = params.camera

    # ------------------------------------------------------------------ geometry
    @cached_property
    def _posed(self):
        p = self.params
        pose = p.pose if self.head.n_joints else None
        return self.head(p.identity, p.expression, pose)

    @cached_property
    def vertices_coarse(self) -> Tensor:
        """Posed model-frame vertices ``(B, V, 3)`` before any detail displacement."""
        return self._posed.vertices

    @cached_property
    def joints(self) -> Tensor:
        """Posed joints ``(B, J, 3)``, model frame."""
        return self._posed.joints

    @cached_property
    def vertices(self) -> Tensor:
        """Posed model-frame vertices ``(B, V, 3)``, displaced along the normals by
        ``params.displacement`` (sampled at each vertex's UV) when given."""
        disp = self.params.displacement
        if disp is None:
            return self.vertices_coarse
        base_n = vertex_normals(self.vertices_coarse, self.head.faces)
        win = self.params.displacement_window
        vuv = self.decoder.vertex_uv
        if win is None:
            d = sample_uv_map(disp.to(base_n.dtype), vuv)  # (B, V, 1)
        else:  # a window's map: vertices outside it are not displaced
            inner = to_window(vuv[None].expand(disp.shape[0], -1, -1), win.to(vuv.dtype))
            inside = ((inner >= 0) & (inner <= 1)).all(-1, keepdim=True)
            d = sample_uv_map(disp.to(base_n.dtype), inner) * inside.to(base_n.dtype)
        return self.vertices_coarse + base_n * d

    @cached_property
    def normals(self) -> Tensor:
        """Area-weighted unit vertex normals ``(B, V, 3)``, model frame."""
        return vertex_normals(self.vertices, self.head.faces)

    @cached_property
    def vertices_camera(self) -> Tensor:
        return self.camera.to_camera(self.vertices)

    @cached_property
    def normals_camera(self) -> Tensor:
        """Vertex normals in the camera's (OpenCV-oriented) frame."""
        return self.camera.rotate_normals(self.normals)

    @cached_property
    def _projected(self) -> tuple[Tensor, Tensor]:
        return self.camera.project_camera(self.vertices_camera)

    @property
    def uv(self) -> Tensor:
        """Projected vertices ``(B, V, 2)`` in image pixels."""
        return self._projected[0]

    @property
    def depth(self) -> Tensor:
        """Camera depth ``(B, V)`` (metres for a perspective camera)."""
        return self._projected[1]

    @property
    def screen(self) -> Tensor:
        """``[u, v, depth]`` per vertex ``(B, V, 3)``: the rasteriser's input."""
        return torch.cat([self.uv, self.depth[..., None]], -1)

    # ------------------------------------------------------------------ landmarks
    def points(self, tri: Tensor, bary: Tensor) -> Tensor:
        """Model-frame points ``(B, N, 3)`` embedded by triangles ``tri (N,)`` and barycentrics
        ``bary (N, 3)`` in the head's mesh."""
        corners = self.vertices[:, self.head.faces[tri]]  # (B, N, 3, 3)
        return (corners * bary[None, :, :, None]).sum(2)

    def project(self, points: Tensor) -> Tensor:
        """Model-frame points ``(B, N, 3)`` -> image pixels ``(B, N, 2)``."""
        return self.camera.project(points)[0]

    @cached_property
    def landmarks3d(self) -> Tensor:
        """iBUG-68 landmarks ``(B, 68, 3)``, model frame."""
        return self.head.landmarks(self.vertices)

    @cached_property
    def landmarks2d(self) -> Tensor:
        """iBUG-68 landmarks ``(B, 68, 2)`` in image pixels."""
        return self.project(self.landmarks3d)

    def facing(self) -> Tensor:
        """``n · (towards the eye)`` per vertex ``(B, V)``: 1 facing the camera, 0 at the
        silhouette, negative facing away."""
        return (self.normals_camera * self.camera.view_directions(self.vertices_camera)).sum(-1)

    def silhouette(self, band: float, region: Tensor | None = None) -> Tensor:
        """Contour candidates ``(B, V)`` bool: vertices seen almost edge-on
        (``0 <= facing < band``), optionally restricted to ``region (V,)``."""
        f = self.facing()
        cand = (f >= 0) & (f < band)
        return cand & region[None] if region is not None else cand

    # ------------------------------------------------------------------ appearance
    @cached_property
    def sh_basis(self) -> Tensor:
        """The 9 SH basis values ``(B, V, 9)`` of the view-frame vertex normals."""
        return sh_basis(camera_to_view(self.normals_camera))

    @cached_property
    def shading(self) -> Tensor:
        """Per-vertex SH irradiance ``(B, V, 3)`` (raw: not clamped at zero)."""
        return torch.bmm(self.sh_basis, self.params.sh.to(self.sh_basis.dtype))

    @cached_property
    def albedo(self) -> Tensor | None:
        """Per-vertex albedo ``(B, V, 3)`` (see :class:`FaceDecoder` for the precedence)."""
        p = self.params
        if p.albedo is not None:
            return p.albedo
        if p.reflectance is not None and self.decoder.reflectance is not None:
            return self.decoder.reflectance(p.reflectance)
        if p.albedo_map is not None:
            return sample_uv_map(p.albedo_map, self.decoder.vertex_uv)
        return None

    @cached_property
    def colour(self) -> Tensor:
        """Shaded per-vertex colour ``albedo · shading`` ``(B, V, 3)`` (white albedo if none)."""
        alb = self.albedo
        return self.shading if alb is None else alb * self.shading

    def sample(self, image: Tensor) -> Tensor:
        """``image (B, C, H, W)`` sampled at the projected vertices: ``(B, V, C)``."""
        return sample_image(image, self.uv)

    def covered(self, mask: Tensor) -> Tensor:
        """``(B, V)`` bool: vertices that project onto a pixel of ``mask (B, H, W)`` (e.g. face
        skin hidden by props): the mask sampled bilinearly at the vertex is at least 0.5."""
        return self.sample(mask.float()[:, None])[..., 0] >= 0.5

    @torch.no_grad()
    def visibility(self, size: tuple[int, int] | None = None, tolerance: float = 5e-3,
                   splat_cells: int = 0) -> Tensor:
        """``(B, V)`` bool: front-facing, inside the image and not occluded, by a depth test
        rasterised at ``size (H, W)`` (default the camera's own image size); with
        ``splat_cells > 0`` by the cheaper vertex-splat test over that many cells a side
        (:func:`engine.render.splat_visibility`; ``size`` unused, ``tolerance`` in metres)."""
        if splat_cells > 0:
            front = facing_camera(self.camera, self.vertices_camera.detach(), self.normals.detach())
            return splat_visibility(self.screen.detach(), front, self.camera.image_size, cells=splat_cells,
                                    tolerance=tolerance)
        camera = self.camera if size is None else self.camera.resized(size)
        return vertex_visibility(self.vertices.detach(), self.head.faces, camera, tolerance=tolerance,
                                 normals=self.normals.detach())

    def render(self, *, colours: Tensor | None = None, lit: bool = True, background: Tensor | float = 0.0,
               antialias: bool = True, shade_per: str = "pixel", region: Tensor | None = None) -> RenderOutput:
        """Rasterise the decoded faces (:func:`engine.render.render_mesh`).

        ``colours (B, V, 3)``: pre-shaded per-vertex colours, rendered as they are (Gouraud).
        Otherwise the faces are textured with ``params.albedo_map`` when given, else the
        per-vertex albedo (white if none), and lit by ``params.sh`` (raw) when ``lit``.
        ``region (V,)`` is returned as an interpolated coverage channel (e.g. face skin).
        """
        p, h = self.params, self.head
        kw: dict = {}
        sh = p.sh if lit else None
        detail = sh is not None and colours is None and shade_per == "pixel" and p.displacement is not None
        if colours is not None:
            kw, sh = dict(vertex_colors=colours), None
        elif p.albedo_map is not None:
            kw = dict(texture=p.albedo_map, uv=h.uv, face_uv=h.face_uv)
        elif self.albedo is not None:
            kw = dict(vertex_colors=self.albedo)
        if detail:  # the detail bends the per-pixel normals (DECA's detail shading)
            kw.update(displacement=p.displacement, displacement_window=p.displacement_window, uv=h.uv,
                      face_uv=h.face_uv)
        return render_mesh(self.vertices, h.faces, self.camera, sh=sh, ambient=0.0, region_mask=region,
                           background=background, antialias=antialias, shade_per=shade_per, **kw)
