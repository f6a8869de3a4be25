"""The optimiser of a fused group: AdamW over one flat [K, P] tensor, and the schedules.

    table = schedule_table(["cosine"], total, lr_factor)          # [1, total] lr factor per step
    table = schedule_table(["constant", "late"], total, weight_factor)  # loss-weight factors
    adamw_flat_(flat, grad, m, v, t, lr_now, wd, decay)          # one step, ~12 kernels for any model

Schedules are tables on the device, one row per schedule, read at the step counter (a device
tensor): the step never asks the host what step it is, so it can be replayed as a CUDA graph,
and members with different schedules share one fused step (each member reads its own row).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from search.errors import UserError

__all__ = ["LR_SCHEDULES", "SCHEDULES", "lr_factor", "weight_factor", "schedule_table", "adamw_flat_"]

LR_SCHEDULES = ("constant", "cosine", "onecycle")

# Loss-weight schedules: `TermConfig.params["schedule"]` (default "constant") scales that term's
# weight per step. Two-stage training (hints first, then labels) = mentor terms "early" + ce "late".
SCHEDULES = ("constant", "warmup", "decay", "early", "late")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rate at `step` of `total`."""
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


def weight_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of a loss term's weight at `step` of `total` (see SCHEDULES)."""
    if schedule == "constant":
        return 1.0
    if schedule == "warmup":  # linear 0 → 1 over the first 30% of steps, then 1
        return min(1.0, step / max(0.3 * total, 1))
    if schedule == "decay":  # 1 → 0 linearly over training
        return 1.0 - step / max(total, 1)
    if schedule == "early":  # the first half only
        return 1.0 if 2 * step < total else 0.0
    if schedule == "late":  # the second half only
        return 0.0 if 2 * step < total else 1.0
    raise UserError(f"unknown loss-weight schedule '{schedule}'; expected one of {', '.join(SCHEDULES)}")


def schedule_table(names: Sequence[str], total: int, factor: Callable[[str, int, int], float],
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """[len(names), total] float32: row i is schedule names[i] at every step."""
    return torch.tensor([[factor(n, i, total) for i in range(total)] for n in names], dtype=torch.float32,
                        device=device)


@torch.no_grad()
def adamw_flat_(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: torch.Tensor,
                lr: torch.Tensor, wd: torch.Tensor, decay: torch.Tensor,
                b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
    """One AdamW step, in place, for K members stacked as rows of one flat tensor: `p`, `g`, `m`,
    `v` are [K, P]; `lr` (this step's, schedule applied) and `wd` are [K, 1]; `decay` is [1, P]
    (1 where weight decay applies: weights, not biases or norms). `t` is the step count, a device
    tensor (no host sync: the step can be captured in a CUDA graph). On CUDA one Triton kernel
    (one read of p, g, m, v and one write of p, m, v); elsewhere a dozen torch ops, whatever the
    model, instead of a dozen per parameter tensor.

    An entry whose gradient is always 0 (a fused member's padding) never moves: m and v stay 0 and
    its update is 0 / (0 + eps) = 0; decay keeps a zero at zero."""
    tf = (t + 1).to(torch.float32)
    bc1, bc2 = 1 - torch.pow(b1, tf), 1 - torch.pow(b2, tf)
    if p.is_cuda and _triton_adamw is not None:
        K, P = p.shape
        block = 1024
        _triton_adamw[(K, triton.cdiv(P, block))](p, g.contiguous(), m, v, lr.contiguous(), wd.contiguous(),
                                                  decay.contiguous(), bc1, bc2, P, b1, b2, eps, BLOCK=block)
        return
    p.mul_(1 - (lr * wd) * decay)
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    p.sub_((lr / bc1) * m / (v / bc2).sqrt_().add_(eps))


try:  # Triton comes with CUDA builds of torch; the CPU (and CI) use the torch ops above
    import triton
    import triton.language as tl

    @triton.jit
    def _triton_adamw(p_ptr, g_ptr, m_ptr, v_ptr, lr_ptr, wd_ptr, decay_ptr, bc1_ptr, bc2_ptr, n_cols,
                      b1, b2, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = cols < n_cols
        off = row.to(tl.int64) * n_cols + cols
        lr, wd = tl.load(lr_ptr + row), tl.load(wd_ptr + row)
        bc1, bc2 = tl.load(bc1_ptr), tl.load(bc2_ptr)
        p = tl.load(p_ptr + off, mask=inside)
        g = tl.load(g_ptr + off, mask=inside)
        m = tl.load(m_ptr + off, mask=inside)
        v = tl.load(v_ptr + off, mask=inside)
        d = tl.load(decay_ptr + cols, mask=inside)
        p = p * (1 - lr * wd * d)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - (lr / bc1) * m / (tl.sqrt(v / bc2) + eps)
        tl.store(p_ptr + off, p, mask=inside)
        tl.store(m_ptr + off, m, mask=inside)
        tl.store(v_ptr + off, v, mask=inside)
except ImportError:
    _triton_adamw = None
