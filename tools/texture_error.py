"""How faithful is the baked texture? Reconstruction folders of the Cycles set against the truth.

    python tools/texture_error.py --set data/cycles_val ROOT [ROOT ...] [--views 0,50,-50] [--size 256]

Each ROOT holds ``python -m engine reconstruct data/cycles_val/NNNNN.png --out ROOT/NNNNN``
folders (any version of the engine: the mesh, its UVs and ``albedo.png`` are read from the
folder's ``head.obj``, the camera from ``params.json``). Per face and view — the photo's own
camera (0°) and the camera turned about the true head's vertical axis by the given degrees
(the sides the photo saw edge-on or not at all) — both heads are rendered unlit (ours with
``albedo.png``, the truth with its per-vertex albedo) and compared on the pixels both cover
where the truth is face skin (the set's ``skin_face_mask``: no brows, lips or eyes). Each image
is first divided by its own median there, channel by channel, so the figure measures the
texture's *pattern* (smears, seams, bleeding, blotches), not its overall level (that is the
skin-tone figure of ``engine.eval cycles``): the median over faces of the mean absolute
relative difference. Lower is better; identical textures give 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(vertices (V, 3), faces (F, 3), uv (T, 2), face_uv (F, 3))`` of a triangle OBJ with
    ``f v/vt`` corners (0-based indices)."""
    v, vt, f, ft = [], [], [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("v "):
                v.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("vt "):
                vt.append([float(x) for x in line.split()[1:3]])
            elif line.startswith("f "):
                corners = [c.split("/") for c in line.split()[1:4]]
                f.append([int(c[0]) - 1 for c in corners])
                ft.append([int(c[1]) - 1 for c in corners])
    return np.array(v), np.array(f, np.int64), np.array(vt), np.array(ft, np.int64)


def _turn(points: np.ndarray, centre: np.ndarray, deg: float) -> np.ndarray:
    """Points of the camera frame turned by ``deg`` about the vertical (y) axis through ``centre``."""
    a = np.radians(deg)
    R = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    return (points - centre) @ R.T + centre


def face_errors(folder: Path, gt: dict, views: list[float], size: int) -> list[float]:
    """The relative texture error of one reconstruction folder at each view (nan where fewer
    than 200 pixels compare)."""
    import torch
    from PIL import Image

    from engine.render import PerspectiveCamera
    from engine.render.renderer import render_mesh

    params = json.loads((folder / "params.json").read_text())
    verts, faces, uv, face_uv = read_obj(folder / "head.obj")
    albedo = np.asarray(Image.open(folder / "albedo.png").convert("RGB"), np.float32) / 255.0
    R, t = np.asarray(params["R"]), np.asarray(params["t"])
    ours = verts @ R.T + t  # camera frame
    truth = np.asarray(gt["vertices_camera"], np.float64)
    region = np.asarray(gt["skin_face_mask"], bool) & np.asarray(gt["face_mask"], bool)
    W, H = gt["image_size"][0], gt["image_size"][1]

    def camera(K):  # each head through its own camera (the fit guesses its focal length), at `size`
        K = np.asarray(K, np.float64) * np.array([[size / W], [size / H], [1.0]])
        return PerspectiveCamera(torch.tensor(K, dtype=torch.float32)[None], torch.eye(3)[None], torch.zeros(1, 3),
                                 (size, size))

    # each head turns about its own face centre (the mean of its 68 landmarks, camera frame)
    centre_ours = np.asarray(params["landmarks68_camera"], np.float64).mean(0)
    centre_true = np.asarray(gt["landmarks3d_camera"], np.float64).mean(0)
    cam_ours, cam_true = camera(params["K"]), camera(gt["K"])
    tex = torch.from_numpy(albedo).permute(2, 0, 1)[None]
    out = []
    for deg in views:
        with torch.no_grad():
            mine = render_mesh(torch.tensor(_turn(ours, centre_ours, deg), dtype=torch.float32)[None],
                               torch.from_numpy(faces), cam_ours, texture=tex, uv=torch.tensor(uv, dtype=torch.float32),
                               face_uv=torch.from_numpy(face_uv), antialias=False)
            true = render_mesh(torch.tensor(_turn(truth, centre_true, deg), dtype=torch.float32)[None],
                               torch.from_numpy(np.asarray(gt["faces"], np.int64)), cam_true,
                               vertex_colors=torch.tensor(np.asarray(gt["albedo"]), dtype=torch.float32)[None],
                               region_mask=torch.tensor(region, dtype=torch.float32), antialias=False)
        a = mine.albedo[0].permute(1, 2, 0).numpy()
        b = true.albedo[0].permute(1, 2, 0).numpy()
        both = mine.fragments.mask[0].numpy() & true.fragments.mask[0].numpy() & (true.region[0, 0].numpy() > 0.99)
        if both.sum() < 200:
            out.append(float("nan"))
            continue
        ra = a[both] / np.maximum(np.median(a[both], 0), 1e-3)
        rb = b[both] / np.maximum(np.median(b[both], 0), 1e-3)
        out.append(float(np.abs(ra - rb).mean()))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", required=True, dest="set_dir", help="the Cycles set the folders were made from")
    ap.add_argument("roots", nargs="+", help="folders of reconstruct outputs named by sample (00010, ...)")
    ap.add_argument("--views", default="0,50,-50", help="camera turns in degrees (default 0,50,-50)")
    ap.add_argument("--size", type=int, default=256, help="render size in pixels (default 256)")
    a = ap.parse_args(argv)
    from engine.eval.cycles_set import load_sample

    try:
        views = [float(x) for x in a.views.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--views must be degrees separated by commas, got {a.views!r}")
    if not Path(a.set_dir).is_dir():
        ap.error(f"no Cycles set at {a.set_dir}")
    head = "| folder | faces | " + " | ".join(f"{v:+.0f}°" for v in views) + " |"
    print(head)
    print("|" + "---|" * (2 + len(views)))
    results = []
    for root in a.roots:
        names = sorted(p.name for p in Path(root).iterdir() if (p / "params.json").is_file() and p.name.isdigit())
        if not names:
            ap.error(f"{root} holds no reconstruct output folders named by sample")
        rows = np.array([face_errors(Path(root) / n, load_sample(a.set_dir, int(n)).gt, views, a.size)
                         for n in names])
        results.append(dict(zip(names, rows)))
        cells = [f"{np.nanmedian(rows[:, k]):.3f}" for k in range(len(views))]
        print(f"| {root} | {len(names)} | " + " | ".join(cells) + " |")
    if len(results) == 2:  # face by face: the second folder against the first
        common = sorted(set(results[0]) & set(results[1]))
        d = np.array([results[1][n] - results[0][n] for n in common])
        print(f"  {a.roots[1]} against {a.roots[0]}, face by face ({len(common)} faces): " + "; ".join(
            f"{v:+.0f}° lower on {100 * np.mean(d[:, k][np.isfinite(d[:, k])] < 0):.0f} %, median "
            f"{np.nanmedian(d[:, k]):+.4f}" for k, v in enumerate(views)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
