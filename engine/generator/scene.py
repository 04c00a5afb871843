"""Image formation of the realistic generator: the head and its props rasterised by
:func:`engine.render.rasterize` through the sample's camera, composited by depth, and shaded
per pixel by :func:`engine.generator.lights.shade` with shadow maps.

The head and the props are two layers (two rasterisations: the props are few triangles):
per pixel the nearer one wins, which also tells where a prop hides the face skin (the
occlusion mask). Everything is computed in the head's model frame (metres): positions,
normals, the camera centre ``−Rᵀt`` and the lights turned by ``Rᵀ``. Per-vertex attributes
(normals, eyeball directions, specular material, ambient occlusion, region weights) and the
UV albedo are interpolated with :func:`engine.render.interpolate_foreground` and
:func:`engine.render.sample_uv_map`; the eyes' irises are evaluated per pixel
(:func:`engine.generator.eyes.eye_albedo`). With a detail map (``HeadSurface.displacement``,
metres along the normal in UV) the head's normals are bent per pixel by its slope
(:func:`engine.render.perturb_normals`, the first-order normal of the displaced surface) before
shading, except on the eyes, and grooves lose light to their walls (cavity occlusion: a point
``c`` below the mean of its surroundings, :func:`engine.render.sample_uv_cavity`, keeps
``1 + c / CAVITY_DEPTH_M`` of the ambient and direct light, at least ``CAVITY_FLOOR``); positions,
depth and masks stay those of the coarse mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.face import Decoded
from engine.generator.eyes import EyeLook, eye_albedo
from engine.generator.lights import UP_CAMERA, LightRig, ShadowMap, shade, shadow_map
from engine.generator.props import SEGMENT_LABELS, PropsMesh
from engine.generator.tones import srgb_to_linear
from engine.render import (interpolate_foreground, perturb_normals, rasterize, sample_uv_cavity, sample_uv_gradient,
                           sample_uv_map, signed_area2, uv_tangents, vertex_normals)


@dataclass
class HeadSurface:
    """What the renderer needs of the painted, posed head: ``faces (F', 3)`` drawn and their
    ``face_uv``, the sRGB ``texture (1, 3, S, S)``, per-vertex ``attributes (V, C)`` (see
    :data:`HEAD_CHANNELS`), per-face segmentation ``labels (F',)``, the eyes' look and an
    optional detail map ``displacement (1, 1, S', S')`` (metres along the normal, UV)."""

    faces: torch.Tensor
    face_uv: torch.Tensor
    texture: torch.Tensor
    attributes: torch.Tensor
    labels: torch.Tensor
    eye_look: EyeLook
    displacement: torch.Tensor | None = None


#: cavity occlusion of the detail map: a groove this far (metres) below its surroundings (ring of
#: CAVITY_RADIUS_TEXELS) would get no light; every point keeps at least CAVITY_FLOOR of it
CAVITY_DEPTH_M = 0.8e-3
CAVITY_RADIUS_TEXELS = 1.5
CAVITY_FLOOR = 0.4

#: channels of :attr:`HeadSurface.attributes`: eyeball rest direction (3), specular strength,
#: shininess, ambient occlusion, face-skin weight, skin weight (wrap lighting), eye weight
HEAD_CHANNELS = ("eye_dx", "eye_dy", "eye_dz", "specular", "shininess", "ao", "face_skin", "skin", "eyes")


@dataclass
class SceneRender:
    """Linear radiance ``image (H, W, 3)`` (0 where nothing covers), ``coverage (H, W)`` bool,
    ``face_mask`` (visible face skin), ``occlusion_mask`` (face skin hidden by a prop),
    ``segmentation (H, W)`` uint8 (:data:`engine.generator.props.SEGMENT_LABELS`), camera depth
    (H, W) of the head (``depth``) and of the props (``prop_depth``; inf where none), the
    per-vertex ``visibility (V,)`` of the head (front-facing, in the image, not hidden by
    anything) and the shadow maps used."""

    image: torch.Tensor
    coverage: torch.Tensor
    face_mask: torch.Tensor
    occlusion_mask: torch.Tensor
    segmentation: torch.Tensor
    depth: torch.Tensor
    prop_depth: torch.Tensor
    visibility: torch.Tensor
    shadow_maps: list[ShadowMap | None]


def points_visible(points_model: torch.Tensor, camera, depth: torch.Tensor, occluders: torch.Tensor | None = None,
                   tolerance: float = 5e-3, occluder_tolerance: float = 1e-3) -> torch.Tensor:
    """``(N,)`` bool: model-frame points inside the image, not behind the head's depth map
    ``depth (H, W)`` (inf = nothing) by more than ``tolerance`` and not behind the props'
    depth map ``occluders`` by more than ``occluder_tolerance``, at all four pixel centres
    around them (so points on a steep but visible surface count as visible)."""
    H, W = depth.shape
    uv, z = camera.project(points_model[None])
    uv, z = uv[0], z[0]
    x0 = (uv[:, 0] - 0.5).floor().long()
    y0 = (uv[:, 1] - 0.5).floor().long()
    far = torch.full_like(z, -float("inf"))
    far_occ = torch.full_like(z, -float("inf"))
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = (y0 + dy).clamp(0, H - 1), (x0 + dx).clamp(0, W - 1)
            far = torch.maximum(far, depth[yy, xx])
            if occluders is not None:
                far_occ = torch.maximum(far_occ, occluders[yy, xx])
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H) & (z > 0)
    ok = inside & (z <= far + tolerance)
    return ok & (z <= far_occ + occluder_tolerance) if occluders is not None else ok


def render_scene(dec: Decoded, surface: HeadSurface, props: PropsMesh, rig: LightRig, shadow_size: int = 128) -> SceneRender:
    """Rasterise, composite and shade the head (decoded, batch of one) and its props."""
    cam = dec.camera
    H, W = cam.image_size
    HW = H * W
    verts = dec.vertices[0]
    normals = dec.normals[0]
    # ---- layer 1: the head
    screen = dec.screen
    front = torch.nonzero(signed_area2(screen, surface.faces)[0] < 0)[:, 0]  # cull here: less per-triangle setup
    fr_h = rasterize(screen, surface.faces[front], (H, W), perspective=True, cull_backfaces=True)
    attr = torch.cat([verts, normals, surface.attributes], 1)
    a_h = interpolate_foreground(attr[None], surface.faces[front], fr_h)  # (Nh, 6 + C)
    uv_h = interpolate_foreground(dec.decoder.head.uv[None], surface.face_uv[front], fr_h)
    alb_h = sample_uv_map(surface.texture, uv_h[None])[0]
    ch = {k: 6 + i for i, k in enumerate(HEAD_CHANNELS)}
    eye_px = torch.nonzero(a_h[:, ch["eyes"]] > 0.5)[:, 0]
    if len(eye_px):
        d = a_h[eye_px, ch["eye_dx"]:ch["eye_dz"] + 1].double().numpy()
        d /= np.linalg.norm(d, axis=1, keepdims=True).clip(1e-9)
        alb_h[eye_px] = torch.from_numpy(eye_albedo(d, surface.eye_look).astype(np.float32))
    occ_h = None  # cavity occlusion per head pixel (detail only)
    if surface.displacement is not None:
        bent = torch.nonzero(a_h[:, ch["eyes"]] <= 0.5)[:, 0]
        tri = fr_h.fg_tri[bent]
        disp = surface.displacement.to(uv_h.dtype)
        tu, tv = uv_tangents(verts[None], surface.faces[front], dec.decoder.head.uv, surface.face_uv[front])
        grad = sample_uv_gradient(disp, uv_h[bent])
        a_h[bent, 3:6] = perturb_normals(a_h[bent, 3:6], tu[0, tri], tv[0, tri], grad)
        occ_h = torch.ones(len(a_h))
        cavity = sample_uv_cavity(disp, uv_h[bent], CAVITY_RADIUS_TEXELS)
        occ_h[bent] = (1 + cavity / CAVITY_DEPTH_M).clamp(CAVITY_FLOOR, 1.0)
    lab_h = surface.labels[front][fr_h.fg_tri]
    is_face = a_h[:, ch["face_skin"]] > 0.5  # face skin per pixel, as in the face mask
    skin_lab = (lab_h == SEGMENT_LABELS["face_skin"]) | (lab_h == SEGMENT_LABELS["head_skin"])
    lab_h = torch.where(skin_lab, torch.where(is_face, SEGMENT_LABELS["face_skin"], SEGMENT_LABELS["head_skin"]), lab_h)
    head_mat = torch.stack([a_h[:, ch["specular"]], a_h[:, ch["shininess"]], a_h[:, ch["ao"]],
                            0.3 * a_h[:, ch["skin"]].clamp(0, 1)], 1)
    # ---- layer 2: the props
    n_p = 0
    if not props.empty:
        scr_p = cam.to_screen(props.vertices[None])
        fr_p = rasterize(scr_p, props.faces, (H, W), perspective=True, cull_backfaces=False)
        pn = vertex_normals(props.vertices[None], props.faces)[0]
        a_p = interpolate_foreground(torch.cat([props.vertices, pn, props.material], 1)[None], props.faces, fr_p)
        uv_p = interpolate_foreground(props.uv[None], props.faces, fr_p)
        alb_p = sample_uv_map(props.texture[None], uv_p[None])[0]
        lab_p = props.label[fr_p.fg_tri]
        n_p = a_p.shape[0]
    # ---- composite by depth
    depth_h = torch.full((HW,), float("inf")).index_put((fr_h.fg_index,), fr_h.depth.reshape(-1)[fr_h.fg_index])
    depth_p = torch.full((HW,), float("inf"))
    if n_p:
        depth_p = depth_p.index_put((fr_p.fg_index,), fr_p.depth.reshape(-1)[fr_p.fg_index])
    head_wins = depth_h <= depth_p
    depth = torch.minimum(depth_h, depth_p)
    covered = torch.isfinite(depth)
    pix = torch.nonzero(covered)[:, 0]
    slot_h = torch.full((HW,), -1, dtype=torch.int64).index_put((fr_h.fg_index,), torch.arange(len(fr_h.fg_index)))
    from_head = head_wins[pix]
    ih = slot_h[pix[from_head]]
    P = torch.empty(len(pix), 3)
    N = torch.empty(len(pix), 3)
    A = torch.empty(len(pix), 3)
    M = torch.empty(len(pix), 4)  # specular, shininess, ao, wrap
    L = torch.empty(len(pix), dtype=torch.int64)
    P[from_head], N[from_head], A[from_head] = a_h[ih, :3], a_h[ih, 3:6], alb_h[ih]
    M[from_head], L[from_head] = head_mat[ih], lab_h[ih]
    if n_p:
        slot_p = torch.full((HW,), -1, dtype=torch.int64).index_put((fr_p.fg_index,), torch.arange(n_p))
        ip = slot_p[pix[~from_head]]
        P[~from_head], N[~from_head], A[~from_head] = a_p[ip, :3], a_p[ip, 3:6], alb_p[ip]
        ones = torch.ones(len(ip))
        M[~from_head] = torch.stack([a_p[ip, 6], a_p[ip, 7], a_p[ip, 8], 0.1 * ones], 1)
        L[~from_head] = lab_p[ip]
    N = N / N.norm(dim=1, keepdim=True).clamp_min(1e-9)
    # ---- shading in the model frame
    R, t = cam.R[0], cam.t[0]
    eye = -(R.T @ t)
    view = eye[None] - P
    view = view / view.norm(dim=1, keepdim=True).clamp_min(1e-9)
    N = torch.where(((N * view).sum(1) < 0)[:, None] & ~from_head[:, None], -N, N)  # props are two-sided
    dirs = torch.tensor(np.array([l.direction for l in rig.lights]).reshape(-1, 3), dtype=torch.float32) @ R  # Rᵀ d per row
    up = torch.tensor(UP_CAMERA, dtype=torch.float32) @ R
    maps: list[ShadowMap | None] = []
    shadows: list[torch.Tensor | None] = []
    casters = props.faces[props.label != SEGMENT_LABELS["torso"]]  # the torso (below the head) casts no shadow that matters
    meshes = [(verts, surface.faces, True)] + ([(props.vertices, casters, False)] if len(casters) else [])
    for light, d in zip(rig.lights, dirs):
        if light.shadow:
            sm = shadow_map(meshes, d, shadow_size)
            maps.append(sm)
            ndl = N @ d
            lit = ndl > -M[:, 3]  # only points the light can reach (wrap included) need a lookup
            vis = torch.zeros(len(P))
            vis[lit] = sm.visibility(P[lit], ndl[lit], light.softness)
            shadows.append(vis)
        else:
            maps.append(None)
            shadows.append(None)
    if occ_h is not None:  # grooves of the detail map: less ambient and direct light
        occ = torch.ones(len(pix))
        occ[from_head] = occ_h[ih]
        M[:, 2] *= occ
        shadows = [occ if sh is None else sh * occ for sh in shadows]
    rad = shade(srgb_to_linear(A.clamp(0, 1)), N, view, M[:, 0], M[:, 1], M[:, 2], M[:, 3], rig, dirs, shadows, up)
    image = torch.zeros(HW, 3).index_put((pix,), rad).view(H, W, 3)
    seg = torch.zeros(HW, dtype=torch.uint8).index_put((pix,), L.to(torch.uint8)).view(H, W)
    # ---- masks and visibility
    face_px = torch.zeros(HW, dtype=torch.bool)
    face_px[fr_h.fg_index] = lab_h == SEGMENT_LABELS["face_skin"]
    face_mask = (face_px & head_wins).view(H, W)
    occlusion = (face_px & ~head_wins).view(H, W)
    vis = points_visible(verts, cam, depth_h.view(H, W), depth_p.view(H, W)) & (dec.facing()[0] > 0)
    return SceneRender(image, covered.view(H, W), face_mask, occlusion, seg, depth_h.view(H, W), depth_p.view(H, W),
                       vis, maps)


def head_labels(regions: dict[str, torch.Tensor], faces: torch.Tensor) -> torch.Tensor:
    """Per-face segmentation label ``(F,)`` of the head from its vertex regions (majority)."""
    lab = torch.full((faces.shape[0],), SEGMENT_LABELS["head_skin"], dtype=torch.int64)
    for name, key in (("face_skin", "face_skin"), ("eyes", "eyes"), ("mouth_interior", "mouth")):
        if name in regions:
            lab[regions[name][faces].float().mean(1) > 0.5] = SEGMENT_LABELS[key]
    return lab
