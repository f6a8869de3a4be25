"""Optuna's side of a sweep: a define-by-run mentee config from a trial, and the sampler."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import optuna

from search.config import ArchConfig, MemberConfig, TrainConfig
from search.spaces import Range, SearchSpace
from search.train.losses import TERMS

__all__ = ["suggest_member", "make_sampler"]


def _pick(trial: optuna.Trial, name: str, spec: Any, integer: bool = False) -> Any:
    """A fixed value stays fixed; a list is a categorical; a Range is a float/int range."""
    if isinstance(spec, Range):
        if integer:
            return trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
        return trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    if isinstance(spec, list):
        return spec[0] if len(spec) == 1 else trial.suggest_categorical(name, spec)
    return spec


def suggest_member(trial: optuna.Trial, space: SearchSpace) -> MemberConfig:
    """Define-by-run: one mentee config from an Optuna trial. The loss terms come from the
    registry: each term named in the space turns its section into terms for this mentee."""
    m, t = space.mentee, space.train
    depth = int(_pick(trial, "depth", m.depth, integer=True))
    width = int(_pick(trial, "width", m.width, integer=True))
    growth = float(_pick(trial, "growth", m.growth))
    widths = tuple(max(1, min(m.max_width, round(width * growth ** i))) for i in range(depth))
    arch = ArchConfig(m.family, widths, int(_pick(trial, "kernel", m.kernel, integer=True)),
                      bool(_pick(trial, "batch_norm", m.batch_norm)))
    pick = functools.partial(_pick, trial)
    terms = [term for name, section in space.terms.items() for term in TERMS[name].suggest(section, pick, depth)]
    train = TrainConfig(epochs=t.epochs, batch_size=int(_pick(trial, "batch_size", t.batch_size, integer=True)),
                        lr=float(_pick(trial, "lr", t.lr)), weight_decay=float(_pick(trial, "wd", t.weight_decay)),
                        schedule=t.schedule, seed=t.seed)
    return MemberConfig(arch=arch, train=train, terms=tuple(terms))


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

