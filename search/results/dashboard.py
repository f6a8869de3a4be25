"""The Pareto dashboard: one self-contained HTML file (plotly.js inline, works offline) from a runs frame.

    html = build_dashboard(runs, title="mnist1d sweep", devices=[get_device("stm32f746", load_devices())],
                           picked={"run_id": "ab12", "curves": {"val_acc": [...], "train_loss": [...]}})
    write_dashboard(html, Path("dashboards/mnist1d.html"))   # atomic: a reader never sees half a file

`runs` has one row per mentee (its seeds fused): run_id, status, arm, family, widths, kernel, mapping,
n_seeds, val_acc, test_acc (seed means), test_acc_std and the cost axes of search.devices.AXES (params,
bytes_fp32, bytes_int8, macs, and if measured sram_int8, sram_fp32, latency_ms; an axis whose column is
absent or all NaN is skipped). Only finished rows are plotted: accuracy (val_acc, the mean over the
mentee's seeds: the number `pareto` and `pick` choose by) against one cost axis at a time, chosen by the
buttons above the plot (or the URL: dashboard.html#axis=sram_int8). Mentored and independent mentees
are two series; the Pareto front over all of them is a staircase; each device's budget on the shown
axis is a dashed vertical line labelled with its name; a second panel shows the picked mentee's curves.
A device's row names the mentee `mentee pick --device` picks (results.pick.pick over those that fit).

Hooks for tests and scripts (stable across versions): the plot is #front-plot, the curves #picked-plot,
axis buttons a.axis-button[data-axis], budget lines and their labels carry data-device="<name>" once
the plot is drawn, device rows tr[data-device], and <body data-ready="true"> says the plots are drawn.
"""

from __future__ import annotations

import html as html_lib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from search.devices import AXES, DeviceProfile, format_cost
from search.pareto import arm_of, ci95, pareto_front
from search.results.fronts import as_mentees, seed_label
from search.results.pick import pick

__all__ = ["build_dashboard", "with_latency", "write_dashboard", "TEMPLATE"]

TEMPLATE = Path(__file__).resolve().parents[2] / "dashboards" / "template.html"
_UNIT = {"count": "", "bytes": "bytes", "ms": "ms"}
_CONFIG_COLS = ("family", "widths", "kernel", "mapping", "seeds")
_ACC_LABEL = {"val_acc": "validation accuracy (mean over seeds)", "test_acc": "test accuracy (mean over seeds)"}


def _num(v: Any) -> float | None:
    """A plain float for JSON, None for missing (JSON has no NaN)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _show(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    if isinstance(v, (list, tuple)) or hasattr(v, "tolist"):
        v = v.tolist() if hasattr(v, "tolist") else v
        return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else _show(v)
    if isinstance(v, float) and v.is_integer():  # a store hands integers back as floats: 5, not 5.0
        return str(int(v))
    return str(v)


def _accs(row: pd.Series) -> str:
    """The mentee's numbers as every view labels them: val (mean of N seeds) for choosing, test mean ± 95% CI."""
    n = int(row.get("n_seeds", 1) or 1)
    parts = []
    if _num(row.get("val_acc")) is not None:
        parts.append(f"val {float(row['val_acc']):.4f} (mean of {n} seed{'s' * (n != 1)})")
    if _num(row.get("test_acc")) is not None:
        half = _num(ci95(row.get("test_acc_std", math.nan), n))
        parts.append(f"test {float(row['test_acc']):.4f}" + (f" ± {half:.4f}" if half is not None else ""))
    return " · ".join(parts)


def _hover(row: pd.Series, acc: str, axes: list[str]) -> str:
    """Run id, config, accuracies and costs of one mentee, as plotly hover HTML (values escaped)."""
    e = html_lib.escape
    config = " · ".join(f"{c} {e(_show(row[c]))}" for c in _CONFIG_COLS if c in row.index)
    costs = " · ".join(f"{a} {format_cost(a, float(row[a]))}" for a in axes if _num(row.get(a)) is not None)
    return f"<b>{e(str(row['run_id']))}</b> ({e(str(row['arm']))})<br>{config}<br>{e(_accs(row))}<br>{costs}"


def _budget_text(d: DeviceProfile) -> str:
    parts = []
    for b in d.budgets:
        s = f"{b.axis} ≤ {format_cost(b.axis, b.limit)}"
        if b.overhead:
            s += f" incl. {format_cost(b.axis, b.overhead)} runtime"
        if b.scale != 1:
            s += f" at ×{b.scale:g} the latency here"
        parts.append(s)
    return "; ".join(parts) or "no budgets"


def _device_rows(devices: Sequence[DeviceProfile], done: pd.DataFrame, acc: str) -> str:
    """A row per device: its budgets, how many mentees fit, and the one `mentee pick --device` picks."""
    e = html_lib.escape
    rows = []
    for d in devices:
        fit = done[[d.fits(r) for _, r in done.iterrows()]] if len(done) else done
        best = pick(fit, acc=acc) if len(fit) else None
        best_s = "none fits" if best is None else f"{e(str(best['run_id']))} ({e(_accs(best))})"
        rows.append(f'<tr data-device="{e(d.name)}"><td><b>{e(d.name)}</b><br><small>{e(d.description)}</small></td>'
                    f"<td>{e(_budget_text(d))}</td><td class=num>{len(fit)}</td><td>{best_s}</td>"
                    f"<td><small>{e(d.source)}</small></td></tr>")
    return "\n".join(rows)


def _axis_spec(done: pd.DataFrame, series: dict[str, pd.DataFrame], axis: str, acc: str,
               devices: Sequence[DeviceProfile], picked_row: pd.Series | None) -> dict:
    label, kind = AXES[axis]
    front = pareto_front(done, acc=acc, cost=axis)
    ind = done[done["arm"] == "independent"]
    ind_front = pareto_front(ind, acc=acc, cost=axis) if len(ind) else ind
    budgets = []
    for d in devices:
        b = d.budget(axis)
        if b is not None and b.max_cost > 0:
            note = f"{d.name}: {axis} ≤ {format_cost(axis, b.max_cost)}"
            if b.overhead or b.scale != 1:
                note += f" (device limit {format_cost(axis, b.limit)}"
                note += f", {format_cost(axis, b.overhead)} runtime)" if b.overhead else f" at ×{b.scale:g})"
            budgets.append({"device": d.name, "value": b.max_cost, "note": note})
    return {
        "key": axis, "label": label, "title": f"{label} ({_UNIT[kind]}, log scale)" if _UNIT[kind]
        else f"{label} (log scale)", "suffix": "B" if kind == "bytes" else (" ms" if kind == "ms" else ""),
        "x": {name: [_num(v) for v in s[axis]] for name, s in series.items()},
        "front": {"x": [_num(v) for v in front[axis]], "y": [_num(v) for v in front[acc]],
                  "ids": [str(v) for v in front["run_id"]]},
        "independent_front": {"x": [_num(v) for v in ind_front[axis]], "y": [_num(v) for v in ind_front[acc]]},
        "budgets": budgets,
        "picked": None if picked_row is None else _num(picked_row.get(axis)),
    }


def with_latency(runs: pd.DataFrame, load: Callable[[str], tuple[Any, dict]]) -> pd.DataFrame:
    """Add `latency_ms` (ONNX Runtime, one thread, this machine: what a device's `scale` multiplies)
    for every finished architecture. `load(run_id) -> (ArchConfig, {"input_shape", "num_classes"})`
    reads one run; each architecture is timed once. A sweep cannot know latency in advance on a
    cluster's GPUs, so it is measured here, where the pick is made."""
    from search.measure import latency_ms_ort
    from search.models import create_mentee

    out = runs.copy()
    done = out[out["status"] == "finished"] if "status" in out.columns else out.iloc[0:0]
    by_arch: dict[str, float] = {}
    for key, rid in done.groupby("arch_key")["run_id"].first().items():
        arch, meta = load(rid)
        net = create_mentee(arch, meta["input_shape"], meta["num_classes"])
        by_arch[key] = latency_ms_ort(net, tuple(meta["input_shape"]), repeats=50, warmup=5)
    out["latency_ms"] = out["arch_key"].map(by_arch).astype(float)
    return out


def build_dashboard(runs: pd.DataFrame, *, title: str, devices: Sequence[DeviceProfile] = (),
                    picked: dict | None = None, acc: str = "val_acc") -> str:
    """One self-contained HTML page: accuracy (`acc`) against each cost axis, with the Pareto
    staircase, the devices' budget lines and the picked mentee's curves. See the module docstring."""
    from plotly.offline import get_plotlyjs  # the plotly package ships plotly.js: inlined, no CDN

    done = runs[runs["status"] == "finished"] if "status" in runs.columns else runs.iloc[0:0]
    done = as_mentees(done.reset_index(drop=True))
    done["arm"] = arm_of(done) if len(done) else pd.Series(dtype=object)
    axes = [a for a in AXES if a in done.columns and pd.to_numeric(done[a], errors="coerce").notna().any()]
    series = {a: done[done["arm"] == a] for a in ("mentored", "independent")}
    picked_row = None
    if picked is not None and len(done):
        hit = done[done["run_id"].astype(str) == str(picked.get("run_id"))]
        picked_row = hit.iloc[0] if len(hit) else None
    acc_vals = [_num(v) for v in done[acc]] if acc in done.columns else []
    as_percent = all(v is None or 0 <= v <= 1 for v in acc_vals)
    data = {
        "title": title, "acc": acc, "acc_percent": as_percent, "acc_label": _ACC_LABEL.get(acc, acc),
        "series": [{"name": name, "n": len(s), "y": [_num(v) for v in s[acc]] if acc in s.columns else [],
                    "test": [_num(v) for v in s["test_acc"]] if "test_acc" in s.columns else [],
                    "text": [_hover(r, acc, axes) for _, r in s.iterrows()], "ids": [str(v) for v in s["run_id"]]}
                   for name, s in series.items()],
        "axes": [_axis_spec(done, series, a, acc, devices, picked_row) for a in axes] if acc in done.columns else [],
        "picked": None if picked is None else {
            "run_id": str(picked.get("run_id")),
            "y": None if picked_row is None else _num(picked_row.get(acc)),
            "curves": {str(k): [_num(v) for v in vals] for k, vals in (picked.get("curves") or {}).items()},
        },
    }
    n_other = len(runs) - len(done)
    summary = (f"{len(done)} finished mentees ({len(series['mentored'])} mentored, {len(series['independent'])} "
               f"independent); accuracy is {acc}, the {seed_label(done)} of each mentee."
               + (f" {n_other} {'run' if n_other == 1 else 'runs'} not finished (pruned, failed or running) "
                  "not shown." if n_other else ""))
    buttons = "".join(f'<a class="axis-button" data-axis="{a}" href="#axis={a}">{html_lib.escape(AXES[a][0])}</a>'
                      for a in axes)
    # Inside <script>, "</" would end the element: JSON allows "<\/" for the same character pair.
    data_json = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    fill = {
        "TITLE": html_lib.escape(title), "SUMMARY": html_lib.escape(summary), "AXIS_BUTTONS": buttons,
        "DEVICE_ROWS": _device_rows(devices, done, acc) if acc in done.columns else "",
        "DEVICES_HIDDEN": "" if devices else "hidden", "PLOTLY_JS": get_plotlyjs(), "DATA": data_json,
    }
    # One pass: a filled-in value (plotly.js, a title) is never scanned for more placeholders.
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: fill[m.group(1)], TEMPLATE.read_text(encoding="utf-8"))


def write_dashboard(html: str, path: Path) -> Path:
    """Write atomically: a temp file beside `path`, then rename over it (a browser or MLflow reading the
    old file never sees half of the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a dashboard is for reading
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
