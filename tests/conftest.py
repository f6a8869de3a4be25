"""Shared fixtures: small real datasets and one local Ray for the whole session."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
import torch

os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
# generated datasets are cached here, not in the user's ~/.cache; subprocesses and Ray workers inherit it
if "MENTEE_CACHE_DIR" not in os.environ:
    os.environ["MENTEE_CACHE_DIR"] = tempfile.mkdtemp(prefix="mentee-test-cache-")
    atexit.register(shutil.rmtree, os.environ["MENTEE_CACHE_DIR"], ignore_errors=True)
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def mnist1d_small():
    from search.data import load_dataset

    return load_dataset("mnist1d", n_samples=600, seed=0)


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for every test that needs it (starting Ray costs seconds)."""
    import ray

    # address="local": a new Ray of our own, never one a `ray start` on this machine left running
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True, logging_level="ERROR")
    yield ray
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    """A TCP port free on 127.0.0.1 right now (tests import no helpers from conftest)."""
    return free_port()


def mlflow_answers(base: str) -> bool:
    """Whether an MLflow server answers GET /health at `base` (it takes ~15 s after its start)."""
    try:
        with urllib.request.urlopen(base + "/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def mlflow_up():
    """`mlflow_up(base, proc, seconds)`: wait until the server `proc` started answers at `base`; False if
    `proc` died or `seconds` passed first (the caller says what failed, with its own log)."""
    def wait(base: str, proc: subprocess.Popen, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not mlflow_answers(base):
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True
    return wait


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, mlflow_up):
    """One real `mlflow server` on sqlite for the session (it takes ~15 s to answer); its
    whole process group is killed at the end. Tests keep apart by experiment name."""
    srv = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(srv / "server.log", "wb")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{srv / 'srv.db'}",
           "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=srv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        if not mlflow_up(base, proc, 90):
            pytest.fail(f"mlflow server did not come up:\n{(srv / 'server.log').read_text()[-3000:]}")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server forks workers: signal its whole session
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# ----------------------------------------------------------------- a missing browser is never a silent skip
# The browser tests skip where Chromium is missing. That skip is named at the end of the run, with how to
# install it; where the browser is required (CI, `.ci/run`: CI=true or MENTEE_REQUIRE_BROWSER=1) it fails
# the run, so a CI machine that lost its browser never passes with the browser tests unrun.
_BROWSER_SKIPS: list[str] = []


def _browser_required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("MENTEE_REQUIRE_BROWSER") == "1"


def _note_browser_skip(report) -> None:
    if report.skipped and "chromium" in str(report.longrepr).lower():
        _BROWSER_SKIPS.append(report.nodeid)


def pytest_collectreport(report):
    _note_browser_skip(report)


def pytest_runtest_logreport(report):
    _note_browser_skip(report)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _BROWSER_SKIPS:
        verdict = "FAILED: the browser is required here" if _browser_required() else "skipped"
        terminalreporter.write_line(
            f"browser tests {verdict} ({len(_BROWSER_SKIPS)}: {', '.join(_BROWSER_SKIPS)}): no Chromium on this "
            "machine; install it with `apt-get install -y chromium` (Debian/Ubuntu)", red=True, bold=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if _BROWSER_SKIPS and _browser_required() and session.exitstatus in (0, 5):  # 5: nothing else ran
        session.exitstatus = 1
    _write_gpu_record()


# ----------------------------------------------------------------- the record of a GPU run
# Each test marked `gpu` that ran leaves its result (and what it measured, through `record_property`)
# in bench/results/gpu-tests-<card>.json, with the card's name and the date: the last GPU run, on file.
_GPU_RESULTS: dict[str, dict] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    if item.get_closest_marker("gpu") is not None and (rep.when == "call" or rep.outcome != "passed"):
        _GPU_RESULTS[item.nodeid] = {"result": rep.outcome, **{k: v for k, v in item.user_properties}}


def _write_gpu_record() -> None:
    if not _GPU_RESULTS or not torch.cuda.is_available():
        return
    import datetime
    import json
    import re
    from pathlib import Path

    card = torch.cuda.get_device_name(0)
    name = re.sub(r"[^A-Za-z0-9.-]+", "-", card)
    out = Path(__file__).resolve().parents[1] / "bench" / "results" / f"gpu-tests-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"card": card, "date": datetime.datetime.now(datetime.UTC).isoformat(
        timespec="seconds"), "torch": torch.__version__, "cuda": torch.version.cuda, "tests": _GPU_RESULTS},
        indent=2, default=str) + "\n")
