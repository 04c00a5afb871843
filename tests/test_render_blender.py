"""Agreement with an independent renderer: Blender Cycles (headless bpy).

The same mesh and OpenCV camera are rendered by Cycles (1 sample, pixel filter ~0 so each
pixel is a ray through its centre) and by our rasteriser; silhouettes must agree
(IoU >= 0.99) and Cycles' Z pass (planar camera depth) must match our depth.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

from engine.render import PerspectiveCamera, intrinsics, look_at, rasterize
from engine.render.meshes import icosphere

pytestmark = pytest.mark.blender


def _bumpy_mesh() -> tuple[torch.Tensor, torch.Tensor]:
    """A displaced icosphere: non-convex, so self-occlusion matters."""
    v, f = icosphere(3, 1.0, dtype=torch.float64)
    bump = 1.0 + 0.25 * torch.sin(3 * v[:, 0]) * torch.cos(2 * v[:, 1]) + 0.15 * torch.sin(5 * v[:, 2])
    return v * bump[:, None] * 0.1, f


def _blender_render(verts: np.ndarray, faces: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray, H: int, W: int, out_dir: str) -> np.ndarray:
    """Cycles Z pass ``(H, W)`` (row 0 = top), 1e10 on background."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.cycles.filter_width = 0.01  # rays through pixel centres
    scene.render.resolution_x, scene.render.resolution_y = W, H
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    scene.view_layers[0].use_pass_z = True

    mesh = bpy.data.meshes.new("m")
    mesh.from_pydata([tuple(map(float, p)) for p in verts], [], [tuple(map(int, q)) for q in faces])
    mesh.update()
    obj = bpy.data.objects.new("m", mesh)
    scene.collection.objects.link(obj)

    cam_data = bpy.data.cameras.new("cam")
    # Intrinsics: focal length in mm on a 36 mm sensor fitted horizontally; the principal
    # point becomes a lens shift in units of the larger image side.
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.sensor_width = 36.0
    cam_data.lens = K[0, 0] * 36.0 / W
    cam_data.shift_x = (W / 2.0 - K[0, 2]) / max(W, H)
    cam_data.shift_y = (K[1, 2] - H / 2.0) / max(W, H)
    cam_data.clip_start, cam_data.clip_end = 1e-3, 100.0
    cam = bpy.data.objects.new("cam", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    # OpenCV camera (x right, y down, z forward) -> Blender camera (x right, y up, -z forward).
    c2w = np.eye(4)
    c2w[:3, :3] = R.T @ np.diag([1.0, -1.0, -1.0])
    c2w[:3, 3] = -R.T @ t
    from mathutils import Matrix

    cam.matrix_world = Matrix(c2w.tolist())

    scene.use_nodes = True
    tree = scene.node_tree
    rl = tree.nodes.new("CompositorNodeRLayers")
    out = tree.nodes.new("CompositorNodeOutputFile")
    out.base_path = out_dir
    out.format.file_format = "OPEN_EXR"
    out.format.color_depth = "32"
    out.file_slots[0].path = "depth_"
    tree.links.new(rl.outputs["Depth"], out.inputs[0])
    scene.render.filepath = os.path.join(out_dir, "render")
    bpy.ops.render.render(write_still=False)
    path = os.path.join(out_dir, "depth_0001.exr")
    img = bpy.data.images.load(path)
    px = np.array(img.pixels[:], dtype=np.float64).reshape(img.size[1], img.size[0], -1)[..., 0]
    return px[::-1].copy()  # Blender stores rows bottom-up


def test_silhouette_and_depth_match_cycles(tmp_path, monkeypatch) -> None:
    home = tempfile.mkdtemp(dir=tmp_path)
    for var in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, home)
    pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")

    H, W = 128, 160
    v, f = _bumpy_mesh()
    eye = torch.tensor([[0.25, 0.12, 0.55]], dtype=torch.float64)
    R, t = look_at(eye, torch.tensor([[0.01, -0.005, 0.0]], dtype=torch.float64))
    # Off-centre principal point to exercise the lens-shift mapping.
    K = intrinsics(190.0, cx=W / 2 + 7.3, cy=H / 2 - 4.1, image_size=(H, W), dtype=torch.float64)
    cam = PerspectiveCamera(K, R, t, (H, W))
    fr = rasterize(cam.to_screen(v[None]), f, (H, W))
    ours_mask = fr.mask[0].numpy()
    ours_depth = fr.depth[0].numpy()

    z = _blender_render(v.numpy(), f.numpy(), K[0].numpy(), R[0].numpy(), t[0].numpy(), H, W, str(tmp_path))
    bl_mask = z < 1e3
    inter = (ours_mask & bl_mask).sum()
    union = (ours_mask | bl_mask).sum()
    iou = inter / union
    assert ours_mask.sum() > 0.1 * H * W  # the mesh is well inside the frame
    assert iou >= 0.99, iou
    both = ours_mask & bl_mask
    err = np.abs(ours_depth[both] - z[both])
    # Planar depth agrees to float precision except at a few self-occlusion boundary pixels.
    assert np.median(err) < 1e-5, np.median(err)
    assert (err < 1e-4).mean() > 0.99, (err < 1e-4).mean()
    print(f"IoU {iou:.5f}, depth |err| median {np.median(err):.2e} m, 99th pct {np.quantile(err, 0.99):.2e} m")
