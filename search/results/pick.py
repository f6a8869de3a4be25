"""Pick a mentee: the most accurate finished one within budgets, or within a device's profile.

    row = pick(df, max_params=parse_budget("--max-params", "5k"))   # best finished row in budget
    row, nearest = pick_for_device(df, profile, uri)                  # latency budgets timed here
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Unpack

import pandas as pd

from search.devices import BudgetMiss, DeviceProfile
from search.pareto import Budget, _finished

__all__ = ["pick", "pick_for_device"]


def pick(df: pd.DataFrame, *, max_params: float | None = None, max_bytes: float | None = None,
         max_macs: float | None = None, acc: str = "val_acc", bytes_col: str = "bytes_int8") -> pd.Series | None:
    """The most accurate finished mentee within every given budget, by `acc` (val_acc: its mean over
    seeds, the number the front and the dashboard show); ties → fewer params, then run_id. None if
    nothing fits. A row with columns other budgets read (train_bytes, latency_ms) is checked by
    `pick_for_device`."""
    d = _finished(df).dropna(subset=[acc])
    for col, limit in (("params", max_params), (bytes_col, max_bytes), ("macs", max_macs)):
        if limit is not None:
            d = d[d[col] <= limit]  # a NaN cost compares False: unknown never fits
    if d.empty:
        return None
    d = d.sort_values([acc, "params", "run_id"], ascending=[False, True, True], kind="mergesort")
    return d.iloc[0]


def _known_misses(profile: DeviceProfile, cost) -> list[BudgetMiss]:
    """The budgets a row misses but latency (timed only for the best candidates): sizes, compute, and
    training memory where the profile budgets it (results.costs.with_training_memory fills that column)."""
    return [m for m in profile.check(cost) if m.budget.axis != "latency_ms"]


def _latency_from_run(uri: str | None) -> Callable[[pd.Series], float]:
    def measure(row: pd.Series) -> float:
        from search.measure import latency_ms_ort
        from search.models import create_mentee
        from search.tracking import load_member

        cfg, _, meta = load_member(uri, row["run_id"])
        net = create_mentee(cfg.arch, meta["input_shape"], meta["num_classes"])
        return latency_ms_ort(net, tuple(meta["input_shape"]))
    return measure


def pick_for_device(df: pd.DataFrame, profile: DeviceProfile, uri: str | None = None, *,
                    latency: Callable[[pd.Series], float] | None = None,
                    **budget: Unpack[Budget]) -> tuple[pd.Series | None, list[tuple[pd.Series, list[BudgetMiss]]]]:
    """The most accurate finished mentee that fits the device (and `budget`: max_params, max_bytes,
    max_macs, as `pareto.pick` takes them); `(row, [])`, or `(None, nearest)`: up to three finished rows
    with what each misses. A latency budget is checked here only: the best candidate's architecture is
    timed (`latency(row)`, by default ONNX Runtime on the run's architecture; once per architecture) and
    the next one tried while it is too slow. The row returned carries `latency_ms` when it was timed."""
    latency = latency or _latency_from_run(uri)
    lat = profile.budget("latency_ms")
    timed: dict[str, float] = {}
    df = df.copy()
    df["latency_ms"] = math.nan
    pool = df[[not _known_misses(profile, r) for _, r in df.iterrows()]] if len(df) else df
    while (row := pick(pool, **budget)) is not None:
        if lat is None:
            return row, []
        key = row["arch_key"]
        if key not in timed:
            timed[key] = float(latency(row))
        df.loc[df.arch_key == key, "latency_ms"] = timed[key]
        if lat.device_value(timed[key]) <= lat.limit:
            row = row.copy()
            row["latency_ms"] = timed[key]
            return row, []
        pool = pool[pool.arch_key != key]
    done = df[df.status == "finished"]
    # latency not timed (another budget already fails) is left out of the misses: it would only say "not measured"
    rows = [(r, [m for m in profile.check(r) if m.value is not None or m.budget.axis != "latency_ms"])
            for _, r in done.iterrows()]
    rows.sort(key=lambda x: (len(x[1]), x[0]["params"]))
    return None, rows[:3]
