"""One helper for the benchmarks' ``--profile N``: where one call's time goes, as PyTorch's
profiler table (operators by self device time on CUDA, self CPU time otherwise), plus the count
of host-device synchronisations (``.item()`` and friends), which bound small-step loops on a GPU."""

from __future__ import annotations

from typing import Callable

import torch


def profile_call(fn: Callable[[], object], cuda: bool, rows: int, sort: str | None = None) -> str:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    avg = prof.key_averages()
    key = sort or ("self_cuda_time_total" if cuda else "self_cpu_time_total")
    syncs = sum(e.count for e in avg if e.key in ("aten::_local_scalar_dense", "cudaStreamSynchronize",
                                                  "cudaDeviceSynchronize"))
    launches = sum(e.count for e in avg if e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel"))
    return (avg.table(sort_by=key, row_limit=rows)
            + f"\nhost-device synchronisations: {syncs}; kernel launches: {launches}")
