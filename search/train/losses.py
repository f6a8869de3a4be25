"""Loss terms of the mentee loss: the hint metrics and the per-member loss.

    L = w_ce·CE(logits, y) + Σ_k w_k·metric_k(proj_k(mentee tap), mentor tap) + w_kd·T²·KL(mentor ‖ mentee at T)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F

__all__ = ["METRICS", "register_metric", "member_loss"]

# ------------------------------------------------------------------------- metrics

METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {}


def register_metric(name: str):
    def deco(fn):
        METRICS[name] = fn
        return fn
    return deco


@register_metric("mse")
def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).mean()


@register_metric("rmse")
def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # eps keeps the gradient finite when the projection matches exactly
    return torch.sqrt((a - b).pow(2).mean() + 1e-12)


@register_metric("cosine")
def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-8).mean()


def member_loss(logits: torch.Tensor, preds: Sequence[torch.Tensor], y: torch.Tensor,
                t_logits: torch.Tensor | None, t_feats: Sequence[torch.Tensor],
                metrics: Sequence[str], w: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mentee loss for one member. With no hints and w_kd = 0 this is exactly w_ce·CE."""
    loss = w["ce"] * F.cross_entropy(logits.float(), y)
    for k, (p, t) in enumerate(zip(preds, t_feats)):
        loss = loss + w["hint"][k] * METRICS[metrics[k]](p.float(), t.float())
    if t_logits is not None:
        T = w["T"]
        # KL(mentor ‖ mentee), written out: F.kl_div has no vmap batching rule (slow fallback)
        log_t, log_s = F.log_softmax(t_logits / T, -1), F.log_softmax(logits.float() / T, -1)
        kl = (log_t.exp() * (log_t - log_s)).sum(-1).mean()
        loss = loss + w["kd"] * T * T * kl
    return loss

