"""Tracking-store faults, caused for real: an `mlflow server` killed mid-sweep and started again on the
same port, and two sweeps writing one sqlite file at once. Nothing trained may be lost.

Sweeps run as a user runs them (`python -m search.cli sweep`), joining one Ray started for this module
(`ray start --head` in a private RAY_TMPDIR, found by RAY_ADDRESS=auto). Bounds are cut for the test
through the environment: MENTEE_TRACKING_RETRY_S (one call's retries), MENTEE_TRACKING_OUTAGE_S (how
long the driver keeps results in its journal, waiting for the store, before it stops).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _space(name: str, mentor: Path, mentees: int) -> dict:
    return {"name": name, "dataset": {"name": "mnist1d", "n_samples": 400},
            "mentor": {"arch": {"family": "conv1d", "widths": [8, 8, 8], "kernel": 5, "batch_norm": True},
                       "epochs": 1, "path": str(mentor)},
            "mentee": {"family": "conv1d", "depth": [1, 2], "width": [4, 8], "growth": 1, "kernel": 5},
            "mapping": {"taps": {"last": ["none", "layer3"]}},
            "train": {"epochs": 2, "batch_size": 32}, "budget": {"mentees": mentees, "cohort_size": 2}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_session(sid: int) -> None:
    """SIGKILL every process of session `sid` (a server's or Ray's workers leave the process group)."""
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                p.kill()
        except (psutil.Error, OSError):
            pass


def _wait(cond, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            died = proc is not None and proc.poll() is not None
            tail = f" (exit {proc.returncode}):\n{proc.stderr.read()[-3000:]}" if died and proc.stderr else ""
            pytest.fail(f"{what}: not within {timeout:g} s{tail}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def ray_head():
    tmp = Path(tempfile.mkdtemp(prefix="ro", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "MLFLOW_TRACKING_URI")}
    env["RAY_TMPDIR"] = str(tmp)
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-cpus", "2",
           "--port", str(_free_port()), "--include-dashboard", "false", "--disable-usage-stats"]
    with open(tmp / "head.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(lambda: b"Ray runtime started" in (tmp / "head.log").read_bytes(), 90, "ray start", proc)
        yield {**env, "RAY_ADDRESS": "auto", "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", "")}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        _stop_session(proc.pid)
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)  # Ray's session files: logs, sockets


@pytest.fixture(scope="module")
def mentor_file(tmp_path_factory) -> Path:
    from search.config import ArchConfig
    from search.data import load_dataset
    from search.train.mentor import train_mentor

    path = tmp_path_factory.mktemp("mentor") / "m.pt"
    train_mentor(ArchConfig("conv1d", (8, 8, 8), 5, True), load_dataset("mnist1d", n_samples=400, seed=0),
                 epochs=1, out=path)
    return path


class Server:
    """A real `mlflow server` on sqlite (one uvicorn worker, no job runner: it answers in seconds),
    in its own session; `kill` stops the whole session at once, `start` brings it back on the same port."""

    def __init__(self, root: Path) -> None:
        self.root, self.port, self.proc, self.starts = root, _free_port(), None, 0
        self.db = root / "srv.db"
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.db}",
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.root / f"server{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        _wait(self.healthy, 90, "mlflow server start", self.proc)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        _stop_session(self.proc.pid)
        self.proc.wait()

    def children(self) -> list[tuple]:
        """(status, lifecycle_stage, member_id, train_seconds) of every mentee run, read from its file."""
        try:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as c:
                return c.execute(
                    "select r.status, r.lifecycle_stage, m.value, (select value from latest_metrics l where "
                    "l.run_uuid = r.run_uuid and l.key = 'train_seconds') from runs r "
                    "join tags k on k.run_uuid = r.run_uuid and k.key = 'mentee.kind' and k.value = 'mentee' "
                    "left join tags m on m.run_uuid = r.run_uuid and m.key = 'mentee.member_id'").fetchall()
        except sqlite3.Error:
            return []


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "srv")
    srv.root.mkdir()
    srv.start()
    yield srv
    srv.kill()


def _pending(journal_root: Path) -> dict[str, float]:
    """member id → train_seconds of the results a driver's journal holds and MLflow did not have."""
    out: dict[str, float] = {}
    for f in journal_root.glob("*/results.jsonl"):
        for line in f.read_text().splitlines():
            e = json.loads(line)
            if e["op"] == "result":
                out[e["member_id"]] = e["result"]["train_seconds"]
            else:
                out.pop(e["member_id"], None)
    return out


def test_an_mlflow_outage_loses_nothing(ray_head, mentor_file, server, tmp_path):
    """The server dies mid-sweep and stays away past the bound: the sweep stops cleanly (exit 75, one
    line saying how to resume) with its results in the journal. Back up, `--resume` writes them first
    (never retrained), and a second, shorter outage during the resumed sweep is waited out."""
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(_space("outage", mentor_file, 12)))
    cmd = [sys.executable, "-m", "search.cli", "sweep", "space.yaml", "--tracking-uri", server.url, "--workdir", "runs"]
    env = {**ray_head, "MENTEE_TRACKING_RETRY_S": "2", "MENTEE_TRACKING_OUTAGE_S": "15"}
    journal = tmp_path / "runs" / "outage" / "journal"

    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: len(server.children()) >= 2, 180, "two child runs", first)
    server.kill()
    out, err = first.communicate(timeout=240)
    assert first.returncode == 75, f"exit {first.returncode}\n{err[-3000:]}"
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: MLflow at " + server.url) and "--resume" in last and str(journal) in last
    assert "Traceback" not in out + err, err[-3000:]
    kept = _pending(journal)
    assert kept, "nothing was trained while MLflow was down"

    server.start()
    env = {**env, "MENTEE_TRACKING_OUTAGE_S": "120"}
    second = subprocess.Popen(cmd + ["--resume"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    before = {m for s, st, m, _ in server.children() if st == "active" and s != "RUNNING"}
    _wait(lambda: {m for s, st, m, _ in server.children() if s == "FINISHED"} - before, 180, "a resumed write",
          second)
    server.kill()  # a second outage, shorter than the bound this time
    time.sleep(3)
    server.start()
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, f"exit {second.returncode}\n{err[-3000:]}"
    assert "Traceback" not in out + err, err[-3000:]
    assert "until it answers" in err, err[-3000:]  # the resumed driver did meet the second outage

    runs = server.children()
    active = [r for r in runs if r[1] == "active"]
    assert all(r[0] == "FINISHED" for r in active), active
    members = [r[2] for r in active]
    assert len(members) == len(set(members)) and len(members) >= 12, sorted(members)
    by_member = {r[2]: float(r[3]) for r in active}
    # the journal keeps seed members (`3@s1`); a mentee's run holds its seeds' training time summed
    seeds_kept: dict[str, list[float]] = {}
    for member, seconds in kept.items():
        seeds_kept.setdefault(member.split("@")[0], []).append(seconds)
    whole = {m: sum(v) for m, v in seeds_kept.items() if len(v) == 2}  # both seeds (CPU default) kept
    assert whole, seeds_kept
    for mentee, seconds in whole.items():  # written from the journal, not trained again
        assert by_member[mentee] == pytest.approx(seconds), mentee
    assert not journal.exists() or not _pending(journal)


def test_two_sweeps_at_once_on_one_sqlite_file(ray_head, mentor_file, tmp_path):
    """Two drivers create and write one new sqlite store at the same moment: no migration race, no
    "database is locked", every run present in both experiments."""
    db = tmp_path / "mlflow.db"
    procs = []
    for name in ("left", "right"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(_space(name, mentor_file, 6)))
        cmd = [sys.executable, "-m", "search.cli", "sweep", f"{name}.yaml", "--tracking-uri", f"sqlite:///{db}",
               "--workdir", f"runs-{name}"]
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=ray_head, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        assert "database is locked" not in err and "Traceback" not in err, err[-3000:]

    from search.tracking import load_runs

    for name in ("left", "right"):
        runs = load_runs(f"sqlite:///{db}", name)
        assert len(runs) >= 6 and runs.member_id.is_unique and (runs.status == "finished").all()
        assert runs.parent_run_id.nunique() == 1


# ------------------------------------------------------------ the pieces, fast

STORE_WRITER = """
import sys, time
from pathlib import Path
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
from search.config import ArchConfig, MemberConfig, MemberResult, Status
from search.tracking import SweepTracker
tracker = SweepTracker(sys.argv[1], sys.argv[3])
parent = tracker.start_sweep(sys.argv[3], {"budget": 5}, {})
cfg = MemberConfig(ArchConfig("conv1d", (4,), 5, False))
for i in range(5):
    tracker.log_member(parent, MemberResult(cfg, Status.FINISHED, 0.5, 0.5, 1), tags={}, member_id=str(i))
tracker.finish_sweep(parent)
"""


def test_a_new_sqlite_store_opened_by_three_processes_at_once(tmp_path):
    """MLflow creates a sqlite store's tables on first open; three processes doing it at once used to
    leave the file unreadable for good (alembic: "table ... already exists", mlflow #4123)."""
    from search.tracking import load_runs

    uri, go = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, "-c", STORE_WRITER, uri, str(go), f"e{i}"], env=env,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    time.sleep(3)  # all three imported and waiting
    go.touch()
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read()[-3000:]
    for i in range(3):
        assert sorted(load_runs(uri, f"e{i}").member_id) == ["0", "1", "2", "3", "4"]


def test_retry_waits_out_transient_errors_only(monkeypatch):
    from mlflow.exceptions import MlflowException

    from search.tracking import TrackingUnavailable
    from search.tracking.retry import call, transient

    locked = MlflowException("(sqlite3.OperationalError) database is locked", error_code="TEMPORARILY_UNAVAILABLE")
    refused = MlflowException("API request to http://127.0.0.1:1/api/2.0/mlflow/runs/create failed with exception "
                              "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded")
    missing = MlflowException("Run 'x' not found", error_code="RESOURCE_DOES_NOT_EXIST")
    assert transient(locked) and transient(refused) and not transient(missing) and not transient(ValueError("x"))

    calls = []

    def flaky(n):
        calls.append(n)
        if len(calls) < 3:
            raise locked
        return n

    assert call(flaky, 7, what="flaky", uri="sqlite:///x.db", seconds=10) == 7 and len(calls) == 3
    with pytest.raises(MlflowException, match="not found"):  # at once, not after the bound
        call(lambda: (_ for _ in ()).throw(missing), what="get", uri="u", seconds=60)
    t = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=r"MLflow at http://h:1 did not answer for 1 s \(create_run: API"):
        call(lambda: (_ for _ in ()).throw(refused), what="create_run", uri="http://h:1", seconds=1)
    assert time.monotonic() - t < 3


def test_result_journal_survives_a_reopen_and_a_torn_line(tmp_path):
    import torch

    from search.config import ArchConfig, MemberConfig, MemberResult, Status, WorkItem, WorkKind
    from search.tracking import ResultJournal

    cfg = MemberConfig(ArchConfig("conv1d", (4,), 5, False))
    items = [(WorkItem(str(i), WorkKind.SEARCHED, cfg, i),
              MemberResult(cfg, Status.FINISHED, 0.1 * i, 0.2, 2, {"val_acc": [0.1, 0.2]}, {"params": 9.0}, 1.5,
                           {"w": torch.full((2,), float(i))}), "node") for i in range(3)]
    j = ResultJournal(tmp_path / "j")
    j.add(items)
    j.done("1")
    with open(j.path, "ab") as f:
        f.write(b'{"op": "done", "memb')  # a kill mid-append
    again = ResultJournal(tmp_path / "j")
    pending = again.pending()
    assert [it.member_id for it, _, _ in pending] == ["0", "2"]
    item, res, node = pending[1]
    assert item == items[2][0] and node == "node" and res.val_acc == pytest.approx(0.2)
    assert res.curves == {"val_acc": [0.1, 0.2]} and torch.equal(res.state_dict["w"], torch.full((2,), 2.0))
    again.done("0")
    again.done("2")
    assert len(ResultJournal(tmp_path / "j")) == 0  # the torn line was cut, not glued to the next one
    again.clear()
    assert not (tmp_path / "j").exists()
