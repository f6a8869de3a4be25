"""The fronts as a user reads them: one row per mentee, its seed means, its interval, the paired gain.

    df = as_mentees(load_runs(uri, "mnist1d"))     # seeds, n_seeds, *_std, *_accs filled for old stores
    view = front_view(df, cost="params")            # the front, exactly the columns `pareto` prints
    table = mentorship_front(df)                    # both arms at every size: mean ± CI, paired gain
    counts = arm_balance(df)                        # searched mentees per arm in each size band

One number everywhere: a mentee is one config trained with N seeds; `val_acc` is the seed mean on
validation (what choosing uses), `test_acc` the seed mean on test (what reporting uses), with
`test_ci` the 95% t-interval half-width over seeds. The only gain shown is mentored − independent
paired by seed (the seeds both mentees have), with its 95% t-interval.

Built on the front math of search.pareto (shared with the driver); reads frames that search.tracking
returns. Never imports the driver (search/sweep/) or Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from search.pareto import ARMS, _arm, _finished, ci95, mentorship_pairs, paired_gain, pareto_front

__all__ = ["COMPACT", "WIDE", "arm_balance", "as_mentees", "front_view", "mentee_view", "mentorship_front",
           "seed_label"]

# The front's columns, as `pareto` prints them: compact fits 100 columns, --wide adds the rest.
COMPACT = ["run_id", "arm", "widths", "params", "bytes_int8", "val_acc", "n_seeds", "test_acc", "test_ci", "gain",
           "gain_ci"]
WIDE = ["run_id", "member_id", "arm", "family", "widths", "kernel", "mapping", "params", "bytes_fp32", "bytes_int8",
        "sram_fp32", "sram_int8", "macs", "latency_ms", "val_acc", "val_ci", "n_seeds", "test_acc", "test_ci",
        "test_std", "gain", "gain_ci", "gain_low", "gain_high", "n_pairs"]


def _tuple(v: object) -> tuple:
    if isinstance(v, (tuple, list, np.ndarray)):
        return tuple(v)
    if isinstance(v, str) and v:  # a csv or tag round trip: "0,1,2"
        return tuple(float(x) if "." in x else int(x) for x in v.strip("()[]").split(",") if x.strip())
    return ()


def as_mentees(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with the mentee record's seed columns (seeds, n_seeds, val_acc_std, test_acc_std,
    val_accs, test_accs). A store written before seeds were fused has one seed a run: its own number."""
    out = df.copy()
    one = out["seed"] if "seed" in out.columns else pd.Series(0, index=out.index)
    fill = {"seeds": lambda: [(int(s),) for s in one], "n_seeds": lambda: [len(s) for s in out["seeds"]],
            "val_accs": lambda: [(float(v),) for v in out["val_acc"]],
            "test_accs": lambda: [(float(v),) for v in out["test_acc"]],
            "val_acc_std": lambda: math.nan, "test_acc_std": lambda: math.nan}
    for col, make in fill.items():  # in this order: n_seeds counts the seeds just filled
        if col not in out.columns:
            out[col] = make()
    for col in ("seeds", "val_accs", "test_accs"):
        out[col] = out[col].map(_tuple)
    out["n_seeds"] = pd.to_numeric(out["n_seeds"], errors="coerce").fillna(0).astype(int)
    return out


def seed_label(df: pd.DataFrame) -> str:
    """How many seeds each accuracy is a mean of: "mean of 3 seeds", or "mean of 2-3 seeds"."""
    d = df[df["status"] == "finished"] if "status" in df.columns else df
    n = sorted({int(v) for v in d["n_seeds"]}) if "n_seeds" in d.columns and len(d) else [1]
    many = f"{n[0]}" if len(n) == 1 else f"{n[0]}-{n[-1]}"
    return f"mean of {many} seed{'s' if n[-1] != 1 else ''}"


def _by_seed(row: pd.Series, acc: str = "test_acc") -> dict[int, float]:
    return dict(zip(_tuple(row.get("seeds")), _tuple(row.get(f"{acc}s")), strict=False))


def _paired(mentored: pd.Series, independent: pd.Series, acc: str = "test_acc") -> dict[str, float]:
    """mentored − independent on the seeds both have (NaN interval below two pairs)."""
    m, i = _by_seed(mentored, acc), _by_seed(independent, acc)
    common = sorted(set(m) & set(i))
    return paired_gain([m[s] for s in common], [i[s] for s in common])


def _with_intervals(d: pd.DataFrame) -> pd.DataFrame:
    out = d.copy()
    out["val_ci"] = [ci95(s, n) for s, n in zip(out["val_acc_std"], out["n_seeds"])]
    out["test_ci"] = [ci95(s, n) for s, n in zip(out["test_acc_std"], out["n_seeds"])]
    out["test_std"] = out["test_acc_std"]
    return out


def _gains(rows: pd.DataFrame, df: pd.DataFrame, cost: str) -> pd.DataFrame:
    """Each mentored row's paired gain over the best independent mentee (by val_acc) at ≤ its cost: the
    mentee a user would have picked without a mentor at that size. Independent rows have no gain."""
    d = _finished(df).dropna(subset=["val_acc", cost])
    ind = pareto_front(d[_arm(d) == "independent"], acc="val_acc", cost=cost)
    out = rows.copy()
    cols = ("gain", "gain_low", "gain_high", "n_pairs")
    vals: dict[str, list[float]] = {c: [] for c in cols}
    for _, r in out.iterrows():
        below = ind[ind[cost] <= r[cost]]
        g = _paired(r, below.iloc[-1]) if r["arm"] == "mentored" and len(below) else {}
        for c, key in zip(cols, ("gain", "gain_ci_low", "gain_ci_high", "n_pairs")):
            vals[c].append(g.get(key, math.nan))
    for c in cols:
        out[c] = vals[c]
    out["gain_ci"] = (out["gain_high"] - out["gain_low"]) / 2  # a t-interval is symmetric: mean ± this
    return out


def front_view(df: pd.DataFrame, *, cost: str = "params", wide: bool = False,
               extra: Sequence[str] = ()) -> pd.DataFrame:
    """The front (val_acc vs `cost`, finished mentees) with exactly the columns `pareto` shows: COMPACT
    or WIDE (those the frame has), `cost` if neither has it, then `extra` (e.g. a device's fit column)."""
    d = as_mentees(df)
    d = d.assign(arm=_arm(d)) if len(d) else d.assign(arm=pd.Series(dtype=object))
    front = _gains(_with_intervals(pareto_front(d, acc="val_acc", cost=cost)), d, cost)
    cols = [c for c in (WIDE if wide else COMPACT) if c in front.columns]
    if not wide and front["n_seeds"].nunique() <= 1:  # one count for all: the title says it (seed_label)
        cols.remove("n_seeds")
    if cost not in cols:
        cols.insert(cols.index("val_acc"), cost)
    return front[cols + [c for c in extra if c in front.columns]].reset_index(drop=True)


def mentee_view(row: pd.Series, *, wide: bool = False) -> pd.DataFrame:
    """One mentee (a pick) with the front's columns, so `pick --format json` prints what `pareto` does."""
    one = _with_intervals(as_mentees(pd.DataFrame([row])))
    one["arm"] = _arm(one)
    for c in ("gain", "gain_ci", "gain_low", "gain_high", "n_pairs"):
        one[c] = row.get(c, math.nan)
    cols = [c for c in (WIDE if wide else COMPACT) if c in one.columns]
    return one[cols].reset_index(drop=True)


def mentorship_front(df: pd.DataFrame, *, cost: str = "params", acc: str = "test_acc",
                     select: str = "val_acc") -> pd.DataFrame:
    """What mentorship buys at every size: `mentorship_pairs` (the best of each arm at ≤ that size, by
    `select`) with each side's `acc` as seed mean, 95% CI half-width and seeds, and the gain
    mentored − independent paired by seed, with its 95% t-interval."""
    d = as_mentees(df)
    pairs = mentorship_pairs(d, cost=cost, select=select)
    runs = _finished(d).set_index("run_id")
    rows = []
    for p in pairs.to_dict("records"):
        row, side = dict(p), {}
        for a in ARMS:
            rid = p[f"{a}_run_id"] if isinstance(p[f"{a}_run_id"], str) else None  # None: nothing that small
            r = runs.loc[rid] if rid is not None else None
            side[a] = r
            for col in ("widths", "mapping", cost):
                row[f"{a}_{col}"] = r.get(col) if r is not None else None
            n = int(r["n_seeds"]) if r is not None else 0
            row.update({f"{a}_acc": float(r[acc]) if r is not None else math.nan,
                        f"{a}_std": float(r[f"{acc}_std"]) if r is not None else math.nan,
                        f"{a}_ci": ci95(r[f"{acc}_std"], n) if r is not None else math.nan, f"{a}_n": n})
        if side["mentored"] is not None and side["independent"] is not None:
            row.update(_paired(side["mentored"], side["independent"], acc))
        else:
            row.update(gain=math.nan, gain_std=math.nan, n_pairs=0, gain_ci_low=math.nan, gain_ci_high=math.nan)
        rows.append(row)
    per_arm = ("run_id", "widths", "mapping", cost, "acc", "std", "ci", "n")
    cols = [cost, "front"] + [f"{a}_{c}" for a in ARMS for c in per_arm]
    return pd.DataFrame(rows, columns=cols + ["gain", "gain_std", "n_pairs", "gain_ci_low", "gain_ci_high"])


def arm_balance(df: pd.DataFrame, *, cost: str = "params") -> pd.DataFrame:
    """Searched mentees per arm in each size band (band k holds costs in [2^k, 2^(k+1))), finished
    or not: the budget matching, checked. Twins and fixed mentees don't count."""
    d = df
    if "work" in d.columns:
        d = d[d["work"].isna() | (d["work"] == "searched")]
    d = d.dropna(subset=[cost])
    band = np.floor(np.log2(d[cost].astype(float).clip(lower=1))).astype(int).rename("band")
    counts = pd.crosstab(band, _arm(d)).reindex(columns=list(ARMS), fill_value=0)
    return counts.rename_axis(columns=None).reset_index()
