"""Several data sources in one run (``data.kind: mixed``): synthetic + real, weighted.

Item ``i`` draws its source with probability ∝ ``weight`` and an item of that source from
a generator seeded ``[seed, i]`` (deterministic per index, so resumes are exact and every
DataLoader worker agrees). Items keep the keys every source provides (so a batch collates),
plus ``landmarks_valid`` and ``skipped_images`` (filled in when a source lacks them) and
``source`` (the source's position in ``data.sources``, ``ids``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.errors import ConfigError

class MixedFaces(Dataset):
    """``length`` items drawn from ``datasets`` with probabilities ∝ ``weights``."""

    def __init__(self, datasets: Sequence[Dataset], weights: Sequence[float], length: int, seed: int = 0,
                 ids: Sequence[int] | None = None) -> None:
        if not datasets or len(datasets) != len(weights):
            raise ConfigError("data.kind=mixed needs data.sources, each with a weight")
        w = np.asarray(weights, np.float64)
        if not (np.isfinite(w).all() and (w > 0).all()):
            raise ConfigError(f"data.sources weights must be positive numbers, got {list(weights)}")
        if any(len(d) == 0 for d in datasets):
            raise ConfigError("a data.sources entry is empty")
        self.datasets, self.p, self.length, self.seed = list(datasets), w / w.sum(), int(length), int(seed)
        self.ids = list(ids) if ids is not None else list(range(len(self.datasets)))
        firsts = [self._normalise(d[0], self.ids[k], keys=None) for k, d in enumerate(self.datasets)]
        shapes = {k: tuple(v["image"].shape) for k, v in enumerate(firsts)}
        if len(set(shapes.values())) > 1:
            raise ConfigError(f"data.sources give images of different shapes {sorted(set(shapes.values()))}: "
                              "mix single images with single images and clips with clips of the same length")
        common = set.intersection(*(set(f) for f in firsts))
        self.keys = sorted(k for k in common if all(_same_shape(f[k], firsts[0][k]) for f in firsts))

    def __len__(self) -> int:
        return self.length

    @staticmethod
    def _normalise(item: dict[str, Any], source: int, keys: list[str] | None) -> dict[str, Any]:
        out = dict(item)
        lead = out["image"].shape[:-3]
        if "landmarks_valid" not in out:
            out["landmarks_valid"] = torch.ones(*lead, 68, dtype=torch.bool)
        out.setdefault("skipped_images", torch.tensor(0))
        out["source"] = torch.tensor(source)
        return out if keys is None else {k: out[k] for k in keys}

    def pick(self, i: int) -> tuple[int, int]:
        """(source, index in that source) of item ``i``."""
        g = np.random.default_rng([self.seed, i])
        k = int(g.choice(len(self.datasets), p=self.p))
        return k, int(g.integers(0, len(self.datasets[k])))

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        k, j = self.pick(i)
        return self._normalise(self.datasets[k][j], self.ids[k], self.keys)

    @property
    def skipped(self) -> int:
        return sum(int(getattr(d, "skipped", 0)) for d in self.datasets)


def _same_shape(a: Any, b: Any) -> bool:
    if torch.is_tensor(a) and torch.is_tensor(b):
        return a.shape == b.shape and a.dtype == b.dtype
    return type(a) is type(b)


__all__ = ["MixedFaces"]
