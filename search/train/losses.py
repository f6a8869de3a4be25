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

Parameters come in two kinds. *Slot* parameters (`slot_params`: which taps, which metric)
change the computation's structure, so members of a fused group that share them share one
module (a "slot"); a member weights the slots that are not its own by exactly 0. *Member*
parameters (`member_params`, e.g. KD's temperature) are numbers each member has its own of:
they arrive in `p` as 0-d tensors under vmap.

Adding a term: write one registered class here (or anywhere imported), add its test, and
name it in a space under `terms:`. Attention transfer below is the example.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torch.nn import functional as F

from search.config import LABEL_TERM, TermConfig
from search.spaces import NonNegativeNum, PositiveNum, Range
from search.taps import Projection
from search.teachers import FINAL, qualify
from search.train.optim import SCHEDULES  # the loss-weight schedules the fused step computes (params["schedule"])

__all__ = ["TERMS", "METRICS", "SCHEDULES", "LossTerm", "register_term", "register_metric", "describe_terms",
           "two_stage", "Pick", "with_source", "cache_names"]


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
        TERMS[name] = cls
        return cls
    return deco


class TermSpace(BaseModel):
    """A term's section of a search space (unknown keys and NaN are errors, as everywhere)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
        return f"{cls.name}@{t.weight:g}{_suffix(t)}"

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
        raise NotImplementedError


def _suffix(t: TermConfig) -> str:
    """`~warmup` after a term whose weight follows a schedule, `<epoch20` after one whose teacher is
    not the final mentor; nothing for a constant weight and the final mentor."""
    s = t.params.get("schedule", "constant")
    return ("" if s == "constant" else f"~{s}") + (f"<{t.params['source']}" if "source" in t.params else "")


def _schedules(v):
    """A space's `schedule:` (fixed or a list of choices) names only schedules the fused step knows."""
    for s in v if isinstance(v, list) else [v]:
        if s not in SCHEDULES:
            raise ValueError(f"unknown schedule '{s}'; expected one of {', '.join(SCHEDULES)}")
    if isinstance(v, list) and not v:
        raise ValueError("empty list of schedules; give at least one")
    return v


def _with_schedule(params: dict[str, Any], schedule: str) -> dict[str, Any]:
    # a constant weight is the default: left out, so configs without schedules stay as they were
    return params if schedule == "constant" else {**params, "schedule": schedule}


def two_stage(terms: Sequence[TermConfig]) -> tuple[TermConfig, ...]:
    """Two-stage training (hints first, then labels): every mentor term's weight follows `early`,
    the label term's `late`; any schedule a term had is replaced."""
    return tuple(TermConfig(t.kind, t.weight, {**t.params, "schedule": "early" if t.uses_mentor else "late"})
                 for t in terms)


def describe_terms(terms: Sequence[TermConfig]) -> str:
    """Readable mentor side of a config, e.g. `layer2->layer3:rmse@0.1;kd@0.5/T4`; `none` when
    independent. One text for params, tags and reports."""
    return ";".join(TERMS[t.kind].describe(t) for t in terms if t.uses_mentor and t.weight != 0) or "none"


def student_tap(tap: str, depth: int) -> str | None:
    """A space's mentee tap (`layerN`, `last`, `head`) for a mentee of `depth` layers; None if
    the mentee has no such layer (then the term is left out)."""
    if tap == "last":
        return f"layer{depth}"
    if tap == "head":
        return "head"
    return tap if int(tap[5:]) <= depth else None


# -------------------------------------------------------------------------------- terms

class _LabelSpace(TermSpace):
    weight: float = Field(default=1.0, ge=0)
    # two-stage training as a searched choice: mentor terms first (`early`), labels later (`late`); only
    # for mentees that have a mentor term (search.sweep.suggest applies it)
    two_stage: Union[bool, list[bool]] = False

    @field_validator("two_stage")
    @classmethod
    def _choices(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("empty list of choices; give [false, true] or one of them")
        return v


@register_term("ce")
class CrossEntropy(LossTerm[_LabelSpace]):
    """The label loss. Weight 1 unless a space says otherwise."""

    uses_mentor = False
    Space = _LabelSpace

    @classmethod
    def suggest(cls, section: _LabelSpace, pick: Pick, depth: int) -> list[TermConfig]:
        return [TermConfig(cls.name, float(section.weight))]

    def forward(self, logits, feats, y, mentor, p):
        return F.cross_entropy(logits.float(), y)


class _TapSpace(TermSpace):
    """Mentee tap (`layerN`, `last` or `head`) → the mentor taps it may be pulled towards;
    `none` in a list makes "no term from this tap" a choice too."""

    taps: dict[str, list[str]] = {"last": ["none", "layer3"]}
    weight: NonNegativeNum = Range(low=0.01, high=1.0, log=True)
    schedule: Union[str, list[str]] = "constant"  # how the weight moves during training (SCHEDULES)

    _sched = field_validator("schedule")(_schedules)

    @field_validator("taps")
    @classmethod
    def _taps(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for tap, targets in v.items():
            if not (tap in ("last", "head") or (tap.startswith("layer") and tap[5:].isdigit())):
                raise ValueError(f"mentee tap '{tap}' is not layerN, last or head")
            if not targets:
                raise ValueError(f"taps.{tap}: empty list of mentor taps")
        return v


def _tap_terms(cls: type[LossTerm[Any]], section: _TapSpace, pick: Pick, depth: int, prefix: str,
               extra: Callable[[str], dict[str, Any]]) -> list[TermConfig]:
    out = []
    for tap, targets in section.taps.items():
        teacher = pick(f"{prefix}.{tap}", targets)
        student = student_tap(tap, depth)
        if teacher == "none" or student is None:
            continue
        weight = float(pick(f"{prefix}.weight.{tap}", section.weight))
        params = {"student": student, "teacher": teacher, **extra(tap)}
        out.append(TermConfig(cls.name, weight, _with_schedule(params, pick(f"{prefix}.schedule.{tap}",
                                                                            section.schedule))))
    return out


class _TapToTap(LossTerm[_Space]):
    """A term between one mentee tap (`student`) and one mentor tap (`teacher`)."""

    @classmethod
    def student_taps(cls, params):
        return (params["student"],)

    @classmethod
    def mentor_taps(cls, params):
        return (qualify(params.get("source"), params["teacher"]),)


class _HintSpace(_TapSpace):
    metric: Union[str, list[str]] = "rmse"

    @field_validator("metric")
    @classmethod
    def _metric(cls, v):
        for m in v if isinstance(v, list) else [v]:
            if m not in METRICS:
                raise ValueError(f"unknown metric '{m}'; expected one of {', '.join(sorted(METRICS))}")
        return v


@register_term("hint")
class Hint(_TapToTap[_HintSpace]):
    """FitNets / Venkatesan & Li: a learned projection of a mentee tap is pulled towards a
    mentor tap by a metric (RMSE by default)."""

    slot_params = ("student", "teacher", "metric")
    Space = _HintSpace

    @classmethod
    def suggest(cls, section: _HintSpace, pick: Pick, depth: int) -> list[TermConfig]:
        return _tap_terms(cls, section, pick, depth, "hint", lambda tap: {"metric": pick(f"hint.metric.{tap}",
                                                                                          section.metric)})

    @classmethod
    def describe(cls, t):
        return f"{t.params['student']}->{t.params['teacher']}:{t.params['metric']}@{t.weight:g}{_suffix(t)}"

    def __init__(self, params, student_shapes, mentor_shapes):
        super().__init__(params, student_shapes, mentor_shapes)
        self.proj = Projection(student_shapes[params["student"]], mentor_shapes[self.mentor_key(params["teacher"])])

    def forward(self, logits, feats, y, mentor, p):
        pred = self.proj(feats[self.params["student"]])
        target = self.proj.target(mentor[self.mentor_key(self.params["teacher"])])
        return METRICS[self.params["metric"]](pred.float(), target.float())


class _KDSpace(TermSpace):
    enabled: Union[bool, list[bool]] = False
    weight: NonNegativeNum = Range(low=0.1, high=1.0, log=True)
    temperature: PositiveNum = 4.0
    schedule: Union[str, list[str]] = "constant"

    _sched = field_validator("schedule")(_schedules)


@register_term("kd")
class SoftTargets(LossTerm[_KDSpace]):
    """Hinton et al.: T²·KL(mentor ‖ mentee) on logits softened by temperature T."""

    needs_logits = True
    member_params = {"temperature": 4.0}
    Space = _KDSpace

    @classmethod
    def suggest(cls, section: _KDSpace, pick: Pick, depth: int) -> list[TermConfig]:
        if not pick("kd", section.enabled):
            return []
        params = {"temperature": float(pick("kd.temperature", section.temperature))}
        return [TermConfig(cls.name, float(pick("kd.weight", section.weight)),
                           _with_schedule(params, pick("kd.schedule", section.schedule)))]

    @classmethod
    def describe(cls, t):
        return f"kd@{t.weight:g}/T{t.params.get('temperature', 4.0):g}{_suffix(t)}"

    def forward(self, logits, feats, y, mentor, p):
        T = p["temperature"]
        # KL written out: F.kl_div has no vmap batching rule (a slow fallback)
        log_t = F.log_softmax(mentor[self.mentor_key("logits")].float() / T, -1)
        log_s = F.log_softmax(logits.float() / T, -1)
        return T * T * (log_t.exp() * (log_t - log_s)).sum(-1).mean()


class _AttentionSpace(_TapSpace):
    enabled: Union[bool, list[bool]] = True
    taps: dict[str, list[str]] = {"last": ["layer3"]}
    weight: NonNegativeNum = Range(low=10.0, high=1000.0, log=True)  # Zagoruyko & Komodakis: β = 1000


@register_term("attention")
class AttentionTransfer(_TapToTap[_AttentionSpace]):
    """Zagoruyko & Komodakis 2017: match where the mentee and the mentor look. A tap's
    attention map is Σ_c |F_c|² (so channel counts may differ), flattened and L2-normalised;
    the loss is the L2 distance of the two maps, the mentee's resized to the mentor's. No
    learned parameters. Summing over channels (not averaging) keeps zero-padded fused members
    exact: padded channels add 0 and the normalisation removes scale."""

    slot_params = ("student", "teacher")
    Space = _AttentionSpace

    @classmethod
    def suggest(cls, section: _AttentionSpace, pick: Pick, depth: int) -> list[TermConfig]:
        if not pick("attention", section.enabled):
            return []
        return _tap_terms(cls, section, pick, depth, "attention", lambda tap: {})

    @classmethod
    def describe(cls, t):
        return f"at:{t.params['student']}->{t.params['teacher']}@{t.weight:g}{_suffix(t)}"

    @staticmethod
    def attention_map(f: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        a = f.float().pow(2).sum(1, keepdim=True)  # [B, 1, *spatial]
        if size is not None and tuple(a.shape[2:]) != tuple(size):
            a = F.adaptive_avg_pool1d(a, size[0]) if a.dim() == 3 else F.adaptive_avg_pool2d(a, (size[0], size[1]))
        return F.normalize(a.flatten(1), dim=1, eps=1e-12)

    def forward(self, logits, feats, y, mentor, p):
        t = mentor[self.mentor_key(self.params["teacher"])]
        if t.dim() < 3:  # a flat tap has no "where": compare the whole vectors' energy profile
            return (F.normalize(feats[self.params["student"]].float().flatten(1), dim=1)
                    - F.normalize(t.float().flatten(1), dim=1)).norm(dim=1).mean()
        at = self.attention_map(t)
        return (self.attention_map(feats[self.params["student"]], t.shape[2:]) - at).norm(dim=1).mean()
