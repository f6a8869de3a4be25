"""Loss terms: a member's loss is a weighted sum of registered terms (torchdistill-style).

    L = Σ_terms weight · term(mentee outputs, mentor outputs, labels)

A term is one class, registered by name. It declares everything the rest of the package
derives from it: its section in a search space (`Space`, a pydantic model, and `suggest`,
which turns that section into `TermConfig`s), what it needs from the mentor (`mentor_taps`,
`needs_logits`) and from the mentee (`student_taps`), its text in reports (`describe`), and
the computation itself (an `nn.Module`: `forward(logits, feats, y, mentor, p) -> scalar`).

A mentor term learns from one *teacher*, a version of the mentor (`search.spaces.MentorSpec`):
the final mentor, an early-stopped checkpoint (`epoch20`) or a teacher assistant (`assistant`).
`search.sweep.suggest` stamps it into the term's params as `source` (left out for the final
mentor); the term then reads its mentor outputs under qualified names (`epoch20/layer3`,
`epoch20/logits`; plain `layer3`, `logits` for the final mentor), a source is a slot parameter
of every mentor term, and `describe` ends with `<epoch20`.

A mentor term's weight may be *relative to the label loss* (`params["normalise"] = 1`, a member
parameter; the spaces shipped set it with `normalise: true`): the term's value is rescaled on each
batch by the detached ratio CE / term, so weight 1 means "as large as the label loss", whatever
scale the term's own loss has (a hint's RMSE depends on the mentor's feature scale, attention's
distance is ~0.1, KD's T²·KL is ~CE). The gradient keeps the term's direction; only its size is
set by the weight. Without it (the default, as configs before it) the weight multiplies the raw loss.

Parameters come in two kinds. *Slot* parameters (`slot_params`: which taps, which metric)
change the computation's structure, so members of a fused group that share them share one
module (a "slot"); a member weights the slots that are not its own by exactly 0. *Member*
parameters (`member_params`, e.g. KD's temperature) are numbers each member has its own of:
they arrive in `p` as 0-d tensors under vmap.

This module never imports a term (as timm's registry never imports its models): the built-in
terms register when `search.terms` is imported, which every reader of the registry does.
Adding a term: write one registered class in a module of `search.terms` (and import it in its
`__init__`) or in any module you import, add its test, and name it in a space under `terms:`.
Attention transfer and DKD are examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, model_serializer
from torch import nn
from torch.nn import functional as F

from search.config import LABEL_TERM, TermConfig
from search.teachers import FINAL, qualify
from search.train.optim import SCHEDULES  # the loss-weight schedules the fused step computes (params["schedule"])

__all__ = ["TERMS", "METRICS", "SCHEDULES", "LossTerm", "register_term", "register_metric", "describe_terms",
           "two_stage", "Pick", "with_source", "cache_names", "TermSpace", "describe_suffix", "weight_text",
           "label_scaled", "NORMALISE"]

NORMALISE = "normalise"  # the member parameter that makes a mentor term's weight relative to the label loss


# A searched value in a space section: fixed, a list of choices, or a {low, high, log} range.
# `Pick(name, spec)` returns the value Optuna chose for it (the driver supplies it).
Pick = Callable[[str, Any], Any]

# ------------------------------------------------------------------------- hint metrics

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


# ----------------------------------------------------------------------------- teachers

def with_source(terms: Sequence[TermConfig], teacher: str) -> tuple[TermConfig, ...]:
    """Every mentor term learns from `teacher`; the final mentor is the default and left out, so
    configs (and their keys, params and slots) without a teacher stay as they were."""
    if teacher == FINAL:
        return tuple(terms)
    return tuple(TermConfig(t.kind, t.weight, {**t.params, "source": teacher}) if t.uses_mentor else t
                 for t in terms)


def cache_names(terms: dict[str, TermSpace], teachers: Sequence[str]) -> list[str]:
    """Every mentor output the terms of a space may read, for every teacher it offers: what the
    mentor cache computes. The final mentor's logits are always there (`MentorCache.logits`), so
    they are not named: a space with the final mentor alone names what it always did."""
    taps = set().union(*(TERMS[n].mentor_tap_choices(sec) for n, sec in terms.items()))
    logits = any(TERMS[n].needs_logits for n in terms)
    names = {qualify(v, t) for v in teachers for t in taps}
    names |= {qualify(v, "logits") for v in teachers if logits and v != FINAL}
    return sorted(names)


# ----------------------------------------------------------------------------- registry

TERMS: dict[str, type[LossTerm[Any]]] = {}
_Term = TypeVar("_Term", bound="LossTerm[Any]")


def register_term(name: str):
    def deco(cls: type[_Term]) -> type[_Term]:
        cls.name = name
        assert (name == LABEL_TERM) == (not cls.uses_mentor), f"only '{LABEL_TERM}' may train without the mentor"
        if cls.uses_mentor:  # every mentor term may weigh relative to the label loss; off unless asked
            cls.member_params = {**cls.member_params, NORMALISE: 0.0}
        TERMS[name] = cls
        return cls
    return deco


class TermSpace(BaseModel):
    """A term's section of a search space (unknown keys and NaN are errors, as everywhere)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # offered only to mentees whose narrowest layer has at least this many channels (or units): a term
    # that hurts the smallest mentees is kept from them (README, "What hurts a small mentee")
    min_width: int | None = Field(default=None, ge=1, le=65_536)
    # keys added after spaces were first hashed (`search.spaces.space_hash`, what resume matches):
    # left out of a dump while at their default, so a space that does not use them keeps its hash
    LATER: ClassVar[tuple[str, ...]] = ("normalise", "min_width")

    @model_serializer(mode="wrap")
    def _without_later_defaults(self, handler):
        out = handler(self)
        fields = type(self).model_fields
        return {k: v for k, v in out.items()
                if not (k in self.LATER and k in fields and getattr(self, k) == fields[k].default)}


# A term's own section type: `suggest` reads its fields, so each term narrows it (LossTerm[_HintSpace])
_Space = TypeVar("_Space", bound=TermSpace)


class LossTerm(nn.Module, Generic[_Space]):
    """Base class. Subclasses set the class attributes and implement `forward`."""

    name: ClassVar[str] = ""
    uses_mentor: ClassVar[bool] = True
    needs_logits: ClassVar[bool] = False  # the teacher's logits (soft targets)
    slot_params: ClassVar[tuple[str, ...]] = ()
    member_params: ClassVar[dict[str, float]] = {}  # name → default
    Space: ClassVar[type[TermSpace]] = TermSpace

    # -- declarations (no torch work: the driver calls these) ------------------------
    @classmethod
    def suggest(cls, section: _Space, pick: Pick, depth: int) -> list[TermConfig]:
        """The terms one mentee of `depth` layers gets from this space section."""
        raise NotImplementedError

    @classmethod
    def student_taps(cls, params: dict[str, Any]) -> tuple[str, ...]:
        return ()

    @classmethod
    def mentor_tap_choices(cls, section: TermSpace) -> set[str]:
        """Every mentor tap a space section may ask for (the plan checks the mentor has them)."""
        taps = getattr(section, "taps", {})
        return {t for targets in taps.values() for t in targets if t != "none"}

    @classmethod
    def mentor_taps(cls, params: dict[str, Any]) -> tuple[str, ...]:
        """The teacher's taps this term reads, qualified by its source (`qualify`)."""
        return ()

    @classmethod
    def mentor_outputs(cls, params: dict[str, Any]) -> tuple[str, ...]:
        """Everything the computation reads from the mentor cache: its taps and, for soft targets,
        its teacher's logits; each under the name `forward` finds it by in `mentor`."""
        return cls.mentor_taps(params) + ((qualify(params.get("source"), "logits"),) if cls.needs_logits else ())

    @classmethod
    def describe(cls, t: TermConfig) -> str:
        return f"{cls.name}@{weight_text(t)}{describe_suffix(t)}"

    @classmethod
    def slot(cls, t: TermConfig) -> tuple:
        """Members with equal slots share one module in a fused group. A teacher other than the
        final mentor is part of the slot: its members read other targets."""
        key = (cls.name, *(t.params.get(k) for k in cls.slot_params))
        return (*key, t.params["source"]) if "source" in t.params else key

    # -- the computation ------------------------------------------------------------
    def __init__(self, params: dict[str, Any], student_shapes: dict[str, tuple[int, ...]],
                 mentor_shapes: dict[str, tuple[int, ...]]):
        super().__init__()
        self.params = {k: params.get(k) for k in self.slot_params}
        self.source: str | None = params.get("source")

    def mentor_key(self, name: str) -> str:
        """Where this term's teacher's output `name` (a tap, or `logits`) is in `mentor`."""
        return qualify(self.source, name)

    def forward(self, logits: torch.Tensor, feats: dict[str, torch.Tensor], y: torch.Tensor,
                mentor: dict[str, torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = self.compute(logits, feats, y, mentor, p)
        return label_scaled(loss, logits, y, p[NORMALISE]) if NORMALISE in p else loss

    def compute(self, logits: torch.Tensor, feats: dict[str, torch.Tensor], y: torch.Tensor,
                mentor: dict[str, torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
        """The term's own loss (a scalar): what its paper writes."""
        raise NotImplementedError


def label_scaled(loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, on: torch.Tensor | float) -> torch.Tensor:
    """`loss` rescaled to the label loss's size on this batch where `on` is 1, unchanged where it is 0
    (exactly: × 1). The ratio is detached, so the gradient is the term's own, times CE / term."""
    ratio = F.cross_entropy(logits.float(), y).detach() / (loss.detach() + 1e-8)
    return loss * (1 + on * (ratio - 1))


def weight_text(t: TermConfig) -> str:
    """`0.5`; `0.5ce` where the weight is relative to the label loss (0.5 × CE's size)."""
    return f"{t.weight:g}" + ("ce" if t.params.get(NORMALISE) else "")


def describe_suffix(t: TermConfig) -> str:
    """`~warmup` after a term whose weight follows a schedule, `<epoch20` after one whose teacher is
    not the final mentor; nothing for a constant weight and the final mentor."""
    s = t.params.get("schedule", "constant")
    return ("" if s == "constant" else f"~{s}") + (f"<{t.params['source']}" if "source" in t.params else "")


def two_stage(terms: Sequence[TermConfig]) -> tuple[TermConfig, ...]:
    """Two-stage training (hints first, then labels): every mentor term's weight follows `early`,
    the label term's `late`; any schedule a term had is replaced."""
    return tuple(TermConfig(t.kind, t.weight, {**t.params, "schedule": "early" if t.uses_mentor else "late"})
                 for t in terms)


def describe_terms(terms: Sequence[TermConfig]) -> str:
    """Readable mentor side of a config, e.g. `layer2->layer3:rmse@0.1;kd@0.5/T4`; `none` when
    independent. One text for params, tags and reports."""
    return ";".join(TERMS[t.kind].describe(t) for t in terms if t.uses_mentor and t.weight != 0) or "none"
