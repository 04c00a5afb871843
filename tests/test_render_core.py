"""Behaviour of cameras, shading, the rasteriser and antialiasing on procedural meshes."""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from engine.render import (
    SH_CONSTANTS,
    PerspectiveCamera,
    WeakPerspectiveCamera,
    axis_angle_to_matrix,
    euler_to_matrix,
    face_neighbours,
    frontal_camera,
    interpolate,
    intrinsics,
    look_at,
    matrix_to_axis_angle,
    rasterize,
    render_mesh,
    sh_basis,
    shade_sh,
    soft_silhouette,
    texture,
    vertex_normals,
)
from engine.render.meshes import cube, icosphere, uv_sphere


# ---------------------------------------------------------------- cameras & rotations
def test_frontal_camera_follows_conventions() -> None:
    cam = frontal_camera(distance=2.0, focal_px=100.0, image_size=(50, 80))
    # A point up and to the subject's left (+X, +Y) appears right of and above the centre.
    uv, z = cam.project(torch.tensor([[[0.1, 0.2, 0.0]]]))
    assert torch.allclose(uv, torch.tensor([[[40.0 + 5.0, 25.0 - 10.0]]]))
    assert torch.allclose(z, torch.tensor([[2.0]]))
    # Camera-space normal of a surface facing the viewer points at the camera (-Z).
    assert torch.allclose(cam.rotate_normals(torch.tensor([[[0.0, 0.0, 1.0]]])), torch.tensor([[[0.0, 0.0, -1.0]]]))
    R, t = look_at(torch.tensor([[0.0, 0.0, 2.0]]), torch.zeros(1, 3))
    assert torch.allclose(R, cam.R, atol=1e-6) and torch.allclose(t, cam.t, atol=1e-6)


def test_look_at_puts_target_on_principal_point() -> None:
    eye = torch.tensor([[0.7, 0.4, 1.5], [-1.0, -0.3, 0.2]])
    target = torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.1, -0.1]])
    R, t = look_at(eye, target)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(torch.det(R), torch.ones(2), atol=1e-6)
    cam = PerspectiveCamera(intrinsics(300.0, cx=40.0, cy=30.0, batch_size=2), R, t, (60, 80))
    uv, z = cam.project(target[:, None])
    assert torch.allclose(uv[:, 0], torch.tensor([[40.0, 30.0]] * 2), atol=1e-4)
    assert torch.allclose(z[:, 0], (eye - target).norm(dim=-1), atol=1e-5)
    # Model +Y ("up") projects upwards in the image (smaller v).
    uv_up, _ = cam.project((target + torch.tensor([0.0, 0.05, 0.0]))[:, None])
    assert (uv_up[:, 0, 1] < 30.0).all()


def test_weak_perspective_matches_formula() -> None:
    s = torch.tensor([2.0])
    tr = torch.tensor([[0.1, -0.2]])
    cam = WeakPerspectiveCamera(s, tr, (100, 200))
    uv, _ = cam.project(torch.tensor([[[0.3, 0.25, 0.0]]]))
    u_ndc, v_ndc = 2.0 * 0.3 + 0.1, -(2.0 * 0.25) - 0.2
    assert torch.allclose(uv, torch.tensor([[[(u_ndc + 1) * 100, (v_ndc + 1) * 50]]]))


def test_rotation_round_trips() -> None:
    g = torch.Generator().manual_seed(0)
    aa = torch.randn(64, 3, generator=g, dtype=torch.float64)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(64, 1, generator=g, dtype=torch.float64) * 3.1
    R = axis_angle_to_matrix(aa)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(R), atol=1e-12)
    assert torch.allclose(matrix_to_axis_angle(R), aa, atol=1e-9)
    # Near pi the axis sign is ambiguous, but the rotation must survive the round trip.
    near_pi = torch.tensor([[0.0, math.pi - 1e-7, 0.0], [1e-9, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(axis_angle_to_matrix(matrix_to_axis_angle(axis_angle_to_matrix(near_pi))), axis_angle_to_matrix(near_pi), atol=1e-6)
    # Euler XYZ = R_x @ R_y @ R_z with the right-hand rule about model axes.
    e = torch.tensor([0.3, -0.5, 1.1], dtype=torch.float64)
    ref = axis_angle_to_matrix(torch.tensor([0.3, 0, 0], dtype=torch.float64)) @ axis_angle_to_matrix(
        torch.tensor([0, -0.5, 0], dtype=torch.float64)
    ) @ axis_angle_to_matrix(torch.tensor([0, 0, 1.1], dtype=torch.float64))
    assert torch.allclose(euler_to_matrix(e), ref, atol=1e-12)


# ---------------------------------------------------------------- normals & shading
def test_vertex_normals_of_sphere_are_radial_and_area_weighted() -> None:
    v, f = icosphere(3)
    n = vertex_normals(v[None], f)[0]
    assert (n * v).sum(-1).min() > 0.999
    # Area weighting: a vertex shared by one big and two tiny faces follows the big one.
    verts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0.01], [0.01, 0, 0.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 3, 4]])
    n0 = vertex_normals(verts, faces)[0, 0]
    assert n0[2] > 0.99


def test_sh_constants_and_irradiance() -> None:
    # Known Ramamoorthi-Hanrahan values: c0 = 0.282095, Â1/π·c1 = 2/3·0.488603.
    assert abs(SH_CONSTANTS[0] - 0.282095) < 1e-6
    assert abs(SH_CONSTANTS[1] - 2.0 / 3.0 * 0.488603) < 1e-6
    # The basis is the clamped-cosine convolution: for a light L(w) = Σ L_k Y_k(w), the
    # Lambertian radiance (1/π)∫ L(w) max(0, n·w) dw equals Σ L_k basis_k(n). Check by
    # Monte Carlo-free quadrature on a fine sphere grid.
    g = torch.Generator().manual_seed(1)
    L = torch.randn(9, generator=g, dtype=torch.float64)
    th = (torch.arange(400, dtype=torch.float64) + 0.5) / 400 * math.pi
    ph = (torch.arange(800, dtype=torch.float64) + 0.5) / 800 * 2 * math.pi
    T, P = torch.meshgrid(th, ph, indexing="ij")
    w = torch.stack([T.sin() * P.cos(), T.sin() * P.sin(), T.cos()], -1).reshape(-1, 3)
    dw = (T.sin() * (math.pi / 400) * (2 * math.pi / 800)).reshape(-1)
    # Plain (unconvolved) SH Y_k(w): divide out the convolution factors.
    conv = torch.tensor([1.0] + [2.0 / 3.0] * 3 + [0.25] * 5, dtype=torch.float64)
    Y = sh_basis(w) / conv
    radiance = Y @ L
    normals = torch.nn.functional.normalize(torch.randn(5, 3, generator=g, dtype=torch.float64), dim=-1)
    integral = ((radiance[None] * (normals @ w.T).clamp_min(0) * dw[None]).sum(-1)) / math.pi
    assert torch.allclose(sh_basis(normals) @ L, integral, atol=2e-4)


def test_zero_sh_code_renders_lit_with_ambient_offset() -> None:
    n = torch.nn.functional.normalize(torch.randn(2, 7, 3), dim=-1)
    shade = shade_sh(n, torch.zeros(2, 27), ambient=0.8)
    assert torch.allclose(shade, torch.full_like(shade, 0.8))
    assert torch.allclose(shade_sh(n, torch.zeros(2, 9, 3), ambient=0.0), torch.zeros(2, 7, 3))
    # Light from above (+Y coefficient) brightens upward normals.
    sh = torch.zeros(1, 9, 3)
    sh[0, 1] = 1.0
    up_down = shade_sh(torch.tensor([[[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]]]), sh)
    assert (up_down[0, 0] > up_down[0, 1]).all()


# ---------------------------------------------------------------- rasteriser
def _reference_zbuffer(screen: np.ndarray, faces: np.ndarray, H: int, W: int) -> np.ndarray:
    """Brute-force per-pixel loop: nearest (perspective) triangle covering each pixel centre."""
    out = np.full((H, W), -1)
    best = np.full((H, W), np.inf)
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    for fi, (a, b, c) in enumerate(faces):
        A, Bv, C = screen[a], screen[b], screen[c]
        den = (Bv[0] - A[0]) * (C[1] - A[1]) - (Bv[1] - A[1]) * (C[0] - A[0])
        if abs(den) < 1e-12:
            continue
        b1 = ((xs - A[0]) * (C[1] - A[1]) - (ys - A[1]) * (C[0] - A[0])) / den
        b2 = ((Bv[0] - A[0]) * (ys - A[1]) - (Bv[1] - A[1]) * (xs - A[0])) / den
        b0 = 1 - b1 - b2
        inside = (b0 >= 0) & (b1 >= 0) & (b2 >= 0)
        depth = 1.0 / (b0 / A[2] + b1 / Bv[2] + b2 / C[2])
        upd = inside & (depth < best)
        best[upd] = depth[upd]
        out[upd] = fi
    return out


def test_rasterizer_matches_brute_force_reference(monkeypatch) -> None:
    g = torch.Generator().manual_seed(3)
    H, W = 40, 56
    n_tri = 120
    centres = torch.rand(n_tri, 1, 2, generator=g, dtype=torch.float64) * torch.tensor([W, H], dtype=torch.float64)
    xy = centres + torch.randn(n_tri, 3, 2, generator=g, dtype=torch.float64) * torch.linspace(1, 10, n_tri, dtype=torch.float64)[:, None, None]
    z = 1.0 + torch.rand(n_tri, 3, 1, generator=g, dtype=torch.float64) * 3
    screen = torch.cat([xy, z], -1).reshape(1, -1, 3)
    faces = torch.arange(n_tri * 3).reshape(n_tri, 3)
    ref = _reference_zbuffer(screen[0].numpy(), faces.numpy(), H, W)
    raster_module = sys.modules["engine.render.rasterize"]
    # Both candidate paths (dense per box shape, and the general expansion), chunked or not,
    # must give the same result.
    for dense_min in (1, 10**9):
        monkeypatch.setattr(raster_module, "_DENSE_MIN_TRIANGLES", dense_min)
        for chunk in (1 << 22, 97):
            fr = rasterize(screen.float(), faces, (H, W), chunk_size=chunk)
            ids = fr.tri_id[0].numpy()
            # Pixel centres exactly on an edge may go either way; require near-total agreement.
            assert (ids == ref).mean() > 0.998, (ids != ref).sum()


def test_rasterizer_sphere_area_depth_and_batching() -> None:
    v, f = icosphere(4, 0.1)
    d, fpx, S = 0.5, 150.0, 96
    cam = frontal_camera(d, fpx, (S, S), batch_size=2)
    cam.K[1, 0, 2] += 15.0  # second camera: principal point 15 px to the right
    verts = torch.stack([v, v])
    screen = cam.to_screen(verts)
    fr = rasterize(screen, f, (S, S))
    # Silhouette of a sphere seen in perspective: radius f·r/sqrt(d² - r²).
    r_px = fpx * 0.1 / math.sqrt(d * d - 0.01)
    area = fr.mask[0].sum().item()
    assert abs(area - math.pi * r_px**2) / (math.pi * r_px**2) < 0.01  # polygonal sphere: slightly less
    # Depth at the centre = d - r (the tessellated sphere is slightly inside the true one).
    assert abs(fr.depth[0, S // 2, S // 2].item() - (d - 0.1)) < 1e-3
    # The second image is the first shifted by 15 px (per-item cameras in one batch).
    assert torch.equal(fr.mask[1, :, 15:], fr.mask[0, :, :-15])
    # Back faces never win the depth test, so culling them changes nothing for a closed mesh.
    culled = rasterize(screen, f, (S, S), cull_backfaces=True)
    assert torch.equal(culled.tri_id, fr.tri_id)
    # Interpolating camera-space z of the vertices gives back the rasterised depth
    # (perspective-correct barycentrics).
    zc = cam.to_camera(verts)[..., 2:]
    zi = interpolate(zc, f, fr)[..., 0]
    assert torch.allclose(zi[fr.mask], fr.depth[fr.mask], atol=1e-5)


def test_cube_face_ids_and_weak_perspective() -> None:
    v, f = cube(1.0)
    cam = WeakPerspectiveCamera(torch.tensor([0.5]), torch.zeros(1, 2), (32, 32))
    fr = rasterize(cam.to_screen(v[None]), f, (32, 32), perspective=False)
    # Looking along -Z at an axis-aligned cube: only the two +Z triangles are visible,
    # covering pixels [12, 20) in both directions (half-size 0.5 · s 0.5 · 16 px per NDC unit).
    plus_z = ((v[f][:, :, 2] > 0).all(-1)).nonzero().flatten().tolist()
    seen = set(fr.tri_id[fr.mask].unique().tolist())
    assert seen == set(plus_z)
    assert fr.mask.sum() == 8 * 8 and fr.mask[0, 12:20, 12:20].all()
    assert torch.allclose(fr.depth[fr.mask], torch.full_like(fr.depth[fr.mask], 10.0 - 0.5))


def test_texture_uses_v_up_and_texel_centres() -> None:
    tex = torch.arange(12.0).reshape(1, 1, 3, 4)  # rows top->bottom: v = 1 at the top
    uv = torch.tensor([[[[0.5 / 4, 1 - 0.5 / 3], [3.5 / 4, 0.5 / 3]]]])
    out = texture(tex, uv)[0, 0, :, 0]
    assert torch.allclose(out, torch.tensor([0.0, 11.0]), atol=1e-5)


def test_render_mesh_textured_sphere() -> None:
    V, F, uv, fuv = uv_sphere(24, 48, 0.1)
    tex = torch.zeros(1, 3, 8, 16)
    tex[:, 0, :4] = 1.0  # red upper half (v > 0.5 = northern hemisphere)
    tex[:, 2, 4:] = 1.0  # blue lower half
    cam = frontal_camera(0.6, 200.0, (64, 64))
    out = render_mesh(V[None], F, cam, texture=tex, uv=uv, face_uv=fuv, antialias=False, background=0.25)
    img = out.image[0]
    assert torch.allclose(img[:, 0, 0], torch.full((3,), 0.25))
    assert img[0, 20, 32] > 0.99 and img[2, 20, 32] < 0.01  # above the centre: red
    assert img[2, 44, 32] > 0.99 and img[0, 44, 32] < 0.01  # below: blue
    assert out.mask[0, 0, 0, 0] == 0 and out.tri_id[0, 0, 0] == -1


def test_render_mesh_shading_and_regions() -> None:
    v, f = icosphere(3, 0.1)
    cam = frontal_camera(0.6, 200.0, (48, 48))
    sh = torch.zeros(1, 9, 3)
    sh[0, 3] = 1.0  # light from +X (the image's right for a frontal camera)
    region = v[:, 1] > 0  # upper half
    for mode in ("pixel", "vertex"):
        out = render_mesh(v[None], f, cam, sh=sh, shade_per=mode, region_mask=region, antialias=False)
        img = out.image[0, 0]
        assert img[24, 36] > img[24, 12] + 0.1
        assert out.region[0, 0, 14, 24] > 0.99 and out.region[0, 0, 34, 24] < 0.01
    zero = render_mesh(v[None], f, cam, sh=torch.zeros(1, 27), antialias=False)
    assert torch.allclose(zero.image[0][:, zero.fragments.mask[0]], torch.ones(1))


def test_soft_silhouette_gradient_is_the_perimeter() -> None:
    """d(soft area)/d(radius) must be the contour length 2πR (pixels) for a disc-like sphere."""
    v, f = icosphere(4, 1.0)
    S, scale = 64, 0.8
    cam = WeakPerspectiveCamera(torch.tensor([scale]), torch.tensor([[0.013, -0.021]]), (S, S))
    radius = torch.tensor(1.0, requires_grad=True)
    fr = rasterize(cam.to_screen(v[None] * radius), f, (S, S), perspective=False)
    sil = soft_silhouette(fr, face_neighbours(f))
    area = sil.sum()
    area.backward()
    r_px = scale * S / 2
    expected = 2 * math.pi * r_px * r_px  # d(πR²)/dr with R = r·scale·S/2 = r·r_px
    assert abs(radius.grad.item() - expected) / expected < 0.02
    # The soft area is also closer to the analytic area than the hard one.
    true_area = math.pi * r_px**2
    assert abs(area.item() - true_area) / true_area < 0.005


def test_antialiased_square_has_exact_area() -> None:
    """A rotated square's soft coverage sums to its true area (1-pixel box filter)."""
    for angle in (0.0, 0.3, math.pi / 4):
        c, s = math.cos(angle), math.sin(angle)
        corners = torch.tensor([[-1.0, -1], [1, -1], [1, 1], [-1, 1]]) * 10.3
        xy = corners @ torch.tensor([[c, -s], [s, c]]).T + torch.tensor([32.2, 31.7])
        screen = torch.cat([xy, torch.ones(4, 1)], -1)[None]
        faces = torch.tensor([[0, 2, 1], [0, 3, 2]])  # clockwise on screen = facing the camera
        fr = rasterize(screen, faces, (64, 64), perspective=False)
        soft = soft_silhouette(fr)
        assert abs(soft.sum().item() - 20.6**2) < 0.5
        assert soft.min() >= 0 and soft.max() <= 1


def test_offscreen_and_partly_visible_triangles() -> None:
    # One triangle on each side outside the 10x10 image, one inside, one half outside.
    screen = torch.tensor(
        [[[100.0, 5, 1], [110, 5, 1], [105, 9, 1], [-20, 5, 1], [-10, 5, 1], [-15, 9, 1],
          [2, 2, 1], [8, 2, 1], [5, 8, 1], [-5, 6, 2], [5, 6, 2], [5, 16, 2]]]
    )
    faces = torch.arange(12).view(4, 3)
    fr = rasterize(screen, faces, (10, 10))
    assert set(fr.tri_id.unique().tolist()) == {-1, 2, 3}
    # The half-visible triangle covers exactly the pixel centres inside it and the image.
    ys, xs = torch.meshgrid(torch.arange(10) + 0.5, torch.arange(10) + 0.5, indexing="ij")
    inside3 = (ys >= 6) & (xs <= 5) & (ys - 6 <= xs + 5)
    assert torch.equal(fr.tri_id[0] == 3, inside3 & (fr.tri_id[0] != 2))


def test_render_mesh_gradients_reach_vertices_light_and_colours() -> None:
    v, f = icosphere(2, 0.1)
    cam = frontal_camera(0.6, 150.0, (40, 40))
    verts = v[None].clone().requires_grad_(True)
    sh = torch.zeros(1, 27, requires_grad=True)
    cols = torch.full((1, v.shape[0], 3), 0.5, requires_grad=True)
    bg = torch.rand(1, 3, 40, 40)
    out = render_mesh(verts, f, cam, vertex_colors=cols, sh=sh, background=bg)
    target = torch.rand(1, 3, 40, 40)
    ((out.image - target) ** 2).mean().backward()
    for g in (verts.grad, sh.grad, cols.grad):
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    # Far from the object the background shows through unchanged.
    assert torch.allclose(out.image[0, :, 0, 0], bg[0, :, 0, 0])
