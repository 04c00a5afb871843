"""A minimal Adam for the fitter.

``torch.optim.Adam``'s first step imports ``torch._dynamo`` (about 1.5 s on a laptop CPU),
more than a whole fit; this plain implementation of Kingma & Ba's update has no such cost
and supports per-group learning rates and a cosine decay.
"""

from __future__ import annotations

import math

import torch


class Adam:
    """Adam over parameter groups ``[(tensor, lr), ...]`` with optional cosine decay."""

    def __init__(self, groups: list[tuple[torch.Tensor, float]], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, total_steps: int | None = None, final_fraction: float = 0.1) -> None:
        self.params = [p for p, _ in groups]
        self.lrs = [lr for _, lr in groups]
        self.b1, self.b2 = betas
        self.eps = eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0
        self.total = total_steps
        self.final = final_fraction

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        scale = 1.0
        if self.total:
            progress = min(self.t / self.total, 1.0)
            scale = self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * progress))
        c1 = 1 - self.b1**self.t
        c2 = 1 - self.b2**self.t
        for p, lr, m, v in zip(self.params, self.lrs, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            p.sub_(lr * scale * (m / c1) / ((v / c2).sqrt() + self.eps))
