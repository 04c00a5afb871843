"""The write stage's parts, one at a time (not a test; prints figures).

    python benchmarks/write_parts.py [--repeats 7]

On the bundled astronaut photo (one fit first, as ``reconstruct`` makes it), best of
``--repeats`` in milliseconds, one torch thread:

* the albedo bake alone (``engine.texture.bake_albedo``, its inputs as ``write_outputs``
  makes them), and the same bake while another thread of this process runs a pure-Python
  loop — the GIL effect that made the write stage start its text formatting only after the
  bake (docs/conventions.md);
* PNG encoding of the baked albedo: ``engine.export.png.encode_png`` against Pillow at the
  same zlib level (what the output folder used before), with both files' sizes.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch


def _best_ms(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from PIL import Image
    from skimage import data

    import engine.texture as texture
    from engine.export.png import encode_png
    from engine.head import load_head_model
    from engine.outputs import write_outputs
    from engine.photo import load_image
    from engine.reconstruct import reconstruct

    with tempfile.TemporaryDirectory() as tmp:
        photo_path = Path(tmp) / "astronaut.png"
        Image.fromarray(data.astronaut()).save(photo_path)
        res = reconstruct(photo_path, Path(tmp) / "out")
        photo = load_image(photo_path)
        captured: dict = {}
        bake = texture.bake_albedo

        def capture(*a, **k):  # the bake's inputs, exactly as write_outputs makes them
            captured["args"], captured["kwargs"] = a, k
            return bake(*a, **k)

        texture.bake_albedo = capture
        try:
            write_outputs(Path(tmp) / "again", load_head_model("open"), res.estimate, photo, method="fit")
        finally:
            texture.bake_albedo = bake
        a, k = captured["args"], captured["kwargs"]
        alone = _best_ms(lambda: bake(*a, **k), args.repeats)
        stop = threading.Event()

        def python_loop() -> None:
            while not stop.is_set():
                sum(i * i for i in range(1000))

        other = threading.Thread(target=python_loop, daemon=True)
        other.start()
        try:
            beside = _best_ms(lambda: bake(*a, **k), max(2, args.repeats // 3))
        finally:
            stop.set()
            other.join()
        print(f"albedo bake alone: {alone:.1f} ms; beside a pure-Python thread: {beside:.1f} ms "
              f"({beside / alone:.1f}x)")
        albedo = bake(*a, **k)

        def pillow() -> bytes:
            buf = io.BytesIO()
            Image.fromarray(albedo).save(buf, format="PNG", compress_level=1)
            return buf.getvalue()

        ours, theirs = _best_ms(lambda: encode_png(albedo), args.repeats), _best_ms(pillow, args.repeats)
        print(f"albedo PNG {albedo.shape[1]}x{albedo.shape[0]}: encode_png {ours:.1f} ms, {len(encode_png(albedo))} bytes; "
              f"Pillow (compress_level=1) {theirs:.1f} ms, {len(pillow())} bytes")


if __name__ == "__main__":
    main()
