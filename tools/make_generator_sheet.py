"""Render docs/generator_realistic.png: a contact sheet of the realistic face generator.

64 samples (8 × 8) of ``engine.generator.realistic.render_realistic`` at 224 px with the
default ranges, alternating the open and ICT head models (open only when ICT's files are
absent), seeds ``--seed .. --seed + 63``. Each tile is labelled with the model, the
Fitzpatrick type and the props. Run:

    python tools/make_generator_sheet.py [--out docs/generator_realistic.png] [--seed 0] [--tile 160]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.errors import UserError  # noqa: E402
from engine.generator.realistic import RealisticConfig, render_realistic  # noqa: E402
from engine.head import load_head_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/generator_realistic.png")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--tile", type=int, default=160, help="tile size in the sheet (images are rendered at 224 px)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    heads = [load_head_model("open")]
    try:
        heads.append(load_head_model("ict"))
    except UserError as exc:
        print(f"ICT not available ({exc}); open model only")
    cfg = RealisticConfig()
    rows = -(-a.n // a.cols)
    sheet = Image.new("RGB", (a.cols * a.tile, rows * a.tile), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for k in range(a.n):
        head = heads[k % len(heads)]
        s = render_realistic(head, a.seed + k, cfg)
        tile = Image.fromarray(s.image).resize((a.tile, a.tile), Image.Resampling.LANCZOS)
        x, y = (k % a.cols) * a.tile, (k // a.cols) * a.tile
        sheet.paste(tile, (x, y))
        props = [p for p in s.attributes["props"] if p not in ("torso", "hair", "hair_long")]
        props = [p for p in props if not (p == "glasses" and "sunglasses" in props)]
        label = f"{head.name} {a.seed + k} F{s.attributes['fitzpatrick']}" + (f" {'+'.join(props)}" if props else "")
        draw.rectangle((x, y, x + 7 * len(label) + 4, y + 12), fill=(0, 0, 0))
        draw.text((x + 2, y), label, fill=(255, 255, 255))
        print(f"{k + 1}/{a.n} {label}", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(a.out, optimize=True)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
