"""Reading a sweep back: `mentee pareto` (the fronts and the gains), `pick` (within a budget or a
device, registered under its alias), `dashboard` (one offline HTML file) and `export` (ONNX, int8,
TorchScript, checked against the torch model and the device's flash)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from search.cli._app import URI_HELP, _friendly, _number, app
from search.errors import UserError


def _runs(tracking_uri, experiment):
    from search.tracking import load_runs, resolve_uri
    df = load_runs(resolve_uri(tracking_uri), experiment)
    if df.empty:
        where = f"experiment '{experiment}'" if experiment else "any experiment"
        raise UserError(f"no mentee runs in {where} at {resolve_uri(tracking_uri)}; run `mentee sweep` first")
    return df


FRONT_COLUMNS = ["run_id", "family", "widths", "kernel", "mapping", "params", "bytes_int8", "sram_int8", "macs",
                 "val_acc", "test_acc", "independent_test_acc", "test_gain"]


def _device(name: str, extra: Path | None):
    from search.devices import get_device, load_devices
    return get_device(name, load_devices(extra))


@app.command()
@_friendly
def pareto(
    experiment: Optional[str] = typer.Option(None, help="Experiment (= space name); default: all."),
    tracking_uri: Optional[str] = typer.Option(None, help=URI_HELP),
    by: str = typer.Option("params", help="Cost axis: params, bytes_fp32, bytes_int8, sram_fp32, sram_int8, macs."),
    fmt: str = typer.Option("table", "--format", help="table, csv, json or markdown."),
    gains_too: bool = typer.Option(True, "--gains/--no-gains",
                                   help="Also print mentored vs independent at every size (table and markdown)."),
    device: Optional[str] = typer.Option(None, help="Mark which points fit this device (spaces/devices.yaml)."),
    devices: Optional[Path] = typer.Option(None, help="Your own device profiles (YAML), added to the shipped ones."),
):
    """Print the non-dominated front (val accuracy vs cost) with the mentorship gain at each point."""
    from search.config import COST_AXES
    from search.pareto import pareto_front
    from search.results.fronts import arm_balance, mentorship_front, with_mentorship_gain
    from search.results.table import format_front, print_front

    if by not in COST_AXES:
        raise UserError(f"--by: '{by}' is not a cost; expected one of {', '.join(COST_AXES)}")
    if fmt not in ("table", "csv", "json", "markdown"):
        raise UserError(f"--format: '{fmt}' is not one of table, csv, json, markdown")
    profile = _device(device, devices) if device else None
    df = _runs(tracking_uri, experiment)
    front = with_mentorship_gain(pareto_front(df, acc="val_acc", cost=by), df, acc="val_acc")
    cols = [c for c in FRONT_COLUMNS if c in front.columns]
    if profile is not None:
        front[f"fits {profile.name}"] = [profile.fits(r) for _, r in front.iterrows()]
        cols.append(f"fits {profile.name}")
    # the two arms' fronts at every size: best mentored vs best independent at ≤ that size, on test accuracy;
    # mean ± std over the re-evaluation seeds where the sweep re-evaluated, the gain paired by seed
    gains = mentorship_front(df, cost=by, acc="test_acc", select="val_acc")
    gain_cols = [by, "front", "mentored_widths", "mentored_mapping", "mentored_acc", "mentored_std",
                 "independent_widths", f"independent_{by}", "independent_acc", "independent_std", "n_pairs", "gain",
                 "gain_ci_low", "gain_ci_high"]
    if fmt == "table":
        print_front(front, f"Pareto front: val accuracy vs {by} ({len(front)} of {len(df)} mentees)", cols)
        if gains_too and len(gains):
            n = arm_balance(df, cost=by)[["mentored", "independent"]].sum()
            print_front(gains, f"Mentorship at each size of either arm's front ({n['mentored']} mentored, "
                        f"{n['independent']} independent searched): the best of each arm at ≤ that size by val "
                        "accuracy, test accuracy (mean ± std over re-evaluation seeds; gain paired by seed, 95% CI)",
                        gain_cols)
    elif gains_too and fmt == "markdown":  # csv and json stay one table, for scripts
        typer.echo(format_front(front, fmt, cols) + "\n\n" + format_front(gains, fmt, gain_cols))
    else:
        typer.echo(format_front(front, fmt, cols))


@app.command()
@_friendly
def pick(
    max_params: Optional[str] = typer.Option(None, help="Parameter budget, e.g. 5000, 5k, 1.2M."),
    max_bytes: Optional[str] = typer.Option(None, help="Weight-memory budget (int8 weights), e.g. 64KiB, 1MB."),
    max_macs: Optional[str] = typer.Option(None, help="Compute budget per sample, e.g. 200k, 1M."),
    device: Optional[str] = typer.Option(None, help="Pick within a device's budgets, e.g. stm32f746 "
                                                    "(spaces/devices.yaml)."),
    devices: Optional[Path] = typer.Option(None, help="Your own device profiles (YAML), added to the shipped ones."),
    experiment: Optional[str] = typer.Option(None, help="Experiment (= space name); default: all."),
    tracking_uri: Optional[str] = typer.Option(None, help=URI_HELP),
    register: bool = typer.Option(True, "--register/--no-register",
                                  help="With --device: register the pick in the MLflow model registry, alias = "
                                       "the device (models:/EXPERIMENT@DEVICE)."),
):
    """Print the most accurate finished mentee (by val accuracy; by its mean over re-evaluation seeds where the
    sweep re-evaluated) within the budget or device. With --device, a latency budget is checked here (the
    sweep cannot know it in advance), and the pick is registered under the device's alias."""
    from search.pareto import Budget, parse_budget
    from search.results.pick import pick as pick_row
    from search.tracking import resolve_uri

    if max_params is None and max_bytes is None and max_macs is None and device is None:
        raise UserError("pick: give --device or at least one of --max-params, --max-bytes, --max-macs")
    profile = _device(device, devices) if device else None
    # `is not None`: an empty --max-bytes "" is a mistake to name, not a budget to drop
    budget: Budget = {"max_params": parse_budget("--max-params", max_params) if max_params is not None else None,
                      "max_bytes": parse_budget("--max-bytes", max_bytes) if max_bytes is not None else None,
                      "max_macs": parse_budget("--max-macs", max_macs) if max_macs is not None else None}
    df = _runs(tracking_uri, experiment)
    if profile is not None:
        from search.results.pick import pick_for_device
        row, nearest = pick_for_device(df, profile, resolve_uri(tracking_uri), **budget)
        if row is None:  # not an error: say so, and show what comes closest
            also = " and the --max-* budget" if any(v is not None for v in budget.values()) else ""
            typer.echo(f"no finished mentee fits {profile.name}{also}; the nearest:")
            for r, misses in nearest:
                typer.echo(f"  run {r['run_id']}: {r['widths']} val acc {r['val_acc']:.4f}; misses: "
                           + ("; ".join(str(m) for m in misses) or "the --max-* budget"))
            return
    else:
        row = pick_row(df, **budget)
        if row is None:
            raise UserError("pick: no finished mentee fits that budget")
    typer.echo(f"run {row['run_id']}: {row.get('family', '')} {row.get('widths', '')} "
               f"mapping {row.get('mapping', '')}; val acc {row['val_acc']:.4f}, test acc {row['test_acc']:.4f}; "
               f"{int(row['params']):,} params, {int(row['bytes_int8']):,} B int8, {int(row['macs']):,} MACs")
    seeds = int(row.get("n_seeds", 0) or 0)
    if seeds:  # the sweep re-evaluated it: the accuracies above are means over those seeds
        typer.echo(f"  accuracies: mean of {seeds} re-evaluation seeds (± {row['test_acc_std']:.4f} test); the "
                   f"search's own run had val acc {row['val_acc_search']:.4f}, test acc {row['test_acc_search']:.4f}")
    ref = row["run_id"]
    if profile is not None:
        lat = profile.budget("latency_ms")
        if lat is not None:  # measured now, on this machine: the sweep could not know it
            ms = float(row["latency_ms"])
            typer.echo(f"  latency: {ms:.3g} ms here (ONNX Runtime, 1 thread) × {lat.scale:g} = "
                       f"{lat.device_value(ms):.3g} ms on {profile.name} ≤ {lat.limit:g} ms")
        if register:
            from search.tracking import register_pick
            tags = {"mentee.device": profile.name, **{k: row[k] for k in ("val_acc", "test_acc", "params",
                                                                          "bytes_int8", "sram_int8", "macs")}}
            name, version, alias = register_pick(resolve_uri(tracking_uri), row["run_id"], profile.name, tags=tags)
            ref = f"models:/{name}@{alias}"
            typer.echo(f"registered: model '{name}' version {version}, alias '{alias}' ({ref})")
        extra = f" --devices {devices}" if devices else ""
        typer.echo(f"export it: mentee export {ref} --format onnx --int8 --device {profile.name}{extra}")
        return
    typer.echo(f"export it: mentee export {ref} --format onnx")


@app.command()
@_friendly
def dashboard(
    experiment: str = typer.Option(..., help="Experiment (= space name) to draw."),
    device: list[str] = typer.Option([], help="Devices whose budgets to draw (repeatable; default: all shipped); "
                                              "the pick is made within the first."),
    devices: Optional[Path] = typer.Option(None, help="Your own device profiles (YAML), added to the shipped ones."),
    out: Optional[Path] = typer.Option(None, help="HTML file to write (default: dashboard-<experiment>.html)."),
    tracking_uri: Optional[str] = typer.Option(None, help=URI_HELP),
):
    """Write the sweep's Pareto dashboard (one offline HTML file) and attach it to the sweep's parent run."""
    from search.devices import get_device, load_devices
    from search.results.dashboard import build_dashboard, with_latency, write_dashboard
    from search.results.pick import pick as pick_row
    from search.tracking import load_arch, load_curves, log_sweep_artifact, resolve_uri

    known = load_devices(devices)
    profiles = [get_device(d, known) for d in device] or list(known.values())
    df = _runs(tracking_uri, experiment)
    pool = df[df.apply(profiles[0].fits, axis=1)] if device else df
    row = pick_row(pool) if len(pool) else None
    picked = None if row is None else {"run_id": row["run_id"], "curves": load_curves(resolve_uri(tracking_uri),
                                                                                       row["run_id"])}
    df = with_latency(df, lambda rid: load_arch(resolve_uri(tracking_uri), rid))
    html = build_dashboard(df, title=f"mentee-search · {experiment}", devices=profiles, picked=picked)
    path = write_dashboard(html, out or Path(f"dashboard-{experiment}.html"))
    parent = df.sort_values("start_time")["parent_run_id"].dropna().iloc[-1]
    log_sweep_artifact(resolve_uri(tracking_uri), parent, path)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); also attached to the sweep's parent run "
               f"{parent} (MLflow UI → its Artifacts)")


@app.command("export")
@_friendly
def export_cmd(
    run_id: str = typer.Argument(..., help="MLflow run id of a mentee (from `mentee pick` or `mentee pareto`), "
                                           "or models:/NAME@DEVICE as `mentee pick --device` registers it."),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
    out: Optional[Path] = typer.Option(None, help="Output file (default: mentee-<run>.onnx / -int8.onnx / .pt)."),
    tracking_uri: Optional[str] = typer.Option(None, help=URI_HELP),
    int8: bool = typer.Option(False, "--int8", help="Quantise to int8 with ONNX Runtime (onnx only) and report how "
                                                    "often its argmax agrees with the torch model on test data."),
    calibration: int = typer.Option(256, help="With --int8: training samples that calibrate the activations "
                                              "(static quantisation); 0 = dynamic (int8 weights, no data)."),
    device: Optional[str] = typer.Option(None, help="Check the file's weights against this device's flash budget "
                                                    "again; exit code 1 (file kept) if they no longer fit."),
    devices: Optional[Path] = typer.Option(None, help="Your own device profiles (YAML), added to the shipped ones."),
):
    """Export a mentee to ONNX (optionally int8) or TorchScript and check it against the torch model."""
    from search.models import create_mentee
    from search.results.export import export_int8, export_model, flash_check, onnx_weight_bytes
    from search.tracking import load_member, resolve_model_ref, resolve_uri

    if fmt not in ("onnx", "torchscript"):
        raise UserError(f"--format: '{fmt}' is not onnx or torchscript")
    if int8 and fmt != "onnx":
        raise UserError("--int8: only with --format onnx (ONNX Runtime quantises the ONNX model)")
    _number("--calibration", calibration, low=0)
    profile = _device(device, devices) if device else None  # a typo fails before any work
    uri = resolve_uri(tracking_uri)
    run_id = resolve_model_ref(uri, run_id)
    cfg, state, meta = load_member(uri, run_id)
    model = create_mentee(cfg.arch, meta["input_shape"], meta["num_classes"])
    model.load_state_dict(state)
    shape = tuple(meta["input_shape"])
    if not int8:
        path = out or Path(f"mentee-{run_id[:8]}.{'onnx' if fmt == 'onnx' else 'pt'}")
        export_model(model, shape, path, fmt)
        typer.echo(f"wrote {path} ({path.stat().st_size:,} bytes); outputs match the torch model")
        if profile is not None:
            from search.measure import weight_bytes
            _flash(*flash_check(profile, onnx_weight_bytes(path) if fmt == "onnx" else weight_bytes(model), "fp32"))
        return
    calib, check = _export_data(uri, run_id, shape, calibration)
    path = out or Path(f"mentee-{run_id[:8]}-int8.onnx")
    rep = export_int8(model, shape, path, calibration=calib, check=check)
    typer.echo(f"wrote {path} ({rep.file_bytes:,} bytes; int8, {rep.method}): weights {rep.weight_bytes:,} B "
               f"(fp32: {rep.fp32_weight_bytes:,} B)")
    on = f"{rep.samples} test samples" if rep.on_data else f"{rep.samples} random inputs (the dataset did not load)"
    acc = (f"; test accuracy int8 {rep.acc_int8:.4f} vs torch {rep.acc_torch:.4f}" if rep.acc_int8 is not None
           else "")
    typer.echo(f"int8 vs torch on {on}: argmax agrees on {rep.agreement:.1%} (max |logit difference| "
               f"{rep.max_abs_diff:.3g}){acc}")
    if profile is not None:
        _flash(*flash_check(profile, rep.weight_bytes, "int8"))


def _flash(fits: bool, line: str) -> None:
    if fits:
        typer.echo(line)
        return
    typer.echo(line, err=True)
    raise typer.Exit(1)


def _export_data(uri: str, run_id: str, shape: tuple[int, ...], calibration: int):
    """(calibration inputs or None, (test inputs, labels) or None) from the dataset the run was trained on."""
    from search.data import load_dataset
    from search.tracking import member_dataset

    try:
        d = member_dataset(uri, run_id)
        splits = load_dataset(d["name"], root=d["root"], n_samples=d["n_samples"], seed=d["seed"])
    except UserError as e:
        if calibration:
            raise UserError(f"--int8: cannot load the run's dataset to calibrate ({e}); --calibration 0 "
                            "quantises without data") from None
        return None, None
    if tuple(splits.input_shape) != shape:
        raise UserError(f"--int8: the run's dataset gives inputs {tuple(splits.input_shape)}, the mentee takes {shape}")
    calib = splits.x_train[:calibration] if calibration else None
    return calib, (splits.x_test[:1024], splits.y_test[:1024])

