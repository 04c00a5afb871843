"""Our PyTorch port of dlib's face-recognition ResNet vs dlib itself, on real and synthetic faces.

For each face: the cosine between our descriptor and dlib's ``compute_face_descriptor`` on
the *same* 150x150 chip (dlib's ``get_face_chip``), and end to end (our torch chip from the
same landmarks + our network vs dlib's chip + dlib's network), plus the mean pixel
difference of the two chips. Then the CPU time per descriptor on one thread.
Needs dlib (reference only). Run: python benchmarks/identity_net_check.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.encoders.face_chip import face_chip  # noqa: E402
from engine.encoders.face_recognition import face_recognition_model_path, load_face_recognition_net  # noqa: E402


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> None:
    import dlib
    from PIL import Image
    from skimage.data import astronaut

    torch.set_num_threads(1)
    path = face_recognition_model_path()
    t0 = time.perf_counter()
    net = load_face_recognition_net(path)
    load_s = time.perf_counter() - t0
    det = dlib.get_frontal_face_detector()
    sp = {5: dlib.shape_predictor(str(path.parent / "shape_predictor_5_face_landmarks.dat")),
          68: dlib.shape_predictor(str(path.parent / "shape_predictor_68_face_landmarks.dat"))}
    facerec = dlib.face_recognition_model_v1(str(path))

    faces: list[tuple[str, np.ndarray, object]] = []  # (name, image, dlib shape)
    real = astronaut()
    variants = {"astronaut": real, "astronaut mirrored": real[:, ::-1].copy(),
                "astronaut rotated 20 deg": np.asarray(Image.fromarray(real).rotate(20, Image.BILINEAR))}
    for name, img in variants.items():
        rects, _, _ = det.run(img, 1, 0.2)
        for n in (5, 68):
            faces.append((f"{name} ({n} pts)", img, sp[n](img, rects[0])))
    from engine.generator import render_sample
    from engine.head import load_head_model

    head = load_head_model("open")
    for seed in (0, 1, 2, 5):
        sample = render_sample(head, seed)
        lm = sample.landmarks2d.double().numpy() - 0.5
        x0, y0 = lm.min(axis=0)
        x1, y1 = lm.max(axis=0)
        shape = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)),
                                           [dlib.point(int(round(x)), int(round(y))) for x, y in lm])
        faces.append((f"synthetic seed {seed} (68 GT pts)", sample.image, shape))

    print(f"model {path.name}: loaded in {load_s:.2f} s")
    print(f"| face | cosine, same chip | max abs diff | cosine, our chip + our net | chip mean abs diff (/255) |")
    print("|---|---|---|---|---|")
    for name, img, shape in faces:
        chip = dlib.get_face_chip(img, shape, size=150, padding=0.25)
        theirs = np.array(facerec.compute_face_descriptor(chip))
        x = torch.from_numpy(chip.copy()).permute(2, 0, 1)[None].float() / 255.0
        lm = torch.tensor([[[p.x + 0.5, p.y + 0.5] for p in shape.parts()]], dtype=torch.float64)
        with torch.no_grad():
            ours = net(x)[0].double().numpy()
            our_chip = face_chip(torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].double() / 255.0, lm)
            ours_e2e = net(our_chip.float())[0].double().numpy()
        chip_diff = np.abs(our_chip[0].permute(1, 2, 0).numpy() * 255.0 - chip).mean()
        print(f"| {name} | {_cos(ours, theirs):.7f} | {np.abs(ours - theirs).max():.1e} | "
              f"{_cos(ours_e2e, theirs):.7f} | {chip_diff:.2f} |")

    for batch in (1, 16):
        x = torch.rand(batch, 3, 150, 150)
        with torch.no_grad():
            net(x)
            reps = max(3, 48 // batch)
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(reps):
                net(x)
            cpu = (time.process_time() - c0) / (reps * batch)
            wall = (time.perf_counter() - w0) / (reps * batch)
        print(f"batch {batch:2d}: {cpu * 1000:.1f} ms CPU / {wall * 1000:.1f} ms wall per descriptor (1 thread)")
    x = torch.rand(1, 3, 150, 150)
    chip = np.ascontiguousarray((x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    facerec.compute_face_descriptor(chip)
    c0 = time.process_time()
    for _ in range(20):
        facerec.compute_face_descriptor(chip)
    print(f"dlib itself: {(time.process_time() - c0) / 20 * 1000:.1f} ms CPU per descriptor")


if __name__ == "__main__":
    main()
