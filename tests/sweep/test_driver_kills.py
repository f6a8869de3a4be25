"""The sweep driver SIGKILLed at random moments, again and again, and resumed each time: nothing lost,
nothing trained twice, and resume never trips on what a kill left half-written.

A real `python -m search.cli sweep` subprocess joins a Ray started once (`ray start --head`, in a
private RAY_TMPDIR, found by RAY_ADDRESS=auto as the README says to), is killed at least
N_KILLS times and resumed with `--resume` until it exits 0. Kills land in three kinds of moment:
  start  a random time after launch (imports, ray.init, the mentor task, the parent run, the study);
  ask    just after the Optuna journal grew (an ask, a config stored, a tell);
  write  just after new child runs appeared in MLflow (mid bulk write, or between it and the tells).
After every kill the finished child runs are noted; at the end each must be unchanged.

    MENTEE_KILL_SEED=3 python -m pytest -q tests/sweep/test_driver_kills.py     # another schedule
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import psutil
import pytest
import yaml

from search.config import MemberConfig

REPO = Path(__file__).resolve().parents[2]
N_KILLS = 10
SEED = int(os.environ.get("MENTEE_KILL_SEED", "0"))
MODES = ("start", "write", "ask", "write", "start", "ask", "write", "ask", "start", "write")
SPACE = {
    "name": "kills",
    "dataset": {"name": "mnist1d", "n_samples": 400},
    "mentor": {"arch": {"family": "conv1d", "widths": [8, 8, 8], "kernel": 5, "batch_norm": True}, "epochs": 1,
               "path": "m.pt"},
    "mentee": {"family": "conv1d", "depth": [1, 2], "width": [4, 8], "growth": 1, "kernel": 5},
    "mapping": {"taps": {"last": ["none", "layer3"]}},
    # small batches: a cohort trains for a second or two, so kills land mid-training as well
    "train": {"epochs": 2, "batch_size": 32},
    # enough mentees that ten kills land before the sweep ends even on a fast machine (CI once
    # finished 24 mentees after nine kills); each kill waits for at most ~3 runs of progress. Two
    # seeds a mentee, two mentees a cohort: a kill can land between a mentee's seeds too
    "budget": {"mentees": 40, "cohort_size": 4, "seeds": 2},
}


def _session(sid: int) -> list[psutil.Process]:
    """Live processes of session `sid` (Ray's daemons leave the process group, not the session)."""
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.Error, OSError):
            pass
    return out


def _kill_session(sid: int, grace: float) -> None:
    for p in _session(sid):
        try:
            p.terminate()
        except psutil.Error:
            pass
    deadline = time.monotonic() + grace
    while _session(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for p in _session(sid):
        try:
            p.kill()
        except psutil.Error:
            pass


def _trial_processes(sid: int) -> list[psutil.Process]:
    """Ray Tune trial actors (`ray::ImplicitFunc...`) on the head: the raylet's workers, in its session."""
    out = []
    for p in _session(sid):
        try:
            if "ImplicitFunc" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` in its own session and its own RAY_TMPDIR (so RAY_ADDRESS=auto finds
    this cluster and no other engineer's); the whole session is stopped at the end."""
    tmp = Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["RAY_TMPDIR"] = str(tmp)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp / "head.log", "wb")
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-cpus", "2",
           "--port", str(port), "--include-dashboard", "false", "--disable-usage-stats"]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while b"Ray runtime started" not in (tmp / "head.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start failed:\n{(tmp / 'head.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield {"env": env, "sid": proc.pid, "tmp": tmp}
    finally:
        _kill_session(proc.pid, grace=5)
        proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)  # Ray's session files: logs, sockets


@pytest.fixture(scope="module")
def mentor_file(tmp_path_factory) -> Path:
    from search.config import ArchConfig
    from search.data import load_dataset
    from search.train.mentor import train_mentor

    path = tmp_path_factory.mktemp("mentor") / "m.pt"
    splits = load_dataset("mnist1d", n_samples=400, seed=0)
    train_mentor(ArchConfig("conv1d", (8, 8, 8), 5, True), splits, epochs=1, out=path)
    return path


def _query(db: Path, sql: str, *, driver_alive: bool) -> list[tuple]:
    """Rows straight from MLflow's sqlite file. While a driver runs: read-only, and nothing (not an
    error) if the file or its tables are not there yet or are locked. Between drivers: a normal
    connection, which rolls back what a killed driver's open transaction left (a hot journal),
    as the next driver's own connection would."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro" if driver_alive else f"file:{db}", uri=True) as c:
            return c.execute(sql).fetchall()
    except sqlite3.Error:
        if not driver_alive:
            raise
        return []


def _runs(db: Path, *, driver_alive: bool = False) -> list[tuple]:
    """(run_id, status, lifecycle_stage, start_time, member_id or None) of every child run, deleted ones too."""
    return _query(db, "select r.run_uuid, r.status, r.lifecycle_stage, r.start_time, m.value from runs r "
                      "join tags k on k.run_uuid = r.run_uuid and k.key = 'mlflow.parentRunId' "
                      "left join tags m on m.run_uuid = r.run_uuid and m.key = 'mentee.member_id'",
                  driver_alive=driver_alive)


def _parent_status(db: Path) -> str | None:
    rows = _query(db, "select r.status from runs r join tags t on t.run_uuid = r.run_uuid "
                      "where t.key = 'mentee.kind' and t.value = 'sweep'", driver_alive=False) \
        if db.exists() and _query(db, "select name from sqlite_master where name = 'runs'", driver_alive=False) \
        else []
    assert len(rows) <= 1, f"a resumed sweep started a second parent run: {rows}"
    return rows[0][0] if rows else None


def _journaled(root: Path) -> dict[str, float]:
    """member id → train_seconds of each result a driver's result journal holds and has not marked written."""
    out: dict[str, float] = {}
    for f in root.glob("*/results.jsonl"):
        for line in f.read_text().splitlines():
            try:
                e = json.loads(line)
            except ValueError:  # the line a kill cut
                continue
            if e["op"] == "result":
                out[e["member_id"]] = e["result"]["train_seconds"]
            else:
                out.pop(e["member_id"], None)
    return out


def _train_seconds(db: Path) -> dict[str, float]:
    return dict(_query(db, "select m.value, l.value from runs r join tags m on m.run_uuid = r.run_uuid and "
                           "m.key = 'mentee.member_id' join latest_metrics l on l.run_uuid = r.run_uuid and "
                           "l.key = 'train_seconds' where r.lifecycle_stage = 'active'", driver_alive=False))


def _wait_for(cond, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll `cond` every 20 ms until it holds (True), `timeout` passes or `proc` exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        if cond():
            return True
        time.sleep(0.02)
    return False


def _grows(path: Path, times: int):
    """A condition that holds once `path` has grown `times` times since it was made."""
    sizes = [path.stat().st_size if path.exists() else 0]

    def grew() -> bool:
        size = path.stat().st_size if path.exists() else 0
        if size > sizes[-1]:
            sizes.append(size)
        return len(sizes) > times
    return grew


@pytest.fixture(scope="module")
def killed_ten_times(ray_head, mentor_file, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kills")
    (tmp / "space.yaml").write_text(yaml.safe_dump({**SPACE, "mentor": {**SPACE["mentor"], "path": str(mentor_file)}}))
    db, journal = tmp / "mlflow.db", tmp / "runs" / "kills" / "optuna.journal"
    env = {**ray_head["env"], "RAY_ADDRESS": "auto", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get(
        "PYTHONPATH", "")}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "search.cli", "sweep", "space.yaml", "--tracking-uri", f"sqlite:///{db}",
           "--workdir", "runs"]
    rng = random.Random(SEED)
    kills, launches, recorded_at_kill, journaled_at_kill, leftovers = [], 0, {}, {}, []
    t0 = time.monotonic()
    while True:
        assert time.monotonic() - t0 < 600, f"the driver did not finish within 10 min; kills: {kills}"
        resume = _parent_status(db) is not None  # before the parent run exists there is nothing to resume
        log_path = tmp / f"launch{launches}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd + (["--resume"] if resume else []), cwd=tmp, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        launches += 1
        mode = MODES[len(kills) % len(MODES)] if len(kills) < N_KILLS else None
        if mode == "start":  # a random moment, but before the sweep has moved on by 3 runs: a fast
            # machine resumes, writes what the last driver journaled and trains on within those seconds
            n = len(_runs(db, driver_alive=True)) + 3
            _wait_for(lambda n=n: len(_runs(db, driver_alive=True)) >= n, rng.uniform(1.0, 12.0), proc)
            fired = True  # unless the driver has exited (checked below)
        elif mode == "write":  # the k-th new child run: the ones before it are recorded, it is mid-log
            n = len(_runs(db, driver_alive=True)) + rng.randint(1, 3)
            fired = _wait_for(lambda n=n: len(_runs(db, driver_alive=True)) >= n, 120, proc)
            time.sleep(rng.uniform(0.0, 0.15))
        elif mode == "ask":  # the k-th growth of the journal: asks, configs stored and tells are ms apart
            fired = _wait_for(_grows(journal, rng.randint(1, 5)), 120, proc)
        else:
            fired = False
        if fired and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append((mode, round(time.monotonic() - t0, 1), len(_runs(db))))
            # what is recorded now must never change: same run, same start time
            for run_id, status, stage, start, member in _runs(db):
                if status != "RUNNING" and stage == "active":
                    recorded_at_kill.setdefault(run_id, (member, start, status))
            # trained results the driver kept on disk, not (or not known to be) in MLflow yet
            journaled_at_kill.update(_journaled(tmp / "runs" / "kills" / "journal"))
            # the killed driver's trial actors die with its Ray job: they must not hold the CPUs
            if not _wait_for(lambda: not _trial_processes(ray_head["sid"]), 20):
                leftovers.append([p.pid for p in _trial_processes(ray_head["sid"])])
            continue
        proc.wait(timeout=300)
        out = log_path.read_text()
        if proc.returncode == 2 and "no unfinished sweep" in out and _parent_status(db) == "FINISHED":
            break  # killed after the sweep was marked finished, before the process exited
        assert proc.returncode == 0, f"launch {launches} (resume={resume}) exited {proc.returncode}:\n{out[-4000:]}"
        break
    logs = "\n".join(p.read_text() for p in sorted(tmp.glob("launch*.log")))
    return {"tmp": tmp, "db": db, "journal": journal, "kills": kills, "launches": launches,
            "recorded_at_kill": recorded_at_kill, "journaled_at_kill": journaled_at_kill, "leftovers": leftovers,
            "logs": logs,
            "seconds": time.monotonic() - t0, "final_log": log_path.read_text()}


def _study(r) -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(r["journal"])))
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def test_killed_at_least_ten_times_within_bounds(killed_ten_times):
    r = killed_ten_times
    assert len(r["kills"]) >= N_KILLS, r["kills"]
    assert {m for m, *_ in r["kills"]} == {"start", "ask", "write"}
    print(f"\n{len(r['kills'])} kills (mode, s, child runs by then), {r['launches']} launches, {r['seconds']:.0f} s, "
          f"{len(_runs(r['db']))} child runs in the end: {r['kills']}")


def test_every_planned_mentee_has_exactly_one_finished_run(killed_ten_times):
    r = killed_ten_times
    runs = _runs(r["db"])
    active = [x for x in runs if x[2] == "active"]
    assert all(status == "FINISHED" for _, status, _, _, _ in active), [x for x in active if x[1] != "FINISHED"]
    members = [m for *_, m in active]
    assert None not in members and len(members) == len(set(members)), "a member has two runs"
    study = _study(r)
    trials = [t for t in study.trials if "config" in t.user_attrs]
    searched = {m for m in members if not m.startswith("twin-")}
    assert searched == {str(t.number) for t in trials}  # each Optuna trial ↔ one run, and back
    assert len(members) >= SPACE["budget"]["mentees"]
    # twins only for architectures Optuna proposed mentored, and every mentored one has an independent run
    configs = {str(t.number): MemberConfig.from_dict(t.user_attrs["config"]) for t in trials}
    mentored = {c.arch.key() for c in configs.values() if not c.independent}
    independent = {c.arch.key() for c in configs.values() if c.independent}
    twins = {m[len("twin-"):] for m in members if m.startswith("twin-")}
    assert twins <= mentored and mentored <= twins | independent


def test_optuna_holds_each_member_once_and_told(killed_ten_times):
    study = _study(killed_ten_times)
    for t in study.trials:
        assert t.state != optuna.trial.TrialState.RUNNING, f"trial {t.number} left running"
        if "config" in t.user_attrs:
            assert t.state == optuna.trial.TrialState.COMPLETE and len(t.values) == 2
        else:  # asked, then the driver died before its config was stored: failed, never trained
            assert t.state == optuna.trial.TrialState.FAIL


def test_nothing_recorded_was_trained_again(killed_ten_times):
    r = killed_ten_times
    now = {run_id: (member, start, status) for run_id, status, stage, start, member in _runs(r["db"])
           if stage == "active"}
    assert r["recorded_at_kill"], "no kill landed after a run was recorded"
    for run_id, before in r["recorded_at_kill"].items():
        assert now.get(run_id) == before, f"run {run_id} of member {before[0]} changed or vanished"
    # runs per member, deleted ones included: a second run only where the first was cut off mid-log
    by_member: dict[str, list[tuple]] = {}
    for _, status, stage, _, member in _runs(r["db"]):
        by_member.setdefault(member, []).append((status, stage))
    for member, rs in by_member.items():
        ended = [x for x in rs if x[0] != "RUNNING"]
        assert len(ended) <= 1 or member is None, f"member {member} was recorded twice: {rs}"


def test_results_kept_at_a_kill_are_written_not_retrained(killed_ten_times):
    """What a killed driver had trained and journaled is written by the next one, as it was: a
    retrained member would have another train_seconds. Once all is in MLflow the journal is gone."""
    r = killed_ten_times
    assert r["journaled_at_kill"], "no kill left a trained result in the journal"
    seconds = _train_seconds(r["db"])
    # the journal keeps seed members (`3@s1`); a mentee's run holds its seeds' training time summed
    by_mentee: dict[str, dict[str, float]] = {}
    for member, kept in r["journaled_at_kill"].items():
        by_mentee.setdefault(member.split("@")[0], {})[member] = kept
    whole = {m: sum(v.values()) for m, v in by_mentee.items() if len(v) == SPACE["budget"]["seeds"]}
    assert whole, by_mentee
    for mentee, kept in whole.items():
        assert seconds[mentee] == pytest.approx(kept), f"mentee {mentee} was trained again"
    assert not (r["tmp"] / "runs" / "kills" / "journal").exists() or not _journaled(
        r["tmp"] / "runs" / "kills" / "journal")


def test_trial_processes_die_with_the_driver(killed_ten_times):
    assert killed_ten_times["leftovers"] == []


def test_quiet_and_resumable_output(killed_ten_times):
    r = killed_ten_times
    assert "Traceback" not in r["logs"], r["logs"][-4000:]
    assert "Token authentication is enabled" not in r["logs"]  # Ray's notice, silenced; auth stays on
    assert "done in" in r["final_log"] or "no unfinished sweep" in r["final_log"]


# ------------------------------------------- what a kill can leave in the study's journal, made on purpose

def test_a_killed_lock_holder_does_not_block_the_journal(tmp_path):
    """A process SIGKILLed while it holds the journal's lock: the next driver appends at once
    (Optuna's own lock file would make it wait 30 s, then warn)."""
    from search.sweep.resume import journal_storage

    journal = tmp_path / "optuna.journal"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from search.sweep.resume import FlockLock; "
        f"FlockLock(Path({str(journal)!r})).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == b"held"
    holder.kill()
    holder.wait()
    t = time.perf_counter()
    study = optuna.create_study(storage=journal_storage(journal), study_name="s")
    study.tell(study.ask(), 1.0)
    assert time.perf_counter() - t < 5
    assert len(optuna.load_study(study_name="s", storage=journal_storage(journal)).trials) == 1


def test_a_torn_last_line_is_cut_before_the_next_append(tmp_path):
    from search.sweep.resume import journal_storage

    journal = tmp_path / "optuna.journal"
    study = optuna.create_study(storage=journal_storage(journal), study_name="s")
    study.tell(study.ask(), 1.0)
    good = journal.read_bytes()
    with open(journal, "ab") as f:  # what a kill in the middle of an append leaves
        f.write(b'{"op_code": 4, "worker_id": "x", "study_id": 0, "datetime_st')
    study = optuna.load_study(study_name="s", storage=journal_storage(journal))
    assert journal.read_bytes() == good
    study.tell(study.ask(), 2.0)
    again = optuna.load_study(study_name="s", storage=journal_storage(journal))
    assert [t.values for t in again.trials] == [[1.0], [2.0]]
