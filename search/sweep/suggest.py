"""Optuna's side of a sweep: a define-by-run mentee config from a trial, and the sampler."""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from search.config import ArchConfig, HintConfig, MemberConfig, TrainConfig
from search.spaces import Range, SearchSpace

__all__ = ['suggest_member', 'make_sampler']

# ------------------------------------------------------------------ sampling

def _pick(trial: optuna.Trial, name: str, spec: Any, integer: bool = False) -> Any:
    """A fixed value stays fixed; a list is a categorical; a Range is a float/int range."""
    if isinstance(spec, Range):
        if integer:
            return trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
        return trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    if isinstance(spec, list):
        return spec[0] if len(spec) == 1 else trial.suggest_categorical(name, spec)
    return spec


def _student_tap(tap: str, depth: int) -> str | None:
    if tap == "last":
        return f"layer{depth}"
    if tap == "head":
        return "head"
    return tap if int(tap[5:]) <= depth else None  # layerN deeper than this mentee: no hint


def suggest_member(trial: optuna.Trial, space: SearchSpace) -> MemberConfig:
    """Define-by-run: one mentee config from an Optuna trial."""
    m, t = space.mentee, space.train
    depth = int(_pick(trial, "depth", m.depth, integer=True))
    width = int(_pick(trial, "width", m.width, integer=True))
    growth = float(_pick(trial, "growth", m.growth))
    widths = tuple(max(1, min(m.max_width, round(width * growth ** i))) for i in range(depth))
    arch = ArchConfig(m.family, widths, int(_pick(trial, "kernel", m.kernel, integer=True)),
                      bool(_pick(trial, "batch_norm", m.batch_norm)))
    hints = []
    for tap, targets in space.mapping.taps.items():
        teacher = _pick(trial, f"hint.{tap}", targets)
        student = _student_tap(tap, depth)
        if teacher == "none" or student is None:
            continue
        hints.append(HintConfig(student, teacher, _pick(trial, f"metric.{tap}", space.mapping.metric),
                                float(_pick(trial, f"weight.{tap}", space.mapping.weight))))
    w_kd, temp = 0.0, 4.0
    if _pick(trial, "kd", space.kd.enabled):
        w_kd = float(_pick(trial, "kd.weight", space.kd.weight))
        temp = float(_pick(trial, "kd.temperature", space.kd.temperature))
    train = TrainConfig(epochs=t.epochs, batch_size=int(_pick(trial, "batch_size", t.batch_size, integer=True)),
                        lr=float(_pick(trial, "lr", t.lr)), weight_decay=float(_pick(trial, "wd", t.weight_decay)),
                        schedule=t.schedule, seed=t.seed)
    return MemberConfig(arch=arch, train=train, hints=tuple(hints), w_kd=w_kd, temperature=temp)


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

