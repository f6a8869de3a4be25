"""The MLflow UI in a real headless Chromium (Debian's /usr/bin/chromium), on a real `mlflow server` (the
session's `mlflow_server`) that holds a small sweep logged by `SweepTracker`, its dashboard on the parent run
and a pick registered for a device. Chromium's own `--dump-dom` gives the DOM once the page's scripts and
fetches ran (virtual time waits for the network), so no driver package is needed; each page is one call.

What a user does: `mentee ui` prints the sweep's URL; it opens on the training runs (not MLflow 3's GenAI
overview), the sweep's mentees flat with their numbers as columns, sorted by val_acc; the parent run lists
the sweep's runs, its artifacts list the dashboard, and the registry shows the
device's alias. In CI (`CI` set) a missing browser fails instead of skipping.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from search.cli.ui import experiment_url

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
if CHROMIUM is None:
    # named at the end of the run with how to install it; where the browser is required (CI, .ci/run) the
    # skip fails the run (tests/conftest.py)
    pytest.skip("no Chromium here: apt-get install -y chromium", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]


def dump_dom(tmp_path: Path, url: str, expect: list[str]) -> str:
    """The page's DOM after its scripts ran; tried once more with more virtual time if `expect` is missing
    (a server's first answers can be slow). Every call is bounded by a wall-clock timeout."""
    dom = ""
    for budget in (10_000, 30_000):
        profile = tmp_path / f"profile-{uuid.uuid4().hex[:8]}"
        # wide: the runs table draws only the columns in view
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--window-size=3200,1400",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", f"--virtual-time-budget={budget}", "--dump-dom", url]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        dom = done.stdout
        if all(e in dom for e in expect):
            break
    return dom


def text_of(dom: str) -> str:
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)).replace("&nbsp;", " ")


@pytest.fixture(scope="module")
def sweep(mlflow_server, tmp_path_factory):
    """Three mentees of one sweep on the server, the dashboard on its parent run, the best registered for
    stm32f746 (as `mentee pick --device stm32f746` does)."""
    from mlflow.tracking import MlflowClient

    from search.config import ArchConfig, MemberConfig, MemberResult, Status
    from search.devices import load_devices
    from search.measure import architecture_cost
    from search.models import create_mentee
    from search.results.dashboard import build_dashboard, write_dashboard
    from search.tracking import SweepTracker, load_runs, log_sweep_artifact, register_pick

    exp = f"browser-{uuid.uuid4().hex[:6]}"
    tracker = SweepTracker(mlflow_server, exp)
    parent = tracker.start_sweep(exp, {"dataset.name": "mnist1d"}, {"mentee.space_hash": "browser"})
    for i, widths in enumerate([(4,), (8, 8), (16, 16)]):
        arch = ArchConfig("conv1d", widths, 5, False)
        net = create_mentee(arch, (1, 40), 10)
        res = MemberResult(MemberConfig(arch), Status.FINISHED, val_acc=0.6 + 0.1 * i, test_acc=0.6 + 0.1 * i,
                           epochs_run=3, curves={"val_acc": [0.3, 0.5, 0.6 + 0.1 * i]},
                           cost=architecture_cost(net, (1, 40)), state_dict=net.state_dict())
        tracker.log_member(parent, res, tags={"mentee.input_shape": "[1, 40]", "mentee.num_classes": "10",
                                              "mentee.arm": "mentored" if i else "independent"}, member_id=str(i))
    runs = load_runs(mlflow_server, exp)
    html = build_dashboard(runs, title=exp, devices=[load_devices()["stm32f746"]], picked=None)
    path = write_dashboard(html, tmp_path_factory.mktemp("dash") / f"dashboard-{exp}.html")
    log_sweep_artifact(mlflow_server, parent, path)
    tracker.finish_sweep(parent)
    best = runs.sort_values("val_acc").run_id.iloc[-1]
    model, version, alias = register_pick(mlflow_server, best, "stm32f746")
    client = MlflowClient(mlflow_server)
    names = sorted(client.get_run(r).info.run_name for r in runs.run_id)
    by_val_acc = [client.get_run(r).info.run_name for r in runs.sort_values("val_acc", ascending=False).run_id]
    torch.set_num_threads(2)
    return {"base": mlflow_server, "exp": exp, "exp_id": tracker.experiment_id, "parent": parent, "names": names,
            "by_val_acc": by_val_acc,
            "model": model, "alias": alias, "parent_name": client.get_run(parent).info.run_name}


def test_the_printed_url_opens_on_the_training_runs(sweep, tmp_path):
    dom = dump_dom(tmp_path, experiment_url(sweep["base"], sweep["exp_id"]), [sweep["parent"]])
    text = text_of(dom)
    assert sweep["parent"] in dom, text[:2000]  # the sweep's parent run is a row of the runs table
    assert f"{sweep['parent_name']}" in text and "Run Name" in text
    assert "Token Usage" not in text  # not the GenAI overview MLflow 3 opens by default


def test_the_parent_run_lists_the_sweeps_runs(sweep, tmp_path):
    url = f"{sweep['base']}/#/experiments/{sweep['exp_id']}/runs/{sweep['parent']}?workflowType=machine_learning"
    text = text_of(dump_dom(tmp_path, url, sweep["names"]))
    assert "Child runs" in text, text[:2000]
    for name in sweep["names"]:  # conv1d-4-indep-s0, conv1d-8x8-indep-s0, conv1d-16x16-indep-s0
        assert name in text, f"{name} not on the parent run's page: {text[:2000]}"


def test_the_parent_runs_artifacts_list_the_dashboard(sweep, tmp_path):
    url = (f"{sweep['base']}/#/experiments/{sweep['exp_id']}/runs/{sweep['parent']}/artifacts"
           "?workflowType=machine_learning")
    file = f"dashboard-{sweep['exp']}.html"
    text = text_of(dump_dom(tmp_path, url, [file]))
    assert file in text, text[:2000]


def test_the_registry_shows_the_device_alias(sweep, tmp_path):
    text = text_of(dump_dom(tmp_path, f"{sweep['base']}/#/models/{sweep['model']}", ["stm32f746"]))
    assert re.search(r"Version 1 .*@ stm32f746", text), text[:2000]


def test_mentee_ui_prints_the_sweeps_url(tmp_path, unused_port):
    """`mentee ui --experiment NAME` prints the URL the tests above open, on its own store and port."""
    from search.tracking import SweepTracker, experiment_id

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    SweepTracker(uri, "printed")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "ui", "--tracking-uri", uri, "--port",
                             str(unused_port), "--experiment", "printed"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("the sweep's runs:" in x for x in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the exec'd `mlflow ui` and its workers: the whole session
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # a worker that ignored SIGTERM
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    want = experiment_url(f"http://127.0.0.1:{unused_port}", experiment_id(uri, "printed"))
    assert f"the sweep's runs: {want}" in lines, lines
    assert want.endswith("?workflowType=machine_learning")


def log_small_sweep(uri: str, exp: str) -> tuple[str, list[str]]:
    """A sweep of three mentees (two seeds each) in `uri`; (parent run id, run names best val_acc first)."""
    from mlflow.tracking import MlflowClient

    from search.config import ArchConfig, MemberConfig, MemberResult, Status
    from search.measure import architecture_cost
    from search.models import create_mentee
    from search.tracking import SweepTracker, load_runs

    tracker = SweepTracker(uri, exp)
    parent = tracker.start_sweep(exp, {"dataset.name": "mnist1d"}, {"mentee.space_hash": "ready"})
    for i, widths in enumerate([(4,), (8, 8), (16, 16)]):
        arch = ArchConfig("conv1d", widths, 5, False)
        net = create_mentee(arch, (1, 40), 10)
        acc = (0.7, 0.9, 0.8)[i]  # the middle one best: sorted by val_acc is not the order they were logged
        res = MemberResult(MemberConfig(arch), Status.FINISHED, val_acc=acc, test_acc=acc - 0.01, epochs_run=3,
                           cost=architecture_cost(net, (1, 40)), state_dict=net.state_dict())
        tracker.log_member(parent, res, tags={"mentee.input_shape": "[1, 40]", "mentee.num_classes": "10",
                                              "mentee.arm": "mentored" if i else "independent"}, member_id=str(i))
    tracker.finish_sweep(parent)
    client = MlflowClient(uri)
    runs = load_runs(uri, exp).sort_values("val_acc", ascending=False)
    return parent, [client.get_run(r).info.run_name for r in runs.run_id]


def test_mentee_ui_opens_the_sweeps_mentees_flat_sorted_with_their_numbers(tmp_path, unused_port, mlflow_up):
    """`mentee ui` on a store with a sweep prints a URL that opens its mentees as rows of their own (the parent
    filtered out, nothing folded under it), val_acc, test_acc, params, bytes_int8 and the arm as columns, best
    val_acc first; on one MLflow worker and no job runner."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent, names = log_small_sweep(uri, "ready")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "ui", "--tracking-uri", uri, "--port",
                             str(unused_port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and url is None:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("the sweep's runs: "):
                url = line.split(": ", 1)[1].strip()
        assert url is not None and f"viewStateShareKey=mentee-{parent}" in url, url
        base = url.split("/#/")[0]
        # the server answers after ~15 s
        assert mlflow_up(base, proc, deadline + 60 - time.monotonic()), "mentee ui's server did not come up"
        dom = dump_dom(tmp_path, url, names + ["bytes_int8"])
        text = text_of(dom)
        for column in ("val_acc", "test_acc", "params", "bytes_int8", "mentee.arm"):
            assert column in text, f"column {column} missing: {text[:3000]}"
        order = [text.find(n) for n in names]
        assert -1 not in order, f"a mentee is not a row: {names} {text[:3000]}"  # none folded away
        assert order == sorted(order), (names, text[:3000])  # best val_acc first
        assert f"/runs/{parent}" not in dom  # the parent is no row: nothing is folded under it
        workers = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) <= 4, workers  # the exec'd server, its one uvicorn worker (MLflow's default: 4 + jobs)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
