"""benchmarks/gpu_table.py turns the benchmarks' JSON records into issue #18's table."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_table_from_records(tmp_path):
    rec = tmp_path / "r.jsonl"
    rows = [{"bench": "train", "device": "NVIDIA H200", "backbone": "resnet18", "size": 224, "train_images_per_s": 2500.0,
             "infer_images_per_s": 30000.0, "infer_batch1_ms": 0.8, "infer_batch1_graph_ms": 0.3},
            {"bench": "train", "device": "NVIDIA H200", "backbone": "resnet10", "size": 128, "train_images_per_s": 9000.0,
             "infer_images_per_s": 200000.0, "infer_batch1_ms": 1.1},
            {"bench": "render", "path": "rasterised + SH + AA fwd+bwd", "batch": 256, "images_per_s": 12000.0},
            {"bench": "render", "path": "rasterised + SH + AA fwd+bwd", "batch": 1024, "images_per_s": 21000.0},
            {"bench": "fit", "landmarks": "ground-truth iBUG-68", "wall_median_s": 0.12}]
    rec.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_table.py"), str(rec)], capture_output=True,
                         text=True, check=True).stdout
    assert "device: NVIDIA H200" in out
    assert "| 2500 img/s |" in out and "| 0.80 ms |" in out and "| 30000 img/s |" in out and "| 0.300 ms |" in out
    assert "| 9000 img/s |" in out and "| 1.10 ms / 200000 img/s |" in out  # the shipped network, its own rows
    assert "| 21000 img/s |" in out  # the best batch size counts
    assert "| 0.120 s |" in out and "video, learned method | not measured" in out
