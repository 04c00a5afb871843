"""The fitter's optimisers: a minimal Adam and an orthant-wise Levenberg–Marquardt.

``torch.optim.Adam``'s first step imports ``torch._dynamo`` (about 1.5 s on a laptop CPU),
more than a whole fit; this plain implementation of Kingma & Ba's update has no such cost
and supports per-group learning rates and a cosine decay. The landmark stage's energy is a
small least-squares problem with an ℓ1 prior, which :func:`orthant_levenberg_marquardt`
solves in a few Gauss–Newton steps (``FitConfig.landmark_solver = "lm"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

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


@dataclass
class LMResult:
    """What :func:`orthant_levenberg_marquardt` did: the final energy, the accepted steps
    and the energy evaluations (accepted or not)."""

    energy: float
    steps: int
    evaluations: int


def orthant_levenberg_marquardt(
    theta: torch.Tensor,
    energy: Callable[[torch.Tensor], float],
    system: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    free: torch.Tensor,
    l1: torch.Tensor | None = None,
    iters: int = 20,
    tol: float = 1e-6,
    lower: torch.Tensor | None = None,
    upper: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LMResult]:
    """Minimise ``f(θ) + Σ l1_k |θ_k|`` over the ``free`` coordinates of a flat ``θ (P,)``.

    ``energy(θ)`` is the smooth part ``f``; ``system(θ)`` returns its gradient and a
    positive semi-definite approximation of its Hessian (Gauss–Newton: ``2 JᵀJ`` plus the
    priors' curvature). Each step solves the
    damped system ``(H + λ diag H) d = −g`` (Levenberg–Marquardt, Nielsen's update of λ) and
    is kept only when the energy falls. The ℓ1 part is handled orthant-wise (as OWL-QN,
    Andrew & Gao 2007): ``g`` is its pseudo-gradient, a coordinate at zero whose smooth
    pull is weaker than its ℓ1 weight stays at zero, and a step that would cross zero stops
    there — so unused coordinates end exactly at zero. ``lower`` / ``upper`` ``(P,)`` bound
    the coordinates (projected steps; a coordinate on a bound that the pseudo-gradient pushes
    outwards is held for that step). Stops after ``iters`` accepted steps,
    when a step lowers the energy by less than ``tol`` (relative), or when no damping finds a
    lower energy.
    """
    inf = torch.full_like(theta, float("inf"))
    lower = -inf if lower is None else lower.to(theta)
    upper = inf if upper is None else upper.to(theta)
    theta = torch.minimum(torch.maximum(theta.detach().clone(), lower), upper)
    l1 = torch.zeros_like(theta) if l1 is None else l1.to(theta)

    def objective(x: torch.Tensor) -> float:
        return energy(x) + float((l1 * x.abs()).sum())

    e = objective(theta)
    evals, steps, lam, nu = 1, 0, 1e-3, 2.0
    while steps < iters:
        g, H = system(theta)
        sign = torch.sign(theta)
        at_zero = (theta == 0) & (l1 > 0)
        pg = g + l1 * sign
        pg = torch.where(at_zero, torch.where(g + l1 < 0, g + l1, torch.where(g - l1 > 0, g - l1, torch.zeros_like(g))), pg)
        orthant = torch.where(at_zero, -torch.sign(pg), sign)
        held = (at_zero & (pg == 0)) | ((theta <= lower) & (pg > 0)) | ((theta >= upper) & (pg < 0))
        active = (free & ~held).nonzero()[:, 0]
        if len(active) == 0:
            break
        Ha, ga = H[active][:, active].double(), pg[active].double()
        diag = Ha.diagonal().clamp_min(1e-12)
        while True:
            try:
                d = -torch.linalg.solve(Ha + torch.diag(lam * diag), ga)
            except torch.linalg.LinAlgError:  # singular at this damping: damp more
                lam *= nu
                nu *= 2.0
                if lam > 1e10:
                    return theta, LMResult(e, steps, evals)
                continue
            cand = theta.clone()
            cand[active] += d.to(theta)
            cross = (l1 > 0) & (orthant != 0) & (torch.sign(cand) != orthant)
            cand[cross] = 0.0
            cand = torch.minimum(torch.maximum(cand, lower), upper)
            e_new = objective(cand)
            evals += 1
            predicted = -float(ga @ d + 0.5 * d @ (Ha @ d))
            if e_new < e:
                rho = (e - e_new) / max(predicted, 1e-30)
                lam *= max(1.0 / 3.0, 1.0 - (2.0 * min(rho, 1.0) - 1.0) ** 3)
                nu = 2.0
                break
            lam *= nu
            nu *= 2.0
            if lam > 1e10:
                return theta, LMResult(e, steps, evals)
        decrease = (e - e_new) / max(abs(e), 1e-30)
        theta, e = cand, e_new
        steps += 1
        if decrease < tol:
            break
    return theta, LMResult(e, steps, evals)
