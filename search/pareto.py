"""The front math both sides need: fronts, the two arms' pairs, paired gains, budgets, hypervolume.

A leaf module (numpy, pandas, scipy): the driver (search/sweep/) and the reading side (search/results/)
both import it; the views built on it — tables, pick, dashboard, export — live in search/results/.

    front = pareto_front(df, acc="val_acc", cost="params")       # finished rows only, by cost
    pairs = mentorship_pairs(df, cost="params")                   # best of each arm at every front size
    g = paired_gain([.81, .83], [.79, .80])                       # mean, std, n, 95% t-interval
    n = parse_budget("--max-params", "5k")                        # 5000
    hv = hypervolume_2d(front, ref_cost=1e6)                      # area under the staircase

Only `status == "finished"` rows count: a pruned run stopped early and its accuracy is not
comparable, a failed one has none. One row per mentee (its seeds fused): val_acc and test_acc
are its seed means. Optional columns: arm (mentored / independent; else read off `independent`), work.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import pandas as pd

from search.errors import UserError

__all__ = ["ARMS", "Budget", "arm_of", "finished", "hypervolume_2d", "mentorship_pairs", "paired_gain",
           "parse_budget", "pareto_front", "ci95"]

ARMS = ("mentored", "independent")


def _finished(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "finished"]


def _arm(df: pd.DataFrame) -> pd.Series:
    """Each row's arm; where a frame doesn't say, a row without mentor terms is the independent side."""
    if "independent" in df.columns:
        derived = _is_true(df["independent"]).map({True: "independent", False: "mentored"})
    else:
        derived = pd.Series("mentored", index=df.index, dtype=object)
    return df["arm"].where(df["arm"].isin(ARMS), derived) if "arm" in df.columns else derived


def _is_true(s: pd.Series) -> pd.Series:
    # Tracking stores may hand booleans back as strings ("True") or 0/1.
    if s.dtype == bool:
        return s
    return s.map(lambda v: str(v).strip().lower() in ("true", "1", "1.0", "yes"))


def pareto_front(df: pd.DataFrame, *, acc: str = "val_acc", cost: str = "params") -> pd.DataFrame:
    """Finished rows that no other finished row beats (acc ≥ and cost ≤, one strictly), by cost.

    Sort by (cost ↑, acc ↓, run_id ↑) and keep each row that beats the best acc seen so
    far: O(n log n). Exact duplicates keep the first by run_id; rows without acc or cost
    cannot be ranked and are left out."""
    d = _finished(df).dropna(subset=[acc, cost])
    d = d.sort_values([cost, acc, "run_id"], ascending=[True, False, True], kind="mergesort")
    a = d[acc].to_numpy(dtype=float)
    best_before = np.concatenate(([-np.inf], np.maximum.accumulate(a)[:-1])) if len(a) else a
    return d[a > best_before].reset_index(drop=True)


def mentorship_pairs(df: pd.DataFrame, *, cost: str = "params", select: str = "val_acc") -> pd.DataFrame:
    """The two arms' fronts side by side: one row per size that is a point of either arm's front
    (`select` vs `cost`), with the best mentored and the best independent mentee at ≤ that size,
    picked by `select` as a user would pick them. Columns: cost, front (mentored, independent or
    both: whose front the size is on), mentored_run_id, independent_run_id (missing where that arm
    has nothing that small). Its run ids are what re-evaluation retrains."""
    d = _finished(df).dropna(subset=[select, cost])
    arm = _arm(d)
    fronts = {a: pareto_front(d[arm == a], acc=select, cost=cost) for a in ARMS}
    on = {a: set(f[cost]) for a, f in fronts.items()}
    rows = []
    for c in sorted(on["mentored"] | on["independent"]):
        row: dict = {cost: c, "front": "both" if all(c in on[a] for a in ARMS) else next(a for a in ARMS if c in on[a])}
        for a, f in fronts.items():
            below = f[f[cost] <= c]  # a front is a staircase: its last point at ≤ c is the best there
            row[f"{a}_run_id"] = below["run_id"].iloc[-1] if len(below) else None
        rows.append(row)
    return pd.DataFrame(rows, columns=[cost, "front", "mentored_run_id", "independent_run_id"])


def paired_gain(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """a − b over pairs (the same seeds): mean, sample std, pairs and the two-sided `level`
    confidence interval of the mean from Student's t (NaN with fewer than two pairs)."""
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n, nan = len(d), float("nan")
    mean = float(d.mean()) if n else nan
    sd = float(d.std(ddof=1)) if n > 1 else nan
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n) if n > 1 else nan
    return {"gain": mean, "gain_std": sd, "n_pairs": n, "gain_ci_low": mean - half, "gain_ci_high": mean + half}


def ci95(std: float, n: int, level: float = 0.95) -> float:
    """Half-width of the two-sided `level` t-interval of a mean over n seeds with sample std `std`
    (NaN below two seeds): the mentee record's own rule (search.mentees.t_half_width), one definition."""
    from search.mentees import t_half_width

    return t_half_width(float(std), int(n), level)


_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_BYTE_UNITS = {**_COUNT_UNITS, "b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20,
               "gb": 10**9, "gib": 2**30}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_budget(flag: str, value: str) -> int:
    """'5000', '5k', '1.5M', '2G' → int; a bytes flag (its name says 'bytes') also takes
    B, KB, KiB, MB, MiB, GB, GiB (KB = 1000, KiB = 1024). Suffixes are case-insensitive."""
    is_bytes = "byte" in flag.lower()
    units = _BYTE_UNITS if is_bytes else _COUNT_UNITS
    what = "a size" if is_bytes else "a count"
    expected = "B, KB, KiB, MB, MiB, GB, GiB" if is_bytes else "k, M, G"
    text = str(value).strip()
    if not text:
        raise UserError(f"{flag}: empty budget; expected a number with an optional unit {expected}")
    if text.startswith("-"):
        raise UserError(f"{flag}: '{value}' is negative; a budget must be ≥ 0")
    m = _NUMBER.match(text)
    if not m or m.group(2).lower() not in units:
        raise UserError(f"{flag}: '{value}' is not {what}; "
                        f"expected a number with an optional unit {expected}")
    n = float(m.group(1)) * units[m.group(2).lower()]
    if not math.isfinite(n):
        raise UserError(f"{flag}: '{value}' is too large")
    return int(n)  # floor: a fractional budget never lets a bigger model through


class Budget(TypedDict, total=False):
    """`pick`'s limits, as the --max-* flags give them (None: no limit on that column)."""

    max_params: float | None
    max_bytes: float | None
    max_macs: float | None


def hypervolume_2d(front_df: pd.DataFrame, *, acc: str = "val_acc", cost: str = "params", ref_cost: float,
                   ref_acc: float = 0.0, log_cost: bool = True) -> float:
    """Area dominated by the points (acc ↑, cost ↓) and bounded by (ref_cost, ref_acc).

    With log_cost the cost axis is log10(cost), so a 10× smaller model counts the same at
    any scale. Points not better than the reference on both axes add nothing. Takes any
    set of points (dominated ones add nothing); rows not finished are ignored."""
    d = _finished(front_df) if "status" in front_df.columns else front_df
    d = d.dropna(subset=[acc, cost])
    c = d[cost].to_numpy(dtype=float)
    a = d[acc].to_numpy(dtype=float)
    rc = float(ref_cost)
    if log_cost:
        if rc <= 0 or (c <= 0).any():
            raise ValueError("log_cost needs every cost and ref_cost > 0")
        c, rc = np.log10(c), math.log10(rc)
    ok = (c < rc) & (a > ref_acc)
    c, a = c[ok], a[ok]
    if c.size == 0:
        return 0.0
    order = np.argsort(c, kind="mergesort")
    c, a = c[order], np.maximum.accumulate(a[order])  # best acc reachable at cost ≤ c
    widths = np.diff(np.append(c, rc))
    return float(np.sum(widths * (a - ref_acc)))


finished = _finished  # the rows every view counts (public: search/results reads them too)
arm_of = _arm
