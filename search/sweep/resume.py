"""Rebuild a driver's queue and counts after an interruption, from the Optuna study and MLflow.

MLflow is the record: a member is done when its child run ended (FINISHED, KILLED for
pruned, FAILED). What the interruption may have left half-done is repaired, never trusted:
a child run still RUNNING (the driver died while logging it) is deleted and its member
trained again; an Optuna trial asked but never given its config is failed and asked anew;
a member recorded in MLflow but not told to Optuna is told now.
"""

from __future__ import annotations

import optuna

from search.config import MemberConfig, Status, WorkItem, WorkKind
from search.sweep.driver import Driver
from search.tracking import load_runs

__all__ = ["resume_state"]


def resume_state(driver: Driver, recorded: set[str]) -> None:
    """Rebuild the driver's queue and counts; `recorded`: member ids with an ended child run."""
    frame = load_runs(driver.tracker.uri, parent_run_id=driver.parent_run_id)
    frame = frame[frame["member_id"].isin(recorded)]
    by_member = {r["member_id"]: r for _, r in frame.iterrows()}
    s = driver.summary
    s.recorded = len(by_member)
    for status, n in frame["status"].value_counts().items():
        if status in {st.value for st in Status}:
            s.counts[Status(status)] = int(n)
    # recorded twins count towards the budget, as they did before the interruption
    twins = set(frame.loc[frame["work"] == WorkKind.TWIN.value, "arch_key"])
    driver.have_independent |= twins
    driver.planned += len(twins)
    mentored = []
    for t in driver.study.trials:
        if "config" not in t.user_attrs:  # asked, then the driver died before storing the config
            if t.state == optuna.trial.TrialState.RUNNING:
                driver.study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            continue
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
            driver.tell(t.number, Status(r["status"]), r["val_acc"], {o: r[o] for o in driver.space.objectives})
        else:
            driver.pending.append(WorkItem(mid, WorkKind.SEARCHED, cfg, t.number))
    for cfg in mentored:  # twins asked for but never recorded are trained now
        driver.add_twin(cfg)
