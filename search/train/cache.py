"""The mentor's outputs over the training set, computed once and shared by every trial."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from search.mentors import Mentor
from search.taps import forward_with_taps

__all__ = ["MentorCache"]

# --------------------------------------------------------------------- mentor cache

@dataclass
class MentorCache:
    """The mentor's logits and tapped features for every training sample, computed once.

    Features are stored in fp16 (half the memory; a hint is a regression target, far
    coarser than fp16's 3 significant digits) unless their range overflows fp16."""

    logits: torch.Tensor  # [N, classes] fp32
    feats: dict[str, torch.Tensor]  # tap name → [N, ...]

    @classmethod
    @torch.no_grad()
    def build(cls, mentor: Mentor, x: torch.Tensor, taps: Sequence[str], batch: int = 2048) -> "MentorCache":
        model = mentor.model.eval()
        dev = next(model.parameters()).device
        logits: list[torch.Tensor] = []
        feats: dict[str, list[torch.Tensor]] = {t: [] for t in taps}
        for i in range(0, len(x), batch):
            out, fs = forward_with_taps(model, x[i:i + batch].to(dev), list(taps))
            logits.append(out.float())
            for t, f in zip(taps, fs):
                feats[t].append(f.float())
        cat = {t: torch.cat(v) for t, v in feats.items()}
        return cls(torch.cat(logits), {t: v.half() if v.abs().max() < 6e4 else v for t, v in cat.items()})

    def to(self, device: torch.device | str) -> "MentorCache":
        return MentorCache(self.logits.to(device), {k: v.to(device) for k, v in self.feats.items()})

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [self.logits, *self.feats.values()])

