"""Synthetic training/evaluation corpus on top of :mod:`engine.synthetic`.

Item ``i`` of split ``s`` is face ``seed = corpus_seed · 10⁷ + offset(s) + i`` (train
offsets from 0, validation from 9·10⁶), so the two splits never share a face and every
item is the same on any machine, in any worker, in any order. Rendering costs ~0.3-1 s
per face on a CPU, so for real training write the corpus once with
``python -m engine.data.synthetic --out DIR --n N`` (uint8 memmap + ground truth) and
point ``data.options.cache`` at it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.errors import UserError

VAL_OFFSET = 9_000_000


def face_seed(corpus_seed: int, split: str, index: int) -> int:
    return corpus_seed * 10_000_000 + (VAL_OFFSET if split == "val" else 0) + index


class SyntheticFaces(Dataset):
    """Rendered faces with ground truth: image (3,S,S) in [0,1], landmarks (68,2) px, and
    ``gt_identity``/``gt_expression``/``gt_pose``/``gt_R``/``gt_t``/``gt_K``/``gt_vertices``."""

    def __init__(self, head, n: int, image_size: int = 224, corpus_seed: int = 1234,
                 split: str = "train", cache: str | Path | None = None, **synthetic_options) -> None:
        from engine.synthetic import SyntheticConfig

        self.head = head
        self.n, self.split, self.corpus_seed = int(n), split, int(corpus_seed)
        self.syn_cfg = SyntheticConfig(image_size=image_size, **synthetic_options)
        self.cache = None
        if cache:
            self.cache = _open_cache(Path(cache), split, image_size)
            if self.cache["n"] < self.n:
                raise UserError(f"synthetic cache {cache} holds {self.cache['n']} {split} faces, "
                                f"fewer than the {self.n} requested")

    def __len__(self) -> int:
        return self.n

    def _gt_vertices(self, ident, expr, pose) -> torch.Tensor:
        with torch.no_grad():
            return self.head(ident[None], expr[None], pose[None] if self.head.n_joints else None).vertices[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        if self.cache is not None:
            c = self.cache
            img = torch.from_numpy(np.array(c["images"][i]))
            item = {k: torch.from_numpy(np.array(c[k][i])) for k in
                    ("landmarks", "gt_identity", "gt_expression", "gt_pose", "gt_R", "gt_t", "gt_K")}
            item["gt_vertices"] = self._gt_vertices(item["gt_identity"], item["gt_expression"], item["gt_pose"])
            seed = int(c["seeds"][i])
        else:
            from engine.synthetic import render_sample

            seed = face_seed(self.corpus_seed, self.split, i)
            s = render_sample(self.head, seed, self.syn_cfg)
            img = torch.from_numpy(s.image)
            item = {"landmarks": s.landmarks2d.float(), "gt_identity": s.identity, "gt_expression": s.expression,
                    "gt_pose": s.pose, "gt_R": s.R, "gt_t": s.t, "gt_K": s.K, "gt_vertices": s.vertices}
        item["image"] = img.permute(2, 0, 1).float() / 255.0
        item["landmarks_valid"] = torch.ones(68, dtype=torch.bool)
        item["seed"] = torch.tensor(seed)
        return item


_CACHE_ARRAYS = ("landmarks", "gt_identity", "gt_expression", "gt_pose", "gt_R", "gt_t", "gt_K", "seeds")


def _open_cache(root: Path, split: str, size: int) -> dict:
    d = root / split
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        raise UserError(f"synthetic cache {d} has no meta.json; write it with "
                        f"python -m engine.data.synthetic --out {root}")
    meta = json.loads(meta_path.read_text())
    if meta["image_size"] != size:
        raise UserError(f"synthetic cache {d} has {meta['image_size']} px images, not {size} px")
    n = meta["n"]
    out = {"n": n, "images": np.load(d / "images.npy", mmap_mode="r")}
    for k in _CACHE_ARRAYS:
        out[k] = np.load(d / f"{k}.npy", mmap_mode="r")
    return out


def write_cache(head, out: Path, n: int, split: str, image_size: int, corpus_seed: int,
                start: int = 0, stop: int | None = None) -> Path:
    """Render faces ``[start, stop)`` of a split into ``out/split`` (resumable by range:
    run several processes on disjoint ranges; arrays are preallocated memmaps)."""
    ds = SyntheticFaces(head, n, image_size, corpus_seed, split)
    d = out / split
    d.mkdir(parents=True, exist_ok=True)
    first = ds[0]
    shapes = {"images": ((n, image_size, image_size, 3), np.uint8), "seeds": ((n,), np.int64)}
    for k in _CACHE_ARRAYS[:-1]:
        shapes[k] = ((n,) + tuple(first[k].shape), np.float32)
    arrays = {}
    for k, (shape, dtype) in shapes.items():
        p = d / f"{k}.npy"
        mode = "r+" if p.exists() else "w+"
        arrays[k] = np.lib.format.open_memmap(p, mode=mode, dtype=dtype, shape=shape)
    from tqdm import tqdm

    for i in tqdm(range(start, n if stop is None else min(stop, n)), desc=f"synthetic {split}"):
        it = ds[i]
        arrays["images"][i] = (it["image"].permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()
        arrays["seeds"][i] = int(it["seed"])
        for k in _CACHE_ARRAYS[:-1]:
            arrays[k][i] = it[k].numpy()
    for a in arrays.values():
        a.flush()
    (d / "meta.json").write_text(json.dumps({"n": n, "image_size": image_size, "corpus_seed": corpus_seed,
                                             "head_model": head.name}))
    return d


def main(argv: list[str] | None = None) -> int:
    from engine.errors import cli_errors

    ap = argparse.ArgumentParser(prog="python -m engine.data.synthetic",
                                 description="Render the synthetic corpus once into memmaps.")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--n-val", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--model", default="open")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--stop", type=int, default=None)
    a = ap.parse_args(argv)
    with cli_errors():
        from engine.head import load_head_model

        head = load_head_model(a.model)
        write_cache(head, Path(a.out), a.n, "train", a.size, a.seed, a.start, a.stop)
        if a.start == 0:
            write_cache(head, Path(a.out), a.n_val, "val", a.size, a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
