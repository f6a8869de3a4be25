"""Decoupled knowledge distillation (DKD, Zhao et al. 2022), registered as `dkd`.

    dkd: {enabled: [false, true], weight: {low: 0.05, high: 1.0, log: true}, beta: [2.0, 8.0], temperature: 4.0}

KD's loss splits into a target part and a non-target part, and classic KD ties the second's
weight to the teacher's confidence in the target class, which suppresses it exactly where the
teacher is sure. DKD weights them apart:

    TCKD = T² · KL([p_t, 1 − p_t]_teacher ‖ [p_t, 1 − p_t]_mentee)        (binary: the target class or not)
    NCKD = T² · KL(p̂_teacher ‖ p̂_mentee)         (p̂: softmax over the non-target classes only)
    DKD  = alpha · TCKD + beta · NCKD

as megvii-research/mdistiller's `dkd_loss` computes them (T = 4, alpha = 1, beta = 8 on CIFAR-100;
its linear warm-up of the DKD weight is the `warmup` schedule here). Every number is a member
parameter, so mentees with other alphas, betas and temperatures share one fused slot.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch.nn import functional as F

from search.config import TermConfig
from search.space_values import NonNegativeNum
from search.terms.builtin import _KDSpace, soft_target_terms
from search.terms.registry import LossTerm, Pick, describe_suffix, register_term, weight_text

__all__ = ["DecoupledKD"]


class _DKDSpace(_KDSpace):
    alpha: NonNegativeNum = Field(default=1.0)
    beta: NonNegativeNum = Field(default=8.0)


@register_term("dkd")
class DecoupledKD(LossTerm[_DKDSpace]):
    """DKD: the target-class and non-target-class parts of KD, weighted by alpha and beta."""

    needs_logits = True
    member_params = {"temperature": 4.0, "alpha": 1.0, "beta": 8.0}
    Space = _DKDSpace

    @classmethod
    def suggest(cls, section: _DKDSpace, pick: Pick, depth: int) -> list[TermConfig]:
        return soft_target_terms(cls, section, pick, {"alpha": section.alpha, "beta": section.beta})

    @classmethod
    def describe(cls, t):
        p = t.params
        return (f"dkd@{weight_text(t)}/T{p.get('temperature', 4.0):g}/a{p.get('alpha', 1.0):g}"
                f"b{p.get('beta', 8.0):g}{describe_suffix(t)}")

    def compute(self, logits, feats, y, mentor, p):
        T = p["temperature"]
        zs, zt = logits.float() / T, mentor[self.mentor_key("logits")].float() / T
        # the target mask by comparison, not scatter: it batches under vmap (each member its own labels)
        gt = (torch.arange(zs.shape[-1], device=zs.device) == y.unsqueeze(-1)).float()
        return p["alpha"] * tckd(zs, zt, gt) * T * T + p["beta"] * nckd(zs, zt, gt) * T * T


def _binary_log(z: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """log [p_target, 1 − p_target] from logits, each part a logsumexp (no log of a difference)."""
    logp = F.log_softmax(z, -1)
    target = (logp * gt).sum(-1)
    rest = torch.logsumexp(logp - 1000.0 * gt, -1)  # the target pushed out, as mdistiller masks it
    return torch.stack([target, rest], -1)


def tckd(zs: torch.Tensor, zt: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """KL of the binary target/non-target distributions, teacher ‖ mentee, mean over the batch."""
    log_t, log_s = _binary_log(zt, gt), _binary_log(zs, gt)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def nckd(zs: torch.Tensor, zt: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """KL among the non-target classes, teacher ‖ mentee, mean over the batch; the target class's
    share is exp(−1000) ≈ 0 on both sides and adds nothing."""
    log_t, log_s = F.log_softmax(zt - 1000.0 * gt, -1), F.log_softmax(zs - 1000.0 * gt, -1)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean()
