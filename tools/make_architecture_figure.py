"""Draw docs/architecture.png: the data flow of the engine (inference and training).

    python tools/make_architecture_figure.py [--out docs/architecture.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (key, x, y, title, module) in axis units; the figure is 16.2 x 7.
BOXES = [
    ("photo", 0.2, 5.2, "photo / video frame", "engine.photo"),
    ("detect", 3.4, 5.2, "faces + landmarks", "engine.detect"),
    ("crop", 6.6, 5.2, "face crop\nthat keeps its transform", "engine.photo.align_crop"),
    ("pred", 9.8, 5.2, "predictor\nfit | mofa | hybrid | ...", "engine.methods (registry)"),
    ("params", 13.0, 5.2, "FaceParams", "engine.face.params"),
    ("decoder", 13.0, 3.1, "FaceDecoder -> Decoded", "engine.face (+ head, render)"),
    ("outputs", 13.0, 1.0, "OBJ, GLB, texture, rig,\nparams.json, previews", "engine.outputs"),
    ("losses", 9.8, 1.0, "loss terms\n(weights from config/YAML)", "engine.losses.terms"),
    ("fit", 6.6, 3.1, "fit: camera, landmarks,\nappearance, refine", "engine.fitting"),
    ("learned", 3.4, 3.1, "learned method\nencode -> decode", "engine.methods.base"),
    ("data", 0.2, 1.0, "training data\ngenerator, folders, clips", "engine.generator, .data"),
    ("train", 3.4, 1.0, "trainer: stages, AMP,\nDDP, exact resume", "engine.train"),
]
W, H = 2.75, 1.05
ARROWS = [
    ("photo", "detect", ""), ("detect", "crop", ""), ("crop", "pred", ""), ("pred", "params", ""),
    ("params", "decoder", ""), ("decoder", "outputs", ""),
    ("decoder", "losses", "vertices, landmarks,\nshading, visibility", (-1.55, -0.1)),
    ("losses", "fit", "gradients", (0.1, 0.0)), ("losses", "train", "minimise", (0.0, 0.05)), ("data", "train", ""),
    ("train", "learned", "training_step", (0.1, 0.0)), ("fit", "pred", ""), ("learned", "pred", ""),
]
COLOURS = {"params": "#f6d37a", "decoder": "#f6d37a", "pred": "#9fd3f0", "losses": "#b9e3a6",
           "outputs": "#e8b4d8", "train": "#d6c9f0", "data": "#d6c9f0", "fit": "#9fd3f0", "learned": "#9fd3f0"}


def draw(out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(16.2, 7), dpi=110)
    ax.set_xlim(0, 16.2)
    ax.set_ylim(0, 7)
    ax.axis("off")
    centre = {}
    for key, x, y, title, module in BOXES:
        ax.add_patch(FancyBboxPatch((x, y), W, H, boxstyle="round,pad=0.06", fc=COLOURS.get(key, "#e6e6e6"),
                                    ec="#333333", lw=1.2))
        ax.text(x + W / 2, y + H * 0.62, title, ha="center", va="center", fontsize=9.5, weight="bold",
                linespacing=1.1)
        ax.text(x + W / 2, y + H * 0.17, module, ha="center", va="center", fontsize=8, family="monospace",
                color="#222266")
        centre[key] = (x + W / 2, y + H / 2)

    def edge(a: str, b: str) -> tuple[tuple[float, float], tuple[float, float]]:
        (ax_, ay), (bx, by) = centre[a], centre[b]
        dx, dy = bx - ax_, by - ay
        # leave/enter through the box side facing the other box
        sa = min((W / 2 + 0.08) / max(abs(dx), 1e-9), (H / 2 + 0.08) / max(abs(dy), 1e-9))
        return (ax_ + dx * sa, ay + dy * sa), (bx - dx * sa, by - dy * sa)

    for a, b, label, *offset in ARROWS:
        p, q = edge(a, b)
        dx, dy = offset[0] if offset else (0.0, 0.0)
        ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=14, lw=1.3, color="#444444"))
        if label:
            ax.text((p[0] + q[0]) / 2 + dx, (p[1] + q[1]) / 2 + dy, label, fontsize=8.5, color="#555555",
                    ha="left", va="bottom")
    ax.text(0.2, 6.7, "Inference (top row): photo -> detect -> crop -> predictor -> FaceParams -> decoder -> outputs.",
            fontsize=11)
    ax.text(0.2, 6.4, "Fitting and training (below): the fit and every learned method minimise the same loss terms over "
            "the same decoder; each is a predictor of the one method registry.", fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "architecture.png")
    print(draw(ap.parse_args().out))


if __name__ == "__main__":
    main()
