"""The optimiser of a fused group: AdamW with per-member hyper-parameters, and the schedule."""

from __future__ import annotations

import math

import torch

from search.errors import UserError

__all__ = ["lr_factor", "adamw_"]

def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rate at `step` of `total` (shared by a group)."""
    p = step / max(total, 1)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if schedule == "onecycle":  # 30% linear warm-up from lr/25, then cosine to ~0
        if p < 0.3:
            return 1 / 25 + (1 - 1 / 25) * p / 0.3
        return 0.5 * (1 + math.cos(math.pi * (p - 0.3) / 0.7))
    raise UserError(f"unknown schedule '{schedule}'; expected cosine, onecycle or constant")



@torch.no_grad()
def adamw_(params: dict[str, torch.Tensor], m: dict[str, torch.Tensor], v: dict[str, torch.Tensor],
           t: torch.Tensor, sched: torch.Tensor, lr: torch.Tensor, wd: torch.Tensor,
           b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
    """One AdamW step, in place, for K stacked members: `params[name]` is [K, ...] and `lr`,
    `wd` are [K]. Step `t` and the schedule `sched` are device tensors (no host sync: the step
    can be captured in a CUDA graph). Decay applies to weights only (dim > 2 when stacked);
    biases, norms and scalars are not decayed."""
    tf = (t + 1).float()
    bc1, bc2 = 1 - b1 ** tf, 1 - b2 ** tf
    factor = sched.index_select(0, t.view(1))  # not sched[t]: that would read t on the host
    for k, p in params.items():
        g = p.grad
        view = (-1,) + (1,) * (p.dim() - 1)
        step_lr = (lr * factor).view(view)
        if p.dim() > 2:
            p.mul_(1 - step_lr * wd.view(view))
        mk, vk = m[k], v[k]
        mk.mul_(b1).add_(g, alpha=1 - b1)
        vk.mul_(b2).addcmul_(g, g, value=1 - b2)
        p.sub_(step_lr / bc1 * mk / (vk / bc2).sqrt_().add_(eps))
