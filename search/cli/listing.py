"""What there is to choose from: `mentee devices` (the device profiles and their budgets) and `mentee sweeps`
(an experiment's sweeps: when, how many mentees, the best), and `mentee --version`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from search.cli._app import URI_HELP, _friendly, app
from search.errors import UserError


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("mentee-search")
        except PackageNotFoundError:  # run from a checkout without installing
            from search import __version__ as v
        typer.echo(f"mentee-search {v}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Find the best small network a device can hold, trained under a mentor."""


def _budgets(d) -> dict[str, str]:
    from search.devices import format_cost

    def one(axis_prefix: str) -> str:
        b = next((b for b in d.budgets if b.axis.startswith(axis_prefix)), None)
        if b is None:
            return "–"
        s = format_cost(b.axis, b.limit)
        if b.overhead:
            s += f" (−{format_cost(b.axis, b.overhead)})"
        if b.scale != 1:
            s += f" (×{b.scale:g})"
        return s + (f" {b.axis.split('_')[-1]}" if axis_prefix in ("bytes_", "sram_") else "")

    t = d.train
    return {"device": d.name, "flash": one("bytes_"), "sram": one("sram_"), "latency": one("latency_ms"),
            "params": one("params"), "macs": one("macs"),
            "train": "–" if t is None else f"{format_cost(t.axis, t.limit)} @{t.batch_size} {t.optimizer}",
            "description": d.description}


@app.command()
@_friendly
def devices(
    devices_file: Optional[Path] = typer.Option(None, "--devices", help="Your own device profiles (YAML), added to "
                                                                       "the shipped ones."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    wide: bool = typer.Option(False, "--wide", help="Also the description and the source of each profile."),
):
    """List the device profiles `--device` takes, with their budgets."""
    import pandas as pd

    from search.devices import SHIPPED_DEVICES, load_devices
    from search.results.table import format_front

    if fmt not in ("table", "csv", "json"):
        raise UserError(f"--format: '{fmt}' is not one of table, csv, json")
    known = load_devices(devices_file)
    rows = [{**_budgets(d), "source": d.source} for d in known.values()]
    cols = ["device", "flash", "sram", "latency", "train"] + (["params", "macs", "description", "source"] if wide
                                                             else [])
    df = pd.DataFrame(rows, columns=list(dict.fromkeys([*cols, "description", "source"])))
    typer.echo(format_front(df, fmt, cols))
    if fmt == "table":
        where = f"{SHIPPED_DEVICES}" + (f" + {devices_file}" if devices_file else "")
        typer.echo(f"\n{len(known)} devices from {where}\nsizes in KiB/MiB; (−X): the runtime's overhead; (×k): "
                   "device ms per ms measured here;\ntrain: memory to train a mentee at batch @N with that optimiser; "
                   "--wide: what each device is")


@app.command()
@_friendly
def sweeps(
    experiment: Optional[str] = typer.Option(None, help="Experiment (= space name); default: all."),
    tracking_uri: Optional[str] = typer.Option(None, help=URI_HELP),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
):
    """List an experiment's sweeps, newest first: start, mentees, the best by val_acc.

    `--sweep ID` on pareto, pick and dashboard takes a sweep's id (or its first characters)."""
    from search.results.table import format_front
    from search.tracking import resolve_uri
    from search.tracking.sweeps import list_sweeps

    if fmt not in ("table", "csv", "json"):
        raise UserError(f"--format: '{fmt}' is not one of table, csv, json")
    uri = resolve_uri(tracking_uri)
    df = list_sweeps(uri, experiment)
    if df.empty:
        raise UserError(f"no sweeps in {f'experiment {experiment!r}' if experiment else 'any experiment'} at {uri}; "
                        "run `mentee sweep` first")
    cols = ["sweep", "started", "status", "mentees", "finished", "best_val_acc", "best_run_id", "name"]
    if experiment is None:
        cols.insert(1, "experiment")
    typer.echo(format_front(df, fmt, cols))
    if fmt == "table":
        again = f" --tracking-uri {tracking_uri}" if tracking_uri else ""
        typer.echo(f"\none sweep's front: mentee pareto --sweep {str(df['sweep'].iloc[0])[:8]}{again}")
