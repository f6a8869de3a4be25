"""The learning-rate schedule shared by a fused group."""

from __future__ import annotations

import math

from search.errors import UserError

__all__ = ["lr_factor"]

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

