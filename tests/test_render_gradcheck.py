"""Float64 gradchecks of the renderer's differentiable pieces on tiny inputs."""

from __future__ import annotations

import torch
from torch.autograd import gradcheck

from engine.render import (
    PerspectiveCamera,
    WeakPerspectiveCamera,
    antialias,
    axis_angle_to_matrix,
    euler_to_matrix,
    interpolate,
    intrinsics,
    matrix_to_axis_angle,
    rasterize,
    sample_image,
    shade_sh,
    texture,
    vertex_normals,
)
from engine.render.meshes import icosphere

D = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gradcheck_perspective_projection() -> None:
    g = _gen()
    pts = (torch.randn(2, 5, 3, generator=g, dtype=D) * 0.1).requires_grad_(True)
    aa = (torch.randn(2, 3, generator=g, dtype=D) * 0.3).requires_grad_(True)
    t = torch.tensor([[0.0, 0.0, 1.0], [0.05, -0.02, 0.8]], dtype=D, requires_grad=True)
    K = intrinsics(torch.tensor([500.0, 400.0], dtype=D), cx=60.0, cy=70.0, batch_size=2, dtype=D).requires_grad_(True)

    def f(pts, aa, t, K):
        cam = PerspectiveCamera(K, axis_angle_to_matrix(aa), t, (128, 128))
        uv, z = cam.project(pts)
        return uv, z, cam.rotate_normals(pts)

    assert gradcheck(f, (pts, aa, t, K))


def test_gradcheck_weak_perspective_projection() -> None:
    g = _gen(1)
    pts = torch.randn(2, 4, 3, generator=g, dtype=D).requires_grad_(True)
    s = torch.tensor([0.9, 1.3], dtype=D, requires_grad=True)
    tr = torch.randn(2, 2, generator=g, dtype=D).requires_grad_(True)
    assert gradcheck(lambda p, s, tr: WeakPerspectiveCamera(s, tr, (64, 96)).project(p), (pts, s, tr))


def test_gradcheck_rotations() -> None:
    g = _gen(2)
    aa = torch.randn(4, 3, generator=g, dtype=D).requires_grad_(True)
    assert gradcheck(axis_angle_to_matrix, (aa,))
    # Exact zero angle: the Taylor branch must give the right derivative (= skew basis).
    assert gradcheck(axis_angle_to_matrix, (torch.zeros(1, 3, dtype=D, requires_grad=True),))
    R = axis_angle_to_matrix(torch.randn(3, 3, generator=g, dtype=D)).requires_grad_(True)
    assert gradcheck(matrix_to_axis_angle, (R,))
    e = torch.randn(2, 3, generator=g, dtype=D).requires_grad_(True)
    assert gradcheck(euler_to_matrix, (e,))


def test_gradcheck_normals_and_sh_shading() -> None:
    v, f = icosphere(0, 1.0, dtype=D)
    g = _gen(3)
    verts = (v[None] + 0.05 * torch.randn(1, *v.shape, generator=g, dtype=D)).requires_grad_(True)
    sh = torch.randn(1, 9, 3, generator=g, dtype=D).requires_grad_(True)
    assert gradcheck(lambda x, c: shade_sh(vertex_normals(x, f), c, ambient=0.7), (verts, sh))
    flat = torch.randn(1, 27, generator=g, dtype=D).requires_grad_(True)
    assert gradcheck(lambda c: shade_sh(vertex_normals(verts.detach(), f), c), (flat,))


def _tiny_scene():
    # Two overlapping triangles at different depths on a 12x10 image.
    screen = torch.tensor(
        [[[1.3, 1.1, 2.0], [10.7, 2.2, 2.5], [3.1, 8.6, 3.0], [2.2, 3.3, 1.5], [11.4, 8.9, 1.8], [5.3, 9.4, 2.2]]],
        dtype=D,
    )
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    return screen, faces


def test_gradcheck_interpolate_positions_and_attributes() -> None:
    screen, faces = _tiny_scene()
    attr = torch.randn(1, 6, 2, generator=_gen(4), dtype=D).requires_grad_(True)
    screen = screen.requires_grad_(True)
    for perspective in (True, False):

        def f(s, a):
            fr = rasterize(s, faces, (10, 12), perspective=perspective)
            return interpolate(a, faces, fr), fr.depth

        assert gradcheck(f, (screen, attr))


def test_gradcheck_sampling_and_texture() -> None:
    g = _gen(5)
    img = torch.rand(1, 2, 5, 6, generator=g, dtype=D).requires_grad_(True)
    pts = torch.tensor([[[1.3, 2.2], [4.7, 0.9], [3.21, 3.6]]], dtype=D, requires_grad=True)
    assert gradcheck(sample_image, (img, pts))
    uv = torch.tensor([[[[0.31, 0.42], [0.77, 0.13]]]], dtype=D, requires_grad=True)
    assert gradcheck(texture, (img, uv))


def test_gradcheck_antialias() -> None:
    screen, faces = _tiny_scene()
    screen = screen.requires_grad_(True)
    color = torch.rand(1, 10, 12, 1, generator=_gen(6), dtype=D).requires_grad_(True)

    def f(s, c):
        fr = rasterize(s, faces, (10, 12))
        return antialias(c, fr)

    fr = rasterize(screen.detach(), faces, (10, 12))
    assert not torch.allclose(antialias(color.detach(), fr), color.detach())  # edges are blended
    assert gradcheck(lambda s: f(s, color.detach()), (screen,))  # full Jacobian w.r.t. positions
    assert gradcheck(f, (screen, color), fast_mode=True)  # linear in colour: projections suffice
