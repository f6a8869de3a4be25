"""The driver's state: asks Optuna for cohorts, records each result in MLflow, then tells Optuna.

    driver = Driver(space, study, tracker, parent_run_id, cohort_size, tags, summary)
    spec = driver.next_cohort()                  # a CohortSpec for Ray Tune's next trial
    driver.record(spec, report_dict, ckpt_dir)   # a trial finished: queue its members' writes
    driver.lost(spec, error)                     # a trial died for good: its members go back in the queue

Every architecture Optuna proposes is also trained *independently* (its "twin": every
mentor term dropped, same optimiser and seed), so every report can show what mentorship
bought at that size. Twins are MLflow runs, not Optuna trials.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from search.config import CohortReport, CohortSpec, MemberConfig, MemberResult, Status, WorkItem, WorkKind
from search.spaces import SearchSpace
from search.sweep.suggest import suggest_member
from search.sweep.target import ask_fitting
from search.tracking import SweepTracker

__all__ = ["Driver", "SweepSummary"]

# A cohort whose trial keeps dying (after Ray Tune's own retries) is queued again this many
# times before its members are recorded failed: infrastructure costs time, not mentees.
MAX_REQUEUES = 2


@dataclass
class SweepSummary:
    experiment: str
    parent_run_id: str
    tracking_uri: str
    planned: int
    recorded: int = 0
    counts: Counter = field(default_factory=Counter)  # Status → members recorded with it
    trials: int = 0
    requeued: int = 0  # members queued again after their trial was lost
    seconds: float = 0.0
    mentee_samples: float = 0.0  # samples × epochs over all members: the throughput numerator
    phases: dict[str, float] = field(default_factory=dict)  # seconds: ray, mentor, fit, drain
    trial_timings: list[dict[str, float]] = field(default_factory=list)  # per cohort, measured in the trial
    nodes: Counter = field(default_factory=Counter)  # node id → cohorts it trained

    @property
    def finished(self) -> int:
        return self.counts[Status.FINISHED]

    @property
    def pruned(self) -> int:
        return self.counts[Status.PRUNED]

    @property
    def failed(self) -> int:
        return self.counts[Status.FAILED]


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
    pending: deque[WorkItem] = field(default_factory=deque)
    have_independent: set[str] = field(default_factory=set)  # arch keys with an independent member
    planned: int = 0
    progress: Any = None
    n_train: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)  # the study: asks here, tells on the writer
    requeues: Counter = field(default_factory=Counter)  # member id → times queued again
    in_flight: int = 0  # cohorts handed to Ray Tune and not yet recorded or lost
    writer: _Writer = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.writer = _Writer(self.write)

    def _ask(self) -> None:
        with self.lock:
            # with a `target:` device, configs over its size budget are told to Optuna and asked again (never trained)
            trial, cfg = ask_fitting(self.study, self.space, self.tags, self._ask_one)
            trial.set_user_attr("config", cfg.to_dict())
        self.planned += 1
        self.pending.append(WorkItem(str(trial.number), WorkKind.SEARCHED, cfg, trial.number))
        self.add_twin(cfg)

    def _ask_one(self) -> tuple[optuna.Trial, MemberConfig]:
        trial = self.study.ask()
        return trial, suggest_member(trial, self.space)

    def add_twin(self, cfg: MemberConfig) -> None:
        """Queue the independent twin of `cfg`'s architecture unless it has one already."""
        key = cfg.arch.key()
        if key in self.have_independent:
            return
        self.have_independent.add(key)
        if not cfg.independent:
            self.planned += 1
            self.pending.append(WorkItem(f"twin-{key}", WorkKind.TWIN, cfg.twin()))

    @property
    def done(self) -> bool:
        """Nothing left to hand out, and nothing out that could still come back."""
        return not self.pending and self.in_flight == 0 and self.planned >= self.space.budget.mentees

    def next_cohort(self) -> CohortSpec | None:
        while len(self.pending) < self.cohort_size and self.planned < self.space.budget.mentees:
            self._ask()
        if not self.pending:
            return None
        self.in_flight += 1
        return CohortSpec(tuple(self.pending.popleft() for _ in range(min(self.cohort_size, len(self.pending)))))

    def record(self, spec: CohortSpec, report: dict, ckpt_dir: str | None) -> None:
        """A cohort finished: queue each member for the writer (weights read now, while the
        checkpoint directory is certain to exist)."""
        path = Path(ckpt_dir) / "weights.pt" if ckpt_dir else None
        weights = torch.load(path, weights_only=True) if path is not None and path.exists() else {}
        rep = CohortReport.from_dict(report, weights, [w.member_id for w in spec.items])
        self.in_flight -= 1
        self.summary.trials += 1
        self.summary.trial_timings.append(rep.timing)
        self.summary.nodes[rep.node_id] += 1
        for item, res in zip(spec.items, rep.members):
            self.writer.put((item, res, rep.node_id))

    def lost(self, spec: CohortSpec, error: str) -> None:
        """A trial died (its process or node lost) after Ray Tune's retries: its members go back
        in the queue, up to MAX_REQUEUES times each; after that they are recorded failed."""
        self.in_flight -= 1
        self.summary.trials += 1
        for item in spec.items:
            if self.requeues[item.member_id] < MAX_REQUEUES:
                self.requeues[item.member_id] += 1
                self.summary.requeued += 1
                self.pending.appendleft(item)
            else:
                self.writer.put((item, MemberResult(config=item.config, status=Status.FAILED, error=error[:500]), ""))

    def write(self, item: WorkItem, res: MemberResult, node_id: str) -> None:
        """MLflow first, then Optuna: a member told to Optuna is always in MLflow, which is
        what resume relies on. Runs on the writer thread, so training never waits for it."""
        tags = {**self.tags, "mentee.work": item.kind.value, "mentee.node_id": node_id}
        self.tracker.log_member(self.parent_run_id, res, tags=tags, member_id=item.member_id)
        if item.optuna_number is not None:
            self.tell(item.optuna_number, res.status, res.val_acc, res.cost)
        self._count(res.status, res.epochs_run * self.n_train)

    def tell(self, number: int, status: Status, val_acc: float, cost: dict) -> None:
        with self.lock:
            if status is Status.FINISHED:
                self.study.tell(number, [val_acc] + [cost[o] for o in self.space.objectives])
            else:  # a pruned member must never look finished to the sampler's front
                state = optuna.trial.TrialState.PRUNED if status is Status.PRUNED else optuna.trial.TrialState.FAIL
                self.study.tell(number, state=state)

    def _count(self, status: Status, samples: float) -> None:
        s = self.summary
        s.recorded += 1
        s.mentee_samples += samples
        s.counts[status] += 1
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
