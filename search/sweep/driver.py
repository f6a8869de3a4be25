"""The driver's state: asks Optuna for mentees, records each in MLflow, then tells Optuna.

    driver = Driver(space, study, tracker, parent_run_id, cohort_size, tags, summary, seeds=3)
    spec = driver.next_cohort()                  # a CohortSpec for Ray Tune's next trial: whole mentees
    driver.record(spec, report_dict, ckpt_dir)   # a trial finished: journal its members, queue whole mentees
    driver.lost(spec, error)                     # a trial died for good: its members go back in the queue

A mentee is one asked config trained with `seeds` seeds fused in the same cohort (members
`17@s0`, `17@s1`, …; `search.mentees`). When every seed of a mentee is back, the writer records
it as ONE MLflow run (the mean, the std and each seed's value) and tells Optuna the mean.

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

from search.config import CohortReport, CohortSpec, MemberConfig, MemberResult, Status, WorkItem, WorkKind
from search.mentees import Gatherer, Member, MenteeRecord, search_seeds, seed_items
from search.spaces import SearchSpace
from search.sweep.ledger import WITHHELD
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
    planned: int  # mentees
    recorded: int = 0  # mentees recorded (each one MLflow run, whatever its seeds)
    counts: Counter = field(default_factory=Counter)  # Status → mentees recorded with it
    trials: int = 0
    requeued: int = 0  # members queued again after their trial was lost
    seconds: float = 0.0
    mentee_samples: float = 0.0  # samples × epochs over all members: the throughput numerator
    phases: dict[str, float] = field(default_factory=dict)  # seconds: ray, mentor, fit, drain
    trial_timings: list[dict[str, float]] = field(default_factory=list)  # per cohort, measured in the trial
    nodes: Counter = field(default_factory=Counter)  # node id → cohorts it trained
    seeds_trained: int = 0  # members (one seed of one mentee each), re-evaluation's included
    returned: int = 0  # mentees back from training, whole (counted on the driver's thread, before the write)

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
    seeds: int = 1  # seeds each asked config is trained with, fused in one cohort: one mentee
    run_ids: dict[str, str] = field(default_factory=dict)  # mentee id → its run, for re-evaluation's added seeds
    mentee_budget: MenteeBudget | None = None  # `budget.mentees: auto`: how many fit in `budget.minutes`
    gather: Gatherer = field(default_factory=Gatherer)  # seed members until their mentee is whole

    def __post_init__(self) -> None:
        self.arms = ArmBalance.for_space(self.space)
        self.writer = _Writer(self.write, self.journal)

    @property
    def budget(self) -> int:
        """Mentees to plan: the space's number, or with `mentees: auto` what the time budget holds."""
        if self.mentee_budget is not None:
            return self.mentee_budget.mentees(self.summary)
        return int(self.space.budget.mentees)

    def _ask(self) -> None:
        with self.lock:
            # with a `target:` device, configs over its size budget are told to Optuna and asked again (never trained)
            trial, cfg = ask_fitting(self.study, self.space, self.tags, lambda: self.arms.ask(self.study, self.space))
            trial.set_user_attr("config", cfg.to_dict())
            withheld = trial.user_attrs.get(WITHHELD)
        if withheld:  # methods the ledger kept from this ask, and why: on its MLflow run too
            self.item_tags[str(trial.number)] = {"mentee.withheld": withheld}
        self.planned += 1
        self.queue_mentee(str(trial.number), WorkKind.SEARCHED, cfg, trial.number)
        self.add_twin(cfg)

    def queue_mentee(self, mentee_id: str, kind: WorkKind, cfg: MemberConfig, number: int | None = None) -> None:
        """Queue every seed of a mentee that is neither recorded nor held (a resume's partial mentee)."""
        for item in seed_items(mentee_id, kind, cfg, search_seeds(cfg, self.seeds), number):
            if not self.gather.holds(item.member_id):
                self.pending.append(item)

    def add_twin(self, cfg: MemberConfig) -> None:
        """Queue the independent twin of `cfg`'s architecture unless it has one already."""
        key = cfg.arch.key()
        if key in self.have_independent:
            return
        self.have_independent.add(key)
        if not cfg.independent:
            self.planned += 1
            self.queue_mentee(f"twin-{key}", WorkKind.TWIN, cfg.twin())

    @property
    def done(self) -> bool:
        """Nothing left to hand out, and nothing out that could still come back (or the tracking
        store is gone: what is out comes back into the journal, and the sweep stops)."""
        if self.writer.error is not None:
            return self.in_flight == 0
        return not self.pending and self.in_flight == 0 and self.planned >= self.budget

    def next_cohort(self) -> CohortSpec | None:
        """Whole mentees, up to `cohort_size` members (a mentee with more seeds than that goes alone)."""
        if self.writer.error is not None:  # results could not be written: train nothing more
            return None
        while len(self.pending) < self.cohort_size and self.planned < self.budget:
            self._ask()
        out: list[WorkItem] = []
        while self.pending:
            mentee = self.pending[0].mentee
            group = 0
            while group < len(self.pending) and self.pending[group].mentee == mentee:
                group += 1
            if out and len(out) + group > self.cohort_size:
                break
            out += [self.pending.popleft() for _ in range(group)]
        if not out:
            return None
        self.in_flight += 1
        return CohortSpec(tuple(out))

    def record(self, spec: CohortSpec, report: dict, ckpt_dir: str | None) -> None:
        """A cohort finished: journal its members, queue each whole mentee for the writer (weights
        read now, while the checkpoint directory is certain to exist)."""
        path = Path(ckpt_dir) / "weights.pt" if ckpt_dir else None
        import torch  # here, not at import: only a cohort's weights need it

        weights = torch.load(path, weights_only=True) if path is not None and path.exists() else {}
        rep = CohortReport.from_dict(report, weights, [w.member_id for w in spec.items])
        self.in_flight -= 1
        self.summary.trials += 1
        self.summary.trial_timings.append(rep.timing)
        self.summary.nodes[rep.node_id] += 1
        self.take([(item, res, rep.node_id) for item, res in zip(spec.items, rep.members)])

    def take(self, members: list[Member]) -> None:
        """Members back from training (or failed for good): kept in the journal, then their whole
        mentees handed to the writer."""
        groups = self.gather.add(members)
        self.summary.returned += sum(g[0][0].kind is not WorkKind.REEVAL for g in groups)
        self.writer.put_all(members, groups)

    def lost(self, spec: CohortSpec, error: str) -> None:
        """A trial died (its process or node lost) after Ray Tune's retries: its members go back
        in the queue, up to MAX_REQUEUES times each; after that they are recorded failed."""
        self.in_flight -= 1
        self.summary.trials += 1
        failed = []
        for item in reversed(spec.items):  # appendleft: the cohort's order (and its mentees) stays whole
            if self.requeues[item.member_id] < MAX_REQUEUES:
                self.requeues[item.member_id] += 1
                self.summary.requeued += 1
                self.pending.appendleft(item)
            else:
                failed.append((item, MemberResult(config=item.config, status=Status.FAILED, error=error[:500]), ""))
        if failed:
            self.take(failed)

    def write(self, groups: list[list[Member]], again: bool = False) -> None:
        """MLflow first (one bulk write for the batch), then Optuna: a mentee told to Optuna is
        always in MLflow, which is what resume relies on. Runs on the writer thread, so training
        never waits for it. A re-evaluation's seeds are added to their mentee's run. `again`: this
        batch failed before (a server that died mid-write may have stored some of it): what the
        store already holds is not written twice."""
        records = [MenteeRecord.of(g) for g in groups]
        held = self.tracker.recorded_mentees(self.parent_run_id) if again else {}
        new: list[tuple[MenteeRecord, dict[str, str] | None]] = []
        added: list[tuple[str, MenteeRecord]] = []
        for rec in records:
            if rec.mentee_id in held and (rec.kind is not WorkKind.REEVAL or set(rec.seeds) <= held[rec.mentee_id][1]):
                self.run_ids[rec.mentee_id] = held[rec.mentee_id][0]
                if rec.kind is not WorkKind.REEVAL:
                    new.append((rec, None))  # told to Optuna below, not written
                continue
            if rec.kind is WorkKind.REEVAL:
                added.append((self.run_ids[rec.mentee_id], rec))
                continue
            tags = {**self.tags, **self.item_tags.get(rec.mentee_id, {})}
            if rec.optuna_number is not None and self.arms.on:
                with self.lock:
                    tags["mentee.arm"] = self.arms.arm(self.study, rec.optuna_number) or ""
            elif rec.kind is WorkKind.TWIN:
                tags["mentee.arm"] = "independent"
            new.append((rec, tags))
        to_write = [(rec, tags) for rec, tags in new if tags is not None]
        for (rec, _), run_id in zip(to_write, self.tracker.log_mentees(self.parent_run_id, to_write)):
            self.run_ids[rec.mentee_id] = run_id
        self.tracker.add_seeds(self.parent_run_id, added)
        for rec, _ in new:
            if rec.optuna_number is not None:
                self.tell(rec.optuna_number, rec.status, rec.val_acc, rec.cost)
            if rec.status is Status.FINISHED:  # the searcher learns which mentor methods pay, seed by seed
                with self.lock:
                    self.arms.ledger.observe(rec.config, dict(zip(rec.seeds, rec.val_accs)))
        for rec in records:
            self._count(rec, rec.kind is not WorkKind.REEVAL)

    def tell(self, number: int, status: Status, val_acc: float, cost: dict) -> None:
        with self.lock:
            if status is Status.FINISHED:
                self.study.tell(number, [val_acc] + [cost[o] for o in self.space.objectives])
            else:  # a pruned member must never look finished to the sampler's front
                state = optuna.trial.TrialState.PRUNED if status is Status.PRUNED else optuna.trial.TrialState.FAIL
                self.study.tell(number, state=state)

    def _count(self, rec: MenteeRecord, new_mentee: bool) -> None:
        s = self.summary
        s.seeds_trained += len(rec.member_ids)
        s.mentee_samples += rec.seed_epochs * self.n_train  # every seed's work
        if not new_mentee:  # more seeds of a recorded mentee: work done, no new mentee
            if self.progress is not None:
                self.progress.advance(1, f"{s.seeds_trained} seeds trained")
            return
        s.recorded += 1
        s.counts[rec.status] += 1
        if self.progress is not None:
            if rec.status is Status.FINISHED:
                self.progress.best(rec.val_acc)  # a mentee's seed mean: the number every view shows
            self.progress.advance(1, f"{s.finished} finished, {s.pruned} pruned, {s.failed} failed")


@dataclass
class MenteeBudget:
    """`budget.mentees: auto`: as many mentees as the cluster trains in `budget.minutes`, measured as
    the sweep goes. Until a cohort is back, one wave (`first_wave` mentees); after, the mentees per
    second so far times the time left, less a share kept for re-evaluation (racing)."""

    minutes: float
    first_wave: int
    started: float = field(default_factory=time.monotonic)
    reserve: float = 0.2  # of the time: racing's extra seeds for the mentees near the front
    cap: int = 1_000_000
    base: int = 0  # mentees a resumed sweep had before this process: the budget is `minutes` more

    def mentees(self, summary: SweepSummary) -> int:
        # `returned`, not `recorded`: the writer thread may not have written the last cohort yet when
        # Tune asks for the next one, and a budget read off MLflow would end the sweep there
        elapsed, done = time.monotonic() - self.started, summary.returned
        if done <= self.base or elapsed <= 0:
            return self.base + self.first_wave
        rate = (done - self.base) / elapsed  # this process's own pace (a resumed sweep: since it resumed)
        left = self.minutes * 60 * (1 - self.reserve) - elapsed
        return min(self.cap, max(done, done + int(rate * max(left, 0.0))))


class _Writer:
    """One background thread that does the driver's slow writes in order, in batches: whatever
    whole mentees are waiting when it is free go to MLflow in one bulk write (so a cohort of 256
    costs one transaction, not 256 × 5 requests), while the next cohort trains. With a journal,
    each member is kept on disk first (`put_all`, on the caller's thread), so a tracking store that
    stops answering loses nothing: the writer waits for it with backoff while training goes on, up
    to OUTAGE_SECONDS; then it gives up (`error` is set, the driver hands out no more cohorts) and
    `close` raises TrackingUnavailable naming the journal. Any other failed write is re-raised by
    `close` as it is."""

    BATCH = 1024  # mentees a write at most: a bulk transaction stays well under a second

    def __init__(self, fn, journal: ResultJournal | None = None):
        self.fn, self.journal = fn, journal
        self.q: queue.Queue[list[Member] | None] = queue.Queue()  # a whole mentee's members; None: stop
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="mentee-writer", daemon=True)
        self.thread.start()

    def put_all(self, members: list[Member], groups: list[list[Member]]) -> None:
        """Keep `members` (journal), then queue `groups`: the mentees they completed."""
        if self.journal is not None:
            self.journal.add(members)  # on disk before anything else can go wrong; then never raises
        elif self.error is not None:
            raise self.error
        for g in groups:
            self.q.put(g)

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self.q.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.BATCH:
                try:
                    nxt = self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            if self.error is None:
                try:
                    self.write_now(batch)
                except BaseException as e:  # noqa: BLE001 - handed to the driver thread in close()
                    self.error = e

    def write_now(self, groups: list[list[Member]]) -> None:
        """Write whole mentees on this thread, waiting out an outage up to the bound (the writer's
        loop; resume replays the journal through it too); then forget their members in the journal."""
        since, delay = None, 1.0
        while True:
            try:
                self.fn(groups, since is not None)
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
            self.journal.done_all([item.member_id for g in groups for item, _, _ in g])

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        if self.journal is not None:
            self.journal.clear()  # everything is in MLflow
