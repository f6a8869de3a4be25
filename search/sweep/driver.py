"""The driver's state: asks Optuna for cohorts, records each result in MLflow, then tells Optuna.

    driver = Driver(space, study, tracker, parent_run_id, cohort_size, tags, summary)
    spec = driver.next_cohort()                  # a CohortSpec for Ray Tune's next trial
    driver.record(spec, report_dict, ckpt_dir)   # a trial finished: queue its members' writes
    driver.lost(spec, error)                     # a trial died for good: its members go back in the queue

Asks come in two arms with the same search effort (`suggest.ArmBalance`): an independent ask
(every mentor term dropped, its own optimiser settings), then a mentored ask of the same
architecture, so "the best independent mentee at ≤ this size" is an honest baseline. A
mentored architecture that still lacks an independent member (a sweep resumed mid-pair, a
space written before the arms) gets its "twin": same optimiser and seed, every mentor term
dropped; twins are MLflow runs, not Optuna trials.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from search.config import CohortReport, CohortSpec, MemberConfig, MemberResult, Status, WorkItem, WorkKind
from search.spaces import SearchSpace
from search.sweep.suggest import ArmBalance
from search.sweep.target import ask_fitting
from search.tracking import OUTAGE_SECONDS, ResultJournal, SweepTracker, TrackingUnavailable

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
    item_tags: dict[str, dict[str, str]] = field(default_factory=dict)  # member id → extra MLflow tags
    arms: ArmBalance = field(init=False)  # independent and mentored asks, paired (suggest.py)
    writer: _Writer = field(init=False)
    journal: ResultJournal | None = None  # results kept on disk until MLflow has them (outages, kills)

    def __post_init__(self) -> None:
        self.arms = ArmBalance.for_space(self.space)
        self.writer = _Writer(self.write, self.journal)

    def _ask(self) -> None:
        with self.lock:
            # with a `target:` device, configs over its size budget are told to Optuna and asked again (never trained)
            trial, cfg = ask_fitting(self.study, self.space, self.tags, lambda: self.arms.ask(self.study, self.space))
            trial.set_user_attr("config", cfg.to_dict())
        self.planned += 1
        self.pending.append(WorkItem(str(trial.number), WorkKind.SEARCHED, cfg, trial.number))
        self.add_twin(cfg)

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
        """Nothing left to hand out, and nothing out that could still come back (or the tracking
        store is gone: what is out comes back into the journal, and the sweep stops)."""
        if self.writer.error is not None:
            return self.in_flight == 0
        return not self.pending and self.in_flight == 0 and self.planned >= self.space.budget.mentees

    def next_cohort(self) -> CohortSpec | None:
        if self.writer.error is not None:  # results could not be written: train nothing more
            return None
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
        self.writer.put_all([(item, res, rep.node_id) for item, res in zip(spec.items, rep.members)])

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
        tags = {**self.tags, **self.item_tags.get(item.member_id, {}), "mentee.work": item.kind.value,
                "mentee.node_id": node_id}
        if item.optuna_number is not None and self.arms.on:
            with self.lock:
                tags["mentee.arm"] = self.arms.arm(self.study, item.optuna_number) or ""
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
    """One background thread that does the driver's slow writes in order (MLflow on sqlite costs
    ~30 ms a run). With a journal, each result is kept on disk first (`put_all`, on the caller's
    thread), so a tracking store that stops answering loses nothing: the writer waits for it with
    backoff while training goes on, up to OUTAGE_SECONDS; then it gives up (`error` is set, the
    driver hands out no more cohorts) and `close` raises TrackingUnavailable naming the journal.
    Any other failed write is re-raised by `close` as it is."""

    def __init__(self, fn, journal: ResultJournal | None = None):
        self.fn, self.journal = fn, journal
        self.q: queue.Queue[tuple | None] = queue.Queue()  # None: stop
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="mentee-writer", daemon=True)
        self.thread.start()

    def put(self, item: tuple) -> None:
        self.put_all([item])

    def put_all(self, items: list[tuple]) -> None:
        if self.journal is not None:
            self.journal.add(items)  # on disk before anything else can go wrong; then never raises
        elif self.error is not None:
            raise self.error
        for item in items:
            self.q.put(item)

    def _loop(self) -> None:
        while (item := self.q.get()) is not None:
            if self.error is None:
                try:
                    self.write_now(item)
                except BaseException as e:  # noqa: BLE001 - handed to the driver thread in close()
                    self.error = e

    def write_now(self, item: tuple) -> None:
        """Write one result on this thread, waiting out an outage up to the bound (the writer's loop;
        resume replays the journal through it too); then forget it in the journal."""
        since, delay = None, 1.0
        while True:
            try:
                self.fn(*item)
                break
            except TrackingUnavailable as e:
                if self.journal is None:
                    raise
                if since is None:
                    since = time.monotonic()
                    from search.progress import console
                    console.print(f"{e}; results are kept in {self.journal.dir} until it answers "
                                  f"(waiting up to {OUTAGE_SECONDS:g} s)", highlight=False)
                if time.monotonic() - since > OUTAGE_SECONDS:
                    raise TrackingUnavailable(
                        f"{e}, and not within {OUTAGE_SECONDS:g} s after: the sweep stopped; {len(self.journal)} "
                        f"results are kept in {self.journal.dir}. Once MLflow answers, run the same `mentee "
                        f"sweep` with --resume: it writes them first, then continues") from None
                time.sleep(delay)
                delay = min(2 * delay, 15.0)
        if self.journal is not None:
            self.journal.done(item[0].member_id)

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        if self.journal is not None:
            self.journal.clear()  # everything is in MLflow
