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

A mentored mentee with a mentor term also gets a *teacher* (`mentor.teacher`, the Optuna param
`teacher` when it is a choice): the final mentor, an early-stopped checkpoint or the teacher
assistant. Every mentor term of the mentee learns from it (`search.terms.with_source`).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import optuna

from search.config import ArchConfig, MemberConfig, TrainConfig
from search.spaces import Range, SearchSpace
from search.terms import TERMS, two_stage, with_source

__all__ = ["suggest_member", "make_sampler", "ArmBalance", "ARMS", "ARCH_PARAMS", "has_mentor_terms"]

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
    sections = {n: s for n, s in space.terms.items() if arm == "mentored" or not TERMS[n].uses_mentor}
    terms = [term for name, section in sections.items() for term in TERMS[name].suggest(section, pick, depth)]
    if any(x.uses_mentor and x.weight > 0 for x in terms):
        terms = list(with_source(terms, pick("teacher", space.mentor.teacher)))
        if pick("two_stage", space.terms["ce"].two_stage):
            terms = list(two_stage(terms))
    train = TrainConfig(epochs=t.epochs, batch_size=int(_pick(trial, "batch_size", t.batch_size, integer=True)),
                        lr=float(_pick(trial, "lr", t.lr)), weight_decay=float(_pick(trial, "wd", t.weight_decay)),
                        schedule=t.schedule, seed=t.seed)
    return MemberConfig(arch=arch, train=train, terms=tuple(terms))


@dataclasses.dataclass
class ArmBalance:
    """Chooses each ask's arm so that both arms get the same search (see the module docstring).
    Not thread-safe: the driver asks under its lock."""

    on: bool
    follow: dict[str, Any] | None = None  # the architecture the next (mentored) ask copies
    arms: dict[int, str] = dataclasses.field(default_factory=dict)  # trial number → arm
    _started: bool = False
    _stale: int = 0  # trials enqueued but never asked (a driver killed in between)

    @classmethod
    def for_space(cls, space: SearchSpace) -> ArmBalance:
        return cls(on=has_mentor_terms(space))

    def ask(self, study: optuna.Study, space: SearchSpace) -> tuple[optuna.Trial, MemberConfig]:
        if not self.on:
            trial = study.ask()
            return trial, suggest_member(trial, space)
        if not self._started:
            self._resume(study)
        if self.follow is not None and self._dropped(study, max(self.arms)):
            self.follow = None  # its partner will never train (over a target device's budget): no pair to finish
        if self._stale:  # enqueued by a driver that died before asking it: asked now, as it was
            self._stale -= 1
        else:
            study.enqueue_trial({"arm": "independent"} if self.follow is None else {"arm": "mentored", **self.follow})
        trial = study.ask()
        cfg = suggest_member(trial, space)
        # what was asked, not what was wanted, decides what comes next (a trial left waiting
        # by an interrupted driver is asked first)
        arm = trial.params.get("arm", "independent")
        self.arms[trial.number] = arm
        self.follow = {k: v for k, v in trial.params.items() if k in ARCH_PARAMS} if arm == "independent" else None
        return trial, cfg

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
            self.follow = {k: v for k, v in trials[last].params.items() if k in ARCH_PARAMS}

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
