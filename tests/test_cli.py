"""The `mentee` command, run as a user runs it: `python -m search.cli ...` in a subprocess, in a
scratch directory, against real files, a real sqlite MLflow store and real trained networks."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from search.data import load_dataset
from search.models import create_mentee
from search.pareto import pareto_front
from search.results.fronts import COMPACT
from search.results.pick import pick as pick_row
from search.spaces import load_space
from search.sweep.run import run_sweep
from search.tracking import SweepTracker, load_member, load_runs

REPO = Path(__file__).resolve().parents[1]
N_SAMPLES = 300
FRONT_COLUMNS = [c for c in COMPACT if c != "n_seeds"]  # n_seeds too where mentees differ in seeds


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "200"  # help and tables unwrapped
    return env


def cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.cli", *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def space_dict(name: str, mentor: str, **overrides) -> dict:
    space = {
        "name": name,
        "dataset": {"name": "mnist1d", "n_samples": N_SAMPLES},
        "mentor": {"arch": {"family": "conv1d", "widths": [8, 8, 8], "kernel": 5, "batch_norm": True},
                   "epochs": 2, "path": mentor},
        "mentee": {"family": "conv1d", "depth": [1, 2], "width": [4, 8], "growth": 1, "kernel": 5},
        "terms": {"hint": {"taps": {"last": ["none", "layer3"]}}},
        "train": {"epochs": 2},
        "budget": {"mentees": 8, "cohort_size": 4},
    }
    for dotted, value in overrides.items():
        *path, last = dotted.split(".")
        d = space
        for p in path:
            d = d[p]
        d[last] = value
    return space


def write_space(path: Path, name: str = "cli", mentor: str = "mentors/m.pt", **overrides) -> Path:
    path.write_text(yaml.safe_dump(space_dict(name, mentor, **overrides), sort_keys=False))
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and mtime: "writes nothing" means this is unchanged."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_dir()}


# ---------------------------------------------------------------------- help

HELP = {
    (): ["compare", "sweep", "pareto", "pick", "export", "devices", "sweeps", "ui", "quickstart", "mentor",
         "--version"],
    ("mentor",): ["train"],
    ("mentor", "train"): ["--dataset", "--root", "--n-samples", "--family", "--widths", "--kernel", "--batch-norm",
                          "--epochs", "--lr", "--seed", "--out", "--accelerator"],
    ("compare",): ["--mentor", "--dataset", "--root", "--n-samples", "--split-seed", "--family", "--widths",
                   "--kernel", "--hint", "--metric", "--weight", "--kd", "--temperature", "--epochs", "--lr",
                   "--batch-size", "--seeds", "--accelerator", "--format"],
    ("sweep",): ["--dry-run", "--resume", "--address", "--tracking-uri", "--workdir", "--storage"],
    ("pareto",): ["--experiment", "--sweep", "--tracking-uri", "--by", "--format", "--wide", "--gains", "--device"],
    ("pick",): ["--max-params", "--max-bytes", "--max-macs", "--experiment", "--sweep", "--tracking-uri", "--format",
                "--register", "--alias"],
    ("dashboard",): ["--experiment", "--sweep", "--no-log", "--device"],
    ("devices",): ["--devices", "--format"],
    ("sweeps",): ["--experiment", "--tracking-uri", "--format"],
    ("export",): ["--format", "--out", "--tracking-uri"],
    ("ui",): ["--tracking-uri", "--port", "--experiment", "--sweep"],
    ("quickstart",): ["--workdir", "--mentees"],
}


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: " ".join(c) or "mentee")
def test_help(command, tmp_path):
    r = cli(*command, "--help", cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    for word in HELP[command]:
        assert word in r.stdout, f"{word} missing from `{' '.join(command)} --help`:\n{r.stdout}"
    assert not list(tmp_path.iterdir())


def test_one_meaning_per_flag_and_no_missing_command(tmp_path):
    """`--device` is a board wherever it appears; where to train is `--accelerator`. `mentor --help` names
    only commands that exist."""
    for cmd in (("mentor", "train"), ("compare",)):
        out = cli(*cmd, "--help", cwd=tmp_path, timeout=60).stdout
        assert "--accelerator" in out and "--device" not in out, out
    for cmd in (("pareto",), ("pick",), ("export",), ("dashboard",)):
        assert "--device" in cli(*cmd, "--help", cwd=tmp_path, timeout=60).stdout
    out = cli("mentor", "--help", cwd=tmp_path, timeout=60).stdout
    assert "inspect" not in out and "train" in out


# ------------------------------------------------------------------- dry run

def test_sweep_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    write_space(tmp_path / "space.yaml")
    before = snapshot(tmp_path)
    r = cli("sweep", "space.yaml", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {}
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.replace("│", "|").split("|") if c.strip()]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    assert "nothing trained" in r.stdout
    assert rows["experiment"] == "cli"
    assert rows["mentees (twins included)"] == "8"
    assert rows["cohort size"] == "4 members"
    assert rows["trials (cohorts)"] == "~4"  # 8 mentees × 2 seeds (CPUs) in cohorts of 4
    assert rows["seeds per mentee"].startswith("2 (fused in one cohort)")
    assert rows["epochs per mentee"] == "2" and rows["early stopping"] == "off"
    assert "train 210, val 30, test 60" in rows["dataset"]
    # No mlflow.db, no mentee-runs/, no mentors/: the directory is exactly as it was.
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------- bad input

def _setup_space(**overrides):
    def setup(tmp: Path) -> None:
        write_space(tmp / "space.yaml", **overrides)
    return setup


def _setup_file(name: str, text: str):
    def setup(tmp: Path) -> None:
        (tmp / name).write_text(text)
    return setup


def _setup_store(tmp: Path) -> None:
    SweepTracker(f"sqlite:///{tmp}/mlflow.db", "cli")  # an existing, empty store


BAD = [
    pytest.param(_setup_file("space.yaml", "name: x\ndataset: {name: mnist1d\n"), ["sweep", "space.yaml"],
                 ["space.yaml", "malformed YAML", "line"], id="malformed-yaml"),
    pytest.param(_setup_space(**{"mentee.widht": [4, 8]}), ["sweep", "space.yaml"],
                 ["space.yaml", "unknown key 'mentee.widht'", "did you mean 'width'"], id="unknown-key"),
    pytest.param(_setup_space(**{"mentee.width": {"low": 8, "high": 4}}), ["sweep", "space.yaml"],
                 ["space.yaml", "mentee.width", "must not exceed"], id="min-above-max"),
    pytest.param(None, ["sweep", "nowhere.yaml"], ["nowhere.yaml", "not found"], id="missing-space"),
    pytest.param(_setup_space(**{"terms.hint.taps": {"last": ["layer9"]}}), ["sweep", "space.yaml", "--dry-run"],
                 ["space.yaml", "terms.hint.taps", "'layer9'"], id="unknown-mentor-tap"),
    pytest.param(_setup_space(**{"dataset.name": "mnist1e"}), ["sweep", "space.yaml", "--dry-run"],
                 ["'mnist1e'", "mnist1d"], id="unknown-dataset"),
    pytest.param(_setup_space(**{"dataset": {"name": "mnist", "root": "no-such-dir"}}),
                 ["sweep", "space.yaml", "--dry-run"], ["no-such-dir", "mnist"], id="mnist-root-missing"),
    pytest.param(None, ["pick", "--max-bytes", "12parsecs"], ["--max-bytes", "12parsecs"], id="pick-bad-budget"),
    pytest.param(_setup_store, ["export", "0123456789abcdef", "--format", "onnx", "--tracking-uri", "mlflow.db"],
                 ["0123456789abcdef", "not found"], id="export-unknown-run"),
    pytest.param(None, ["mentor", "train", "--widths", "8,x", "--n-samples", "300", "--epochs", "1", "--out", "m.pt"],
                 ["--widths", "8,x"], id="mentor-bad-widths"),
    pytest.param(None, ["compare", "--mentor", "missing.pt", "--n-samples", "300"], ["missing.pt", "not found"],
                 id="compare-missing-mentor"),
    pytest.param(_setup_file("bad.pt", "these are not weights\n"),
                 ["compare", "--mentor", "bad.pt", "--n-samples", "300"], ["bad.pt", "not a PyTorch weights file"],
                 id="compare-text-mentor"),
]


def assert_one_error_line(r: subprocess.CompletedProcess, expect: list[str]) -> str:
    assert r.returncode == 2, f"exit {r.returncode}\nstdout:\n{r.stdout[-2000:]}\nstderr:\n{r.stderr[-3000:]}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    for word in expect:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert "Traceback" not in r.stdout
    return lines[0]


@pytest.mark.parametrize("setup,args,expect", BAD)
def test_bad_input_one_line_exit_2_nothing_written(setup, args, expect, tmp_path):
    if setup is not None:
        setup(tmp_path)
    before = snapshot(tmp_path)
    r = cli(*args, cwd=tmp_path, timeout=120)
    assert_one_error_line(r, expect)
    assert snapshot(tmp_path) == before


def test_sweep_without_dry_run_validates_before_writing(tmp_path):
    write_space(tmp_path / "space.yaml", **{"terms.hint.taps": {"last": ["layer9"]}})
    before = snapshot(tmp_path)
    r = cli("sweep", "space.yaml", cwd=tmp_path, timeout=180)
    assert_one_error_line(r, ["space.yaml", "terms.hint.taps", "'layer9'"])
    assert snapshot(tmp_path) == before


def test_unknown_dataset_names_the_space_file_and_key(tmp_path):
    write_space(tmp_path / "space.yaml", **{"dataset.name": "mnist1e"})
    r = cli("sweep", "space.yaml", "--dry-run", cwd=tmp_path)
    line = assert_one_error_line(r, ["'mnist1e'"])
    assert "space.yaml" in line and "dataset" in line.replace("unknown dataset", "")


# ----------------------------------------------------------- mentor & compare

def test_mentor_train_then_compare(tmp_path):
    r = cli("mentor", "train", "--dataset", "mnist1d", "--n-samples", N_SAMPLES, "--widths", "8,8", "--epochs", 2,
            "--out", "m.pt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "m.pt").is_file() and "mentor saved to m.pt" in r.stdout
    r = cli("compare", "--mentor", "m.pt", "--n-samples", N_SAMPLES, "--widths", "4,4", "--hint", "last:layer2",
            "--seeds", 2, "--epochs", 2, "--format", "json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    row = json.loads(r.stdout)
    assert row["seeds"] == 2 and row["arch"] == "conv1d [4, 4]" and row["params"] > 0
    assert row["mapping"] == "layer2->layer2:rmse@0.1"
    assert len(row["independent"]) == 2 and len(row["mentored"]) == 2
    assert all(0 <= a <= 1 for a in row["independent"] + row["mentored"])
    assert row["independent_mean"] == pytest.approx(statistics.fmean(row["independent"]))
    assert row["mentored_mean"] == pytest.approx(statistics.fmean(row["mentored"]))
    assert row["gain"] == pytest.approx(row["mentored_mean"] - row["independent_mean"])
    assert 0 <= row["mentor_test_acc"] <= 1


# ------------------------------------------------------ after a sweep: front, pick, export

@pytest.fixture(scope="module")
def swept(ray_local, tmp_path_factory):
    """A tiny sweep recorded in sqlite MLflow (in-process, on the session's Ray)."""
    tmp = tmp_path_factory.mktemp("cli-sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        space = load_space(write_space(tmp / "space.yaml", mentor=str(tmp / "m.pt")))
        uri = f"sqlite:///{tmp}/mlflow.db"
        summary = run_sweep(space, tracking_uri=uri, workdir=tmp / "runs", show_progress=False)
    runs = load_runs(uri, "cli")
    assert summary.finished == len(runs) >= 8
    return tmp, uri, runs


def _dominates(a: dict, b: dict) -> bool:
    return (a["val_acc"] >= b["val_acc"] and a["params"] <= b["params"]
            and (a["val_acc"] > b["val_acc"] or a["params"] < b["params"]))


def test_pareto_formats(swept):
    tmp, uri, runs = swept
    r = cli("pareto", "--experiment", "cli", "--tracking-uri", uri, "--format", "json", cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(r.stdout)
    assert rows and all(set(FRONT_COLUMNS) <= set(row) <= set(COMPACT) for row in rows)
    for a in rows:
        for b in rows:
            assert not _dominates(a, b), (a, b)
    # ...and nothing finished outside the front dominates a front row, i.e. it is *the* front.
    assert {row["run_id"] for row in rows} == set(pareto_front(runs).run_id)
    assert [row["params"] for row in rows] == sorted(row["params"] for row in rows)
    by_id = runs.set_index("run_id")
    for row in rows:
        assert by_id.loc[row["run_id"], "status"] == "finished"
        assert row["val_acc"] == pytest.approx(by_id.loc[row["run_id"], "val_acc"])

    # --no-gains: the front alone, one CSV table a CSV reader takes whole.
    r = cli("pareto", "--experiment", "cli", "--tracking-uri", uri, "--format", "csv", "--no-gains", cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    table = list(csv.reader(io.StringIO(r.stdout)))
    assert table[0] == list(rows[0])  # the json's columns, in the table's order
    assert [t[0] for t in table[1:]] == [row["run_id"] for row in rows]
    assert all(len(t) == len(rows[0]) for t in table)

    # By default the front comes first, then (after a blank line) mentorship at each size.
    r = cli("pareto", "--experiment", "cli", "--tracking-uri", uri, "--format", "markdown", cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    front_md, *rest = r.stdout.strip().split("\n\n")
    lines = front_md.splitlines()
    assert lines[0] == "| " + " | ".join(rows[0]) + " |" and lines[1].startswith("|---")
    assert len(lines) == 2 + len(rows)
    assert all(line.startswith("| " + row["run_id"][:8] + " |") for line, row in zip(lines[2:], rows))

    # The table a person reads: 100 columns at most, the same rows, integers as integers, sizes in KiB.
    r = cli("pareto", "--experiment", "cli", "--tracking-uri", uri, cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    assert max(len(line) for line in r.stdout.splitlines()) <= 100, r.stdout
    header = next(line for line in r.stdout.splitlines() if line.startswith("run_id"))
    assert header.split() == list(rows[0])
    assert all(row["run_id"][:8] in r.stdout for row in rows) and " KiB" in r.stdout
    assert not re.search(r"\d{2}\.0000\b", r.stdout)  # integers as integers (no "240.0000")
    assert "val_acc: validation, mean of" in r.stdout
    wide = cli("pareto", "--experiment", "cli", "--tracking-uri", uri, "--wide", "--format", "json", cwd=tmp)
    assert {"family", "kernel", "mapping", "macs", "sram_int8"} <= set(json.loads(wide.stdout)[0])

    # --by takes every axis the dashboard draws: latency is timed here
    r = cli("pareto", "--experiment", "cli", "--tracking-uri", uri, "--by", "latency_ms", "--format", "json",
            cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    assert all(row["latency_ms"] > 0 for row in json.loads(r.stdout))
    r = cli("pareto", "--experiment", "cli", "--tracking-uri", uri, "--by", "flops", cwd=tmp)
    assert_one_error_line(r, ["--by: 'flops' is not a cost", "latency_ms"])
    for block in rest:  # any further table is markdown too
        assert all(line.startswith("|") and line.endswith("|") for line in block.splitlines())


def test_pick_within_a_parameter_budget(swept):
    tmp, uri, runs = swept
    finished = runs[runs.status == "finished"]
    budget = int(np.median(finished.params))
    r = cli("pick", "--max-params", budget, "--experiment", "cli", "--tracking-uri", uri, cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    first = r.stdout.splitlines()[0]
    assert first.startswith("run ")
    run_id = first.split()[1].rstrip(":")
    row = runs.set_index("run_id").loc[run_id]
    assert row.params <= budget and row.status == "finished"
    assert run_id == pick_row(runs, max_params=budget).run_id  # the most accurate that fits
    assert f"val_acc {row.val_acc:.4f} (validation, mean of" in r.stdout
    assert f"mentee export {run_id} --format onnx --tracking-uri {uri}" in r.stdout  # the store is repeated

    # --format json: the row the table shows; the same numbers pareto prints for it
    r = cli("pick", "--max-params", budget, "--experiment", "cli", "--tracking-uri", uri, "--format", "json",
            cwd=tmp)
    (picked,) = json.loads(r.stdout)
    assert picked["run_id"] == run_id and picked["val_acc"] == row.val_acc and picked["arm"] in ("mentored",
                                                                                                  "independent")
    front = json.loads(cli("pareto", "--experiment", "cli", "--tracking-uri", uri, "--format", "json",
                           cwd=tmp).stdout)
    for f in front:
        if f["run_id"] == run_id:
            assert all(f[k] == picked[k] for k in ("val_acc", "test_acc", "test_ci", "params", "bytes_int8"))

    smallest = int(finished.params.min())
    r = cli("pick", "--max-params", smallest - 1, "--experiment", "cli", "--tracking-uri", uri, cwd=tmp)
    assert_one_error_line(r, ["no finished mentee fits"])


def test_sweeps_and_one_sweep(swept):
    tmp, uri, runs = swept
    r = cli("sweeps", "--experiment", "cli", "--tracking-uri", uri, "--format", "json", cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = json.loads(r.stdout)
    done = runs[runs.status == "finished"]
    assert sweep["sweep"] == runs.parent_run_id.iloc[0] and sweep["mentees"] == len(runs)
    assert sweep["finished"] == len(done) and sweep["best_val_acc"] == done.val_acc.max()
    table = cli("sweeps", "--experiment", "cli", "--tracking-uri", uri, cwd=tmp).stdout
    rows = table.split("\n\n")[0].splitlines()
    assert sweep["sweep"][:8] in table and "best_val_acc" in table and max(map(len, rows)) <= 100
    assert f"mentee pareto --sweep {sweep['sweep'][:8]} --tracking-uri {uri}" in table
    one = cli("pareto", "--sweep", sweep["sweep"][:8], "--tracking-uri", uri, "--format", "json", cwd=tmp)
    assert one.returncode == 0 and json.loads(one.stdout)
    r = cli("pareto", "--sweep", "nosuch", "--tracking-uri", uri, cwd=tmp)
    assert_one_error_line(r, ["--sweep: no sweep", "'nosuch'", uri, "mentee sweeps"])


def test_dashboard_no_log_leaves_the_store_alone(swept):
    from mlflow.tracking import MlflowClient

    tmp, uri, runs = swept
    parent = runs.parent_run_id.iloc[0]
    r = cli("dashboard", "--experiment", "cli", "--tracking-uri", uri, "--no-log", "--out", "d.html", cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp / "d.html").is_file() and "the store is untouched (--no-log)" in r.stdout
    assert "d.html" not in [a.path for a in MlflowClient(uri).list_artifacts(parent)]


def test_devices_and_version(tmp_path):
    r = cli("devices", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["device", "flash", "sram", "latency", "train"] and max(map(len, lines)) <= 100
    assert any(line.startswith("stm32f746 ") and "320 KiB (−32 KiB) int8" in line for line in lines)
    assert any(line.startswith("phone ") and "64 MiB @32 adamw" in line for line in lines)
    r = cli("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("mentee-search ") and not list(tmp_path.iterdir())


def test_ui_refuses_a_taken_port_in_one_line(tmp_path):
    import socket

    _setup_store(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = cli("ui", "--port", port, "--tracking-uri", "mlflow.db", cwd=tmp_path, timeout=60)
    assert_one_error_line(r, ["--port", str(port)])


def test_export_onnx(swept):
    tmp, uri, runs = swept
    run_id = pareto_front(runs).run_id.iloc[-1]
    r = cli("export", run_id, "--format", "onnx", "--out", "x.onnx", "--tracking-uri", uri, cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp / "x.onnx").is_file() and "outputs match" in r.stdout and "x.onnx" in r.stdout

    # The file really is the logged mentee: onnxruntime agrees with torch on validation data.
    import onnxruntime as ort

    cfg, weights, meta = load_member(uri, run_id)
    model = create_mentee(cfg.arch, meta["input_shape"], meta["num_classes"])
    model.load_state_dict(weights)
    x = load_dataset("mnist1d", n_samples=N_SAMPLES, seed=0).x_val
    sess = ort.InferenceSession(str(tmp / "x.onnx"), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model.eval()(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_ui_serves_the_store(tmp_path, unused_port):
    """`mentee ui` starts the MLflow UI on 127.0.0.1 for the store, from any directory."""
    import signal
    import time
    import urllib.request

    _setup_store(tmp_path)
    port = unused_port
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "ui", "--port", str(port),
                             "--tracking-uri", str(tmp_path / "mlflow.db")], cwd=tmp_path.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                req = urllib.request.Request(base + "/api/2.0/mlflow/experiments/search",
                                             json.dumps({"max_results": 10}).encode(),
                                             {"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=2) as resp:
                    names = {e["name"] for e in json.loads(resp.read())["experiments"]}
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                assert time.monotonic() < deadline, "mentee ui did not answer in 90 s"
                time.sleep(0.5)
        assert "cli" in names  # the experiment _setup_store created
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
