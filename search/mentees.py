"""A mentee is one config trained with several seeds, fused in one cohort, and recorded as one run.

    items = seed_items("17", WorkKind.SEARCHED, cfg, seeds=[0, 1, 2], optuna_number=17)  # 17@s0, 17@s1, 17@s2
    gather = Gatherer()
    for group in gather.add(cohort_results):       # (item, result, node id) per member, any order
        record = MenteeRecord.of(group)            # the mean, the std and every seed's value

Why: one seed of a 600-parameter net differs from the next by up to 13 points, so a front built
from single seeds is mostly noise, and views that each pick a different seed disagree. The trial
side keeps training members (one seed each, `WorkItem`); only the driver knows which members
make a mentee, and it records a mentee when every seed of the round is back. Re-evaluation
(racing, `search.sweep.racing`) trains more seeds of the same mentee and adds them to its run.

A mentee's status: pruned if any seed was stopped early (successive halving: its numbers would
not be comparable); else finished when at least one seed finished (its numbers are over the
finished seeds; a seed that failed, e.g. diverged, is named in `failed_seeds`); else failed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from search.config import MemberConfig, MemberResult, Status, WorkItem, WorkKind, seed_member_id

__all__ = ["seed_items", "search_seeds", "MenteeRecord", "Gatherer", "mean_std", "t_half_width"]

Member = tuple[WorkItem, MemberResult, str]  # what a cohort reports per member: item, result, node id


def search_seeds(cfg: MemberConfig, n: int, start: int = 0) -> list[int]:
    """The seeds of a mentee: the space's seed + 0 … n−1 in the search; racing continues from n.
    The same for every config of a sweep, so two mentees' seeds pair up."""
    return [cfg.train.seed + k for k in range(start, start + n)]


def seed_items(mentee_id: str, kind: WorkKind, cfg: MemberConfig, seeds: Sequence[int],
               optuna_number: int | None = None) -> list[WorkItem]:
    """One WorkItem per seed of the mentee, all waited for together."""
    return [WorkItem(seed_member_id(mentee_id, s), kind, replace(cfg, train=replace(cfg.train, seed=s)),
                     optuna_number, mentee_id, len(seeds)) for s in seeds]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN with fewer than two values)."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def t_half_width(std: float, n: int, level: float = 0.95) -> float:
    """Half-width of the t-interval of a mean over n seeds (NaN with fewer than two)."""
    if n < 2 or math.isnan(std):
        return math.nan
    from scipy import stats  # scikit-learn's dependency; imported only where an interval is asked

    return float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))


@dataclass
class MenteeRecord:
    """One mentee's round of seeds, aggregated: what one MLflow child run holds."""

    mentee_id: str
    kind: WorkKind
    config: MemberConfig  # the first seed's config
    optuna_number: int | None
    status: Status
    seeds: tuple[int, ...]  # the finished seeds, ascending
    val_accs: tuple[float, ...]  # aligned with seeds
    test_accs: tuple[float, ...]
    cost: dict[str, float]
    curves: dict[str, list[float]]  # per epoch, the mean over finished seeds
    epochs_run: int  # epochs every seed that did not fail ran (fewer: pruned)
    seed_epochs: int  # epochs over all seeds: the work done
    train_seconds: float  # all seeds together
    node_id: str
    weights: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed → state dict
    failed_seeds: tuple[int, ...] = ()
    error: str | None = None
    member_ids: tuple[str, ...] = ()  # the seed members recorded here (the journal forgets them after)

    @property
    def val_acc(self) -> float:
        return mean_std(self.val_accs)[0]

    @property
    def test_acc(self) -> float:
        return mean_std(self.test_accs)[0]

    @classmethod
    def of(cls, members: Sequence[Member]) -> MenteeRecord:
        members = sorted(members, key=lambda m: m[0].config.train.seed)
        first_item = members[0][0]
        done = [(item, res) for item, res, _ in members if res.status is Status.FINISHED]
        if any(res.status is Status.PRUNED for _, res, _ in members):
            status = Status.PRUNED
        elif done:
            status = Status.FINISHED
        else:
            status = Status.FAILED
        curves: dict[str, list[float]] = {}
        for name in done[0][1].curves if done else ():
            rows = [res.curves.get(name, []) for _, res in done]
            n = min(len(r) for r in rows)
            curves[name] = [float(np.mean([r[i] for r in rows])) for i in range(n)]
        errors = [res.error for _, res, _ in members if res.error]
        any_res = done[0][1] if done else members[0][1]
        return cls(
            mentee_id=first_item.mentee, kind=first_item.kind,
            config=replace(first_item.config, train=replace(first_item.config.train,
                                                            seed=members[0][0].config.train.seed)),
            optuna_number=first_item.optuna_number, status=status,
            seeds=tuple(item.config.train.seed for item, _ in done),
            val_accs=tuple(float(res.val_acc) for _, res in done),
            test_accs=tuple(float(res.test_acc) for _, res in done),
            cost=dict(any_res.cost), curves=curves,
            epochs_run=min((res.epochs_run for _, res, _ in members if res.status is not Status.FAILED), default=0),
            seed_epochs=sum(res.epochs_run for _, res, _ in members),
            train_seconds=float(sum(res.train_seconds for _, res, _ in members)),
            node_id=members[-1][2],
            # a pruned mentee's finished seeds are no network to export: its numbers do not compare
            weights={item.config.train.seed: res.state_dict for item, res in done
                     if res.state_dict is not None and status is Status.FINISHED},
            failed_seeds=tuple(item.config.train.seed for item, res, _ in members if res.status is not Status.FINISHED),
            error=errors[0] if errors else None,
            member_ids=tuple(item.member_id for item, _, _ in members),
        )


class Gatherer:
    """Holds seed members until every seed of their mentee's round is back, then hands the group out.
    A cohort usually holds whole mentees; one split (a lost trial's members queued again) still
    comes together here. Thread-safe use is the caller's: the driver calls it on its own thread."""

    def __init__(self) -> None:
        self.partial: dict[str, dict[str, Member]] = {}  # mentee id → member id → member

    def add(self, members: Iterable[Member]) -> list[list[Member]]:
        complete = []
        for m in members:
            item = m[0]
            group = self.partial.setdefault(item.mentee, {})
            group[item.member_id] = m
            if len(group) >= item.seeds:
                complete.append(list(self.partial.pop(item.mentee).values()))
        return complete

    def holds(self, member_id: str) -> bool:
        return any(member_id in g for g in self.partial.values())
