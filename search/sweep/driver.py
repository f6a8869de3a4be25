"""The driver's state: asks Optuna for cohorts, records each result in MLflow, then tells Optuna."""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from search.config import MemberConfig, MemberResult
from search.spaces import SearchSpace
from search.sweep.suggest import suggest_member
from search.tracking import SweepTracker

__all__ = ['Driver', 'SweepSummary', 'Work']

def _result_from_dict(cfg: MemberConfig, d: dict, state: dict | None) -> MemberResult:
    return MemberResult(config=cfg, status=d["status"], val_acc=d["val_acc"], test_acc=d["test_acc"],
                        epochs_run=d["epochs_run"], curves=d["curves"], cost=d["cost"],
                        train_seconds=d["train_seconds"], state_dict=state, error=d["error"])


# ----------------------------------------------------------------- the driver

@dataclass
class SweepSummary:
    experiment: str
    parent_run_id: str
    tracking_uri: str
    planned: int
    recorded: int = 0
    finished: int = 0
    pruned: int = 0
    failed: int = 0
    trials: int = 0
    seconds: float = 0.0
    mentee_samples: float = 0.0  # samples × epochs over all members: the throughput numerator
    phases: dict[str, float] = field(default_factory=dict)  # seconds: ray, data+mentor, fit, drain
    trial_timings: list[dict[str, float]] = field(default_factory=list)  # per cohort, measured in the trial


@dataclass
class Work:
    member_id: str
    config: MemberConfig
    optuna_number: int | None  # None for twins


@dataclass
class Driver:
    """Asks Optuna for cohorts, records results. Runs in the driver process only."""

    space: SearchSpace
    study: optuna.Study
    tracker: SweepTracker
    parent_run_id: str
    cohort_size: int
    tags: dict[str, str]
    summary: SweepSummary
    pending: deque = field(default_factory=deque)
    have_independent: set = field(default_factory=set)  # arch keys with an independent member
    planned: int = 0
    progress: Any = None
    n_train: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)  # the study: asks here, tells on the writer
    writer: "_Writer" = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.writer = _Writer(self.write)

    def _ask(self) -> None:
        with self.lock:
            trial = self.study.ask()
            cfg = suggest_member(trial, self.space)
            trial.set_user_attr("config", cfg.to_dict())
        self.planned += 1
        self.pending.append(Work(str(trial.number), cfg, trial.number))
        self._twin_of(cfg)

    def _twin_of(self, cfg: MemberConfig) -> None:
        key = cfg.arch.key()
        if key in self.have_independent:
            return
        self.have_independent.add(key)
        if not cfg.independent:
            self.planned += 1
            self.pending.append(Work(f"twin-{key}", cfg.twin(), None))

    def next_cohort(self) -> dict | None:
        while len(self.pending) < self.cohort_size and self.planned < self.space.budget.mentees:
            self._ask()
        if not self.pending:
            return None
        work = [self.pending.popleft() for _ in range(min(self.cohort_size, len(self.pending)))]
        return {"member_ids": [w.member_id for w in work], "members": [w.config.to_dict() for w in work],
                "optuna": [w.optuna_number for w in work]}

    def record(self, config: dict, result: dict, ckpt_dir: str | None) -> None:
        """A cohort finished: queue each member for the writer (weights read now, while the
        checkpoint directory is certain to exist)."""
        self.summary.trials += 1
        self.summary.trial_timings.append(result.get("timing", {}))
        path = Path(ckpt_dir) / "weights.pt" if ckpt_dir else None
        weights = torch.load(path, weights_only=True) if path is not None and path.exists() else {}
        for mid, cd, num, rd in zip(config["member_ids"], config["members"], config["optuna"], result["members"]):
            self.writer.put((mid, num, _result_from_dict(MemberConfig.from_dict(cd), rd, weights.get(mid))))

    def fail(self, config: dict, error: str) -> None:
        self.summary.trials += 1
        for mid, cd, num in zip(config["member_ids"], config["members"], config["optuna"]):
            self.writer.put((mid, num, MemberResult(config=MemberConfig.from_dict(cd), status="failed",
                                                    error=error[:500])))

    def write(self, mid: str, num: int | None, res: MemberResult) -> None:
        """MLflow first, then Optuna: a member told to Optuna is always in MLflow, which is
        what resume relies on. Runs on the writer thread, so training never waits for it."""
        tags = {**self.tags, "mentee.twin": str(mid.startswith("twin-"))}
        self.tracker.log_member(self.parent_run_id, res, tags=tags, member_id=mid)
        if num is not None:
            self._tell(num, res.status, res.val_acc, res.cost)
        self._count(res.status, res.epochs_run * self.n_train)

    def _tell(self, number: int, status: str, val_acc: float, cost: dict) -> None:
        with self.lock:
            if status == "finished":
                self.study.tell(number, [val_acc] + [cost[o] for o in self.space.objectives])
            else:  # a pruned member must never look finished to the sampler's front
                state = optuna.trial.TrialState.PRUNED if status == "pruned" else optuna.trial.TrialState.FAIL
                self.study.tell(number, state=state)

    def _count(self, status: str, samples: float) -> None:
        s = self.summary
        s.recorded += 1
        s.mentee_samples += samples
        setattr(s, status, getattr(s, status) + 1)
        if self.progress is not None:
            self.progress.advance(1, f"{s.finished} finished, {s.pruned} pruned, {s.failed} failed")


class _Writer:
    """One background thread that does the driver's slow writes in order (MLflow on sqlite
    costs ~30 ms a run); `close` waits for the queue and re-raises a failed write."""

    def __init__(self, fn):
        self.fn, self.q, self.error = fn, queue.Queue(), None
        self.thread = threading.Thread(target=self._loop, name="mentee-writer", daemon=True)
        self.thread.start()

    def put(self, item: tuple) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(item)

    def _loop(self) -> None:
        while (item := self.q.get()) is not None:
            if self.error is None:
                try:
                    self.fn(*item)
                except BaseException as e:  # noqa: BLE001 - handed to the driver thread in close()
                    self.error = e

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

