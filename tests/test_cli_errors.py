"""Bad input the corpus (tests/test_bad_input.py) does not reach: Click's own usage errors, which
only `search.cli.main` turns into one line, and a broken mentor file named by a space, which must
fail before MLflow or Ray are touched. Same rules: exit 2, one line on stderr, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from search.cli import app, main

REPO = Path(__file__).resolve().parents[1]

USAGE = [
    pytest.param(["compare", "--epochs", "abc"], ["--epochs", "integer", "mentee compare --help"], id="not-an-int"),
    pytest.param(["compare", "--epoch", "3"], ["No such option: --epoch", "--epochs"], id="unknown-option"),
    pytest.param(["sweep"], ["Missing argument", "mentee sweep --help"], id="missing-argument"),
    pytest.param(["swep", "x.yaml"], ["No such command 'swep'"], id="unknown-command"),
    pytest.param(["ui", "--port", "x"], ["--port"], id="ui-port-word"),
    pytest.param(["mentor", "train", "--lr", "fast"], ["--lr", "mentee mentor train --help"], id="float-word"),
    pytest.param(["pareto", "--gains", "yes"], ["unexpected extra argument", "yes"], id="extra-argument"),
]


@pytest.mark.parametrize("args,expect", USAGE)
def test_usage_error_is_one_line(args, expect, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    out = capsys.readouterr()
    lines = [ln for ln in out.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    assert "╭" not in out.err and "Traceback" not in out.err + out.out
    for word in expect:
        assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]!r}"
    assert list(tmp_path.iterdir()) == []


def test_help_and_bare_command_still_work(capsys):
    assert main(["--help"]) == 0
    assert "sweep" in capsys.readouterr().out
    assert main([]) == 2  # no command: the help, exit 2, as Typer does
    assert "Usage" in capsys.readouterr().out


def test_real_process_usage_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-m", "search.cli", "compare", "--epochs", "abc"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ------------------------------------------------- a space naming a broken mentor file

SPACE = {"name": "bad", "dataset": {"name": "mnist1d", "n_samples": 300},
         "mentor": {"path": "m.pt", "arch": {"widths": [8, 8, 8]}, "epochs": 1},
         "mentee": {"depth": [1, 2], "width": [4, 8], "growth": 1}, "train": {"epochs": 2},
         "budget": {"mentees": 4, "cohort_size": 2}}


def _truncated_mentor(path: Path) -> None:
    from search.config import ArchConfig
    from search.mentors import save_mentor
    from search.models import create_mentee

    arch = ArchConfig("conv1d", (8, 8, 8), 5, True)
    save_mentor(path, create_mentee(arch, (1, 40), 10), arch, dataset="mnist1d", input_shape=(1, 40),
                num_classes=10, metrics={})
    path.write_bytes(path.read_bytes()[:300])


MENTORS = [
    pytest.param(lambda p: p.write_text("not weights\n"), ["not a PyTorch weights file"], id="text"),
    pytest.param(_truncated_mentor, ["not a PyTorch weights file"], id="truncated"),
    pytest.param(lambda p: torch.save({"weights": torch.zeros(3)}, p), ["not a mentor saved by"], id="plain-tensors"),
    pytest.param(lambda p: p.mkdir(), ["directory"], id="directory"),
]


@pytest.mark.parametrize("damage,expect", MENTORS)
def test_sweep_refuses_a_broken_mentor_before_writing(damage, expect, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    import ray

    def refuse(*a, **k):
        raise AssertionError("a broken mentor reached ray.init")

    monkeypatch.setattr(ray, "init", refuse)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    damage(tmp_path / "m.pt")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(app, ["sweep", "space.yaml"])
    assert result.exit_code == 2, (result.exception, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    for word in ["space.yaml", "mentor.path", "m.pt", *expect]:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no mlflow.db, no mentee-runs/
