"""DIST (Huang et al. 2022, "Knowledge distillation from a stronger teacher"), registered as `dist`.

    dist: {enabled: [false, true], weight: {low: 0.05, high: 1.0, log: true}, temperature: [1.0, 4.0]}

KL asks the mentee to match the teacher's probabilities exactly, which a small mentee far from a
strong teacher cannot; DIST asks only for the same *relations*, by Pearson correlation of the
softened outputs Y = softmax(z / T) of a batch [B, C]:

    inter = T² · (1 − mean over samples of ρ(Y_s[i, :], Y_t[i, :]))   (which classes rank high, per sample)
    intra = T² · (1 − mean over classes of ρ(Y_s[:, c], Y_t[:, c]))   (which samples score high, per class)
    DIST  = beta · inter + gamma · intra

as hunto/DIST_KD's `DIST` computes them (beta = gamma = 1 by default, eps 1e-8 in the cosine).
Every number is a member parameter: mentees with other values share one fused slot.
"""

from __future__ import annotations

import torch
from pydantic import Field

from search.config import TermConfig
from search.space_values import NonNegativeNum
from search.terms.builtin import _KDSpace, soft_target_terms
from search.terms.registry import LossTerm, Pick, describe_suffix, register_term, weight_text

__all__ = ["DIST", "pearson_rows"]


class _DISTSpace(_KDSpace):
    beta: NonNegativeNum = Field(default=1.0)
    gamma: NonNegativeNum = Field(default=1.0)


def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of `a` with the same row of `b` (the cosine of the centred rows)."""
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


@register_term("dist")
class DIST(LossTerm[_DISTSpace]):
    """DIST: the mentee's soft outputs correlate with the teacher's across classes and across samples."""

    needs_logits = True
    member_params = {"temperature": 1.0, "beta": 1.0, "gamma": 1.0}
    Space = _DISTSpace

    @classmethod
    def suggest(cls, section: _DISTSpace, pick: Pick, depth: int) -> list[TermConfig]:
        return soft_target_terms(cls, section, pick, {"beta": section.beta, "gamma": section.gamma})

    @classmethod
    def describe(cls, t):
        p = t.params
        return (f"dist@{weight_text(t)}/T{p.get('temperature', 1.0):g}/b{p.get('beta', 1.0):g}"
                f"g{p.get('gamma', 1.0):g}{describe_suffix(t)}")

    def compute(self, logits, feats, y, mentor, p):
        T = p["temperature"]
        ys = (logits.float() / T).softmax(-1)
        yt = (mentor[self.mentor_key("logits")].float() / T).softmax(-1)
        inter = 1 - pearson_rows(ys, yt).mean()
        intra = 1 - pearson_rows(ys.transpose(0, 1), yt.transpose(0, 1)).mean()
        return T * T * (p["beta"] * inter + p["gamma"] * intra)
