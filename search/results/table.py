"""Frames as text: aligned tables, csv, json, markdown, and rich tables on a terminal.

    print(format_front(front, "markdown", ["run_id", "params", "val_acc"]))
    print_front(front, "Pareto front", columns)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from search.errors import UserError

__all__ = ["format_front", "print_front"]

_INT_COLS = {"params", "bytes_fp32", "bytes_int8", "macs", "seed", "epochs_run", "kernel", "n_seeds", "n_pairs",
             *(f"{a}_{c}" for a in ("mentored", "independent") for c in ("params", "bytes_int8", "macs", "n"))}


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
