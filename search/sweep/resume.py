"""Rebuild a driver's queue and counts after an interruption, from the Optuna study and MLflow.

    storage = journal_storage(work / "optuna.journal")     # the study's file, safe after a kill
    recorded = tracker.existing_member_ids(parent)         # deletes child runs cut off mid-log
    resume_state(driver, recorded | replay_journal(driver, recorded))

MLflow is the record: a mentee is done when its child run ended (FINISHED, KILLED for
pruned, FAILED); its tag `mentee.seeds` says which seed members it holds. What the
interruption may have left half-done is repaired, never trusted: a child run still
RUNNING (the driver died while logging it) is deleted; a seed the driver's journal kept
(`search.tracking.journal`: trained, not yet in MLflow when MLflow stopped answering or
the driver died) is never trained again — a mentee whose seeds are all kept is written now,
one with seeds missing trains only those; a seed with neither is trained again; an Optuna
trial asked but never given its config is failed and asked anew; a mentee recorded in
MLflow but not told to Optuna is told now.

The study's journal survives a SIGKILL too: its lock is an flock, which the kernel drops when
the holder dies (Optuna's own lock file would outlive a killed driver and make the next one
wait 30 s), and a last line cut off mid-write is removed before anything is appended to it.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import optuna

from search.config import MemberConfig, Status, WorkKind
from search.sweep.driver import Driver
from search.tracking import load_runs

__all__ = ["journal_storage", "replay_journal", "resume_state"]


def resume_state(driver: Driver, recorded: set[str]) -> None:
    """Rebuild the driver's queue and counts; `recorded`: member ids with an ended child run."""
    frame = load_runs(driver.tracker.uri, parent_run_id=driver.parent_run_id)
    frame = frame[frame["member_id"].isin(recorded)]
    by_member = {r["member_id"]: r for _, r in frame.iterrows()}
    s = driver.summary
    s.recorded = s.returned = len(by_member)
    if driver.mentee_budget is not None:  # `mentees: auto`: this process fills its own minutes
        driver.mentee_budget.base = s.recorded
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
        else:  # every seed the journal does not hold is trained (again)
            driver.queue_mentee(mid, WorkKind.SEARCHED, cfg, t.number)
    for cfg in mentored:  # twins asked for but never recorded are trained now
        driver.add_twin(cfg)


def replay_journal(driver: Driver, recorded: set[str]) -> set[str]:
    """Write to MLflow (then tell Optuna) what the driver's result journal kept and MLflow lacks: members
    trained before an MLflow outage or a kill, never trained again. `recorded`: mentee and member ids
    with an ended child run. A mentee whose seeds are all kept is written now; the seeds of one that is
    not whole stay with the driver (`driver.gather`), and only its missing seeds are trained. Returns
    the mentee ids written now."""
    written: set[str] = set()
    if driver.journal is None:
        return written
    frame = load_runs(driver.tracker.uri, parent_run_id=driver.parent_run_id)
    driver.run_ids.update(zip(frame["member_id"], frame["run_id"]))  # re-evaluation adds seeds to these
    members = []
    for item, res, node_id in driver.journal.pending():
        if item.member_id in recorded:  # written, then the driver died before noting it
            driver.journal.done(item.member_id)
        else:
            members.append((item, res, node_id))
    groups = driver.gather.add(members)
    if groups:
        driver.writer.write_now(groups)  # MLflow then Optuna, waiting out an outage
    written.update(g[0][0].mentee for g in groups)
    return written


def journal_storage(path: Path) -> optuna.storages.BaseStorage:
    """Optuna's journal file at `path`: every ask and tell appended and fsynced, under a lock that a
    killed process never leaves behind; a torn last line (a kill mid-append) is cut off first."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    lock = FlockLock(path)
    lock.acquire()
    try:
        _cut_torn_tail(path)
    finally:
        lock.release()
    # FlockLock has the acquire/release Optuna calls; its base class (BaseJournalFileLock) is private
    return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))  # type: ignore[arg-type]


class FlockLock:
    """An exclusive flock on `<journal>.flock`, for Optuna's JournalFileBackend (it calls acquire and
    release around each append). Drivers of other sweeps sharing the journal wait on it as on
    Optuna's lock; a dead holder's lock is gone with its process."""

    def __init__(self, journal: Path) -> None:
        self.path = Path(f"{journal}.flock")
        self._threads = threading.Lock()  # flock is per open file: threads of one driver queue here first
        self._fd: int | None = None

    def acquire(self) -> bool:
        self._threads.acquire()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        try:
            if fd is not None:
                os.close(fd)  # closing the only descriptor drops the flock
        finally:
            self._threads.release()


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline: Optuna skips it while it is last, but the next append
    would glue a good line to it and make the whole journal unreadable."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        end, chunk = size, 1 << 16
        while end > 0:  # back from the end to the last newline
            start = max(0, end - chunk)
            f.seek(start)
            nl = f.read(end - start).rfind(b"\n")
            if nl >= 0:
                f.truncate(start + nl + 1)
                return
            end = start
        f.truncate(0)
