"""CPU thread settings shared by the fit, the output writer and the benchmarks."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

__all__ = ["torch_threads"]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads and restore the previous count after
    (``n <= 0``: leave it as it is). For work made of many small tensor operations (the fit,
    the texture bake) one thread is faster than several: the threads' synchronisation costs
    more than the split saves, and more so when other threads of the process run beside it."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(before)
