"""Racing: after the search, more seeds for the mentees that could still be on a front, none for the rest.

    done = race(driver, max_seeds=6, tuner_for=lambda d: _tuner(plan, payload, d, ...))   # run_sweep does this
    ids = contenders(frame, max_seeds=6)                                                  # who gets seeds now

Every mentee is searched with `budget.seeds` seeds (fused, one cohort). A front picked by
validation still flatters its points, and a few seeds of a 600-parameter net leave a wide
interval, so the mentees that decide the fronts get more — up to `budget.seeds +
budget.reevaluate_seeds` — in rounds of `budget.seeds` new seeds each, added to the same run.

The rule, per arm (the mentored and the independent fronts are both reported): a mentee's
validation accuracy is known to ± h = 2·s/√n (n its seeds; s the seed-to-seed standard deviation
pooled over every mentee of the sweep with two or more seeds — one seed's own spread says little —
or 0.05 when none has). A mentee is *clearly dominated* when some other mentee of its arm, no
larger (cost ≤), is better even pessimistically: mean − h of that one > mean + h of this one. Every
mentee not clearly dominated, with fewer seeds than the maximum, gets the next round — unless
`budget.precision` is set and its own 95% interval (t over its ≥ 3 seeds) is already within ±
precision. After each round the intervals shrink and the rule is applied again, until no
contender lacks seeds; with `mentees: auto`, no round starts once `budget.minutes` are spent.

The seeds are the search's continued (seed + n, + n + 1, …): the same for every mentee of a sweep,
so a mentored mentee's seeds pair with its independent rival's. A resumed sweep computes the same
contenders from what MLflow holds and trains only seeds not recorded yet.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from search.config import MemberConfig, WorkItem, WorkKind
from search.mentees import seed_items, t_half_width
from search.sweep.driver import Driver
from search.tracking import load_runs

__all__ = ["contenders", "pooled_seed_std", "race", "PRIOR_SEED_STD"]

PRIOR_SEED_STD = 0.05  # accuracy spread assumed between seeds until the sweep has measured one
MAX_ROUNDS = 8


def pooled_seed_std(frame: pd.DataFrame) -> float:
    """Seed-to-seed standard deviation pooled over mentees with ≥ 2 seeds (weighted by n − 1)."""
    ok = frame[(frame["status"] == "finished") & (frame["n_seeds"] >= 2)]
    if ok.empty:
        return PRIOR_SEED_STD
    dof = ok["n_seeds"].to_numpy(float) - 1
    var = ok["val_acc_std"].to_numpy(float) ** 2
    good = ~np.isnan(var)
    return float(math.sqrt((var[good] * dof[good]).sum() / dof[good].sum())) if good.any() else PRIOR_SEED_STD


def contenders(frame: pd.DataFrame, max_seeds: int, cost: str = "params", precision: float = 0.0) -> list[str]:
    """Run ids of the finished mentees that are not clearly dominated within their arm and have
    fewer than `max_seeds` seeds, in size order; with `precision`, not those whose own 95% interval
    (over ≥ 3 seeds) is already within ± precision."""
    done = frame[(frame["status"] == "finished")].dropna(subset=["val_acc", cost])
    if done.empty:
        return []
    s = pooled_seed_std(frame)
    out = []
    for _, arm in done.groupby("arm"):
        arm = arm.sort_values(cost, kind="mergesort")
        mean = arm["val_acc"].to_numpy(float)
        half = 2 * s / np.sqrt(arm["n_seeds"].to_numpy(float).clip(min=1))
        size = arm[cost].to_numpy(float)
        for i, rid in enumerate(arm["run_id"]):
            rivals = (size <= size[i]) & (np.arange(len(size)) != i)
            dominated = rivals.any() and (mean[rivals] - half[rivals]).max() > mean[i] + half[i]
            n = int(arm["n_seeds"].iloc[i])
            precise = precision > 0 and n >= 3 and t_half_width(float(arm["val_acc_std"].iloc[i]), n) <= precision
            if not dominated and n < max_seeds and not precise:
                out.append((size[i], rid))
    return [rid for _, rid in sorted(out, key=lambda t: t[0])]


def _round_items(frame: pd.DataFrame, ids: list[str], per_round: int, max_seeds: int) -> list[WorkItem]:
    """The next seeds of each contender: continuing after every seed it has tried (failed ones too)."""
    rows = frame.set_index("run_id")
    items: list[WorkItem] = []
    for rid in ids:
        r = rows.loc[rid]
        cfg = MemberConfig.from_dict(json.loads(r["config"]))
        tried = [*r["seeds"], *r.get("failed_seeds", ())]
        start = (max(tried) - cfg.train.seed + 1) if tried else 0
        k = min(per_round, max_seeds - int(r["n_seeds"]))
        seeds = [cfg.train.seed + start + j for j in range(k)]
        items += seed_items(str(r["member_id"]), WorkKind.REEVAL, cfg, seeds)
    return items


def race(driver: Driver, max_seeds: int, tuner_for: Callable[[Driver], Any], show_progress: bool = True,
         precision: float = 0.0, deadline: float | None = None) -> bool:
    """Give the contenders more seeds, round by round, until none lacks any (or, past `deadline`, a
    time.monotonic() value, no new round starts); True when every round was recorded whole.
    `tuner_for(driver)` builds the Ray Tune Tuner that hands out `driver`'s cohorts."""
    from search.progress import Progress

    per_round = max(1, driver.seeds)
    for _ in range(MAX_ROUNDS):
        if deadline is not None and time.monotonic() > deadline:
            return True  # the time budget is spent: the seeds recorded so far are the answer
        frame = load_runs(driver.tracker.uri, parent_run_id=driver.parent_run_id)
        driver.run_ids.update(zip(frame["member_id"], frame["run_id"]))
        ids = contenders(frame, max_seeds, precision=precision)
        items = [w for w in _round_items(frame, ids, per_round, max_seeds) if not driver.gather.holds(w.member_id)]
        if not items:
            return True
        mentees = len({w.mentee for w in items})
        space = driver.space.model_copy(update={"budget": driver.space.budget.model_copy(update={"mentees": 0})})
        # the search's driver, handing out exactly these seeds (its study, tracker, summary, lock, gather shared)
        sub = dataclasses.replace(driver, space=space, pending=deque(items), planned=0, in_flight=0,
                                  requeues=Counter(), progress=None, mentee_budget=None)
        before = driver.summary.seeds_trained
        with Progress(mentees, f"race: {mentees} mentees near the fronts, +{per_round} seeds",
                      enabled=show_progress) as bar:
            sub.progress = bar
            try:
                tuner_for(sub).fit()
            finally:
                sub.writer.close()  # every seed trained is in MLflow before we go on
        if driver.summary.seeds_trained - before < len(items):
            return False
    return True
