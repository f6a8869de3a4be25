"""A sweep that knows its device (search/sweep/target.py): over-budget configs are told to Optuna at once,
never trained, never in MLflow; the plan refuses a space nothing of which fits; pick time checks latency.

Real components: Optuna studies with the sweep's own samplers, the shipped and user device files, a local
Ray and sqlite MLflow for the end-to-end sweep. Costs on MNIST-1D (input (1, 40), 10 classes), conv1d
kernel 5: depth 1 × width 4 = 1,634 params, 1×8 = 3,258, 2×4 = 918, 2×8 = 1,986.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from search.devices import load_devices
from search.errors import UserError
from search.results.pick import pick_for_device
from search.spaces import load_space, parse_space
from search.sweep.suggest import make_sampler, suggest_member
from search.sweep.target import MAX_SKIPS_IN_A_ROW, arch_cost, ask_fitting, check_space

REPO = Path(__file__).resolve().parents[2]
TAGS = {"mentee.input_shape": "[1, 40]", "mentee.num_classes": "10"}
MNIST1D = ((1, 40), 10)


@pytest.fixture
def devices_file(tmp_path) -> Path:
    path = tmp_path / "my-devices.yaml"
    path.write_text("tiny:\n  params: 2k\n"  # every architecture of small_space but 1×8
                    "mini:\n  params: 1k\n"  # 2×4 only
                    "nothing:\n  params: 100\n"
                    "slow:\n  params: 1M\n  latency: {limit: 1ms, scale: 2}\n")
    return path


def small_space(devices_file: Path, target: str = "tiny", **extra) -> object:
    return parse_space({"name": "t", "mentee": {"family": "conv1d", "depth": [1, 2], "width": [4, 8], "growth": 1,
                                                "kernel": 5},
                        "terms": {"hint": {"taps": {"last": ["none", "layer3"]}}},
                        "devices": str(devices_file), "target": target, **extra}, "spaces/t.yaml")


def asker(study: optuna.Study, space):
    def ask():
        trial = study.ask()
        return trial, suggest_member(trial, space)
    return ask


def study_for(space) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(space))


# ---------------------------------------------------------------------------------------- the space key

def test_target_must_be_a_device(devices_file):
    with pytest.raises(UserError, match=r"^spaces/t\.yaml: key 'target': not a device profile \(did you mean "
                                        r"'stm32f746'\?"):
        parse_space({"target": "stm32f764"}, "spaces/t.yaml")
    with pytest.raises(UserError, match="key 'target': .*got 'tiny'"):  # not shipped: needs the user's file
        parse_space({"target": "tiny"}, "spaces/t.yaml")
    assert small_space(devices_file).target == "tiny"
    with pytest.raises(UserError, match=r"key 'devices': .*nope\.yaml: device file not found"):
        parse_space({"devices": str(devices_file.parent / "nope.yaml"), "target": "tiny"}, "spaces/t.yaml")


def test_cli_bad_target_one_line_exit_2(devices_file, tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump({"name": "s", "target": "stm32"}))
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "search.cli", "sweep", str(space), "--dry-run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "key 'target'" in done.stderr and "did you mean 'stm32f746'" in done.stderr
    # --devices adds the user's profiles: now 'tiny' is a device, and the dry run prints what fits
    space.write_text(yaml.safe_dump({"name": "s", "dataset": {"n_samples": 300}, "target": "tiny",
                                     "mentor": {"arch": {"widths": [8, 8, 8]}, "path": str(tmp_path / "m.pt")},
                                     "mentee": {"depth": [1, 2], "width": [4, 8], "growth": 1, "kernel": 5}}))
    done = subprocess.run([sys.executable, "-m", "search.cli", "sweep", str(space), "--dry-run", "--devices",
                           str(devices_file)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**env, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "tiny (params ≤ 2k): 3 of 4 architectures fit" in done.stdout
    assert not (tmp_path / "mlflow.db").exists()


# ----------------------------------------------------------------------------------- asking the sampler

def test_over_budget_configs_are_told_at_once_and_never_returned(devices_file):
    space = small_space(devices_file)
    study = study_for(space)
    for _ in range(12):
        trial, cfg = ask_fitting(study, space, TAGS, asker(study, space))
        cost = arch_cost(cfg.arch, *MNIST1D)
        assert cost["params"] <= 2000
        assert trial.number == len(study.trials) - 1  # the returned trial is the latest: the rest were told
        study.tell(trial, [0.5, cost["params"]])
    skipped = [t for t in study.trials if "mentee.skipped" in t.user_attrs]
    assert skipped, "1×8 is over budget: some proposals must have been skipped"
    for t in skipped:  # PRUNED (TPE reads it), infeasible, with the misses recorded
        assert t.state == optuna.trial.TrialState.PRUNED
        assert t.constraints["params"] > 0 and "config" not in t.user_attrs
        assert "params:" in t.user_attrs["mentee.skipped"]["misses"][0]
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.constraints["params"] <= 0
    assert {t.number for t in study.best_trials}.isdisjoint(t.number for t in skipped)


def test_tpe_learns_from_the_skipped_trials(devices_file):
    """Same space, same seed: TPE, told the infeasible trials, wastes far fewer proposals than random search."""
    spaces = {s: parse_space({"mentee": {"depth": [1, 2, 3], "width": [4, 8, 16, 32], "growth": [1, 2],
                                         "kernel": [3, 5]}, "terms": {"hint": {"taps": {"last": ["none", "layer3"]}}},
                              "sampler": s, "devices": str(devices_file),
                              "target": "tiny"}, "spaces/t.yaml") for s in ("tpe", "random")}
    skipped = {}
    for name, space in spaces.items():
        study = study_for(space)
        for _ in range(40):
            trial, cfg = ask_fitting(study, space, TAGS, asker(study, space))
            study.tell(trial, [0.5, arch_cost(cfg.arch, *MNIST1D)["params"]])
        skipped[name] = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    assert skipped["tpe"] * 2 < skipped["random"], skipped  # measured: 15 against 114


def test_nsga2_gets_complete_infeasible_trials(devices_file):
    space = small_space(devices_file, sampler="nsga2")
    study = study_for(space)
    for _ in range(6):
        trial, cfg = ask_fitting(study, space, TAGS, asker(study, space))
        study.tell(trial, [0.5, arch_cost(cfg.arch, *MNIST1D)["params"]])
    skipped = [t for t in study.trials if "mentee.skipped" in t.user_attrs]
    assert skipped and all(t.state == optuna.trial.TrialState.COMPLETE and t.values[0] == 0.0 for t in skipped)
    assert {t.number for t in study.best_trials}.isdisjoint(t.number for t in skipped)


def test_almost_nothing_fits_stops_with_one_line(devices_file):
    space = small_space(devices_file, target="nothing")
    study = study_for(space)
    with pytest.raises(UserError, match=r"^space 't': key 'target': 5 configs in a row .* over nothing's budget "
                                        r"\(the last: conv1d [0-9x]+: params: .* > 100 \(over by .*\)\); expected"):
        ask_fitting(study, space, TAGS, asker(study, space), max_skips=5)
    assert len(study.trials) == 5 and all(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    assert MAX_SKIPS_IN_A_ROW >= 100


def test_no_target_asks_once(tmp_path):
    space = parse_space({"terms": {"ce": {}}}, "spaces/t.yaml")
    study = study_for(space)
    trial, _ = ask_fitting(study, space, {}, asker(study, space))  # no shape tags needed without a target
    assert len(study.trials) == 1 and trial.constraints == {}


# ------------------------------------------------------------------------------------------------ plan time

def test_plan_refuses_a_space_nothing_of_which_fits(devices_file):
    with pytest.raises(UserError, match=r"^spaces/t\.yaml: key 'target': no mentee of this space fits nothing "
                                        r"\(params ≤ 100\); the closest, conv1d 4x4: params: 918 > 100"):
        check_space(small_space(devices_file, target="nothing"), *MNIST1D, "spaces/t.yaml")
    note = check_space(small_space(devices_file), *MNIST1D, "spaces/t.yaml")
    assert note.startswith("tiny (params ≤ 2k): 3 of 4 architectures fit")
    assert "latency checked at pick time" in check_space(small_space(devices_file, target="slow"), *MNIST1D, "x")


# ------------------------------------------------------------------------------------------- the whole sweep

def test_sweep_trains_only_what_fits(ray_local, devices_file, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from search.sweep.run import run_sweep
    from search.tracking import load_runs

    monkeypatch.chdir(tmp_path)
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump({
        "name": "targeted", "dataset": {"name": "mnist1d", "n_samples": 300}, "target": "mini",
        "mentor": {"arch": {"family": "conv1d", "widths": [8, 8, 8], "kernel": 5, "batch_norm": True}, "epochs": 2,
                   "path": str(tmp_path / "m.pt")},
        "mentee": {"family": "conv1d", "depth": [1, 2], "width": [4, 8], "growth": 1, "kernel": 5},
        "terms": {"hint": {"taps": {"last": ["none", "layer3"]}}},
        "train": {"epochs": 1}, "budget": {"mentees": 6, "cohort_size": 3}}))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    s = run_sweep(load_space(space_file, devices=devices_file), tracking_uri=uri, workdir=tmp_path / "runs",
                  show_progress=False)
    runs = load_runs(uri, parent_run_id=s.parent_run_id)
    assert s.recorded == len(runs) >= 6  # the cohort filled up with configs that fit
    assert set(runs.widths) == {"4x4"}  # the one architecture of the four that fits
    study = optuna.load_study(study_name=f"targeted-{s.parent_run_id}", storage=JournalStorage(
        JournalFileBackend(str(tmp_path / "runs" / "targeted" / "optuna.journal"))))
    skipped = [t for t in study.trials if "mentee.skipped" in t.user_attrs]
    assert skipped and all(t.state == optuna.trial.TrialState.PRUNED for t in skipped)
    assert not {str(t.number) for t in skipped} & set(runs.member_id)  # nothing of them in MLflow
    assert MlflowClient(uri).get_run(s.parent_run_id).data.params["target"] == "mini"


def test_a_sweep_that_keeps_proposing_over_budget_stops_with_one_line(ray_local, devices_file, tmp_path,
                                                                       monkeypatch):
    """Ray Tune hands the driver's UserError back to `run_sweep`'s caller (the CLI prints it, exit 2)."""
    import search.sweep.target as target
    from search.sweep.run import run_sweep
    from search.tracking import load_runs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(target, "MAX_SKIPS_IN_A_ROW", 1)  # the first over-budget proposal ends it
    space = small_space(devices_file, target="mini", dataset={"name": "mnist1d", "n_samples": 300},
                        mentor={"arch": {"widths": [8, 8, 8]}, "epochs": 1, "path": str(tmp_path / "m.pt")},
                        train={"epochs": 1}, budget={"mentees": 6, "cohort_size": 3})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(UserError, match=r"^space 't': key 'target': 1 config in a row .* over mini's budget"):
        run_sweep(space, tracking_uri=uri, workdir=tmp_path / "runs", show_progress=False)
    assert load_runs(uri, "t").empty


# ---------------------------------------------------------------------------------------------- pick time

def runs_frame() -> pd.DataFrame:
    rows = [dict(run_id=f"r{i}", arch_key=f"a{i}", status="finished", widths=f"{w}x{w}", val_acc=acc, test_acc=acc,
                 params=p, bytes_int8=p, sram_int8=100, sram_fp32=400, macs=10 * p)
            for i, (w, acc, p) in enumerate([(16, 0.9, 5000), (8, 0.8, 2000), (4, 0.7, 900), (2, 0.6, 400)])]
    rows.append(dict(run_id="r-pruned", arch_key="a0", status="pruned", widths="16x16", val_acc=0.95,
                     test_acc=0.95, params=5000, bytes_int8=5000, sram_int8=100, sram_fp32=400, macs=50000))
    return pd.DataFrame(rows)


def fits_training(frame: pd.DataFrame, profile) -> pd.DataFrame:
    """The training-memory column a profile budgets (results.costs fills it from the architecture), all 1 MiB."""
    for m in profile.check(frame.iloc[0]):
        if m.budget.axis.startswith("train_bytes"):
            frame[m.budget.axis] = float(1 << 20)
    return frame


def test_pick_checks_latency_on_the_best_candidates_only():
    slow = load_devices(None)["rpi4"]  # latency ≤ 10 ms at scale 4: ≤ 2.5 ms here
    timed = []

    def latency(row):  # as if measured here: the two widest are too slow
        timed.append(row["run_id"])
        return {"r0": 9.0, "r1": 3.0}.get(row["run_id"], 0.5)

    row, nearest = pick_for_device(fits_training(runs_frame(), slow), slow, latency=latency)
    assert row["run_id"] == "r2" and row["latency_ms"] == 0.5 and nearest == []
    assert timed == ["r0", "r1", "r2"]  # best first; r3 never timed
    row, nearest = pick_for_device(fits_training(runs_frame(), slow), slow, latency=lambda r: 5.0)
    assert row is None and len(nearest) == 3
    assert all("latency_ms: 5 ms × 4 = 20 ms > 10 ms" in str(m[0]) for _, m in nearest)


def test_pick_without_latency_budget_times_nothing():
    stm = load_devices(None)["stm32f746"]

    def never(row):
        raise AssertionError("stm32f746 budgets no latency")

    row, _ = pick_for_device(runs_frame(), stm, latency=never, max_params=2500)
    assert row["run_id"] == "r1"
