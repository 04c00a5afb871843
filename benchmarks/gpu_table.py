"""The GPU figures of issue #18 as one Markdown table, from the JSON records the benchmarks
append (``--json FILE``): ``python benchmarks/gpu_table.py RECORDS.jsonl``.

Rows without a record say "not measured" (a benchmark that failed or was skipped).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _records(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def table(records: list[dict]) -> str:
    def pick(bench: str, **match) -> list[dict]:
        return [r for r in records if r.get("bench") == bench and all(r.get(k) == v for k, v in match.items())]

    def best(rows: list[dict], key: str, fmt: str) -> str:
        vals = [r[key] for r in rows if key in r]
        return fmt.format(max(vals)) if vals else "not measured"

    train = pick("train", backbone="resnet18", size=224)
    graphed = [r for r in train if "infer_batch1_graph_ms" in r]
    shipped = pick("train", backbone="resnet10", size=128)  # the committed network's architecture
    render = [r for r in pick("render") if r["path"].startswith("rasterised") and "fwd+bwd" in r["path"]]
    vertex = [r for r in pick("render") if r["path"].startswith("per-vertex") and "fwd+bwd" in r["path"]]
    fit = pick("fit", landmarks="ground-truth iBUG-68")
    video = {m: pick("video", method=m) for m in ("mofa", "hybrid")}
    rows = [
        ("training throughput, MoFA at 224 px, ResNet-18", best(train, "train_images_per_s", "{:.0f} img/s"),
         "≥ 2,000 img/s"),
        ("learned inference, batch 1 (network, eager)",
         (f"{min(r['infer_batch1_ms'] for r in train):.2f} ms" if train else "not measured"), "≤ 1 ms"),
        ("learned inference, batch 1 (network, CUDA graph replay)",
         (f"{min(r['infer_batch1_graph_ms'] for r in graphed):.3f} ms" if graphed else "not measured"), "≤ 1 ms"),
        ("learned inference, batched (network)", best(train, "infer_images_per_s", "{:.0f} img/s"), "≥ 20,000 img/s"),
        ("training throughput, the shipped network (ResNet-10 ×0.5, 128 px)",
         best(shipped, "train_images_per_s", "{:.0f} img/s"), "—"),
        ("learned inference, the shipped network, batch 1 / batched",
         (f"{min(r['infer_batch1_ms'] for r in shipped):.2f} ms / {max(r['infer_images_per_s'] for r in shipped):.0f} img/s"
          if shipped else "not measured"), "—"),
        ("renderer, open head, 224 px, rasterised + SH + AA, fwd+bwd", best(render, "images_per_s", "{:.0f} img/s"),
         "≥ 20,000 img/s batched"),
        ("renderer, per-vertex (MoFA) path, fwd+bwd", best(vertex, "images_per_s", "{:.0f} img/s"), "—"),
        ("fit of one photo on the GPU (ground-truth landmarks)",
         (f"{min(r['wall_median_s'] for r in fit):.3f} s" if fit else "not measured"), "≤ 0.15 s"),
        ("video, learned method", best(video["mofa"], "frames_per_s", "{:.0f} frames/s"), "≥ 200 frames/s"),
        ("video, hybrid method", best(video["hybrid"], "frames_per_s", "{:.1f} frames/s"), "≥ 20 frames/s"),
    ]
    device = next((r.get("device") for r in records if r.get("device")), "?")
    lines = [f"device: {device}", "", "| figure | measured | goal |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/gpu_table.py RECORDS.jsonl")
    print(table(_records(Path(sys.argv[1]))))
