"""DistributedDataParallel set-up from ``torchrun``'s environment variables.

``torchrun --nproc_per_node=N -m engine.train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; we
initialise the default process group from them (NCCL on CUDA, Gloo on CPU) and nothing
else: gradient synchronisation is PyTorch's DDP, not a home-made scheme.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> DistInfo:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def all_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True when ``flag`` holds on every rank (so all ranks skip or step together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo, synchronize: bool = False) -> None:
    """Destroy the process group. ``synchronize`` (a run that ended normally on every rank):
    wait for all ranks first, so that no rank closes its connections while another still
    writes its last files (gloo's background thread then aborts the slower process)."""
    if info.enabled and dist.is_initialized():
        if synchronize:
            barrier(info)
        dist.destroy_process_group()
