"""Several Ray nodes on one machine (`ray.cluster_utils.Cluster`): a head that runs no trials,
two worker nodes, a driver that never trains — and a worker node lost mid-sweep.

The head has 0 CPUs, as `cluster.yaml`'s head has: the mentor task and every cohort must run
on the workers. Losing a node costs time, never mentees: Tune retries the trial elsewhere and
the driver queues again what a dead trial held.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psutil
import pytest
import yaml

from search.spaces import load_space
from search.sweep.faults import NODE_DIED
from search.tracking import load_runs

SPACE = {
    "dataset": {"name": "mnist1d", "n_samples": 400},
    "mentor": {"arch": {"family": "conv1d", "widths": [8, 8, 8], "kernel": 5, "batch_norm": True}, "epochs": 1},
    "mentee": {"family": "conv1d", "depth": [1, 2], "width": [4, 8], "growth": 1, "kernel": 5},
    "terms": {"hint": {"taps": {"last": ["none", "layer3"]}}},
    "train": {"epochs": 3},
    "budget": {"mentees": 12, "cohort_size": 3, "concurrency": "auto"},
}


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # this test needs its own Ray: a head and two workers
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    try:
        yield c, nodes
    finally:  # the cluster goes even if disconnecting fails: a head left running would be joined by later
        try:  # tests' sweeps (its address file is the machine's last), which would then wait on 0 CPUs
            ray.shutdown()
        finally:
            c.shutdown()


def _space(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "name": name, "mentor": {**SPACE["mentor"],
                                                                       "path": str(tmp_path / "m.pt")}}))
    return load_space(path)


def _trials_on(node) -> list[psutil.Process]:
    """Trial processes (`ray::ImplicitFunc`) that `node`'s raylet started."""
    import ray._private.ray_constants as rc

    raylet = psutil.Process(node.all_processes[rc.PROCESS_TYPE_RAYLET][0].process.pid)
    out = []
    for p in raylet.children(recursive=True):
        try:
            if "ImplicitFunc" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:  # a worker that ended (a zombie) while we looked
            pass
    return out


def test_cohorts_run_on_both_workers_and_the_driver_never_trains(cluster, tmp_path, monkeypatch):
    import search.sweep.mentor as mentor_room
    from search.sweep.run import run_sweep

    c, workers = cluster
    tasks: list[dict] = []  # what the mentor's Ray task returned (the real result, recorded on its way)
    run_task = mentor_room._run_task
    monkeypatch.setattr(mentor_room, "_run_task", lambda *a, **k: tasks.append(run_task(*a, **k)) or tasks[-1])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    s = run_sweep(_space(tmp_path, "two-nodes"), tracking_uri=uri, address=c.address, workdir=tmp_path / "runs",
                  show_progress=False)
    runs = load_runs(uri, parent_run_id=s.parent_run_id)
    assert s.finished == len(runs) == 12 and (runs.status == "finished").all() and runs.member_id.is_unique
    worker_ids, head_id = {n.node_id for n in workers}, c.head_node.node_id
    assert set(runs.node_id) == set(s.nodes) == worker_ids  # both workers trained cohorts, the head none
    # the mentor was trained (and its cache made) by a task on a worker, never on the driver's node
    assert len(tasks) == 1 and tasks[0]["node_id"] in worker_ids and tasks[0]["node_id"] != head_id
    assert (tmp_path / "m.pt").exists()  # the mentor, trained by a task on a worker, saved by the driver


def _runs_by_node(db) -> dict[str, int]:
    """Mentee runs in the sqlite store per node id, read from its file while the sweep writes it."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            rows = con.execute("select value, count(*) from tags where key = 'mentee.node_id' group by value")
            return dict(rows.fetchall())
    except sqlite3.Error:
        return {}


def test_a_lost_worker_node_costs_no_mentee(cluster, tmp_path):
    from search.sweep.run import run_sweep

    c, nodes = cluster
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    space = _space(tmp_path, "lost-node")
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(s=run_sweep(space, tracking_uri=uri, address=c.address,
                                                               workdir=tmp_path / "runs", show_progress=False)))
    t.start()
    lost = nodes[1].node_id
    # progress, not the clock: a trial trains on the second worker while mentees are still to come
    while not (_trials_on(nodes[1]) and sum(_runs_by_node(db).values()) <= space.budget.mentees - 6):
        assert t.is_alive(), "the sweep ended before a trial ran on the second worker"
        time.sleep(0.1)
    c.remove_node(nodes[1])
    at_removal = _runs_by_node(db).get(lost, 0)
    t.join()
    s = out["s"]
    runs = load_runs(uri, parent_run_id=s.parent_run_id)
    assert (runs.status == "finished").all() and runs.member_id.is_unique  # 0 failed, 0 recorded twice
    assert len(runs) == space.budget.mentees  # 0 lost
    by_node = runs.node_id.value_counts().to_dict()
    # the lost node recorded nothing after its removal: what was left, and what it held, trained elsewhere
    assert by_node.get(lost, 0) == at_removal
    assert by_node.get(nodes[0].node_id, 0) == space.budget.mentees - at_removal


def _recorded(db) -> int:
    """Mentee runs in the sqlite store, read from its file (the sweep's own process writes it)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("select count(*) from tags where key = 'mentee.kind' and value = 'mentee'").fetchone()[0]
    except sqlite3.Error:  # not made yet, or being migrated
        return 0


def _sweep(space_file, db, *extra) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    return subprocess.Popen([sys.executable, "-m", "search.cli", "sweep", str(space_file), "--tracking-uri", str(db),
                             "--workdir", str(space_file.parent / "runs"), *extra], cwd=space_file.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_dead_driver_node_says_resume_and_resume_finishes(tmp_path):
    """The raylet of the driver's own node is killed mid-sweep: one line, exit 75, `--resume` named;
    the resume (on a Ray that lives) finishes every mentee, none twice."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    space_file = tmp_path / "dead-node.yaml"
    # small cohorts of small batches: a cohort trains for seconds, so the kill lands while mentees remain (the
    # writer records a cohort's mentees in one go, and a quick sweep had finished before the kill landed)
    space_file.write_text(yaml.safe_dump({**SPACE, "name": "dead-node", "train": {"epochs": 3, "batch_size": 16},
                                          "budget": {**SPACE["budget"], "seeds": 1, "cohort_size": 2},
                                          "mentor": {**SPACE["mentor"], "path": str(tmp_path / "m.pt")}}))
    db = tmp_path / "mlflow.db"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        proc = _sweep(space_file, db, "--address", c.address)
        while _recorded(db) < 1:  # progress, not the clock: the first cohort is in MLflow
            assert proc.poll() is None, f"the sweep ended before the kill: {proc.communicate()[1][-3000:]}"
            time.sleep(0.2)
        c.head_node.kill_raylet()
        _, err = proc.communicate(timeout=600)
    finally:
        c.shutdown()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 75, f"exit {proc.returncode}\n{err[-3000:]}"
    # the progress bar and Ray's own log lines of the failed trials come before it; the last line says what to do
    # (Ray's C++ side ends the driver itself: the parent process says it; a Python-level error says it so)
    assert lines[-1] == NODE_DIED or lines[-1].startswith("interrupted: the Ray node of this sweep died"), err[-3000:]
    before = _recorded(db)
    assert 1 <= before < SPACE["budget"]["mentees"]
    resumed = _sweep(space_file, db, "--resume", "--address", "local")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    runs = load_runs(f"sqlite:///{db}", "dead-node")
    assert len(runs) == SPACE["budget"]["mentees"] and runs.member_id.is_unique, runs[["member_id", "status"]]
