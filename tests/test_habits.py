"""The house's habits, checked by the one test command: `ruff check .` and `mypy` (configured in
pyproject.toml: `files = ["search"]`) both pass from the repository root.

Run as subprocesses, as a developer runs them, so their output on failure is what they would print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: float) -> None:
    try:
        p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`{' '.join(args)}` ran over {timeout:g} s\n{e.stdout or ''}{e.stderr or ''}")
    assert p.returncode == 0, f"`{' '.join(args)}` exited {p.returncode}\n{p.stdout}{p.stderr}"


def test_ruff_check_passes():
    # `python -m`: the ruff and mypy of the interpreter running the tests, whatever PATH says
    _run([sys.executable, "-m", "ruff", "check", "."], timeout=120)


def test_mypy_passes():
    # `mypy search`: the package, as pyproject's [tool.mypy] configures it (~35 s cold on 2 cores, ~6 s cached)
    _run([sys.executable, "-m", "mypy", "search"], timeout=300)
