"""Re-evaluation: after the search, retrain what the reports compare with fresh seeds.

    done = reevaluate(driver, seeds=3, tuner_for=lambda d: _tuner(plan, payload, d, ...))   # run_sweep does this
    items, tags = reeval_items(frame, configs, seeds=3)                                      # what it trains

A front picked by validation flatters its points: each is the best of many tries on one seed.
So at the end of a sweep the points of both arms' fronts and the best independent mentee at
≤ each of their sizes (`search.pareto.mentorship_pairs`) are trained again, config unchanged,
with N new seeds (the search's seed + 1 … + N; the same seeds in both arms, so gains pair up).
They go through the same machinery as the search: WorkItems of kind REEVAL handed out by a
driver, fused into cohorts, one Ray Tune trial each, recorded by the driver in MLflow under the
sweep's parent run with tags `mentee.work=reeval`, `mentee.reeval_of=<run id>` and the arm of
the run they re-evaluate. No successive halving: every seed trains to the end. A resumed sweep
trains only the re-evaluations that are not recorded yet (member ids are deterministic).
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any

import pandas as pd

from search.config import MemberConfig, WorkItem, WorkKind
from search.pareto import mentorship_pairs
from search.sweep.driver import Driver
from search.tracking import load_member, load_runs

__all__ = ["reevaluate", "reeval_items", "reeval_targets", "reeval_seeds"]


def reeval_seeds(cfg: MemberConfig, n: int) -> list[int]:
    """Seeds for re-evaluating `cfg`: new ones (never the search's own), equal for every config of a sweep."""
    return [cfg.train.seed + k for k in range(1, n + 1)]


def reeval_targets(frame: pd.DataFrame, cost: str = "params") -> list[str]:
    """Run ids to re-evaluate: both arms' front points and their budget-matched rivals, in size order."""
    pairs = mentorship_pairs(frame, cost=cost)
    ids = [r for p in pairs.itertuples() for r in (p.mentored_run_id, p.independent_run_id) if isinstance(r, str)]
    return list(dict.fromkeys(ids))


def reeval_items(frame: pd.DataFrame, configs: dict[str, MemberConfig], seeds: int,
                 done: AbstractSet[str] = frozenset(), cost: str = "params"
                 ) -> tuple[list[WorkItem], dict[str, dict[str, str]]]:
    """One WorkItem per (target run, seed) not in `done`, and each one's MLflow tags. `configs`:
    run id → the config that run trained."""
    rows = frame.set_index("run_id")
    items, tags = [], {}
    for run_id in reeval_targets(frame, cost):
        cfg = configs[run_id]
        for seed in reeval_seeds(cfg, seeds):
            mid = f"reeval-{run_id}-s{seed}"
            if mid in done:
                continue
            items.append(WorkItem(mid, WorkKind.REEVAL, dataclasses.replace(
                cfg, train=dataclasses.replace(cfg.train, seed=seed))))
            tags[mid] = {"mentee.reeval_of": run_id, "mentee.arm": str(rows.loc[run_id, "arm"])}
    return items, tags


def _configs(driver: Driver, frame: pd.DataFrame, run_ids: list[str]) -> dict[str, MemberConfig]:
    """The config each run trained: from the Optuna trial that asked it (no I/O), else its MLflow artifact."""
    with driver.lock:
        asked = {str(t.number): t.user_attrs["config"] for t in driver.study.get_trials(deepcopy=False)
                 if "config" in t.user_attrs}
    member = frame.set_index("run_id")["member_id"]
    out = {}
    for rid in run_ids:
        d = asked.get(member.get(rid))
        out[rid] = MemberConfig.from_dict(d) if d is not None else load_member(driver.tracker.uri, rid)[0]
    return out


def reevaluate(driver: Driver, seeds: int, tuner_for: Callable[[Driver], Any], show_progress: bool = True) -> bool:
    """Re-evaluate a finished search with `seeds` new seeds; True when every re-evaluation is
    recorded. `tuner_for(driver)` builds the Ray Tune Tuner that hands out `driver`'s cohorts."""
    from search.progress import Progress

    frame = load_runs(driver.tracker.uri, parent_run_id=driver.parent_run_id)
    targets = reeval_targets(frame)
    done = set(frame["member_id"].dropna())
    items, tags = reeval_items(frame, _configs(driver, frame, targets), seeds, done)
    if not items:
        return True
    s = driver.summary
    budget = driver.space.budget.model_copy(update={"mentees": len(items)})
    # the search's driver, with exactly these items to hand out (its study, tracker, summary, lock shared)
    sub = dataclasses.replace(driver, space=driver.space.model_copy(update={"budget": budget}), pending=deque(items),
                              planned=len(items), in_flight=0, requeues=Counter(), progress=None, item_tags=tags)
    s.planned += len(items)
    before = s.recorded
    with Progress(len(items), f"re-evaluate {len(targets)} runs × {seeds} seeds", enabled=show_progress) as bar:
        sub.progress = bar
        try:
            tuner_for(sub).fit()
        finally:
            sub.writer.close()  # every re-evaluation trained is in MLflow before we return
    return s.recorded - before >= len(items)
