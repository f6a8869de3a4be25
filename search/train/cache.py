"""The mentor's outputs over the training set, computed once and shared by every trial.

    cache = MentorCache.build(mentor, x_train, ["layer3"])
    cache = MentorCache.build(mentor, x_train, ["layer3", "epoch20/layer3", "epoch20/logits"],
                              versions={"epoch20": early})      # other teachers: qualified names
    cache["epoch20/layer3"], cache["logits"]                    # what a loss term reads
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from search.mentors import Mentor
from search.taps import forward_with_taps
from search.teachers import FINAL, qualify, unqualify

__all__ = ["MentorCache"]

# --------------------------------------------------------------------- mentor cache

@dataclass
class MentorCache:
    """The mentor's logits and tapped features for every training sample, computed once.

    Other versions of the mentor (an early-stopped checkpoint, a teacher assistant: see
    `search.teachers.qualify`) live in `feats` under qualified names, their logits too
    (`epoch20/logits`). Features are stored in fp16 (half the memory; a hint is a regression
    target, far coarser than fp16's 3 significant digits) unless their range overflows fp16;
    logits stay fp32 (soft targets at a temperature are sharper)."""

    logits: torch.Tensor  # [N, classes] fp32, the final mentor's
    feats: dict[str, torch.Tensor]  # tap name → [N, ...]

    @classmethod
    @torch.no_grad()
    def build(cls, mentor: Mentor, x: torch.Tensor, taps: Sequence[str], batch: int = 2048,
              versions: dict[str, Mentor] | None = None) -> "MentorCache":
        """`taps`: names of the final mentor's taps, and `version/tap` or `version/logits` of the
        mentors in `versions` (plain `logits` is always computed, so it may be named or not)."""
        by_version: dict[str, list[str]] = {FINAL: []}
        for name in taps:
            version, output = unqualify(name)
            by_version.setdefault(version, []).append(output)
        mentors = {**(versions or {}), FINAL: mentor}
        missing = [v for v in by_version if v not in mentors]
        if missing:
            raise ValueError(f"no mentor version {missing[0]!r} given for {taps}")
        logits = torch.empty(0)
        feats: dict[str, torch.Tensor] = {}
        for version, names in by_version.items():
            out, fs = cls._outputs(mentors[version], x, [t for t in names if t != "logits"], batch)
            for t, f in fs.items():
                feats[qualify(version, t)] = f.half() if f.abs().max() < 6e4 else f
            if version == FINAL:
                logits = out
            elif "logits" in names:
                feats[qualify(version, "logits")] = out
        return cls(logits, {t: feats[t] for t in taps if t != "logits"})

    @staticmethod
    def _outputs(mentor: Mentor, x: torch.Tensor, taps: list[str], batch: int
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = mentor.model.eval()
        dev = next(model.parameters()).device
        logits: list[torch.Tensor] = []
        feats: dict[str, list[torch.Tensor]] = {t: [] for t in taps}
        for i in range(0, len(x), batch):
            out, fs = forward_with_taps(model, x[i:i + batch].to(dev), taps)
            logits.append(out.float())
            for t, f in zip(taps, fs):
                feats[t].append(f.float())
        return torch.cat(logits), {t: torch.cat(v) for t, v in feats.items()}

    def __getitem__(self, name: str) -> torch.Tensor:
        """A mentor output by the name a loss term reads it by (`search.terms.LossTerm.mentor_outputs`)."""
        return self.logits if name == "logits" else self.feats[name]

    def names(self) -> set[str]:
        return {"logits", *self.feats}

    def to(self, device: torch.device | str) -> "MentorCache":
        return MentorCache(self.logits.to(device), {k: v.to(device) for k, v in self.feats.items()})

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [self.logits, *self.feats.values()])
