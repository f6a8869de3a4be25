"""Rebuild a driver's queue and counts after an interruption, from the Optuna study and MLflow."""

from __future__ import annotations

import optuna

from search.config import MemberConfig
from search.sweep.driver import Driver, Work
from search.tracking import load_runs

__all__ = ['resume_state']

def resume_state(driver: Driver, recorded: set[str]) -> None:
    """Rebuild the driver's queue and counts from the study and MLflow after an interruption."""
    frame = load_runs(driver.tracker.uri, parent_run_id=driver.parent_run_id)
    by_member = {r["member_id"]: r for _, r in frame.iterrows()} if len(frame) else {}
    for status, n in frame["status"].value_counts().items():
        if status in ("finished", "pruned", "failed"):
            setattr(driver.summary, status, int(n))
    # recorded twins count towards the budget, as they did before the interruption
    twins = {m[len("twin-"):] for m in recorded if m.startswith("twin-")}
    driver.have_independent |= twins
    driver.planned += len(twins)
    mentored = []
    for t in driver.study.trials:
        cfg = MemberConfig.from_dict(t.user_attrs["config"])
        driver.planned += 1
        if cfg.independent:
            driver.have_independent.add(cfg.arch.key())
        else:
            mentored.append(cfg)
        if t.state != optuna.trial.TrialState.RUNNING:
            continue
        mid = str(t.number)
        if mid in by_member:  # recorded, but the driver died before telling Optuna
            r = by_member[mid]
            driver._tell(t.number, r["status"], r["val_acc"], {o: r[o] for o in driver.space.objectives})
        else:
            driver.pending.append(Work(mid, cfg, t.number))
    for cfg in mentored:  # twins asked for but never recorded are trained now
        driver._twin_of(cfg)

