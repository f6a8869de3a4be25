"""Fronts, budgets and the mentorship gain over a frame of mentee runs.

One row per mentee: run_id, status, arch_key, independent, val_acc, test_acc, params,
bytes_fp32, bytes_int8, macs (and optionally seed, family, widths, mapping)::

    front = pareto_front(df, acc="val_acc", cost="params")       # finished rows only
    front = with_mentorship_gain(front, df)                       # + independent_acc, gain, test_gain
    table = mentorship_front(df)       # the two arms' fronts at every size: mean ± std, paired gain, CI
    row = pick(df, max_params=parse_budget("--max-params", "5k"))  # best finished row in budget
    hv = hypervolume_2d(front, ref_cost=1e6)                       # area under the staircase
    print(format_front(front, "markdown", ["run_id", "params", "val_acc"]))

Only `status == "finished"` rows count anywhere here: a pruned run stopped early and its
accuracy is not comparable, a failed one has none. Re-evaluation runs (`reeval_of` names the
run they retrain with another seed) never stand on a front themselves: they give the run they
re-evaluate its mean and spread over seeds (`with_reevaluation`, `mentorship_front`, `pick`).
Optional columns: arm (mentored / independent; else read off `independent`), work, reeval_of.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import pandas as pd

from search.errors import UserError

__all__ = [
    "pareto_front", "with_mentorship_gain", "mentorship_summary", "parse_budget", "pick", "Budget",
    "hypervolume_2d", "format_front", "print_front",
    "with_reevaluation", "mentorship_pairs", "mentorship_front", "paired_gain", "arm_balance",
]

ARMS = ("mentored", "independent")

_INT_COLS = {"params", "bytes_fp32", "bytes_int8", "macs", "seed", "epochs_run", "kernel", "n_seeds", "n_pairs",
             *(f"{a}_{c}" for a in ("mentored", "independent") for c in ("params", "bytes_int8", "macs", "n"))}


def _searched(df: pd.DataFrame) -> pd.DataFrame:
    """Every row but re-evaluation runs (they repeat a run of the search with another seed)."""
    keep = df["reeval_of"].isna() if "reeval_of" in df.columns else pd.Series(True, index=df.index)
    return df[keep & (df["work"] != "reeval")] if "work" in df.columns else df[keep]


def _finished(df: pd.DataFrame) -> pd.DataFrame:
    return _searched(df[df["status"] == "finished"])


def _arm(df: pd.DataFrame) -> pd.Series:
    """Each row's arm; where a frame doesn't say, a row without mentor terms is the independent side."""
    derived = _is_true(df["independent"]).map({True: "independent", False: "mentored"})
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


def _independent_means(df: pd.DataFrame, col: str) -> pd.Series:
    d = _finished(df)
    d = d[_is_true(d["independent"])]
    return d.groupby("arch_key")[col].mean()


def with_mentorship_gain(front: pd.DataFrame, df: pd.DataFrame, *, acc: str = "val_acc") -> pd.DataFrame:
    """Add independent_acc / gain (on `acc`) and independent_test_acc / test_gain (on test_acc).

    independent_acc is the mean over finished independent runs of the row's arch_key (NaN
    if none); an independent row on the front is compared with its own arch's mean, so its
    gain is ~0 (exactly 0 with one seed)."""
    out = front.copy()
    pairs = ((acc, "independent_acc", "gain"), ("test_acc", "independent_test_acc", "test_gain"))
    for col, ind_col, gain_col in pairs:
        means = _independent_means(df, col)
        out[ind_col] = out["arch_key"].map(means).astype(float)
        out[gain_col] = out[col].astype(float) - out[ind_col]
    return out


def mentorship_summary(df: pd.DataFrame, acc: str = "test_acc", select: str = "val_acc") -> pd.DataFrame:
    """One row per arch_key with finished mentored and independent runs: the mentored run
    that validation picks (highest `select`; no peeking at test), its `acc`, the mean
    independent `acc` and the gain between them, sorted by params."""
    d = _finished(df).dropna(subset=[acc])
    ind = _is_true(d["independent"])
    men = d[~ind]
    if select in men.columns and men[select].notna().any():
        men = men.loc[men.groupby("arch_key")[select].idxmax().dropna()]
    else:
        men = men.loc[men.groupby("arch_key")[acc].idxmax()]
    keep = [c for c in ("arch_key", "family", "widths", "kernel", "mapping", "params") if c in men.columns]
    men = men[keep + [acc]].rename(columns={acc: "mentored_acc"}).set_index("arch_key")
    men["n_mentored"] = d[~ind].groupby("arch_key").size()
    base = d[ind].groupby("arch_key").agg(independent_acc=(acc, "mean"), n_independent=(acc, "size"))
    out = men.join(base, how="inner")
    out["gain"] = out["mentored_acc"] - out["independent_acc"]
    out = out.reset_index().sort_values(["params", "arch_key"], kind="mergesort").reset_index(drop=True)
    cols = [*keep, "mentored_acc", "independent_acc", "gain", "n_mentored", "n_independent"]
    return out[cols]


# ------------------------------------------------- the two arms and re-evaluation

def with_reevaluation(df: pd.DataFrame) -> pd.DataFrame:
    """The search's rows, each re-evaluated one carrying its re-evaluation seeds' numbers:
    val_acc and test_acc become their means (`*_search`: the search's own single-seed number,
    `*_std`: the sample std), `n_seeds` how many (0: not re-evaluated). Re-evaluation rows
    themselves are dropped. A frame without any comes back unchanged."""
    if "reeval_of" not in df.columns or df["reeval_of"].isna().all():
        return df
    again = df[df["reeval_of"].notna() & (df["status"] == "finished")].groupby("reeval_of")
    out = _searched(df).copy()
    n = out["run_id"].map(again.size()).fillna(0).astype(int)
    for col in ("val_acc", "test_acc"):
        out[f"{col}_search"] = out[col]
        out[col] = out["run_id"].map(again[col].mean()).where(n > 0, out[col])
        out[f"{col}_std"] = out["run_id"].map(again[col].std())
    out["n_seeds"] = n
    return out


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


def mentorship_front(df: pd.DataFrame, *, cost: str = "params", acc: str = "test_acc", select: str = "val_acc",
                     level: float = 0.95) -> pd.DataFrame:
    """What mentorship buys at every size, measured fairly: `mentorship_pairs` with each side's
    `acc` as mean, sample std and n over its re-evaluation seeds (its one search run where it
    has none) and the gain mentored − independent, paired by seed, with its `level` t-interval."""
    pairs = mentorship_pairs(df, cost=cost, select=select)
    runs = _finished(df).set_index("run_id")
    again = df[df["reeval_of"].notna() & (df["status"] == "finished")] if "reeval_of" in df.columns else df.iloc[:0]
    seeds = {rid: g.set_index("seed")[acc] for rid, g in again.groupby("reeval_of")} if len(again) else {}
    rows = []
    for p in pairs.to_dict("records"):
        row, by_seed = dict(p), {}
        for a in ARMS:
            rid = p[f"{a}_run_id"] if isinstance(p[f"{a}_run_id"], str) else None  # NaN: that arm has none so small
            r = runs.loc[rid] if rid is not None else None
            v = seeds[rid] if rid in seeds else pd.Series([r[acc]] if r is not None else [], dtype=float)
            by_seed[a] = v if rid in seeds else None
            for col in ("widths", "mapping", cost):
                row[f"{a}_{col}"] = r.get(col) if r is not None else None
            row.update({f"{a}_acc": v.mean() if len(v) else float("nan"),
                        f"{a}_std": v.std(ddof=1) if len(v) > 1 else float("nan"), f"{a}_n": len(v)})
        m, i = by_seed["mentored"], by_seed["independent"]
        if m is not None and i is not None and (common := sorted(set(m.index) & set(i.index))):
            row.update(paired_gain(m.loc[common].to_numpy(), i.loc[common].to_numpy(), level))
        else:  # not re-evaluated: one run a side, no interval
            row.update(paired_gain([row["mentored_acc"]], [row["independent_acc"]], level), n_pairs=0)
        rows.append(row)
    cols = [cost, "front"] + [f"{a}_{c}" for a in ARMS for c in ("run_id", "widths", "mapping", cost, "acc", "std",
                                                                     "n")]
    return pd.DataFrame(rows, columns=cols + ["gain", "gain_std", "n_pairs", "gain_ci_low", "gain_ci_high"])


def arm_balance(df: pd.DataFrame, *, cost: str = "params") -> pd.DataFrame:
    """Searched members per arm in each size band (band k holds costs in [2^k, 2^(k+1))), finished
    or not: the budget matching, checked. Twins, fixed and re-evaluation runs don't count."""
    d = _searched(df)
    if "work" in d.columns:
        d = d[d["work"].isna() | (d["work"] == "searched")]
    d = d.dropna(subset=[cost])
    band = np.floor(np.log2(d[cost].astype(float).clip(lower=1))).astype(int).rename("band")
    counts = pd.crosstab(band, _arm(d)).reindex(columns=list(ARMS), fill_value=0)
    return counts.rename_axis(columns=None).reset_index()


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


def pick(df: pd.DataFrame, *, max_params: float | None = None, max_bytes: float | None = None,
         max_macs: float | None = None, acc: str = "val_acc",
         bytes_col: str = "bytes_int8") -> pd.Series | None:
    """The most accurate finished row within every given budget (ties → fewer params, then
    run_id); None if nothing fits. Where re-evaluated rows fit, the pick is among them, by their
    mean over seeds: one seed's number, flattered by being the best the search found, is not
    weighed against a mean (`with_reevaluation`)."""
    d = _finished(with_reevaluation(df)).dropna(subset=[acc])
    for col, limit in (("params", max_params), (bytes_col, max_bytes), ("macs", max_macs)):
        if limit is not None:
            d = d[d[col] <= limit]  # a NaN cost compares False: unknown never fits
    if "n_seeds" in d.columns and (d["n_seeds"] > 0).any():
        d = d[d["n_seeds"] > 0]
    if d.empty:
        return None
    d = d.sort_values([acc, "params", "run_id"], ascending=[False, True, True], kind="mergesort")
    return d.iloc[0]


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


def _cell(col: str, v: object) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)) or (col in _INT_COLS and isinstance(v, (float, np.floating))):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{v:+.4f}" if "gain" in col else f"{v:.4f}"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v)


def _cols(df: pd.DataFrame, columns: Sequence[str] | None) -> list[str]:
    return [c for c in columns if c in df.columns] if columns is not None else list(df.columns)


def format_front(df: pd.DataFrame, fmt: str = "table", columns: Sequence[str] | None = None) -> str:
    """The frame as text: "table" (aligned plain text), "csv", "json" (a list of records) or
    "markdown" (a GitHub table). Only `columns` that exist, in that order."""
    cols = _cols(df, columns)
    d = df[cols]
    if fmt == "csv":
        return d.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        # to_json knows numpy scalars and writes NaN as null; re-dump for stable indentation
        return json.dumps(json.loads(d.to_json(orient="records")), indent=2)
    if fmt not in ("table", "markdown"):
        raise UserError(f"--format: '{fmt}' is not one of table, csv, json, markdown")
    rows = [[_cell(c, v) for c, v in zip(cols, r, strict=True)] for r in d.itertuples(index=False, name=None)]
    if fmt == "markdown":
        esc = [[s.replace("|", r"\|") for s in r] for r in [cols, *rows]]
        lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in esc[1:]])
    width = [max(len(s) for s in col) for col in zip(cols, *rows, strict=True)] if cols else []
    return "\n".join("  ".join(s.rjust(w) for s, w in zip(r, width, strict=True)) for r in [cols, *rows])


def print_front(df: pd.DataFrame, title: str, columns: Sequence[str] | None = None) -> None:
    """Print the frame as a rich table (numbers right-aligned, gains signed)."""
    from rich.console import Console
    from rich.table import Table

    cols = _cols(df, columns)
    t = Table(title=title)
    for c in cols:
        numeric = pd.api.types.is_numeric_dtype(df[c]) and df[c].dtype != bool
        t.add_column(c, justify="right" if numeric else "left")
    for r in df[cols].itertuples(index=False, name=None):
        t.add_row(*[_cell(c, v) for c, v in zip(cols, r, strict=True)])
    con = Console()
    if not con.is_terminal:  # pipes and logs: don't squash the run ids into "a6f…"
        con = Console(width=220)
    con.print(t)
