"""Data-parallel mentor training: two real gloo workers under the session's local Ray (2 CPUs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search.config import ArchConfig
from search.errors import UserError
from search.mentors import load_mentor
from search.train.ddp import train_mentor_ddp

REPO = Path(__file__).resolve().parents[2]


def test_two_gloo_workers_train_a_mentor_that_loads(ray_local, mnist1d_small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Ray's temporary storage goes under the work dir
    arch = ArchConfig("conv1d", (16, 32), 5, True)
    mentor, metrics = train_mentor_ddp(arch, mnist1d_small, workers=2, use_gpu=False, epochs=10, lr=1e-2,
                                       batch_size=64, seed=0, out=tmp_path / "m.pt")
    # both workers ran: the world had two ranks and two distinct processes joined its collectives
    assert metrics["world_size"] == 2 and metrics["processes"] == 2
    assert not list(tmp_path.glob(".mentor-ddp-*")), "the temporary Ray storage was left behind"

    loaded = load_mentor(tmp_path / "m.pt")
    assert set(loaded.spec["metrics"]) == {"val_acc", "test_acc", "params"}  # train_mentor's keys
    assert loaded.spec["metrics"] == {k: metrics[k] for k in ("val_acc", "test_acc", "params")}
    assert tuple(loaded.spec["arch"]["widths"]) == (16, 32) and loaded.spec["arch"]["batch_norm"] is True
    assert mentor.spec["metrics"] == loaded.spec["metrics"]
    # the saved weights are the ones rank 0 evaluated: the file reproduces the reported test accuracy
    with torch.no_grad():
        pred = loaded.model(mnist1d_small.x_test).argmax(-1)
    assert (pred == mnist1d_small.y_test).float().mean().item() == pytest.approx(metrics["test_acc"], abs=1e-6)
    # DDP learns what one process learns at the same global batch (64 = 2 workers x 32), epochs, lr and
    # seed: the shards and per-worker batch-norm statistics differ, so not bit for bit, but as well as
    # one process does, seed for seed (one process's own spread over seeds 0-2 is the yardstick)
    from search.train.mentor import train_mentor

    alone = [train_mentor(arch, mnist1d_small, epochs=10, lr=1e-2, batch_size=64, seed=s)[1]["test_acc"]
             for s in range(3)]
    spread = max(alone) - min(alone)
    # measured on 2 CPU cores: DDP 0.475; one process 0.475, 0.442, 0.525 (seeds 0, 1, 2)
    assert abs(metrics["test_acc"] - alone[0]) <= max(spread, 0.05), (metrics["test_acc"], alone)


def test_bad_worker_counts_are_user_errors(mnist1d_small):
    arch = ArchConfig("conv1d", (8,), 5)
    with pytest.raises(UserError, match="--workers"):
        train_mentor_ddp(arch, mnist1d_small, workers=0, epochs=1)
    with pytest.raises(UserError, match="more workers than samples in a batch"):
        train_mentor_ddp(arch, mnist1d_small, workers=4, epochs=1, batch_size=2)


@pytest.mark.parametrize("workers", ["0", "-2"])
def test_cli_rejects_workers_below_one(tmp_path, workers):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-m", "search.cli", "mentor", "train", "--workers", workers,
                        "--out", "m.pt"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "--workers" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
