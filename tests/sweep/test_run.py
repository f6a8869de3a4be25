"""search.sweep end to end with real components: a local Ray, sqlite MLflow, the Optuna study.

Every space here is tiny (MNIST-1D, 300 samples, mentees of depth 1–2 and width 4–8, two
epochs), so each sweep takes seconds. In-process sweeps reuse the session's `ray_local`
(run_sweep's `ray.init(ignore_reinit_error=True)` joins it); the resume test drives the CLI
in subprocesses that start their own Ray (no RAY_ADDRESS), so killing them cannot touch it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from search.config import MemberConfig
from search.data import load_dataset
from search.errors import UserError
from search.models import create_mentee
from search.pareto import pareto_front
from search.spaces import load_space
from search.sweep.run import run_sweep
from search.tracking import SweepTracker, load_member, load_runs

REPO = Path(__file__).resolve().parents[1]
N_SAMPLES = 300


def write_space(path: Path, name: str, mentor: Path, *, mentees: int = 8, cohort: int = 4, epochs: int = 2,
                batch_size: int = 128, early_stopping: dict | None = None) -> Path:
    """A tiny space as a YAML file, the way a user writes one."""
    budget: dict = {"mentees": mentees, "cohort_size": cohort}
    if early_stopping is not None:
        budget["early_stopping"] = early_stopping
    space = {
        "name": name,
        "dataset": {"name": "mnist1d", "n_samples": N_SAMPLES},
        "mentor": {"arch": {"family": "conv1d", "widths": [8, 8, 8], "kernel": 5, "batch_norm": True},
                   "epochs": 2, "path": str(mentor)},
        "mentee": {"family": "conv1d", "depth": [1, 2], "width": [4, 8], "growth": 1, "kernel": 5},
        "mapping": {"taps": {"last": ["none", "layer3"]}},
        "train": {"epochs": epochs, "batch_size": batch_size},
        "budget": budget,
    }
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def load_study(work: Path, name: str, parent: str) -> optuna.Study:
    """The sweep's Optuna study, wherever the driver keeps it under <workdir>/<name>/
    (optuna.db, sqlite; or optuna.journal, Optuna's journal file)."""
    journal, db = work / name / "optuna.journal", work / name / "optuna.db"
    if journal.exists():
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(journal)))
    else:
        assert db.exists(), f"no Optuna study under {work / name}: {sorted(os.listdir(work / name))}"
        storage = f"sqlite:///{db}"
    return optuna.load_study(study_name=f"{name}-{parent}", storage=storage)


def expected_members(trials: list) -> tuple[set[str], list[bool]]:
    """What the driver must have planned for these Optuna trials: each trial's number, plus
    `twin-<arch_key>` for every architecture whose *first* trial is mentored (an architecture
    first seen as an independent trial needs no twin). Also, per trial, whether asking it
    added a twin."""
    ids, seen, added = set(), set(), []
    for t in sorted(trials, key=lambda t: t.number):
        cfg = MemberConfig.from_dict(t.user_attrs["config"])
        ids.add(str(t.number))
        key = cfg.arch.key()
        new_twin = key not in seen and not cfg.independent
        seen.add(key)
        if new_twin:
            ids.add(f"twin-{key}")
        added.append(new_twin)
    return ids, added


def assert_budget_rule(trials: list, mentees: int) -> None:
    """`_Driver.next_cohort` asks while planned < budget.mentees, and one ask plans a trial
    plus, for a new mentored architecture, its twin: the total reaches the budget and
    overshoots it by one only when the last ask added a twin."""
    ids, added = expected_members(trials)
    assert mentees <= len(ids) <= mentees + 1
    planned_before_last = len(ids) - 1 - int(added[-1])
    assert planned_before_last < mentees, "the driver asked once more after the budget was planned"
    if len(ids) == mentees + 1:
        assert added[-1]


@pytest.fixture(scope="module")
def shared_mentor(tmp_path_factory) -> Path:
    """One trained mentor for the sweeps below (the first test trains its own through the sweep)."""
    from search.config import ArchConfig
    from search.train.mentor import train_mentor

    path = tmp_path_factory.mktemp("mentor") / "m.pt"
    splits = load_dataset("mnist1d", n_samples=N_SAMPLES, seed=0)
    train_mentor(ArchConfig("conv1d", (8, 8, 8), 5, True), splits, epochs=2, out=path)
    return path


# ------------------------------------------------------------------ a tiny sweep

@pytest.fixture(scope="module")
def tiny(ray_local, tmp_path_factory):
    """One tiny sweep, run once; the frame and the study's trials as they were right after it."""
    tmp = tmp_path_factory.mktemp("tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mentor = tmp / "m.pt"
        space_file = write_space(tmp / "space.yaml", "tiny", mentor, mentees=8, cohort=4)
        space = load_space(space_file)
        uri = f"sqlite:///{tmp}/mlflow.db"
        summary = run_sweep(space, tracking_uri=uri, workdir=tmp / "runs", show_progress=False)
        runs = load_runs(uri, parent_run_id=summary.parent_run_id)
        trials = load_study(tmp / "runs", "tiny", summary.parent_run_id).trials
        parent = MlflowClient(uri).get_run(summary.parent_run_id)
    return {"tmp": tmp, "space": space, "uri": uri, "summary": summary, "runs": runs, "trials": trials,
            "parent": parent, "mentor": mentor}


def test_tiny_sweep_end_to_end(tiny):
    s, runs, trials, space = tiny["summary"], tiny["runs"], tiny["trials"], tiny["space"]
    mentees, cohort = space.budget.mentees, space.budget.cohort_size
    assert tiny["mentor"].is_file()  # trained on first use and saved where the space says

    # The summary: everything recorded, finished, in full cohorts (the last may be short).
    assert s.experiment == "tiny" and s.planned == mentees
    assert s.recorded == len(runs) and s.finished == len(runs) and s.pruned == 0 and s.failed == 0
    # every mentee trained with the CPU's default of 2 seeds, fused in one cohort: 2 mentees a cohort of 4
    assert (runs.seeds.map(tuple) == (0, 1)).all() and (runs.n_seeds == 2).all() and s.seeds_trained == 2 * len(runs)
    assert s.trials == math.ceil(2 * len(runs) / cohort)
    for r in runs.itertuples():  # one number: the run's val_acc is the mean of its seeds' values
        assert r.val_acc == pytest.approx(sum(r.val_accs) / 2) and r.test_acc == pytest.approx(sum(r.test_accs) / 2)
    n_train = len(load_dataset("mnist1d", n_samples=N_SAMPLES, seed=0).x_train)
    assert s.mentee_samples == pytest.approx(runs.epochs_run.sum() * n_train * 2)
    assert s.seconds > 0 and s.tracking_uri == tiny["uri"]
    # Tune snapshots no searcher state (resume never reads it; writing it raced Tune's own copy of it)
    assert (tiny["tmp"] / "runs" / "tiny" / "ray").is_dir()
    assert not list((tiny["tmp"] / "runs").rglob("*search_gen_state*"))

    # One child run per planned member, under the parent; the budget rule is exact.
    assert (runs.parent_run_id == s.parent_run_id).all()
    assert runs.member_id.is_unique
    ids, _ = expected_members(trials)
    assert set(runs.member_id) == ids
    assert_budget_rule(trials, mentees)
    assert (runs.status == "finished").all()
    assert runs.val_acc.between(0, 1).all() and runs.test_acc.between(0, 1).all()
    assert (runs.epochs_run == space.train.epochs).all() and (runs.params > 0).all()

    # Every mentored architecture has an independent, finished run (its twin or a trial of its own).
    done = runs[(runs.status == "finished") & runs.independent]
    for key in set(runs[~runs.independent].arch_key):
        assert key in set(done.arch_key), f"mentored arch {key} has no independent run"
    twins = runs[(runs.work == "twin")]
    assert twins.independent.all() and (twins.member_id == "twin-" + twins.arch_key).all()

    # MLflow's own view of the parent and a twin.
    client = MlflowClient(tiny["uri"])
    parent = tiny["parent"]
    assert parent.info.status == "FINISHED" and parent.data.tags["mentee.kind"] == "sweep"
    assert parent.data.metrics["finished"] == len(runs) and parent.data.metrics["pruned"] == 0
    if len(twins):
        assert client.get_run(twins.run_id.iloc[0]).data.tags["mentee.work"] == "twin"

    # The Optuna study: every trial told, with (val_acc, params), matching MLflow.
    assert len(trials) == len(runs) - len(twins)
    by_member = runs.set_index("member_id")
    for t in trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert len(t.values) == 2
        row = by_member.loc[str(t.number)]
        assert t.values[0] == pytest.approx(row.val_acc) and t.values[1] == row.params
        assert MemberConfig.from_dict(t.user_attrs["config"]).arch.key() == row.arch_key


def test_member_weights_load_and_rebuild(tiny):
    """Each finished member's logged weights rebuild its mentee and reproduce its val accuracy."""
    splits = load_dataset("mnist1d", n_samples=N_SAMPLES, seed=0)
    for _, row in tiny["runs"].iterrows():
        cfg, weights, meta = load_member(tiny["uri"], row.run_id)
        assert cfg.arch.key() == row.arch_key
        assert meta["input_shape"] == tuple(splits.input_shape) and meta["num_classes"] == splits.num_classes
        assert meta["seed"] in row.seeds and meta["val_acc"] == max(row.val_accs)  # the best validation seed
        model = create_mentee(cfg.arch, meta["input_shape"], meta["num_classes"])
        model.load_state_dict(weights)  # strict: exactly the mentee's own shapes, no padding
        assert sum(p.numel() for p in model.parameters()) == row.params
        with torch.no_grad():
            acc = (model.eval()(splits.x_val).argmax(-1) == splits.y_val).float().mean().item()
        assert abs(acc - meta["val_acc"]) <= 1 / len(splits.y_val) + 1e-6  # at most one argmax flip


# ------------------------------------------------------- resuming a complete sweep

@pytest.fixture(scope="module")
def resumed_complete(tiny):
    """The tiny sweep marked KILLED as if its driver died after recording everything, then resumed."""
    tracker = SweepTracker(tiny["uri"], "tiny")
    parent = tiny["summary"].parent_run_id
    tracker.client.set_terminated(parent, "KILLED")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tiny["tmp"])
        summary = run_sweep(tiny["space"], tracking_uri=tiny["uri"], workdir=tiny["tmp"] / "runs",
                            resume=True, show_progress=False)
    return summary, load_runs(tiny["uri"], parent_run_id=parent)


def test_resume_of_a_complete_sweep_trains_nothing(tiny, resumed_complete):
    summary, runs = resumed_complete
    before = tiny["runs"]
    assert summary.parent_run_id == before.parent_run_id.iloc[0]
    assert set(runs.run_id) == set(before.run_id)  # nothing new: the budget was spent
    assert summary.trials == 0


def test_resumed_summary_counts_the_whole_sweep(tiny, resumed_complete):
    summary, runs = resumed_complete
    assert summary.recorded == len(runs)
    assert summary.finished + summary.pruned + summary.failed == summary.recorded
    parent = MlflowClient(tiny["uri"]).get_run(summary.parent_run_id)
    assert parent.data.metrics["finished"] == (runs.status == "finished").sum()


def test_resume_without_an_unfinished_sweep_is_a_user_error(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = tiny["space"].model_copy(update={"name": "never-ran"})
    with pytest.raises(UserError, match="never-ran"):
        run_sweep(space, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", workdir=tmp_path / "runs",
                  resume=True, show_progress=False)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- early stopping

def test_early_stopping_prunes(ray_local, shared_mentor, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space_file = write_space(tmp_path / "space.yaml", "halving", shared_mentor, mentees=8, cohort=4, epochs=3,
                             early_stopping={"rungs": [1], "eta": 2})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    s = run_sweep(load_space(space_file), tracking_uri=uri, workdir=tmp_path / "runs", show_progress=False)
    runs = load_runs(uri, parent_run_id=s.parent_run_id)

    pruned = runs[runs.status == "pruned"]
    finished = runs[runs.status == "finished"]
    assert len(pruned) > 0 and len(finished) > 0 and len(pruned) + len(finished) == len(runs)
    assert s.pruned == len(pruned) and s.finished == len(finished) and s.recorded == len(runs)
    # Each cohort of 4 members (2 mentees × 2 seeds) keeps the best ceil(4 / 2) at rung 1, and a mentee
    # with a seed stopped is pruned whole: at least one mentee of every full cohort stops.
    assert len(pruned) >= len(runs) // 2
    assert (pruned.epochs_run == 1).all() and (finished.epochs_run == 3).all()

    front = pareto_front(load_runs(uri, parent_run_id=s.parent_run_id))
    assert len(front) > 0 and not set(front.run_id) & set(pruned.run_id)
    assert set(front.run_id) <= set(finished.run_id)

    client = MlflowClient(uri)
    study = load_study(tmp_path / "runs", "halving", s.parent_run_id)
    states = {str(t.number): t.state for t in study.trials}
    for _, row in pruned.iterrows():
        assert client.get_run(row.run_id).info.status == "KILLED"
        if not row.work == "twin":
            assert states[row.member_id] == optuna.trial.TrialState.PRUNED
    for _, row in finished.iterrows():
        if not row.work == "twin":
            assert states[row.member_id] == optuna.trial.TrialState.COMPLETE
    assert set(states) == set(runs.member_id[runs.work != "twin"])
    with pytest.raises(UserError, match="pruned"):
        load_member(uri, pruned.run_id.iloc[0])  # stopped early: no weights to export


# ------------------------------------------------------- resume after a killed driver

def _session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`: the killed driver's Ray, if any is left."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def _logged_members(db: Path) -> int:
    """Child runs the driver has tagged and ended so far, read straight from the sqlite file (read-only,
    and cheap enough to poll: a reader that opened the store through MLflow while the driver
    is still creating it would run MLflow's schema migrations concurrently with the driver's).
    Ended, not just tagged: a kill between a run's tags and its end leaves it RUNNING, and the test
    needs two runs that were logged whole before the kill."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
            return c.execute("select count(*) from tags t join runs r on r.run_uuid = t.run_uuid "
                             "where t.key = 'mentee.member_id' and r.status != 'RUNNING'").fetchone()[0]
    except sqlite3.Error:  # no file yet, or no tables yet
        return 0


def _cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def killed_and_resumed(shared_mentor, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    # Small batches: more steps per cohort, so the kill lands between cohorts, not after the last.
    write_space(tmp / "space.yaml", "resume", shared_mentor, mentees=12, cohort=2, batch_size=16)
    db = tmp / "mlflow.db"
    uri = f"sqlite:///{db}"
    cmd = [sys.executable, "-m", "search.cli", "sweep", "space.yaml", "--tracking-uri", uri, "--workdir", "runs"]
    env = _cli_env()
    with open(tmp / "first.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        # Kill the moment two members are logged: the remaining cohorts take only seconds.
        while _logged_members(db) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        alive = proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log = (tmp / "first.log").read_text()[-3000:]
    assert alive, f"the sweep ended before it could be killed:\n{log}"
    assert _logged_members(db) >= 2, f"no two child runs within 180 s:\n{log}"
    # Ray's processes of that driver leave their own process group but stay in its session:
    # they notice the dead raylet and exit; anything still alive after 30 s is killed by pid.
    deadline = time.monotonic() + 30
    while _session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _session_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    before = load_runs(uri, "resume")  # whatever the driver logged up to the kill
    assert len(before) >= 2
    # a child run the kill cut off mid-log is still RUNNING: resume deletes and rewrites it (from
    # the driver's journal); only the runs that ended are "logged before the kill"
    client = MlflowClient(uri)
    before = before[[client.get_run(rid).info.status != "RUNNING" for rid in before.run_id]]
    parent = before.parent_run_id.iloc[0]
    status = MlflowClient(uri).get_run(parent).info.status
    assert status == "RUNNING", f"the sweep got to {status} before the kill: nothing to resume"

    done = subprocess.run(cmd + ["--resume"], cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    after = load_runs(uri, "resume")
    study = load_study(tmp / "runs", "resume", parent)
    return {"uri": uri, "before": before, "after": after, "parent": parent, "study": study, "stdout": done.stdout}


def test_resume_after_kill(killed_and_resumed):
    r = killed_and_resumed
    before, after, parent = r["before"], r["after"], r["parent"]
    assert len(before) >= 2
    assert (after.parent_run_id == parent).all()  # resumed into the same parent run

    # No member twice; one child run per member id.
    assert after.member_id.is_unique and len(after) == after.member_id.nunique()
    # What was logged before the kill was not retrained: same run ids for those members.
    old = before.set_index("member_id").run_id
    new = after.set_index("member_id").run_id
    assert set(old.index) <= set(new.index)
    assert (new.loc[old.index] == old).all()

    # Every trial the study holds was recorded and told: nothing left RUNNING. A trial asked just
    # before the kill, whose config was never stored, was never trained: resume fails it and asks
    # anew (as tests/sweep/test_driver_kills.py asserts for ten kills).
    asked_only = [t for t in r["study"].trials if "config" not in t.user_attrs]
    assert all(t.state == optuna.trial.TrialState.FAIL for t in asked_only)
    assert not {str(t.number) for t in asked_only} & set(after.member_id)
    trials = [t for t in r["study"].trials if "config" in t.user_attrs]
    assert {str(t.number) for t in trials} <= set(after.member_id)
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
    twins = after[(after.work == "twin")]
    assert set(after.member_id) - set(twins.member_id) == {str(t.number) for t in trials}
    assert (twins.member_id == "twin-" + twins.arch_key).all() and twins.independent.all()
    # (which architecture gets a twin can differ from an uninterrupted sweep: an independent
    # trial asked before the kill stands in for the twin of a mentored one asked earlier)
    independent_done = set(after[after.independent & (after.status == "finished")].arch_key)
    assert set(after[~after.independent].arch_key) <= independent_done
    for t in trials:
        row = after.set_index("member_id").loc[str(t.number)]
        want = {"finished": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
                "failed": optuna.trial.TrialState.FAIL}[row.status]
        assert t.state == want

    counts = after.status.value_counts()
    assert counts.get("finished", 0) + counts.get("pruned", 0) + counts.get("failed", 0) == len(after)
    assert counts.get("finished", 0) == len(after)  # no early stopping, nothing diverges here
    assert MlflowClient(r["uri"]).get_run(parent).info.status == "FINISHED"
    assert f"parent run {parent}" in r["stdout"]


# ------------------------------------------------------------ a real MLflow server

def _rest(base: str, path: str, body: dict | None = None) -> dict:
    if body is None:
        req = urllib.request.Request(base + path)
    else:
        req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_sweep_through_a_real_server(ray_local, shared_mentor, mlflow_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space_file = write_space(tmp_path / "space.yaml", "served-sweep", shared_mentor, mentees=6, cohort=4)
    s = run_sweep(load_space(space_file), tracking_uri=mlflow_server, workdir=tmp_path / "runs",
                  show_progress=False)
    assert s.tracking_uri == mlflow_server and s.recorded >= 6
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to a local store

    # Read back over plain REST, as any other client would.
    q = urllib.parse.urlencode({"experiment_name": "served-sweep"})
    exp_id = _rest(mlflow_server, f"/api/2.0/mlflow/experiments/get-by-name?{q}")["experiment"]["experiment_id"]
    found = _rest(mlflow_server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id], "max_results": 1000})
    runs = {}
    for r in found["runs"]:
        data = r["data"]
        runs[r["info"]["run_id"]] = {
            "status": r["info"]["status"],
            "tags": {t["key"]: t["value"] for t in data.get("tags", [])},
            "metrics": {m["key"]: m["value"] for m in data.get("metrics", [])},
        }
    assert runs[s.parent_run_id]["tags"]["mentee.kind"] == "sweep"
    assert runs[s.parent_run_id]["status"] == "FINISHED"
    children = {k: v for k, v in runs.items() if k != s.parent_run_id}
    assert len(children) == s.recorded
    members = set()
    for run in children.values():
        assert run["tags"]["mlflow.parentRunId"] == s.parent_run_id
        assert run["tags"]["mentee.kind"] == "mentee" and run["tags"]["mentee.status"] == "finished"
        assert 0 <= run["metrics"]["val_acc"] <= 1 and run["metrics"]["params"] > 0
        members.add(run["tags"]["mentee.member_id"])
    assert len(members) == len(children)
    # And through the package's reader, artifacts proxied by the server.
    frame = load_runs(mlflow_server, "served-sweep")
    assert set(frame.run_id) == set(children)
    cfg, weights, meta = load_member(mlflow_server, frame.run_id.iloc[0])
    create_mentee(cfg.arch, meta["input_shape"], meta["num_classes"]).load_state_dict(weights)


def test_same_seed_same_front(tiny, shared_mentor, tmp_path, monkeypatch):
    """A sweep is reproducible from (space, seed): run the tiny sweep again in a fresh store with
    the same seed and the front holds the same configs with the same accuracies."""
    from search.pareto import pareto_front

    monkeypatch.chdir(tmp_path)
    space = load_space(write_space(tmp_path / "space.yaml", "tiny", tiny["mentor"], mentees=8, cohort=4))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    again = run_sweep(space, tracking_uri=uri, workdir=tmp_path / "runs", show_progress=False)
    first = pareto_front(tiny["runs"])[["arch_key", "mapping", "params", "val_acc"]].reset_index(drop=True)
    second = pareto_front(load_runs(uri, parent_run_id=again.parent_run_id))
    pd.testing.assert_frame_equal(first, second[["arch_key", "mapping", "params", "val_acc"]].reset_index(drop=True))
