"""Rendering throughput of engine.render (images per second), per-vertex and rasterised paths.

    .venv/bin/python benchmarks/render_benchmark.py                 # CPU, 224 px, batch 1 and 32
    .venv/bin/python benchmarks/render_benchmark.py --device cuda   # on a GPU

"cpu ms" is the process CPU time per batch (all threads): on a shared machine, wall time
above cpu ms / threads means other jobs were competing. Uses the open head model
(engine.head.load_head_model("open")) when it can be loaded, otherwise a sphere with a
similar triangle count (says so). Each figure is the median over
``--iters`` timed runs after ``--warmup`` untimed ones; CUDA is synchronised around every run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine.render import (  # noqa: E402
    PerspectiveCamera,
    euler_to_matrix,
    face_neighbours,
    intrinsics,
    render_mesh,
    sample_image,
    shade_sh,
    vertex_normals,
    vertex_visibility,
)
from engine.render.meshes import uv_sphere  # noqa: E402


def load_mesh(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from engine.head import load_head_model

        model = load_head_model("open")
        return model.template.to(device), model.faces.to(device), f"open head model ({model.template.shape[0]} vertices, {model.faces.shape[0]} triangles)"
    except Exception as exc:  # noqa: BLE001 - any failure means: use the stand-in
        v, f, _, _ = uv_sphere(48, 96, 0.11)  # 9,024 triangles, like the open head's 9,084
        print(f"note: open head model unavailable ({exc.__class__.__name__}: {exc}); using a sphere stand-in")
        return v.to(device), f.to(device), f"sphere stand-in ({v.shape[0]} vertices, {f.shape[0]} triangles)"


def make_camera(verts: torch.Tensor, batch: int, size: int, device: torch.device) -> PerspectiveCamera:
    """Cameras looking at the mesh centre from ~1 m with yaw/pitch varying over the batch."""
    centre = (verts.amin(0) + verts.amax(0)) / 2
    extent = float((verts.amax(0) - verts.amin(0)).max())
    g = torch.Generator().manual_seed(0)
    angles = (torch.rand(batch, 3, generator=g) - 0.5) * torch.tensor([0.4, 0.8, 0.2])
    R_pose = euler_to_matrix(angles).to(device)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], device=device))
    R = flip @ R_pose
    dist = 1.0
    t = -(R @ centre) + torch.tensor([0.0, 0.0, dist], device=device)
    focal = 0.85 * size * dist / extent
    K = intrinsics(focal, image_size=(size, size), batch_size=batch, device=device)
    return PerspectiveCamera(K, R, t, (size, size))


def timeit(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> tuple[float, float]:
    """Median wall time and median process CPU time per call (CPU time shows contention)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times, cpu = [], []
    for _ in range(iters):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also append one JSON record per figure to FILE")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="profile the rasterised fwd+bwd at the largest batch; print its N most expensive operators")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    verts, faces, desc = load_mesh(device)
    nb = face_neighbours(faces)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"mesh: {desc}; image {args.size}x{args.size}; device: {name}; torch {torch.__version__}")
    print(f"{'path':<34}{'batch':>6}{'ms/batch':>11}{'images/s':>11}{'cpu ms':>9}")
    for batch in args.batches:
        cam = make_camera(verts, batch, args.size, device)
        v = verts[None].expand(batch, -1, -1).contiguous()
        sh = torch.zeros(batch, 9, 3, device=device)
        sh[:, 1] = 0.4
        albedo = torch.full((batch, verts.shape[0], 3), 0.7, device=device)
        photo = torch.rand(batch, 3, args.size, args.size, device=device)

        def per_vertex(grad: bool) -> Callable[[], object]:
            def run() -> object:
                vv = v.clone().requires_grad_(grad)
                n = vertex_normals(vv, faces)
                uv, _ = cam.project(vv)
                vis = vertex_visibility(vv.detach(), faces, cam, normals=n.detach())
                col = albedo * shade_sh(cam.rotate_normals(n) * torch.tensor([1.0, -1.0, -1.0], device=device), sh)
                obs = sample_image(photo, uv)
                loss = (((col - obs) ** 2).sum(-1) + 1e-8).sqrt()[vis].sum()  # MoFA's l2,1 term
                if grad:
                    loss.backward()
                return loss

            return run

        def raster(grad: bool) -> Callable[[], object]:
            def run() -> object:
                vv = v.clone().requires_grad_(grad)
                out = render_mesh(vv, faces, cam, vertex_colors=albedo, sh=sh, neighbours=nb)
                loss = (out.image - photo).abs().mean()
                if grad:
                    loss.backward()
                return loss

            return run

        for label, fn in (
            ("per-vertex (MoFA) forward", per_vertex(False)),
            ("per-vertex (MoFA) fwd+bwd", per_vertex(True)),
            ("rasterised + SH + AA forward", raster(False)),
            ("rasterised + SH + AA fwd+bwd", raster(True)),
        ):
            with torch.no_grad() if "forward" in label else torch.enable_grad():
                dt, cpu = timeit(fn, device, args.warmup, args.iters)
            print(f"{label:<34}{batch:>6}{dt * 1e3:>11.1f}{batch / dt:>11.1f}{cpu * 1e3:>9.0f}", flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps({"bench": "render", "path": label, "batch": batch, "device": name,
                                         "size": args.size, "ms_per_batch": dt * 1e3,
                                         "images_per_s": batch / dt}) + "\n")
        if args.profile and batch == max(args.batches):
            from _profile import profile_call

            print(profile_call(raster(True), device.type == "cuda", args.profile))


if __name__ == "__main__":
    main()
