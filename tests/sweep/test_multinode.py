"""Several Ray nodes on one machine (`ray.cluster_utils.Cluster`): a head that runs no trials,
two worker nodes, a driver that never trains — and a worker node lost mid-sweep.

The head has 0 CPUs, as `cluster.yaml`'s head has: the mentor task and every cohort must run
on the workers. Losing a node costs time, never mentees: Tune retries the trial elsewhere and
the driver queues again what a dead trial held.
"""

from __future__ import annotations

import threading
import time

import psutil
import pytest
import torch
import yaml

from search.spaces import load_space
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
    return [p for p in raylet.children(recursive=True) if "ImplicitFunc" in " ".join(p.cmdline())]


def test_cohorts_run_on_both_workers_and_the_driver_never_trains(cluster, tmp_path):
    from search.sweep.run import run_sweep

    c, _ = cluster
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    s = run_sweep(_space(tmp_path, "two-nodes"), tracking_uri=uri, address=c.address, workdir=tmp_path / "runs",
                  show_progress=False)
    runs = load_runs(uri, parent_run_id=s.parent_run_id)
    assert s.finished == len(runs) >= 12 and (runs.status == "finished").all()
    assert len(s.nodes) == 2 and set(runs.node_id) == set(s.nodes)  # both workers trained cohorts
    assert not torch.cuda.is_initialized()  # the driver never touched CUDA (nor trained: the head has no CPU)
    assert (tmp_path / "m.pt").exists()  # the mentor, trained by a task on a worker, saved by the driver


def test_a_lost_worker_node_costs_no_mentee(cluster, tmp_path):
    from search.sweep.run import run_sweep

    c, nodes = cluster
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = _space(tmp_path, "lost-node")
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(s=run_sweep(space, tracking_uri=uri, address=c.address,
                                                               workdir=tmp_path / "runs", show_progress=False)))
    t.start()
    deadline = time.monotonic() + 120
    while not _trials_on(nodes[1]):  # wait until the second worker trains a cohort, then lose it
        assert time.monotonic() < deadline and t.is_alive(), "no trial ever ran on the second worker"
        time.sleep(0.2)
    c.remove_node(nodes[1])
    t.join(timeout=300)
    assert not t.is_alive(), "the sweep did not finish after losing a node"
    s = out["s"]
    runs = load_runs(uri, parent_run_id=s.parent_run_id)
    assert (runs.status == "finished").all() and runs.member_id.is_unique  # 0 lost, 0 recorded twice
    assert len(runs) == s.planned or len(runs) >= space.budget.mentees
