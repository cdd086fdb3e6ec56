"""Straightforward per-tensor implementations of the papers' formulas, for the trajectory tests.

Written independently of rangerlab's transforms (no foreach, no shared helpers): one loop over
tensors, the formula as printed. Where torch has the algorithm the tests use torch.optim instead.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


def centralize_grads(params) -> None:
    """Gradient Centralization of a reference optimizer's own ``p.grad`` (the reference owns it)."""
    for p in params:
        if p.grad is not None and p.grad.dim() > 1:
            dims = tuple(range(1, p.grad.dim()))
            p.grad = p.grad - p.grad.mean(dim=dims, keepdim=True)


class RefLARS(Optimizer):
    """LARS/LARC (You et al. 2017, arXiv:1708.03888; LARC's clip as NVIDIA apex): trust on (g, w),
    d = trust*(g + wd*w), torch-SGD momentum; the rule rangerlab.LARS's docstring states."""

    def __init__(
        self,
        params,
        lr=1.0,
        momentum=0.9,
        dampening=0.0,
        weight_decay=0.0,
        nesterov=False,
        trust_coefficient=0.001,
        eps=1e-8,
        clip=False,
        trust_ratio=True,
    ):
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
                trust_coefficient=trust_coefficient,
                eps=eps,
                clip=clip,
                trust_ratio=trust_ratio,
            ),
        )

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, wd, mom = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                trust = 1.0
                if group["trust_ratio"]:
                    w_norm, g_norm = float(p.norm()), float(g.norm())
                    if w_norm > 0 and g_norm > 0:
                        trust = (
                            group["trust_coefficient"]
                            * w_norm
                            / (g_norm + wd * w_norm + group["eps"])
                        )
                        if group["clip"]:
                            trust = min(trust / lr, 1.0)
                d = trust * (g + wd * p)
                state = self.state[p]
                if mom != 0:
                    if "buf" not in state:
                        state["buf"] = d.clone()
                    else:
                        state["buf"] = mom * state["buf"] + (1 - group["dampening"]) * d
                    d = d + mom * state["buf"] if group["nesterov"] else state["buf"]
                p.sub_(lr * d)


class RefLAMB(Optimizer):
    """LAMB (You et al. 2020, arXiv:1904.00962, Algorithm 2): Adam's bias-corrected direction,
    + wd*w, then w -= lr * min(||w||, max_weight_norm)/||u|| * u (ratio 1 where a norm is 0)."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-6,
        weight_decay=0.0,
        max_weight_norm=10.0,
        trust_ratio=True,
    ):
        super().__init__(
            params,
            dict(
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                max_weight_norm=max_weight_norm,
                trust_ratio=trust_ratio,
            ),
        )

    def direction(self, m, v, t, b1, b2, eps):
        """Adam's bias-corrected direction."""
        return (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                t = state["t"]
                state["m"] = b1 * state["m"] + (1 - b1) * g
                state["v"] = b2 * state["v"] + (1 - b2) * g * g
                u = self.direction(state["m"], state["v"], t, b1, b2, group["eps"])
                u = u + group["weight_decay"] * p
                w_norm, u_norm = float(p.norm()), float(u.norm())
                cap = group["max_weight_norm"]
                ratio = 1.0
                if group["trust_ratio"] and w_norm > 0 and u_norm > 0:
                    ratio = (w_norm if cap is None else min(w_norm, cap)) / u_norm
                p.sub_(group["lr"] * ratio * u)


class RefRAdamLAMB(RefLAMB):
    """RangerLARS's inner step as rangerlab.RangerLARS's docstring states it: RAdam's direction
    (Liu et al. 2020, as torch.optim.RAdam), + wd*w, then LAMB's ratio and w -= lr*r*u."""

    def __init__(self, params, lr, betas=(0.95, 0.999), eps=1e-5, **kw):
        super().__init__(params, lr, betas, eps, **kw)

    def direction(self, m, v, t, b1, b2, eps):
        """RAdam: bias-corrected momentum while rho_t <= 5, then the rectified Adam step."""
        m_hat = m / (1 - b1**t)
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho_t <= 5:
            return m_hat
        r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        return m_hat * r * math.sqrt(1 - b2**t) / (v.sqrt() + eps)


class RefLookahead:
    """Lookahead (Zhang et al. 2019): phi_0 = theta_0 copied at the first step, one counter."""

    def __init__(self, inner, k, alpha):
        self.inner, self.k, self.alpha = inner, k, alpha
        self.param_groups = inner.param_groups
        self.slow: dict[torch.Tensor, torch.Tensor] = {}
        self.count = 0

    @torch.no_grad()
    def step(self):
        params = [p for g in self.inner.param_groups for p in g["params"] if p.grad is not None]
        for p in params:
            if p not in self.slow:
                self.slow[p] = p.detach().clone()
        self.inner.step()
        self.count += 1
        if self.count % self.k == 0:
            for p in params:
                self.slow[p] += self.alpha * (p - self.slow[p])
                p.copy_(self.slow[p])

    def add_param_group(self, group):
        self.inner.add_param_group(group)


class WithGC:
    """Apply Gradient Centralization to the reference's own grads before its step."""

    def __init__(self, inner):
        self.inner = inner
        self.param_groups = inner.param_groups

    def step(self):
        centralize_grads(p for g in self.inner.param_groups for p in g["params"])
        self.inner.step()

    def add_param_group(self, group):
        self.inner.add_param_group(group)
