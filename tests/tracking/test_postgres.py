"""PostgreSQL for real: Debian's `postgresql` server, a throwaway cluster started here (initdb + pg_ctl in a
temporary folder, on a free localhost port), a sweep written to it directly and through a real
`mlflow server --backend-store-uri postgresql://...`, read back the same both ways.

Skipped only where the server's binaries are missing and this is not CI (`apt-get install -y postgresql`);
under CI (CI=true) missing binaries fail the test."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from search.tracking import load_runs
from search.tracking.bulk import NewRun, create_runs, update_runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    """The folder of initdb and pg_ctl: Debian keeps them under /usr/lib/postgresql/<version>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


@pytest.fixture(scope="module")
def postgres():
    """`postgresql://mentee@127.0.0.1:PORT/mlflow` on a fresh cluster, stopped and removed at the end."""
    bin_dir = _pg_bin()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        why = "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install -y postgresql"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)
    # the server refuses to run as root: as root, the cluster belongs to Debian's `postgres` user
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="mentee-pg-"))  # not pytest's tmp_path: postgres must reach it
    data, port = root / "data", _free_port()
    if as_user:
        shutil.chown(root, "postgres")
    ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "mentee", "--auth=trust",
                        "-E", "UTF8"], check=True, capture_output=True)
        subprocess.run([*ctl, "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
                        f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True,
                       capture_output=True)
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mentee", "mlflow"],
                       check=True, capture_output=True)
        yield f"postgresql://mentee@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*ctl, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(postgres, mlflow_up):
    """A real `mlflow server` on the PostgreSQL store, in its own session (its workers outlive a plain kill)."""
    port, log = _free_port(), tempfile.TemporaryFile()
    MlflowClient(postgres).search_experiments()  # MLflow's tables made once, before the server opens them too
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1", "--default-artifact-root", tempfile.mkdtemp(prefix="mentee-art-")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        if not mlflow_up(url, proc, 120):
            log.seek(0)
            pytest.fail(f"mlflow server on PostgreSQL did not come up:\n{log.read().decode()[-3000:]}")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _mentee(i: int, parent: str, *, step: int = 0) -> NewRun:
    seeds = [0.6 + i / 1000, 0.62 + i / 1000]
    metrics = [("val_acc", sum(seeds) / 2, 0), ("val_acc_std", 0.014, 0), ("test_acc", 0.6, 0),
               ("n_seeds", 2.0, step), ("params", 500.0 + 10 * i, 0), ("bytes_int8", 600.0 + 10 * i, 0)]
    metrics += [(f"val_acc.s{s}", v, 0) for s, v in enumerate(seeds)]
    metrics += [("curve.val_acc", 0.1 * e, e) for e in range(10)]
    tags = {"mlflow.parentRunId": parent, "mentee.kind": "mentee", "mentee.member_id": str(i),
            "mentee.work": "searched", "mentee.arm": ("mentored", "independent")[i % 2],
            "mentee.status": "finished", "mentee.seeds": "0,1", "mentee.arch_key": f"conv1d-{i % 4}",
            "mentee.family": "conv1d"}
    params = {"arch.widths": f"{4 + i % 4}x8", "arch.kernel": "5", "independent": str(i % 2 == 1)}
    return NewRun(f"conv1d-{i}", tags, params, metrics, "FINISHED", 1_700_000_000_000 + i, 1_700_000_001_000 + i)


def _sweep(uri: str, name: str, n: int) -> tuple[str, str, list[str]]:
    """What a sweep's writer does: a parent run, its mentees in batches, then seeds added to some."""
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(name)
    parent = client.create_run(experiment_id, tags={"mentee.kind": "sweep"}).info.run_id
    ids: list[str] = []
    for start in range(0, n, 16):
        ids += create_runs(uri, experiment_id, [_mentee(i, parent) for i in range(start, min(start + 16, n))])
    update_runs(uri, [(run_id, [("val_acc.s2", 0.7, 0), ("n_seeds", 3.0, 0)], {"mentee.seeds": "0,1,2"})
                      for run_id in ids[:5]])
    client.set_terminated(parent)
    return experiment_id, parent, ids


def _same_but_ids(a: pd.DataFrame, b: pd.DataFrame) -> None:
    ignore = ["run_id", "parent_run_id", "experiment_id", "start_time"]
    pd.testing.assert_frame_equal(a.drop(columns=ignore), b.drop(columns=ignore))


def test_a_sweep_on_postgresql_directly_and_through_an_mlflow_server(postgres, server):
    direct = _sweep(postgres, "pg-direct", 40)
    served = _sweep(server, "pg-served", 40)
    frames = {"direct": load_runs(postgres, "pg-direct"), "served": load_runs(server, "pg-served"),
              "served, read directly": load_runs(postgres, "pg-served"),
              "direct, read through the server": load_runs(server, "pg-direct")}
    assert all(len(f) == 40 for f in frames.values())
    _same_but_ids(frames["direct"], frames["served"])
    pd.testing.assert_frame_equal(frames["served"], frames["served, read directly"])
    pd.testing.assert_frame_equal(frames["direct"], frames["direct, read through the server"])
    first = frames["direct"].set_index("run_id").loc[direct[2][0]]
    assert first["seeds"] == (0, 1, 2) and first["n_seeds"] == 3 and first["val_accs"][2] == 0.7
    assert MlflowClient(server).get_run(served[2][7]).data.tags["mentee.member_id"] == "7"


def test_a_failed_call_on_postgresql_leaves_nothing(postgres):
    client = MlflowClient(postgres)
    experiment_id = client.create_experiment("pg-fault")
    parent = client.create_run(experiment_id).info.run_id
    # a step beyond 64 bits fails in the database, after the runs, tags and params of the call went in
    with pytest.raises(MlflowException):
        create_runs(postgres, experiment_id, [_mentee(1, parent), _mentee(2, parent, step=2**70)])
    assert client.search_runs([experiment_id], "tags.`mentee.kind` = 'mentee'") == []
    assert len(create_runs(postgres, experiment_id, [_mentee(3, parent)])) == 1
