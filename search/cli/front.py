"""Reading a sweep back: `mentee pareto` (the fronts and the gains), `pick` (within a budget or a
device, registered under its alias), `dashboard` (one offline HTML file) and `export` (ONNX, int8,
TorchScript, checked against the torch model and the device's flash)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import typer

from search.cli._app import URI_HELP, _friendly, _number, app, writable_file
from search.devices import format_bytes
from search.errors import UserError


def _runs(tracking_uri, experiment, sweep=None):
    """The mentees of an experiment (or all), of one sweep if `sweep` (a parent run id or its first characters)."""
    from search.tracking import load_runs, resolve_uri
    uri = resolve_uri(tracking_uri)
    df = load_runs(uri, experiment)
    if sweep is not None:
        ids = sorted({p for p in df["parent_run_id"].dropna() if str(p).startswith(sweep)})
        if len(ids) != 1:
            raise UserError(f"--sweep: {'no' if not ids else len(ids)} sweep{'s' * (len(ids) > 1)} of "
                            f"{_where(experiment)} at {uri} start with '{sweep}'; `mentee sweeps` lists them")
        df = df[df["parent_run_id"] == ids[0]]
    if df.empty:
        raise UserError(f"no mentee runs in {_where(experiment)} at {uri}; run `mentee sweep` first")
    return df


def _where(experiment):
    return f"experiment '{experiment}'" if experiment else "any experiment"


def _again(tracking_uri, experiment=None, sweep=None) -> str:
    """The flags a printed command must repeat to read the same store and sweep."""
    return "".join(f" --{k} {v}" for k, v in (("tracking-uri", tracking_uri), ("experiment", experiment),
                                               ("sweep", sweep)) if v)


def _device(name: str, extra: Path | None):
    from search.devices import get_device, load_devices
    return get_device(name, load_devices(extra))


SWEEP_HELP = "One sweep of the experiment: its parent run id or first characters (`mentee sweeps` lists them)."
BY_HELP = "Cost axis: params, bytes_int8, bytes_fp32, sram_int8, sram_fp32, macs, latency_ms (timed here)."


def _costs(df, by: str, tracking_uri, profile=None):
    """The runs with the cost columns the axis and the device need that the sweep cannot know: latency
    (timed here) and training memory (at the profile's batch size and optimiser)."""
    from search.results.costs import with_training_memory
    from search.results.dashboard import with_latency
    from search.tracking import load_arch, resolve_uri
    load = functools.partial(load_arch, resolve_uri(tracking_uri))
    if by == "latency_ms" or (profile is not None and profile.budget("latency_ms") is not None):
        df = with_latency(df, load)
    if profile is not None and profile.train is not None:
        df = with_training_memory(df, profile, load)
    return df


@app.command()
@_friendly
def pareto(
    experiment: Optional[str] = typer.Option(None, help="Experiment (= space name); default: all."),
    sweep: Optional[str] = typer.Option(None, help=SWEEP_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help=URI_HELP),
    by: str = typer.Option("params", help=BY_HELP),
    fmt: str = typer.Option("table", "--format", help="table, csv, json or markdown (csv/json: the front's rows "
                                                      "and columns as the table shows them, raw numbers)."),
    wide: bool = typer.Option(False, "--wide", help="Every column (family, kernel, mapping, every cost, "
                                                    "intervals); the default fits 100 columns."),
    gains_too: bool = typer.Option(True, "--gains/--no-gains",
                                   help="Also print mentored vs independent at every size (table and markdown)."),
    device: Optional[str] = typer.Option(None, help="Mark which points fit this device (spaces/devices.yaml)."),
    devices: Optional[Path] = typer.Option(None, help="Your own device profiles (YAML), added to the shipped ones."),
):
    """Print the Pareto front (val_acc vs a cost) with test intervals and the paired mentorship gain.

    Each mentee's numbers are its seed means; the gain is mentored − independent, paired by seed."""
    from search.devices import AXES
    from search.results.fronts import arm_balance, as_mentees, front_view, mentorship_front, seed_label
    from search.results.table import FORMATS, format_front

    if by not in AXES:
        raise UserError(f"--by: '{by}' is not a cost; expected one of {', '.join(AXES)}")
    if fmt not in FORMATS:
        raise UserError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}")
    profile = _device(device, devices) if device else None
    df = _costs(_runs(tracking_uri, experiment, sweep), by, tracking_uri, profile)
    extra = []
    if profile is not None:
        df = df.assign(fits=[profile.fits(r) for _, r in df.iterrows()])
        extra = ["fits"]
    front = front_view(df, cost=by, wide=wide, extra=extra)
    if fmt in ("csv", "json"):  # one table, for scripts: what the table shows
        typer.echo(format_front(front, fmt))
        return
    fits = f"; fits: within {profile.name}'s budgets" if profile is not None else ""
    title = (f"Pareto front: val_acc vs {by}, {len(front)} of {len(df)} mentees{fits}\n"
             f"val_acc: validation, {seed_label(as_mentees(df))} (chosen by); test_acc ± test_ci: test, mean ± 95% CI; "
             f"gain ± gain_ci: mentored − the best independent at ≤ that {by}, test, paired by seed")
    if fmt == "markdown":
        typer.echo(format_front(front, fmt))
    else:
        typer.echo(_fit(title) + "\n" + format_front(front, "table", short_ids=not wide))
    gains = mentorship_front(df, cost=by)
    if gains_too and len(gains):
        n = arm_balance(df, cost=by)[["mentored", "independent"]].sum()
        gains["gain_ci"] = (gains["gain_ci_high"] - gains["gain_ci_low"]) / 2
        short = {"mentored_widths": "mentored", "mentored_acc": "m_test", "mentored_ci": "m_ci",
                 "independent_widths": "independent", "independent_acc": "i_test", "independent_ci": "i_ci"}
        cols = [by, "front", *short.values(), "gain", "gain_ci"]
        if wide:
            cols = [*cols, "mentored_run_id", "independent_run_id", "n_pairs"]
        title = _fit(f"Mentorship at each size of either arm's front ({n['mentored']} mentored, {n['independent']} "
                     f"independent searched): the best of each arm at ≤ that {by} by val_acc (widths shown); "
                     "m_test/i_test: its test_acc, mean ± 95% CI (m_ci/i_ci) over seeds; gain: mentored − "
                     "independent, paired by seed") + "\n"
        typer.echo("")  # markdown: tables only, as the front above
        typer.echo(("" if fmt == "markdown" else title) + format_front(gains.rename(columns=short), fmt, cols,
                                                                         short_ids=not wide))


def _fit(text: str, width: int = 100) -> str:
    """A title wrapped to the table's 100 columns."""
    import textwrap
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


@app.command()
@_friendly
def pick(
    max_params: Optional[str] = typer.Option(None, help="Parameter budget, e.g. 5000, 5k, 1.2M."),
    max_bytes: Optional[str] = typer.Option(None, help="Weight-memory budget (int8 weights), e.g. 64KiB, 1MiB."),
    max_macs: Optional[str] = typer.Option(None, help="Compute budget per sample, e.g. 200k, 1M."),
    device: Optional[str] = typer.Option(None, help="Pick within a device's budgets, e.g. stm32f746 "
                                                    "(spaces/devices.yaml)."),
    devices: Optional[Path] = typer.Option(None, help="Your own device profiles (YAML), added to the shipped ones."),
    experiment: Optional[str] = typer.Option(None, help="Experiment (= space name); default: all."),
    sweep: Optional[str] = typer.Option(None, help=SWEEP_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help=URI_HELP),
    fmt: str = typer.Option("table", "--format", help="table or json (the row the table shows, raw numbers)."),
    register: bool = typer.Option(False, "--register", help="With --device: register the pick in the MLflow model "
                                                            "registry and point the alias = the device at it "
                                                            "(models:/EXPERIMENT@DEVICE)."),
    alias: Optional[str] = typer.Option(None, help="Register the pick and point this alias at it (implies "
                                                   "--register)."),
):
    """Print the most accurate finished mentee (by val_acc, its seed mean) within a budget or device.

    With --device, latency and training-memory budgets are checked here (the sweep cannot know them).
    Nothing is registered unless --register or --alias says so."""
    from search.pareto import Budget, parse_budget
    from search.results.fronts import mentee_view
    from search.results.pick import pick as pick_row
    from search.results.pick import pick_for_device
    from search.results.table import format_front
    from search.tracking import resolve_uri

    if max_params is None and max_bytes is None and max_macs is None and device is None:
        raise UserError("pick: give --device or at least one of --max-params, --max-bytes, --max-macs")
    if fmt not in ("table", "json"):
        raise UserError(f"--format: '{fmt}' is not one of table, json")
    if (register or alias) and device is None and alias is None:
        raise UserError("--register: needs --device (the alias) or --alias NAME")
    profile = _device(device, devices) if device else None
    # `is not None`: an empty --max-bytes "" is a mistake to name, not a budget to drop
    budget: Budget = {"max_params": parse_budget("--max-params", max_params) if max_params is not None else None,
                      "max_bytes": parse_budget("--max-bytes", max_bytes) if max_bytes is not None else None,
                      "max_macs": parse_budget("--max-macs", max_macs) if max_macs is not None else None}
    df = _runs(tracking_uri, experiment, sweep)
    if profile is not None:
        if profile.train is not None:  # latency is timed inside pick_for_device, for the best candidates only
            from search.results.costs import with_training_memory
            from search.tracking import load_arch
            df = with_training_memory(df, profile, functools.partial(load_arch, resolve_uri(tracking_uri)))
        row, nearest = pick_for_device(df, profile, resolve_uri(tracking_uri), **budget)
        if row is None:  # not an error: say so, and show what comes closest
            also = " and the --max-* budget" if any(v is not None for v in budget.values()) else ""
            typer.echo(f"no finished mentee fits {profile.name}{also}; the nearest:")
            for r, misses in nearest:
                typer.echo(f"  run {r['run_id']}: {r['widths']} val_acc {r['val_acc']:.4f}; misses: "
                           + ("; ".join(str(m) for m in misses) or "the --max-* budget"))
            return
    else:
        row = pick_row(df, **budget)
        if row is None:
            raise UserError("pick: no finished mentee fits that budget")
    view = mentee_view(row)
    if fmt == "json":
        typer.echo(format_front(view, "json"))
        return
    _say_pick(row, view)
    ref = row["run_id"]
    again = _again(tracking_uri)
    if profile is not None:
        lat = profile.budget("latency_ms")
        if lat is not None:  # measured now, on this machine: the sweep could not know it
            ms = float(row["latency_ms"])
            typer.echo(f"  latency: {ms:.3g} ms here (ONNX Runtime, 1 thread) × {lat.scale:g} = "
                       f"{lat.device_value(ms):.3g} ms on {profile.name} ≤ {lat.limit:g} ms")
        if profile.train is not None:
            from search.devices import format_bytes
            t = profile.train
            typer.echo(f"  training on {profile.name}: {format_bytes(float(row[t.axis]))} at batch {t.batch_size}, "
                       f"{t.optimizer} ≤ {format_bytes(t.limit)}")
    if register or alias:
        from search.tracking import register_pick
        tags = {"mentee.device": profile.name if profile else "", **{k: row[k] for k in (
            "val_acc", "test_acc", "params", "bytes_int8", "sram_int8", "macs") if k in row.index}}
        target = alias or (profile.name if profile is not None else "")  # checked above: one of them is given
        name, version, al = register_pick(resolve_uri(tracking_uri), row["run_id"], target, tags=tags)
        ref = f"models:/{name}@{al}"
        typer.echo(f"registered: model '{name}' version {version}; alias '{al}' now points to it ({ref})")
    elif profile is not None:
        typer.echo(f"not registered (the alias '{profile.name}' is unchanged); --register points it at this pick")
    dev = f" --device {profile.name}" + (f" --devices {devices}" if devices else "") if profile is not None else ""
    int8 = " --int8" if profile is not None else ""
    typer.echo(f"export it: mentee export {ref} --format onnx{int8}{dev}{again}")


def _say_pick(row, view) -> None:
    """The pick, labelled as every view labels it."""
    from search.devices import format_bytes
    from search.results.table import cell

    v = view.iloc[0]
    n = int(row.get("n_seeds", 1) or 1)
    seeds = f"mean of {n} seed{'s' * (n != 1)}"
    ci = f" ± {v['test_ci']:.4f} (95% CI)" if v.get("test_ci") == v.get("test_ci") else ""
    typer.echo(f"run {row['run_id']}: {row.get('family', '')} {row.get('widths', '')} mapping "
               f"{row.get('mapping', '')} ({v['arm']})")
    typer.echo(f"  val_acc {row['val_acc']:.4f} (validation, {seeds}: what it was chosen by)")
    typer.echo(f"  test_acc {row['test_acc']:.4f}{ci} (test, {seeds}: what to report)")
    typer.echo(f"  {cell('params', row['params'])} params, {format_bytes(float(row['bytes_int8']))} int8 weights, "
               f"{cell('macs', row['macs'])} MACs")


@app.command()
@_friendly
def dashboard(
    experiment: str = typer.Option(..., help="Experiment (= space name) to draw."),
    sweep: Optional[str] = typer.Option(None, help=SWEEP_HELP),
    device: list[str] = typer.Option([], help="Devices whose budgets to draw (repeatable; default: all shipped); "
                                              "the pick is made within the first."),
    devices: Optional[Path] = typer.Option(None, help="Your own device profiles (YAML), added to the shipped ones."),
    out: Optional[Path] = typer.Option(None, help="HTML file to write (default: dashboard-<experiment>.html)."),
    log: bool = typer.Option(True, "--log/--no-log", help="Also attach the file to the sweep's parent run "
                                                          "(--no-log: write the file only, the store untouched)."),
    tracking_uri: Optional[str] = typer.Option(None, help=URI_HELP),
):
    """Write the sweep's Pareto dashboard (one offline HTML file) and attach it to the sweep's parent run."""
    from search.devices import get_device, load_devices
    from search.results.costs import with_training_memory
    from search.results.dashboard import build_dashboard, with_latency, write_dashboard
    from search.results.pick import pick as pick_row
    from search.tracking import load_arch, load_curves, log_sweep_artifact, resolve_uri

    writable_file(out or Path(f"dashboard-{experiment}.html"), "--out")  # before the work, not after it
    known = load_devices(devices)
    profiles = [get_device(d, known) for d in device] or list(known.values())
    uri = resolve_uri(tracking_uri)
    df = _runs(tracking_uri, experiment, sweep)
    df = with_latency(df, lambda rid: load_arch(uri, rid))
    for p in profiles:
        if p.train is not None:
            df = with_training_memory(df, p, lambda rid: load_arch(uri, rid))
    pool = df[df.apply(profiles[0].fits, axis=1)] if device else df
    row = pick_row(pool) if len(pool) else None
    picked = None if row is None else {"run_id": row["run_id"], "curves": load_curves(uri, row["run_id"])}
    html = build_dashboard(df, title=f"mentee-search · {experiment}", devices=profiles, picked=picked)
    path = write_dashboard(html, out or Path(f"dashboard-{experiment}.html"))
    size = f"{path.stat().st_size / 2**20:.1f} MiB"
    if not log:
        typer.echo(f"wrote {path} ({size}); the store is untouched (--no-log)")
        return
    parent = df.sort_values("start_time")["parent_run_id"].dropna().iloc[-1]
    log_sweep_artifact(uri, parent, path)
    typer.echo(f"wrote {path} ({size}); also attached to the sweep's parent run {parent} (MLflow UI → its "
               "Artifacts; --no-log leaves the store untouched)")


@app.command("export")
@_friendly
def export_cmd(
    run_id: str = typer.Argument(..., help="Mentee run id (or its first 8 characters, as `pareto` shows it), or "
                                           "models:/NAME@ALIAS as `mentee pick --register` registers it."),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
    out: Optional[Path] = typer.Option(None, help="Output file (default: mentee-<run>.onnx / -int8.onnx / .pt)."),
    tracking_uri: Optional[str] = typer.Option(None, help=URI_HELP),
    int8: bool = typer.Option(False, "--int8", help="Quantise to int8 with ONNX Runtime (onnx only) and report how "
                                                    "often its argmax agrees with the torch model on test data."),
    calibration: int = typer.Option(256, help="With --int8: training samples that calibrate the activations "
                                              "(static quantisation); 0 = dynamic (int8 weights, no data)."),
    device: Optional[str] = typer.Option(None, help="Check the weights against this device's flash budget "
                                                    "again; exit code 1 (file kept) if they no longer fit."),
    devices: Optional[Path] = typer.Option(None, help="Your own device profiles (YAML), added to the shipped ones."),
):
    """Export a mentee to ONNX (optionally int8) or TorchScript and check it against the torch model.

    The weights are one seed's, the mentee's best on validation; the report gives the mentee's numbers
    (seed means) and, apart, that seed's own."""
    from search.measure import weight_bytes
    from search.models import create_mentee
    from search.results.export import export_int8, export_model, flash_check
    from search.tracking import load_member, resolve_model_ref, resolve_uri
    from search.tracking.sweeps import mentee_row, resolve_run_id

    if fmt not in ("onnx", "torchscript"):
        raise UserError(f"--format: '{fmt}' is not onnx or torchscript")
    if int8 and fmt != "onnx":
        raise UserError("--int8: only with --format onnx (ONNX Runtime quantises the ONNX model)")
    _number("--calibration", calibration, low=0)
    if out is not None:
        writable_file(out, "--out")
    profile = _device(device, devices) if device else None  # a typo fails before any work
    uri = resolve_uri(tracking_uri)
    run_id = resolve_run_id(uri, resolve_model_ref(uri, run_id))
    row = mentee_row(uri, run_id)
    try:
        cfg, state, meta = load_member(uri, run_id)
    except UserError as e:  # say where the weights were looked for: a copied store keeps old artifact paths
        at = row["weights_at"] or row["artifact_uri"]
        raise UserError(f"{e} (store {uri}; artifacts looked for under {at})") from None
    model = create_mentee(cfg.arch, meta["input_shape"], meta["num_classes"])
    model.load_state_dict(state)
    shape = tuple(meta["input_shape"])
    _report_mentee(row, meta)
    # one int8 size everywhere: measure.weight_bytes, as the sweep logged bytes_int8 and pick/pareto show it
    w8 = weight_bytes(model, "int8")
    if not int8:
        path = out or Path(f"mentee-{run_id[:8]}.{'onnx' if fmt == 'onnx' else 'pt'}")
        export_model(model, shape, path, fmt)
        typer.echo(f"wrote {path} ({format_bytes(path.stat().st_size)} file); outputs match the torch model")
        if profile is not None:
            _flash(*flash_check(profile, weight_bytes(model), "fp32"))
        return
    calib, check = _export_data(uri, run_id, shape, calibration)
    path = out or Path(f"mentee-{run_id[:8]}-int8.onnx")
    rep = export_int8(model, shape, path, calibration=calib, check=check)
    typer.echo(f"wrote {path} ({format_bytes(rep.file_bytes)} file; int8, {rep.method}): int8 weights "
               f"{format_bytes(w8)} (as pareto and pick count them; fp32 {format_bytes(weight_bytes(model))})")
    on = f"{rep.samples} test samples" if rep.on_data else f"{rep.samples} random inputs (the dataset did not load)"
    acc = (f"; accuracy on them int8 {rep.acc_int8:.4f} vs torch {rep.acc_torch:.4f}" if rep.acc_int8 is not None
           else "")
    typer.echo(f"int8 vs torch on {on}: argmax agrees on {rep.agreement:.1%} (max |logit difference| "
               f"{rep.max_abs_diff:.3g}){acc}")
    if profile is not None:
        _flash(*flash_check(profile, w8, "int8"))


def _report_mentee(row, meta) -> None:
    """The mentee's numbers (what pareto and pick show) and, labelled apart, the exported seed's own."""
    from search.pareto import ci95

    n = int(row.get("n_seeds", 1) or 1) if row.get("n_seeds") == row.get("n_seeds") else 1
    seeds = f"mean of {n} seed{'s' * (n != 1)}"
    half = ci95(float(row.get("test_acc_std", float("nan"))), n)
    ci = f" ± {half:.4f} (95% CI)" if half == half else ""
    typer.echo(f"mentee {row['run_id']}: test_acc {float(row['test_acc']):.4f}{ci} ({seeds}); val_acc "
               f"{float(row['val_acc']):.4f} ({seeds})")
    if "seed" in meta:
        own = "; ".join(f"{k} {float(meta[k]):.4f}" for k in ("val_acc", "test_acc") if k in meta)
        typer.echo(f"exported weights: seed {meta['seed']}, the mentee's best seed on validation (its own {own})")


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

