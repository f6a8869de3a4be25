"""The built-in loss terms, registered in `search.terms.TERMS` when `search.terms` is imported:
the label loss (`ce`), FitNets hints (`hint`), soft targets (`kd`, Hinton et al. 2015) and
attention transfer (`attention`, Zagoruyko & Komodakis 2017). What a term declares, and how
slots and member parameters work: `search.terms.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, Union

import torch
from pydantic import Field, field_validator
from torch.nn import functional as F

from search.config import TermConfig
from search.space_values import NonNegativeNum, PositiveNum, Range
from search.taps import Projection
from search.teachers import qualify
from search.terms.registry import (
    METRICS,
    NORMALISE,
    SCHEDULES,
    LossTerm,
    Pick,
    TermSpace,
    describe_suffix,
    register_term,
    weight_text,
)

_Space = TypeVar("_Space", bound=TermSpace)  # a tap-to-tap term's space section

__all__ = ["soft_target_terms"]


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


def _normalised(params: dict[str, Any], section: TermSpace) -> dict[str, Any]:
    # a raw weight is the default: left out, so configs without `normalise` stay as they were
    return {**params, NORMALISE: 1.0} if getattr(section, "normalise", False) else params


def student_tap(tap: str, depth: int) -> str | None:
    """A space's mentee tap (`layerN`, `last`, `head`) for a mentee of `depth` layers; None if
    the mentee has no such layer (then the term is left out)."""
    if tap == "last":
        return f"layer{depth}"
    if tap == "head":
        return "head"
    return tap if int(tap[5:]) <= depth else None


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

    def compute(self, logits, feats, y, mentor, p):
        return F.cross_entropy(logits.float(), y)


class _TapSpace(TermSpace):
    """Mentee tap (`layerN`, `last` or `head`) → the mentor taps it may be pulled towards;
    `none` in a list makes "no term from this tap" a choice too."""

    taps: dict[str, list[str]] = {"last": ["none", "layer3"]}
    weight: NonNegativeNum = Range(low=0.01, high=1.0, log=True)
    schedule: Union[str, list[str]] = "constant"  # how the weight moves during training (SCHEDULES)
    normalise: bool = False  # weight relative to the label loss (`search.terms.registry.label_scaled`)

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
        params = _normalised({"student": student, "teacher": teacher, **extra(tap)}, section)
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
    # the student tap reaches the loss only through `self.proj`: a fused group merges hints on
    # different taps (each member's last layer, at every depth) into one slot (search/train/layout.py)
    merges_students = True

    @classmethod
    def suggest(cls, section: _HintSpace, pick: Pick, depth: int) -> list[TermConfig]:
        return _tap_terms(cls, section, pick, depth, "hint", lambda tap: {"metric": pick(f"hint.metric.{tap}",
                                                                                          section.metric)})

    @classmethod
    def describe(cls, t):
        return f"{t.params['student']}->{t.params['teacher']}:{t.params['metric']}@{weight_text(t)}{describe_suffix(t)}"

    def __init__(self, params, student_shapes, mentor_shapes):
        super().__init__(params, student_shapes, mentor_shapes)
        self.proj = Projection(student_shapes[params["student"]], mentor_shapes[self.mentor_key(params["teacher"])])

    def compute(self, logits, feats, y, mentor, p):
        pred = self.proj(feats[self.params["student"]])
        target = self.proj.target(mentor[self.mentor_key(self.params["teacher"])])
        return METRICS[self.params["metric"]](pred.float(), target.float())


class _KDSpace(TermSpace):
    """A soft-target term's section: on or off, its weight, temperature and schedule; the terms on
    logits (KD, DKD, DIST) share it and add their own numbers."""

    enabled: Union[bool, list[bool]] = False
    weight: NonNegativeNum = Range(low=0.1, high=1.0, log=True)
    temperature: PositiveNum = 4.0
    schedule: Union[str, list[str]] = "constant"
    normalise: bool = False  # weight relative to the label loss (`search.terms.registry.label_scaled`)

    _sched = field_validator("schedule")(_schedules)


def soft_target_terms(cls: type[LossTerm[Any]], section: _KDSpace, pick: Pick,
                      numbers: dict[str, Any]) -> list[TermConfig]:
    """A logit term's config from its section (`numbers`: its own searched member parameters by name,
    each picked as `<term>.<name>`), or none where `enabled` picks off."""
    if not pick(cls.name, section.enabled):
        return []
    params = {"temperature": float(pick(f"{cls.name}.temperature", section.temperature)),
              **{k: float(pick(f"{cls.name}.{k}", v)) for k, v in numbers.items()}}
    return [TermConfig(cls.name, float(pick(f"{cls.name}.weight", section.weight)),
                       _with_schedule(_normalised(params, section), pick(f"{cls.name}.schedule", section.schedule)))]


@register_term("kd")
class SoftTargets(LossTerm[_KDSpace]):
    """Hinton et al.: T²·KL(mentor ‖ mentee) on logits softened by temperature T."""

    needs_logits = True
    member_params = {"temperature": 4.0}
    Space = _KDSpace

    @classmethod
    def suggest(cls, section: _KDSpace, pick: Pick, depth: int) -> list[TermConfig]:
        return soft_target_terms(cls, section, pick, {})

    @classmethod
    def describe(cls, t):
        return f"kd@{weight_text(t)}/T{t.params.get('temperature', 4.0):g}{describe_suffix(t)}"

    def compute(self, logits, feats, y, mentor, p):
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
        return f"at:{t.params['student']}->{t.params['teacher']}@{weight_text(t)}{describe_suffix(t)}"

    @staticmethod
    def attention_map(f: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        a = f.float().pow(2).sum(1, keepdim=True)  # [B, 1, *spatial]
        if size is not None and tuple(a.shape[2:]) != tuple(size):
            a = F.adaptive_avg_pool1d(a, size[0]) if a.dim() == 3 else F.adaptive_avg_pool2d(a, (size[0], size[1]))
        return F.normalize(a.flatten(1), dim=1, eps=1e-12)

    def compute(self, logits, feats, y, mentor, p):
        t = mentor[self.mentor_key(self.params["teacher"])]
        if t.dim() < 3:  # a flat tap has no "where": compare the whole vectors' energy profile
            return (F.normalize(feats[self.params["student"]].float().flatten(1), dim=1)
                    - F.normalize(t.float().flatten(1), dim=1)).norm(dim=1).mean()
        at = self.attention_map(t)
        return (self.attention_map(feats[self.params["student"]], t.shape[2:]) - at).norm(dim=1).mean()
