"""The writer's bulk calls (search/tracking/bulk.py) against real MLflow stores: runs written in bulk read
back exactly as runs written through MLflow's client do; a call that fails half-way leaves nothing."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from search.tracking import bulk
from search.tracking.bulk import NewRun, create_runs, update_runs


def _run(i: int, parent: str, *, step: int = 0) -> NewRun:
    """A mentee's run as the writer hands it over: tags, params, scalars, per-seed values and curves."""
    metrics = [("val_acc", 0.5 + i / 100, 0), ("val_acc_std", 0.01, 0), ("val_acc.s0", 0.49 + i / 100, 0),
               ("val_acc.s1", 0.51 + i / 100, 0), ("params", 1000.0 + i, 0), ("macs", float("inf"), 0),
               ("n_seeds", 2.0, step)]
    metrics += [(f"curve.{c}", 1.0 / (e + 1) + i, e) for c in ("train_loss", "val_acc") for e in range(5)]
    tags = {"mlflow.parentRunId": parent, "mentee.kind": "mentee", "mentee.member_id": str(i),
            "mentee.seeds": "0,1", "mentee.config": "x" * 9000}  # longer than MLflow keeps: cut to 8000
    params = {"arch.widths": f"{i}x8", "train.lr": "0.01", "independent": str(i % 2 == 0)}
    return NewRun(f"conv1d-{i}x8", tags, params, metrics, ("FINISHED", "KILLED", "FAILED")[i % 3],
                  1_700_000_000_000 + i, 1_700_000_005_000 + i)


def _by_client(client: MlflowClient, experiment_id: str, run: NewRun) -> str:
    """The same run written the ordinary way: create_run, log_batch, set_terminated."""
    from mlflow.entities import Metric, Param, RunTag

    made = client.create_run(experiment_id, start_time=run.start_ms, tags={}, run_name=run.run_name)
    client.log_batch(made.info.run_id,
                     metrics=[Metric(k, v, run.end_ms, s) for k, v, s in run.metrics],
                     params=[Param(k, v) for k, v in run.params.items()],
                     tags=[RunTag(k, v[:8000]) for k, v in run.tags.items()])
    client.set_terminated(made.info.run_id, run.status, run.end_ms)
    return made.info.run_id


def _view(client: MlflowClient, run_id: str) -> dict:
    """What a reader sees of a run, with the id taken out."""
    r = client.get_run(run_id)
    history = {k: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.step)]
               for k in r.data.metrics}
    return {"name": r.info.run_name, "status": r.info.status, "start": r.info.start_time, "end": r.info.end_time,
            "stage": r.info.lifecycle_stage, "user": r.info.user_id, "experiment": r.info.experiment_id,
            "artifacts": r.info.artifact_uri.replace(run_id, "RUN"), "tags": r.data.tags, "params": r.data.params,
            "metrics": r.data.metrics, "history": history}


@pytest.fixture(params=["sqlite", "server"])
def store(request, tmp_path) -> tuple[str, MlflowClient, str, str]:
    """(uri, client, experiment id, parent run id) on a sqlite file or a real `mlflow server`."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if request.param == "sqlite" else request.getfixturevalue(
        "mlflow_server")
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(f"bulk-{request.node.name}")
    parent = client.create_run(experiment_id, run_name="sweep").info.run_id
    return uri, client, experiment_id, parent


def test_runs_written_in_bulk_read_back_as_runs_written_by_the_client(store):
    uri, client, experiment_id, parent = store
    runs = [_run(i, parent) for i in range(6)]
    ids = create_runs(uri, experiment_id, runs)
    assert len(set(ids)) == 6
    for run_id, run in zip(ids, runs):
        assert _view(client, run_id) == _view(client, _by_client(client, experiment_id, run))
    assert client.get_run(ids[0]).data.metrics["macs"] == 1.7976931348623157e308  # inf, stored as MLflow does

    # searches filter on what bulk wrote (tags, params, latest metrics) as on the client's runs
    found = client.search_runs([experiment_id], "tags.`mentee.kind` = 'mentee' and metrics.val_acc > 0.525 "
                               "and params.`train.lr` = '0.01' and attributes.status = 'FINISHED'")
    assert sorted(r.data.tags["mentee.member_id"] for r in found) == ["3", "3"]


def test_update_adds_seeds_to_a_run(store):
    uri, client, experiment_id, parent = store
    run_id, other = create_runs(uri, experiment_id, [_run(1, parent), _run(2, parent)])
    update_runs(uri, [(run_id, [("val_acc", 0.7, 0), ("val_acc.s2", 0.8, 0), ("n_seeds", 3.0, 0)],
                       {"mentee.seeds": "0,1,2", "mentee.new": "yes"})])
    r = client.get_run(run_id)
    assert r.data.metrics["val_acc"] == 0.7 and r.data.metrics["val_acc.s2"] == 0.8
    assert r.data.metrics["n_seeds"] == 3.0
    assert r.data.tags["mentee.seeds"] == "0,1,2" and r.data.tags["mentee.new"] == "yes"
    assert r.data.tags["mentee.member_id"] == "1"  # tags not named are kept
    assert [m.value for m in client.get_metric_history(run_id, "val_acc")] == [0.51, 0.7]
    assert client.get_run(other).data.tags["mentee.seeds"] == "0,1"  # the other run is untouched


def test_a_call_that_fails_half_way_leaves_no_run(store):
    uri, client, experiment_id, parent = store
    kept = create_runs(uri, experiment_id, [_run(0, parent)])
    # a step beyond 64 bits passes the checks and fails for real when written: in the SQL transaction after
    # the runs, tags and params are in; for a server, on a later run's log_batch after others were created
    runs = [_run(i, parent) for i in range(1, 5)] + [_run(5, parent, step=2**70)]
    with pytest.raises((MlflowException, OverflowError, ValueError)):
        create_runs(uri, experiment_id, runs)
    active = client.search_runs([experiment_id], "tags.`mentee.kind` = 'mentee'")
    assert [r.info.run_id for r in active] == kept


def test_bad_keys_and_statuses_are_refused_before_anything_is_written(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("bad")
    good = _run(1, "p")
    for bad in (NewRun("r", {"a//b": "x"}, {}, [], "FINISHED", 1, 2),
                NewRun("r", {}, {"k" * 251: "x"}, [], "FINISHED", 1, 2),
                NewRun("r", {}, {}, [("acc", float("nan"), 0)], "FINISHED", 1, 2)):
        with pytest.raises(MlflowException):
            create_runs(uri, experiment_id, [good, bad])
    with pytest.raises(MlflowException, match="status 'RUNNING' is not FINISHED, KILLED or FAILED"):
        create_runs(uri, experiment_id, [NewRun("r", {}, {}, [], "RUNNING", 1, 2)])
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        client.delete_experiment(experiment_id)
        create_runs(uri, experiment_id, [good])
    assert client.search_runs([experiment_id], run_view_type=3) == []


def test_a_store_whose_tables_differ_is_written_through_the_client(tmp_path, monkeypatch):
    # a future MLflow that changes its tables cannot be installed here: its check is made to fail
    monkeypatch.setitem(bulk._EXPECTED, "runs", bulk._EXPECTED["runs"] | {"a_new_column"})
    monkeypatch.setattr(bulk, "_stores", {})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("fallback")
    ids = create_runs(uri, experiment_id, [_run(i, "p") for i in range(3)])
    assert bulk._sql_store(uri) is None
    assert [client.get_run(i).data.tags["mentee.member_id"] for i in ids] == ["0", "1", "2"]
    update_runs(uri, [(ids[0], [("val_acc", 0.9, 0)], {"mentee.seeds": "0,1,2"})])
    assert client.get_run(ids[0]).data.metrics["val_acc"] == 0.9


def test_the_store_is_opened_once_per_uri(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert bulk._sql_store(uri) is bulk._sql_store(uri) is not None
    assert bulk._sql_store("http://127.0.0.1:5000") is None


def test_load_runs_reads_the_same_frame_by_sql_as_by_search_runs(tmp_path, monkeypatch):
    from search.tracking import fastread, load_runs

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("read")
    parent = client.create_run(experiment_id, tags={"mentee.kind": "sweep"}).info.run_id
    other = client.create_run(experiment_id, tags={"mentee.kind": "sweep"}).info.run_id
    runs = [_run(i, parent) for i in range(8)]
    for r in runs[:4]:  # a cohort writes its mentees with one start time: the run id breaks the tie
        r.start_ms = 1_700_000_000_000
    ids = create_runs(uri, experiment_id, runs)
    create_runs(uri, experiment_id, [_run(20, other)])
    create_runs(uri, client.create_experiment("elsewhere"), [_run(30, parent)])
    client.delete_run(ids[5])
    client.log_metric(ids[6], "test_acc", float("nan"))  # a NaN written by MLflow's own client reads as NaN
    update_runs(uri, [(ids[1], [("val_acc.s2", 0.9, 0)], {"mentee.seeds": "0,1,2"})])

    fast = fastread.read_runs(uri, [experiment_id], {"mentee.kind": "mentee"})
    slow = list(fastread._by_search(client, [experiment_id], {"mentee.kind": "mentee"}))
    assert [r.run_id for r in fast] == [r.run_id for r in slow] and len(fast) == 8
    assert [r._replace(metrics={}) for r in fast] == [r._replace(metrics={}) for r in slow]
    assert [sorted(r.metrics) for r in fast] == [sorted(r.metrics) for r in slow]
    assert not any(k.startswith("curve.") for r in fastread.read_runs(uri, [experiment_id], {},
                                                                     skip_metrics=("curve.",)) for k in r.metrics)

    by_sql = {"all": load_runs(uri), "one": load_runs(uri, "read"), "sweep": load_runs(uri, parent_run_id=parent)}
    monkeypatch.setattr(fastread, "_engine", lambda uri: None)  # what a server gets: search_runs, page by page
    by_search = {"all": load_runs(uri), "one": load_runs(uri, "read"), "sweep": load_runs(uri, parent_run_id=parent)}
    assert [len(by_sql[k]) for k in ("all", "one", "sweep")] == [9, 8, 7]
    for k in by_sql:
        pd.testing.assert_frame_equal(by_sql[k], by_search[k])
    assert by_sql["sweep"].set_index("run_id").loc[ids[1], "seeds"] == (0, 1, 2)
