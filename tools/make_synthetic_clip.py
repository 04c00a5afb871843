"""A folder of frames of a synthetic talking-head clip: one generator face moving through key
expressions and head poses (engine/video/synthetic.py, the clips docs/video.md measures on).

    python tools/make_synthetic_clip.py OUT_DIR [--seed 10] [--frames 60] [--keys 4] [--size 256] [--model open]

Writes ``OUT_DIR/0000.png …`` (a numbered sequence ``python -m engine animate`` and Blender
read in order). The Blender add-on's character figure (docs/video.md) animates a character
with such a clip.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--keys", type=int, default=4, help="key poses the clip moves through")
    ap.add_argument("--size", type=int, default=256, help="frame side in pixels")
    ap.add_argument("--model", default="open")
    a = ap.parse_args(argv)
    if a.frames < 2 or a.keys < 1 or a.size < 64:
        ap.error("--frames must be ≥ 2, --keys ≥ 1 and --size ≥ 64")
    from PIL import Image

    from engine.generator import SyntheticConfig
    from engine.head import load_head_model
    from engine.video.synthetic import LongClipConfig, render_long_clip

    clip = render_long_clip(load_head_model(a.model), a.seed, LongClipConfig(n_frames=a.frames, n_keys=a.keys),
                            SyntheticConfig(image_size=a.size))
    a.out.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(clip.samples):
        Image.fromarray(s.image).save(a.out / f"{i:04d}.png")
    print(f"wrote {len(clip.samples)} frames of {a.size} px to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
