"""Throughput of MoFA training and inference at 224 px (prints figures; no assertions).

    python benchmarks/train_benchmark.py --device cpu [--batch 16] [--steps 5]
    python benchmarks/train_benchmark.py --device cuda --batch 256 --steps 30

Training = encoder forward + analytic decoder + loss + backward + Adam step on random
images (data loading excluded: the corpus is a memmap); inference = encoder forward only
(the network), batched and at batch 1, in eval mode (AMP bf16 + channels-last on CUDA, as
the trainer uses them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def graphed_ms(model, x: torch.Tensor, reps: int) -> float:
    """Batch-1 network time replaying a CUDA graph of ``model.encode`` (one launch instead of
    one per kernel: at batch 1 the eager network is bound by kernel launches)."""
    static = x.clone()
    amp = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)  # no cast cache across a capture
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), amp, torch.cuda.stream(side):
        for _ in range(3):  # warm-up on a side stream (cudnn picks its kernels) before capture
            model.encode(static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), amp, torch.cuda.graph(graph):
        model.encode(static)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        static.copy_(x)
        graph.replay()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--infer-batch", type=int, default=0, help="default: 4x --batch")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--visibility", default="raster")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--json", default=None, metavar="FILE", help="also append the JSON record to FILE")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after timing, profile one training step and print its N most expensive operators")
    a = ap.parse_args()
    from engine.methods.mofa import Mofa, MofaConfig

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    model = Mofa(MofaConfig(backbone=a.backbone, width=a.width, image_size=a.size,
                            visibility=a.visibility)).to(dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    step_fn = torch.compile(model.training_step) if a.compile else model.training_step
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    def batch(n):
        x = torch.rand(n, 3, a.size, a.size, device=dev)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return {"image": x, "landmarks": torch.rand(n, 68, 2, device=dev) * a.size}

    def sync():
        if cuda:
            torch.cuda.synchronize()

    b = batch(a.batch)
    model.train()
    for i in range(a.steps + 2):  # two warm-up steps
        if i == 2:
            sync()
            t0 = time.perf_counter()
        with amp:
            res = step_fn(b)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        opt.step()
    sync()
    train_ips = a.steps * a.batch / (time.perf_counter() - t0)
    if a.profile:  # where a training step's time goes
        from _profile import profile_call

        def one_step():
            with amp:
                res = step_fn(b)
            opt.zero_grad(set_to_none=True)
            res.loss.backward()
            opt.step()

        print(profile_call(one_step, cuda, a.profile))

    model.eval()
    nb = a.infer_batch or 4 * a.batch

    def infer_ms(n: int, reps: int) -> float:
        """Network only (encoder heads), ms per image at batch ``n``."""
        x = batch(n)["image"]
        with torch.no_grad(), amp:
            for i in range(reps + 2):
                if i == 2:
                    sync()
                    t0 = time.perf_counter()
                model.encode(x)
            sync()
        return 1000 * (time.perf_counter() - t0) / (reps * n)

    batched = infer_ms(nb, a.steps)
    single = infer_ms(1, max(20, a.steps))
    graphed = graphed_ms(model, batch(1)["image"], max(50, a.steps)) if cuda else None
    record = {"bench": "train", "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
              "threads": torch.get_num_threads(), "backbone": a.backbone, "width": a.width,
              "size": a.size, "train_batch": a.batch, "train_images_per_s": round(train_ips, 1),
              "infer_batch": nb, "infer_ms_per_image": round(batched, 4),
              "infer_images_per_s": round(1000 / batched, 1), "infer_batch1_ms": round(single, 3)}
    if graphed is not None:
        record["infer_batch1_graph_ms"] = round(graphed, 3)
    print(json.dumps(record))
    if a.json:
        with open(a.json, "a") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
