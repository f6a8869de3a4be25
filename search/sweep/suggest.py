"""Optuna's side of a sweep: a define-by-run mentee config from a trial, the two arms, the sampler.

    arms = ArmBalance(space)
    trial, cfg = arms.ask(study, space)        # independent and mentored asks alternate, paired by architecture
    cfg = suggest_member(trial, space)         # or: any trial; its `arm` param decides the loss terms

Every sweep searches two *arms* with the same effort, so that "the best independent mentee at
≤ this size" is an honest baseline for the mentored one:

- `arm` is a categorical Optuna param: `independent` drops every mentor term (the label loss
  alone), `mentored` searches the space's loss terms. Everything else — architecture, learning
  rate, weight decay, batch size — comes from the same ranges in both arms.
- The driver, never the sampler, chooses the arm (`ArmBalance` fixes it with
  `study.enqueue_trial`): asks alternate independent, mentored, independent, ... and each
  mentored ask copies the architecture of the independent ask before it. So both arms train the
  same architectures, as many times each (within one while a pair is open), whatever the sampler
  prefers: equal trials at every size band by construction.
- Both arms share one study and one sampler, i.e. one search policy: the adaptive form of a
  shared learning-rate grid. (A second study would double what resume must rebuild, and a
  sampler allowed to pick the arm would starve whichever arm does worse.) The independent ask
  leads each pair, so any asymmetry in the pairing favours the baseline, never the claim.

The mentored arm learns which methods pay (`search.sweep.ledger.MethodLedger`): a method (a term,
a teacher, two-stage training) whose mentees lose to their paired independents by a clear margin
in a size band is no longer offered to mentored asks of that band — its Optuna params are fixed to
what the space offers besides (`kd` off, another metric or teacher) — and the trial says why in
its user attr `withheld`. The driver feeds it: `arms.ledger.observe(config, {seed: val_acc})`
after each mentee is recorded; earlier sweeps of the space come in as
`ArmBalance.for_space(space, MethodLedger.from_runs(load_runs(...)))`.

A mentored mentee with a mentor term also gets a *teacher* (`mentor.teacher`, the Optuna param
`teacher` when it is a choice): the final mentor, an early-stopped checkpoint or the teacher
assistant. Every mentor term of the mentee learns from it (`search.terms.with_source`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import warnings
from typing import Any

import optuna

from search.config import ArchConfig, MemberConfig, TrainConfig
from search.spaces import Range, SearchSpace
from search.sweep.ledger import WITHHELD, MethodLedger
from search.terms import TERMS, two_stage, with_source

__all__ = ["suggest_member", "make_sampler", "ArmBalance", "ARMS", "ARCH_PARAMS", "has_mentor_terms",
           "MethodLedger", "WITHHELD", "withholding_params"]

ARMS = ("mentored", "independent")
# the Optuna params that fix an architecture: a mentored ask copies these from its independent partner
ARCH_PARAMS = ("depth", "width", "growth", "kernel", "batch_norm")


def _pick(trial: optuna.Trial, name: str, spec: Any, integer: bool = False) -> Any:
    """A fixed value stays fixed; a list is a categorical; a Range is a float/int range."""
    if isinstance(spec, Range):
        if integer:
            return trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
        return trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    if isinstance(spec, list):
        return spec[0] if len(spec) == 1 else trial.suggest_categorical(name, spec)
    return spec


def has_mentor_terms(space: SearchSpace) -> bool:
    """Whether the space names any mentor term at all (else there is one arm: independent)."""
    return any(TERMS[name].uses_mentor for name in space.terms)


def suggest_member(trial: optuna.Trial, space: SearchSpace) -> MemberConfig:
    """Define-by-run: one mentee config from an Optuna trial. The loss terms come from the
    registry: each term named in the space turns its section into terms for this mentee; in the
    independent arm only the label term's."""
    m, t = space.mentee, space.train
    arm = _pick(trial, "arm", list(ARMS)) if has_mentor_terms(space) else "independent"
    depth = int(_pick(trial, "depth", m.depth, integer=True))
    width = int(_pick(trial, "width", m.width, integer=True))
    growth = float(_pick(trial, "growth", m.growth))
    widths = tuple(max(1, min(m.max_width, round(width * growth ** i))) for i in range(depth))
    arch = ArchConfig(m.family, widths, int(_pick(trial, "kernel", m.kernel, integer=True)),
                      bool(_pick(trial, "batch_norm", m.batch_norm)))
    pick = functools.partial(_pick, trial)
    # a mentor term with `min_width` is offered only to mentees whose narrowest layer is that wide
    sections = {n: s for n, s in space.terms.items() if not TERMS[n].uses_mentor
                or (arm == "mentored" and (s.min_width is None or min(widths) >= s.min_width))}
    terms = [term for name, section in sections.items() for term in TERMS[name].suggest(section, pick, depth)]
    if any(x.uses_mentor and x.weight > 0 for x in terms):
        terms = list(with_source(terms, pick("teacher", space.mentor.teacher)))
        if pick("two_stage", space.terms["ce"].two_stage):
            terms = list(two_stage(terms))
    train = TrainConfig(epochs=t.epochs, batch_size=int(_pick(trial, "batch_size", t.batch_size, integer=True)),
                        lr=float(_pick(trial, "lr", t.lr)), weight_decay=float(_pick(trial, "wd", t.weight_decay)),
                        schedule=t.schedule, seed=t.seed)
    return MemberConfig(arch=arch, train=train, terms=tuple(terms))


def withholding_params(space: SearchSpace, methods: set[str] | dict[str, str], rng: random.Random) -> dict[str, Any]:
    """The Optuna params that keep `methods` (`search.sweep.ledger.methods_of`'s words) out of a
    mentored ask: a term switched off, another metric or teacher among those the space offers.
    A method the space gives no way to avoid (a fixed choice) stays."""
    def other(choices: Any, banned: set[Any]) -> list[Any]:
        return [c for c in choices if c not in banned] if isinstance(choices, list) and len(choices) > 1 else []

    out: dict[str, Any] = {}
    ce = space.terms.get("ce")
    if "two-stage" in methods and ce is not None and other(getattr(ce, "two_stage", False), {True}):
        out["two_stage"] = False
    teachers = other(space.mentor.teacher, {m.split(":", 1)[1] for m in methods if m.startswith("teacher:")})
    if teachers and len(teachers) < len(space.mentor.teacher):
        out["teacher"] = rng.choice(teachers)
    for name, section in space.terms.items():
        if name in methods and other(getattr(section, "enabled", None), {True}):
            out[name] = False
        if name == "hint":
            metrics = other(section.metric, {m.split(":", 1)[1] for m in methods if m.startswith("hint:")})
            for tap, targets in section.taps.items():
                if metrics and len(metrics) < len(section.metric):
                    out[f"hint.metric.{tap}"] = rng.choice(metrics)
                elif not metrics and isinstance(section.metric, list) and "none" in targets and len(targets) > 1 \
                        and all(f"hint:{m}" in methods for m in section.metric):
                    out[f"hint.{tap}"] = "none"
    return out


@dataclasses.dataclass
class ArmBalance:
    """Chooses each ask's arm so that both arms get the same search (see the module docstring).
    Not thread-safe: the driver asks under its lock."""

    on: bool
    ledger: MethodLedger = dataclasses.field(default_factory=MethodLedger)  # which methods pay, by size
    follow: dict[str, Any] | None = None  # the architecture the next (mentored) ask copies
    follow_arch: ArchConfig | None = None  # ... as the independent partner's config has it
    rng: random.Random = dataclasses.field(default_factory=lambda: random.Random(0))  # which method replaces one
    arms: dict[int, str] = dataclasses.field(default_factory=dict)  # trial number → arm
    _started: bool = False
    _stale: int = 0  # trials enqueued but never asked (a driver killed in between)

    @classmethod
    def for_space(cls, space: SearchSpace, ledger: MethodLedger | None = None) -> ArmBalance:
        return cls(on=has_mentor_terms(space), ledger=ledger or MethodLedger(), rng=random.Random(space.train.seed))

    def ask(self, study: optuna.Study, space: SearchSpace) -> tuple[optuna.Trial, MemberConfig]:
        if not self.on:
            trial = study.ask()
            return trial, suggest_member(trial, space)
        if not self._started:
            self._resume(study)
        if self.follow is not None and self._dropped(study, max(self.arms)):
            self._follow(None, None)  # its partner will never train (over a target device's budget): no pair to finish
        why: dict[str, str] = {}
        if self._stale:  # enqueued by a driver that died before asking it: asked now, as it was
            self._stale -= 1
        elif self.follow is None:
            study.enqueue_trial({"arm": "independent"})
        else:
            # methods that lose clearly at this size are not offered (the ledger says which, and why)
            why = self.ledger.withheld(self.follow_arch) if self.follow_arch is not None else {}
            study.enqueue_trial({**withholding_params(space, set(why), self.rng), "arm": "mentored", **self.follow})
        trial = study.ask()
        cfg = suggest_member(trial, space)
        if why:
            trial.set_user_attr(WITHHELD, json.dumps(why, sort_keys=True))
        # what was asked, not what was wanted, decides what comes next (a trial left waiting
        # by an interrupted driver is asked first)
        arm = trial.params.get("arm", "independent")
        self.arms[trial.number] = arm
        self._follow(trial.params if arm == "independent" else None, cfg.arch)
        return trial, cfg

    def _follow(self, params: dict[str, Any] | None, arch: ArchConfig | None) -> None:
        self.follow = None if params is None else {k: v for k, v in params.items() if k in ARCH_PARAMS}
        self.follow_arch = None if params is None else arch

    def arm(self, study: optuna.Study, number: int) -> str | None:
        """The arm of trial `number` (asked before a resume: read from the study once)."""
        if number not in self.arms:
            self._learn(study)
        return self.arms.get(number)

    def _resume(self, study: optuna.Study) -> None:
        """A resumed sweep: an independent ask may be waiting for its partner, and an enqueued
        trial may be waiting to be asked."""
        self._started = True
        trials = study.get_trials(deepcopy=False)
        self._stale = sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
        self._learn(study)
        last = max(self.arms, default=None)
        if last is not None and self.arms[last] == "independent":
            stored = trials[last].user_attrs.get("config")
            self._follow(trials[last].params, MemberConfig.from_dict(stored).arch if stored else None)

    @staticmethod
    def _dropped(study: optuna.Study, number: int) -> bool:
        """Told before the driver stored its config (the driver's mark of a member it trains)."""
        t = study.get_trials(deepcopy=False)[number]
        return t.state != optuna.trial.TrialState.RUNNING and "config" not in t.user_attrs

    def _learn(self, study: optuna.Study) -> None:
        self.arms.update({t.number: t.params["arm"] for t in study.get_trials(deepcopy=False) if "arm" in t.params})


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    seed = space.train.seed
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if space.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    # group + multivariate: the hint weight exists only when a hint is chosen
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
