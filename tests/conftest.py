"""Shared fixtures: small real datasets and one local Ray for the whole session."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def mnist1d_small():
    from search.data import load_dataset

    return load_dataset("mnist1d", n_samples=600, seed=0)


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for every test that needs it (starting Ray costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, logging_level="ERROR")
    yield ray
    ray.shutdown()
