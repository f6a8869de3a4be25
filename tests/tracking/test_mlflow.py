"""search.tracking against real MLflow: a sqlite store in tmp_path, and a real `mlflow server`."""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path

import mlflow
import pytest
import torch

from search.config import ArchConfig, MemberConfig, MemberResult, Status, TermConfig, TrainConfig
from search.errors import UserError
from search.tracking import (
    DEFAULT_TRACKING_URI,
    RUN_COLUMNS,
    SweepTracker,
    load_member,
    load_runs,
    mapping_string,
    resolve_uri,
    ui_command,
)


def _result(widths=(8, 8), hint=0.1, seed=0, status="finished", w_kd=0.0, epochs=3) -> MemberResult:
    terms = [TermConfig("ce", 1.0)]
    if hint is not None:
        terms.append(TermConfig("hint", hint, {"student": "layer2", "teacher": "layer3", "metric": "rmse"}))
    if w_kd:
        terms.append(TermConfig("kd", w_kd, {"temperature": 4.0}))
    config = MemberConfig(ArchConfig("conv1d", tuple(widths)), TrainConfig(epochs=epochs, seed=seed), tuple(terms))
    done = epochs if status == "finished" else 1
    return MemberResult(
        config=config,
        status=Status(status),
        val_acc=0.5 + 0.01 * seed,
        test_acc=0.49 + 0.01 * seed,
        epochs_run=done,
        curves={
            "val_acc": [0.3, 0.4, 0.5][:done],
            "test_acc": [0.3, 0.4, 0.49][:done],
            "train_loss": [2.0, 1.0, 0.5][:done],
        },
        cost={"params": 1234.0, "bytes_fp32": 4936.0, "bytes_int8": 1234.0, "macs": 56789.0},
        train_seconds=1.5,
        state_dict={"layers.0.weight": torch.randn(8, 1, 5), "layers.0.bias": torch.zeros(8)}
        if status == "finished"
        else None,
    )


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


SHAPE = {"mentee.input_shape": "[1, 40]", "mentee.num_classes": "10"}


@pytest.fixture
def sweep(uri: str):
    """A tracker with one sweep of four members: two finished, one pruned, one independent."""
    tracker = SweepTracker(uri, "unit")
    parent = tracker.start_sweep(
        "unit-sweep", {"budget": 4, "space": "mnist1d"}, {"mentee.space_hash": "abc"}
    )
    results = {
        "m0": _result(seed=0),
        "m1": _result(seed=1, w_kd=0.5),
        "m2": _result(widths=(4,), seed=2, status="pruned"),
        "m3": _result(hint=None, seed=3),
    }
    ids = {
        m: tracker.log_member(parent, r, tags={"mentee.space_hash": "abc", **SHAPE}, member_id=m)
        for m, r in results.items()
    }
    return tracker, parent, results, ids


def test_resolve_uri(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri(None) == DEFAULT_TRACKING_URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://h:5000")
    assert resolve_uri(None) == "http://h:5000"
    assert resolve_uri(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path / 'x.db'}"
    assert resolve_uri("http://a:1") == "http://a:1"


def test_mapping_string():
    assert mapping_string(_result().config) == "layer2->layer3:rmse@0.1"
    assert mapping_string(_result(w_kd=0.5).config) == "layer2->layer3:rmse@0.1;kd@0.5/T4"
    assert mapping_string(_result(hint=0.0).config) == "none"


def test_log_and_load_runs(sweep, uri):
    tracker, parent, results, ids = sweep
    df = load_runs(uri, "unit")
    assert list(df.columns) == list(RUN_COLUMNS)
    assert len(df) == 4 and set(df.run_id) == set(ids.values())
    assert (df.parent_run_id == parent).all()
    by = df.set_index("member_id")
    assert by.loc["m2", "status"] == "pruned"  # a pruned member keeps its word, never "finished"
    assert by.loc["m0", "status"] == "finished"
    assert by.loc["m0", "widths"] == "8x8" and by.loc["m2", "widths"] == "4"
    assert by.loc["m1", "mapping"] == "layer2->layer3:rmse@0.1;kd@0.5/T4"
    assert by.loc["m3", "mapping"] == "none"
    assert bool(by.loc["m3", "independent"]) and not bool(by.loc["m0", "independent"])
    assert by.loc["m0", "arch_key"] == results["m0"].config.arch.key()
    assert by.loc["m1", "seeds"] == (1,) and by.loc["m1", "val_acc"] == pytest.approx(0.51)
    assert by.loc["m1", "n_seeds"] == 1 and by.loc["m1", "val_accs"] == pytest.approx((0.51,))
    assert by.loc["m2", "seeds"] == () and by.loc["m2", "failed_seeds"] == (2,)  # pruned: no finished seed
    assert by.loc["m0", "macs"] == 56789 and by.loc["m0", "bytes_int8"] == 1234
    assert by.loc["m0", "train_seconds"] == 1.5 and by.loc["m2", "epochs_run"] == 1
    assert df.family.eq("conv1d").all() and str(df.start_time.dtype) == "datetime64[ns, UTC]"

    # MLflow's own view: run statuses, names, dotted params, tags, step curves.
    client = tracker.client
    run = client.get_run(ids["m0"])
    assert run.info.status == "FINISHED" and run.info.run_name == "conv1d-8x8-hint0.1"
    assert client.get_run(ids["m2"]).info.status == "KILLED"
    assert client.get_run(ids["m3"]).info.run_name == "conv1d-8x8-indep"
    p = run.data.params
    assert p["arch.widths"] == "8x8" and p["train.lr"] == "0.003" and p["term.hint"] == "layer2->layer3:rmse@0.1"
    assert p["independent"] == "False"
    assert run.data.tags["mentee.space_hash"] == "abc" and run.data.tags["mentee.kind"] == "mentee"
    curve = client.get_metric_history(ids["m0"], "curve.val_acc")
    assert [(m.step, m.value) for m in sorted(curve, key=lambda m: m.step)] == [(0, 0.3), (1, 0.4), (2, 0.5)]
    # no files per child run: the config is a tag, the weights one file per write under the parent
    assert not client.list_artifacts(ids["m0"])
    assert MemberConfig.from_dict(json.loads(run.data.tags["mentee.config"])) == results["m0"].config
    ref = json.loads(run.data.tags["mentee.weights"])
    assert list(ref) == ["0"] and ref["0"].startswith("weights/")
    assert json.loads(client.get_run(ids["m2"]).data.tags["mentee.weights"]) == {}  # pruned: no weights
    assert {f.path for f in client.list_artifacts(parent, "weights")} == {ref["0"]} | {
        json.loads(client.get_run(ids[m]).data.tags["mentee.weights"])[str(s)] for m, s in (("m1", 1), ("m3", 3))}

    parent_run = client.get_run(parent)
    assert parent_run.data.tags["mentee.kind"] == "sweep" and parent_run.data.params["budget"] == "4"


def test_no_global_state(uri, monkeypatch):
    # MLFLOW_RUN_ID overrides parent_run_id in mlflow.start_run (mlflow #15713); the client API
    # must ignore it, and must not move the process-wide tracking URI.
    before = mlflow.get_tracking_uri()
    tracker = SweepTracker(uri, "env")
    decoy = tracker.start_sweep("decoy", {}, {})
    load_runs(uri, "env")
    assert mlflow.get_tracking_uri() == before
    monkeypatch.setenv("MLFLOW_RUN_ID", decoy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    parent = tracker.start_sweep("real", {}, {})
    child = tracker.log_member(parent, _result(), tags={}, member_id="m0")
    assert child not in (decoy, parent)
    assert tracker.client.get_run(child).data.tags["mlflow.parentRunId"] == parent
    assert list(load_runs(uri, parent_run_id=parent).run_id) == [child]


def test_filters_and_empty(sweep, uri):
    tracker, parent, _, ids = sweep
    other = tracker.start_sweep("second", {}, {})
    tracker.log_member(other, _result(seed=9), tags={}, member_id="x0")
    assert len(load_runs(uri, "unit")) == 5
    assert set(load_runs(uri, parent_run_id=parent).run_id) == set(ids.values())
    assert list(load_runs(uri, parent_run_id=other).member_id) == ["x0"]
    assert len(load_runs(uri)) == 5  # all experiments

    SweepTracker(uri, "empty")
    empty = load_runs(uri, "empty")
    assert empty.empty and list(empty.columns) == list(RUN_COLUMNS)
    assert str(empty.val_acc.dtype) == "float64" and str(empty.independent.dtype) == "bool"
    with pytest.raises(UserError, match="nope"):
        load_runs(uri, "nope")


def test_reader_does_not_create_a_store(tmp_path):
    with pytest.raises(UserError, match="no MLflow database"):
        load_runs(str(tmp_path / "missing.db"))
    assert not (tmp_path / "missing.db").exists()


def test_resume(sweep, uri):
    tracker, parent, _, _ = sweep
    # the mentees and each one's seed members (a pruned seed was trained too: never again)
    assert tracker.existing_member_ids(parent) == {"m0", "m1", "m2", "m3", "m0@s0", "m1@s1", "m2@s2", "m3@s3"}
    assert tracker.find_sweep() == parent  # still RUNNING
    tracker.finish_sweep(parent, "KILLED", {"members": 4})
    assert tracker.find_sweep("unit") == parent
    # A fresh tracker on the same store reopens the sweep and sees what was logged.
    again = SweepTracker(uri, "unit")
    assert again.start_sweep("ignored", {"budget": 4}, {"resumed": "1"}, resume_run_id=parent) == parent
    assert again.client.get_run(parent).info.status == "RUNNING"
    again.finish_sweep(parent, metrics={"members": 4})
    run = again.client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.metrics["members"] == 4
    assert again.find_sweep() is None and again.find_sweep("no-such-experiment") is None
    with pytest.raises(UserError, match="deadbeef"):
        again.start_sweep("x", {}, {}, resume_run_id="deadbeef")


def test_failed_member_and_chunking(uri):
    tracker = SweepTracker(uri, "big")
    parent = tracker.start_sweep("big", {f"p{i}": i for i in range(250)}, {})  # > 100 params per batch
    r = _result(epochs=3)
    r.curves = {"val_acc": [i / 1000 for i in range(700)], "train_loss": [1.0] * 700}  # > 1000 metrics
    run_id = tracker.log_member(parent, r, tags={}, member_id="long")
    assert len(tracker.client.get_metric_history(run_id, "curve.val_acc")) == 700
    assert len(tracker.client.get_run(parent).data.params) == 250

    bad = _result(seed=4, status="failed")
    bad.val_acc = float("nan")
    bad.error = "TrainingDiverged: member 4 step 12"
    bad_id = tracker.log_member(parent, bad, tags={}, member_id="bad")
    run = tracker.client.get_run(bad_id)
    assert run.info.status == "FAILED" and run.data.tags["mentee.error"].startswith("TrainingDiverged")
    row = load_runs(uri, parent_run_id=parent).set_index("member_id").loc["bad"]
    assert row.status == "failed" and math.isnan(row.val_acc)


def test_load_member_round_trip(sweep, uri, tmp_path):
    _, _, results, ids = sweep
    config, weights, meta = load_member(uri, ids["m1"])
    assert config == results["m1"].config and meta["input_shape"] == (1, 40) and meta["num_classes"] == 10
    assert meta["seed"] == 1 and meta["val_acc"] == pytest.approx(0.51) == meta["mentee_val_acc"]
    assert weights.keys() == results["m1"].state_dict.keys()
    for k, v in results["m1"].state_dict.items():
        assert torch.equal(weights[k], v)
    with pytest.raises(UserError, match="no-such-run"):
        load_member(uri, "no-such-run")
    with pytest.raises(UserError, match="pruned"):
        load_member(uri, ids["m2"])  # pruned: no weights


def test_artifacts_beside_the_database(sweep, tmp_path):
    # Not in ./mlruns of whatever the cwd happens to be.
    tracker, parent, _, ids = sweep
    assert tracker.client.get_run(ids["m0"]).info.artifact_uri.startswith(
        (tmp_path / "mlartifacts" / "unit").as_uri()
    )
    ref = json.loads(tracker.client.get_run(ids["m0"]).data.tags["mentee.weights"])["0"]
    assert (tmp_path / "mlartifacts" / "unit" / parent / "artifacts" / ref).is_file()


def test_ui_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ui_command("sqlite:///runs/mlflow.db", port=5001)
    assert argv == [
        "mlflow",
        "ui",
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/runs/mlflow.db",
        "--host",
        "127.0.0.1",
        "--port",
        "5001",
    ]
    assert ui_command("http://h:5000")[3] == "http://h:5000"


def _post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())




def test_through_a_real_server(mlflow_server: str):
    tracker = SweepTracker(mlflow_server, "served")
    parent = tracker.start_sweep("served", {"budget": 2}, {})
    ids = {tracker.log_member(parent, _result(seed=s), tags=SHAPE, member_id=f"m{s}") for s in range(2)}
    tracker.finish_sweep(parent)

    # Read back over plain REST, as any other client on the cluster would.
    exp_id = tracker.experiment_id
    found = _post(
        mlflow_server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id], "max_results": 100}
    )
    runs = {
        r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in found["runs"]
    }
    assert set(runs) == ids | {parent}
    for run_id in ids:
        assert runs[run_id]["mlflow.parentRunId"] == parent and runs[run_id]["mentee.kind"] == "mentee"
    assert runs[parent]["mentee.kind"] == "sweep"
    assert set(load_runs(mlflow_server, "served").run_id) == ids
    config, weights, _ = load_member(mlflow_server, next(iter(ids)))  # artifacts proxied by the server
    assert config.arch.widths == (8, 8) and "layers.0.weight" in weights


def test_a_mentee_is_one_run_with_every_seed_and_added_seeds_join_it(uri):
    """Three seeds of one config: one run holding the mean, the std and each seed's value; two more
    seeds (re-evaluation) are added to the same run, and every reader sees the mean of all five."""
    from search.config import WorkItem, WorkKind
    from search.mentees import MenteeRecord, seed_items

    tracker = SweepTracker(uri, "seeds")
    parent = tracker.start_sweep("s", {}, {})
    cfg = _result().config

    def members(kind, seeds):
        out = []
        for item in seed_items("7", kind, cfg, seeds, 7 if kind is WorkKind.SEARCHED else None):
            r = _result(seed=item.config.train.seed)
            out.append((item, r, "node-a"))
        return out

    rec = MenteeRecord.of(members(WorkKind.SEARCHED, [0, 1, 2]))
    (run_id,) = tracker.log_mentees(parent, [(rec, SHAPE)])
    row = load_runs(uri, "seeds").iloc[0]
    assert row.run_id == run_id and row.member_id == "7" and row.seeds == (0, 1, 2) and row.n_seeds == 3
    assert row.val_accs == pytest.approx((0.50, 0.51, 0.52)) and row.val_acc == pytest.approx(0.51)
    assert row.val_acc_std == pytest.approx(0.01) and row.test_acc == pytest.approx(0.50)
    assert tracker.existing_member_ids(parent) == {"7", "7@s0", "7@s1", "7@s2"}

    more = MenteeRecord.of(members(WorkKind.REEVAL, [3, 4]))
    tracker.add_seeds(parent, [(run_id, more)])
    df = load_runs(uri, "seeds")
    assert len(df) == 1  # still one mentee
    row = df.iloc[0]
    assert row.seeds == (0, 1, 2, 3, 4) and row.n_seeds == 5 and row.val_acc == pytest.approx(0.52)
    assert row.test_acc == pytest.approx(0.51) and row.val_acc_std == pytest.approx(0.0158113883)
    # export's weights: the best validation seed (4), from the second write's file
    config, weights, meta = load_member(uri, run_id)
    assert meta["seed"] == 4 == config.train.seed and meta["val_acc"] == pytest.approx(0.54)
    assert meta["mentee_val_acc"] == pytest.approx(0.52) and set(weights) == {"layers.0.weight", "layers.0.bias"}
    assert not WorkItem("x", WorkKind.FIXED, cfg).mentee_id
