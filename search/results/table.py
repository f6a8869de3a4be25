"""Frames as text: an aligned table (for people), csv, json, markdown — the same rows and columns in each.

    print(format_front(view, "table"))      # run ids shortened to 8 characters, sizes in KiB
    print(format_front(view, "json"))       # the same columns, raw numbers (full run ids, bytes)

One style for people: counts as integers with thousands separators, sizes in B/KiB/MiB (1 KiB = 1024 B),
accuracies to 4 places, intervals as ±, gains signed, yes/no for a fit. csv and json carry the same
columns with the raw values, so a script reads the digits the table rounds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from search.devices import format_bytes
from search.errors import UserError

__all__ = ["FORMATS", "format_front", "cell"]

FORMATS = ("table", "csv", "json", "markdown")
_COUNTS = {"params", "macs", "kernel", "seeds", "n_seeds", "n_pairs", "epochs_run", "seed", "band", "mentored",
           "independent", *(f"{a}_{c}" for a in ("mentored", "independent") for c in ("params", "macs", "n"))}
MAX_WIDTH = 100  # a table for people fits this many columns (a terminal's default is 80-120)
SHORT_ID = 8  # a run id's first characters: unique in any store a person reads (export takes them too)


def _is_bytes(col: str) -> bool:
    return "bytes" in col or col.startswith("sram") or "_sram" in col


def cell(col: str, v: object, *, short_ids: bool = False) -> str:
    """One value as the table shows it."""
    if v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple, np.ndarray)):
        return ",".join(str(x) for x in v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        f = float(v)
        if _is_bytes(col):
            return format_bytes(f)
        if col in _COUNTS or col.endswith("_params"):
            return f"{int(f):,}"
        if col.endswith("_ci") or col.endswith("_std"):
            return f"±{f:.4f}"
        if "gain" in col:
            return f"{f:+.4f}"
        if col.endswith("_ms"):
            return f"{f:.3g} ms"
        return f"{int(f):,}" if isinstance(v, (int, np.integer)) else f"{f:.4f}"
    s = str(v)
    return s[:SHORT_ID] if short_ids and (col.endswith("run_id") or col == "sweep") else s


def _cols(df: pd.DataFrame, columns: Sequence[str] | None) -> list[str]:
    return [c for c in columns if c in df.columns] if columns is not None else list(df.columns)


def format_front(df: pd.DataFrame, fmt: str = "table", columns: Sequence[str] | None = None, *,
                 short_ids: bool = True) -> str:
    """The frame as text: "table" (aligned, numbers right), "csv", "json" (a list of records) or
    "markdown" (a GitHub table). Only `columns` that exist, in that order. `short_ids`: the table and
    markdown show a run id's first 8 characters (csv and json always carry it whole)."""
    cols = _cols(df, columns)
    d = df[cols]
    if fmt == "csv":
        return d.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        # to_json knows numpy scalars and writes NaN as null; full precision (double_precision=15 is its max,
        # so re-dump from Python floats instead)
        records = [{c: _plain(v, integral=c in _COUNTS or _is_bytes(c)) for c, v in zip(cols, r)}
                   for r in d.itertuples(index=False, name=None)]
        return json.dumps(records, indent=2)
    if fmt not in ("table", "markdown"):
        raise UserError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}")
    rows = [[cell(c, v, short_ids=short_ids) for c, v in zip(cols, r)] for r in d.itertuples(index=False, name=None)]
    if fmt == "markdown":
        esc = [[s.replace("|", r"\|") for s in r] for r in [cols, *rows]]
        lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in esc[1:]])
    width = [max(len(s) for s in col) for col in zip(cols, *rows)] if cols else []
    text = [not pd.api.types.is_numeric_dtype(d[c]) or d[c].dtype == bool for c in cols]
    gap = "  " if sum(width) + 2 * (len(width) - 1) <= MAX_WIDTH else " "  # one space where two would pass 100
    return "\n".join(gap.join(s.ljust(w) if t else s.rjust(w) for s, w, t in zip(r, width, text)).rstrip()
                     for r in [cols, *rows])


def _plain(v: object, integral: bool = False) -> object:
    """A JSON value: NaN → null, numpy scalars → Python numbers (a count or a size as an integer, as the
    table shows it: a store hands them back as floats), tuples → lists."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return None
        return int(v) if integral and float(v).is_integer() else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (tuple, np.ndarray)):
        return [_plain(x) for x in v]
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return v
