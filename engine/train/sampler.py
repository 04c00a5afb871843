"""A resumable, distributed, seeded sampler.

The order of epoch ``e`` is a permutation drawn from ``Generator(seed + e)``; rank ``r``
of ``W`` takes every W-th index (padding to equal length like DistributedSampler). The
sampler can start mid-epoch (``skip`` samples already consumed), so a resumed run sees
exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True) -> None:
        if n <= 0:
            raise ValueError("cannot sample from an empty data set")
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.skip = 0
        self.per_rank = -(-n // world_size)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's permutation and how many of this rank's samples to skip."""
        self.epoch, self.skip = int(epoch), int(skip)

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world_size
        order = (order * (-(-total // self.n)))[:total]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip:])

    def __len__(self) -> int:
        return max(self.per_rank - self.skip, 0)
