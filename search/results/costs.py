"""Costs a sweep cannot know and the picking machine computes: training memory at a device's batch size.

    df = with_training_memory(runs, profile, lambda rid: load_arch(uri, rid))   # + column profile.train.axis

A profile's `train: {limit, batch_size, optimizer}` budgets the memory to train a mentee on the device
(measure.training_memory: weights, gradients, optimiser state, saved activations). It depends on the
profile's batch size and optimiser, so it is computed here, once per architecture, into the column
the budget reads (`train_bytes.b<batch>.<optimizer>`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from search.devices import DeviceProfile

__all__ = ["with_training_memory"]


def with_training_memory(runs: pd.DataFrame, profile: DeviceProfile,
                         load: Callable[[str], tuple[Any, dict]]) -> pd.DataFrame:
    """`runs` with the column of `profile`'s training budget; unchanged when the profile budgets none.
    `load(run_id) -> (ArchConfig, {"input_shape", "num_classes"})` reads one run's architecture."""
    if profile.train is None:
        return runs
    from search.measure import training_memory_bytes
    from search.models import create_mentee

    t, out = profile.train, runs.copy()
    done = out[out["status"] == "finished"] if "status" in out.columns else out.iloc[0:0]
    by_arch: dict[str, float] = {}
    for key, rid in done.groupby("arch_key")["run_id"].first().items():
        arch, meta = load(rid)
        net = create_mentee(arch, meta["input_shape"], meta["num_classes"])
        by_arch[str(key)] = float(training_memory_bytes(net, tuple(meta["input_shape"]), t.batch_size, t.optimizer))
    out[t.axis] = out["arch_key"].map(by_arch).astype(float)
    return out
