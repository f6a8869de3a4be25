"""The fronts as a user reads them: the front with its gains, the two arms at every size, the arms' balance.

    front = with_mentorship_gain(pareto_front(df), df)   # + independent_acc, gain, test_gain
    table = mentorship_front(df)       # the two arms' fronts at every size: mean ± std, paired gain, CI
    counts = arm_balance(df)           # searched mentees per arm in each size band

Built on the front math of search.pareto (shared with the driver); reads frames that search.tracking
returns. Never imports the driver (search/sweep/) or Optuna.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from search.pareto import ARMS, _arm, _finished, _is_true, _searched, mentorship_pairs, paired_gain

__all__ = ["with_mentorship_gain", "mentorship_summary", "with_reevaluation", "mentorship_front", "arm_balance"]


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
