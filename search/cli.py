"""The `mentee` command.

    mentee quickstart                         # mentor, sweep, front and pick on MNIST-1D
    mentee mentor train --dataset mnist1d     # train and save a mentor
    mentee compare --mentor mentors/mnist1d.pt --widths 8 --hint last:layer3 --seeds 3
    mentee sweep spaces/mnist1d.yaml [--dry-run | --resume] [--address auto]
    mentee pareto | mentee pick --max-params 5k | mentee export RUN_ID --format onnx | mentee ui

Every command turns bad input into one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Optional

import typer

from search.errors import SweepInterrupted, TrainingDiverged, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find the best small network a device can hold, trained under a mentor.")
mentor_app = typer.Typer(no_args_is_help=True, help="Train or inspect mentors.")
app.add_typer(mentor_app, name="mentor")

URI_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here)."


def _friendly(fn):
    """Bad input → one line and exit 2; a diverged run → one line and exit 1."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except UserError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except TrainingDiverged as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        except SweepInterrupted as e:  # Ctrl-C (130), the tracking store gone (75): `--resume` continues
            typer.echo(f"interrupted: {e}", err=True)
            raise typer.Exit(getattr(e, "exit_code", 130)) from None
    return wrapper


def _console():
    from search.progress import console
    return console


def _widths(text: str, flag: str) -> tuple[int, ...]:
    parts = re.split(r"[,x]", text.strip())
    if not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise UserError(f"{flag}: '{text}' is not a list of integers ≥ 1 like 8,16,32")
    return tuple(int(p) for p in parts)


def _number(flag: str, value: float, *, low: float, strict: bool = False) -> None:
    # Checked in the command, not with typer's min=: a click usage error prints a multi-line box, and
    # click takes "nan" and "inf" as floats; a bad number must be one line before any work starts.
    if not math.isfinite(value) or value < low or (strict and value == low):
        raise UserError(f"{flag}: expected a number {'>' if strict else '≥'} {low:g}, got {value:g}")


# ------------------------------------------------------------------ mentor

@mentor_app.command("train")
@_friendly
def mentor_train(
    space: Optional[Path] = typer.Argument(None, help="Train the mentor a space file names (its mentor.path)."),
    dataset: str = typer.Option("mnist1d", help="Dataset name (mnist1d, digits, iris, libsvm:PATH, mnist, ...)."),
    root: Optional[str] = typer.Option(None, help="Directory of local dataset files (mnist, cifar10)."),
    n_samples: Optional[int] = typer.Option(None, help="Samples to generate or keep (mnist1d default 5000)."),
    family: str = typer.Option("conv1d", help="Mentor family: conv1d, conv2d or mlp."),
    widths: str = typer.Option("64,128,128,128", help="Channels / hidden sizes per layer."),
    kernel: int = typer.Option(5, help="Convolution kernel size."),
    batch_norm: bool = typer.Option(True, help="Batch norm after each convolution."),
    epochs: int = typer.Option(60, help="Training epochs (≥ 1)."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (one-cycle)."),
    seed: int = typer.Option(0, help="Seed for the split, the initialisation and the data order."),
    out: Path = typer.Option(Path("mentors/mentor.pt"), help="Where to save the mentor."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    workers: int = typer.Option(1, help="Data-parallel workers (Ray Train DDP; one GPU each with --device "
                                        "cuda/auto on a GPU machine, else one CPU each)."),
):
    """Train a mentor network and save it (spec + state dict) for later sweeps."""
    from search.config import ArchConfig
    from search.data import load_dataset
    from search.progress import Progress
    from search.train.device import pick_device
    from search.train.mentor import train_mentor

    _number("--workers", workers, low=1)
    if space is not None:
        from search.spaces import load_space
        sp = load_space(space)
        d, m = sp.dataset, sp.mentor
        dataset, root, n_samples, seed = d.name, d.root, d.n_samples, d.seed
        arch = m.arch.config()
        epochs, lr, out = m.epochs, m.lr, Path(m.path)
    else:
        arch = ArchConfig(family, _widths(widths, "--widths"), kernel, batch_norm)
        for flag, v, low in (("--epochs", epochs, 1), ("--kernel", kernel, 1)):
            _number(flag, v, low=low)
        _number("--lr", lr, low=0, strict=True)
    if out.is_dir():  # found now, not when the trained mentor is saved
        raise UserError(f"{out}: is a directory; expected the mentor file to write, e.g. {out / 'mentor.pt'}")
    splits = load_dataset(dataset, root=root, n_samples=n_samples, seed=seed)
    dev = pick_device(device)
    if workers > 1:  # data-parallel: Ray Train workers, NCCL on GPUs, gloo on CPUs
        from search.train.ddp import train_mentor_ddp
        _console().print(f"mentor {arch.family} {list(arch.widths)} on {splits.summary()} "
                         f"({workers} DDP workers, {'GPU' if dev.type == 'cuda' else 'CPU'} each)")
        _, metrics = train_mentor_ddp(arch, splits, workers=workers, use_gpu=dev.type == "cuda", epochs=epochs,
                                      lr=lr, seed=seed, out=out)
    else:
        _console().print(f"mentor {arch.family} {list(arch.widths)} on {splits.summary()} ({dev})")
        with Progress(epochs, "mentor epochs") as bar:
            _, metrics = train_mentor(arch, splits.to(dev), epochs=epochs, lr=lr, seed=seed, out=out,
                                      on_epoch=lambda e, n: bar.advance(1))
    typer.echo(f"mentor saved to {out}: val acc {metrics['val_acc']:.4f}, test acc {metrics['test_acc']:.4f}, "
               f"{int(metrics['params']):,} params")


# ----------------------------------------------------------------- compare

def _parse_hint(text: str, metric: str, weight: float, depth: int):
    from search.config import TermConfig
    s, sep, t = text.partition(":")
    if not sep or not s or not t:
        raise UserError(f"--hint: '{text}' should be MENTEE_TAP:MENTOR_TAP, e.g. last:layer3")
    return TermConfig("hint", weight, {"student": f"layer{depth}" if s == "last" else s, "teacher": t,
                                       "metric": metric})


@app.command()
@_friendly
def compare(
    mentor: Path = typer.Option(Path("mentors/mentor.pt"), help="Mentor file from `mentee mentor train`."),
    dataset: str = typer.Option("mnist1d", help="Dataset the mentor was trained on."),
    root: Optional[str] = typer.Option(None, help="Directory of local dataset files."),
    n_samples: Optional[int] = typer.Option(None, help="Samples to generate or keep."),
    split_seed: int = typer.Option(0, help="Seed of the train/val/test split (use the mentor's)."),
    family: str = typer.Option("conv1d", help="Mentee family."),
    widths: str = typer.Option("8,8,8", help="Mentee widths per layer, e.g. 8,8,8."),
    kernel: int = typer.Option(5, help="Mentee kernel size."),
    batch_norm: bool = typer.Option(False, help="Batch norm in the mentee."),
    hint: list[str] = typer.Option(["last:layer4"], help="MENTEE_TAP:MENTOR_TAP (repeatable); 'last' = deepest layer."),
    metric: str = typer.Option("rmse", help="Hint metric: rmse, mse or cosine."),
    weight: float = typer.Option(0.1, help="Weight of each hint term."),
    kd: float = typer.Option(0.0, help="Weight of the soft-target (KL) term."),
    temperature: float = typer.Option(4.0, help="Soft-target temperature."),
    epochs: int = typer.Option(60, help="Epochs per mentee (≥ 1)."),
    lr: float = typer.Option(1e-2, help="Learning rate."),
    batch_size: int = typer.Option(128, help="Batch size."),
    seeds: int = typer.Option(3, help="Seeds to average over (≥ 1)."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
):
    """Train one mentee independently and mentored over N seeds; print both side by side."""
    from search.config import ArchConfig, TermConfig
    from search.data import load_dataset
    from search.progress import Progress
    from search.train.compare import compare_mentorship
    from search.train.losses import METRICS

    if metric not in METRICS:
        raise UserError(f"--metric: unknown metric '{metric}'; expected one of {', '.join(sorted(METRICS))}")
    if fmt not in ("table", "json"):
        raise UserError(f"--format: '{fmt}' is not table or json")
    # Every flag is checked before the dataset loads: a typo costs a blink, not a minute.
    arch = ArchConfig(family, _widths(widths, "--widths"), kernel, batch_norm)
    for flag, v, low in (("--epochs", epochs, 1), ("--seeds", seeds, 1), ("--batch-size", batch_size, 1),
                         ("--kernel", kernel, 1), ("--weight", weight, 0), ("--kd", kd, 0)):
        _number(flag, v, low=low)
    for flag, v in (("--lr", lr), ("--temperature", temperature)):
        _number(flag, v, low=0, strict=True)
    terms = [_parse_hint(h, metric, weight, arch.depth) for h in hint]
    if kd:
        terms.append(TermConfig("kd", kd, {"temperature": temperature}))
    splits = load_dataset(dataset, root=root, n_samples=n_samples, seed=split_seed)
    with Progress(epochs, f"{2 * seeds} mentees fused") as bar:
        row = compare_mentorship(mentor, splits, arch, terms, seeds=seeds, epochs=epochs, lr=lr,
                                 batch_size=batch_size, device=device, on_epoch=lambda e, n: bar.advance(1))
    ind, men = row["independent"], row["mentored"]
    if fmt == "json":
        typer.echo(json.dumps(row))
        return
    from rich.table import Table
    t = Table(title=f"{row['arch']} ({row['params']:,} params), test accuracy over {seeds} seeds")
    for c in ("", "mean", "± std", "per seed"):
        t.add_column(c)
    t.add_row("independent", f"{row['independent_mean']:.4f}", f"{row['independent_std']:.4f}",
              " ".join(f"{a:.3f}" for a in ind))
    t.add_row(f"mentored ({row['mapping']})", f"{row['mentored_mean']:.4f}", f"{row['mentored_std']:.4f}",
              " ".join(f"{a:.3f}" for a in men))
    from rich.console import Console
    Console().print(t)
    typer.echo(f"mentorship gain: {row['gain'] * 100:+.2f} points")


# ------------------------------------------------------------------- sweep

@app.command()
@_friendly
def sweep(
    space: Path = typer.Argument(..., help="Search space YAML, e.g. spaces/mnist1d.yaml."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the space and print the plan; train nothing."),
    resume: bool = typer.Option(False, "--resume", help="Continue the last unfinished sweep of this space."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address ('auto' inside a cluster); "
                                                     "default: $RAY_ADDRESS or a local Ray."),
    tracking_uri: Optional[str] = typer.Option(None, help=URI_HELP),
    workdir: Path = typer.Option(Path("mentee-runs"), help="Where the Optuna study and Ray's files go."),
    storage: Optional[str] = typer.Option(None, help="Ray storage path; must be shared (s3://, NFS) on a cluster."),
    devices: Optional[Path] = typer.Option(None, help="Your own device profiles (YAML), added to the shipped ones: "
                                                      "the space's `target:` may name one of them."),
):
    """Search mentees for a space with Ray Tune + Optuna; record every mentee in MLflow."""
    from search.spaces import load_space

    if devices is not None:
        from search.devices import load_devices
        load_devices(devices)  # its own errors name the file, not the space's key
    sp = load_space(space, devices=devices)  # validate before importing Ray and torch: a bad file fails in a blink
    from search.sweep.plan import plan_sweep
    from search.sweep.run import run_sweep

    if dry_run:
        plan = plan_sweep(sp, where=str(space))
        from rich.table import Table
        t = Table(title=f"plan for {space} (nothing trained)", show_header=False)
        for k, v in plan.describe():
            t.add_row(k, v)
        from rich.console import Console
        Console().print(t)
        return
    summary = run_sweep(sp, tracking_uri=tracking_uri, address=address, workdir=workdir, storage=storage,
                        resume=resume, where=str(space))
    typer.echo(f"sweep '{summary.experiment}' done in {summary.seconds:.1f} s: {summary.finished} finished, "
               f"{summary.pruned} pruned, {summary.failed} failed mentees in {summary.trials} trials "
               f"(parent run {summary.parent_run_id}); see `mentee pareto --experiment {summary.experiment}`")


# ----------------------------------------------------------- front & pick

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
    from search.pareto import (
        arm_balance,
        format_front,
        mentorship_front,
        pareto_front,
        print_front,
        with_mentorship_gain,
    )

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
    from search.pareto import pick as pick_row
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
        from search.sweep.target import pick_for_device
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
    from search.dashboard import build_dashboard, with_latency, write_dashboard
    from search.devices import get_device, load_devices
    from search.pareto import pick as pick_row
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
    from search.export import export_int8, export_model, flash_check, onnx_weight_bytes
    from search.models import create_mentee
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


@app.command()
@_friendly
def ui(
    tracking_uri: Optional[str] = typer.Option(None, help=URI_HELP),
    port: int = typer.Option(5000, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; only this machine can connect unless you "
                                                "pass another (0.0.0.0 = every network: the UI has no login)."),
    experiment: Optional[str] = typer.Option(None, help="Experiment (= space name) whose runs the printed URL "
                                                        "opens; default: the latest sweep's."),
):
    """Start the MLflow UI for the tracking store on 127.0.0.1 (or --host); print the URL of the sweep's runs."""
    from search.tracking import experiment_id, load_runs, resolve_uri, ui_command

    if not 0 < port < 65536:
        raise UserError(f"--port: expected 1..65535, got {port}")
    uri = resolve_uri(tracking_uri)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if experiment is not None:
        exp_id = experiment_id(uri, experiment)
        if exp_id is None:
            raise UserError(f"--experiment: no experiment '{experiment}' in {uri}")
    else:  # the experiment of the latest mentee run, if the store has any
        try:
            runs = load_runs(uri)
        except UserError:  # no store yet: the UI still starts
            runs = None
        exp_id = None if runs is None or runs.empty else str(runs.sort_values("start_time").experiment_id.iloc[-1])
    argv = ui_command(uri, host=host, port=port)
    typer.echo(f"MLflow UI on {base}  (Ctrl-C stops it)")
    if exp_id is not None:
        typer.echo(f"the sweep's runs: {experiment_url(base, exp_id)}")
    os.execvp(argv[0], argv)


def experiment_url(base: str, exp_id: str) -> str:
    """The UI page of an experiment's training runs. MLflow 3.17's UI opens every experiment on its GenAI
    overview unless the URL (or the browser's last choice) says `workflowType=machine_learning`; the
    experiment tag `mlflow.experimentKind` alone no longer decides it."""
    return f"{base}/#/experiments/{exp_id}?workflowType=machine_learning"


@app.command()
@_friendly
def quickstart(
    workdir: Path = typer.Option(Path("."), help="Where mentors/, mlflow.db and mentee-runs/ go."),
    mentees: int = typer.Option(24, help="Mentees in the sweep (≥ 2, both arms: half independent)."),
):
    """Mentor on MNIST-1D, a small sweep, the Pareto front and a pick, all recorded in MLflow."""
    from search.spaces import load_space
    from search.sweep.run import run_sweep

    _number("--mentees", mentees, low=2)  # before workdir is created
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    space_file = Path(__file__).resolve().parent.parent / "spaces" / "quickstart.yaml"
    sp = load_space(space_file)
    sp = sp.model_copy(update={"budget": sp.budget.model_copy(update={"mentees": mentees})})
    con = _console()
    con.print(f"[bold]1/3[/] mentor: {sp.mentor.path} ({'loading' if Path(sp.mentor.path).exists() else 'training'})")
    con.print(f"[bold]2/3[/] sweep of {mentees} mentees, half of them independent (Ray Tune + Optuna, recorded in "
              f"MLflow); then its fronts again with {sp.budget.reevaluate_seeds} new seeds")
    summary = run_sweep(sp, where=str(space_file))
    typer.echo(f"sweep done in {summary.seconds:.0f} s: {summary.finished} finished, {summary.pruned} pruned")
    con.print("[bold]3/3[/] the front and a pick")
    # every option passed: called as functions, the commands would otherwise get typer's OptionInfo defaults
    pareto(experiment=sp.name, tracking_uri=None, by="params", fmt="table", gains_too=True, device=None,
           devices=None)
    from search.tracking import load_runs, resolve_uri
    df = load_runs(resolve_uri(None), sp.name)
    median = int(df[(df.status == "finished") & df.reeval_of.isna()]["params"].median())
    pick(max_params=str(median), max_bytes=None, max_macs=None, device=None, devices=None, experiment=sp.name,
         tracking_uri=None, register=False)
    typer.echo(f"browse every run: `mentee ui` in {Path.cwd()}, then open http://127.0.0.1:5000 "
               f"→ experiment '{sp.name}' → the sweep's parent run lists one child run per mentee")


def main(args: list[str] | None = None) -> int:
    """`mentee`: the exit code. Click's own usage errors (`--epochs abc`, an unknown option, a
    missing argument) are one line on stderr and exit 2 too, like every other bad input: Typer
    would print them in a box of several lines."""
    # Click's exceptions wherever this Typer keeps them (Typer ≥ 0.22 vendors its own copy of click)
    clk = sys.modules[typer.BadParameter.__module__]
    no_args = getattr(clk, "NoArgsIsHelpError", ())
    try:
        code = app(args=args, prog_name="mentee", standalone_mode=False)
    except no_args as e:  # bare `mentee` or `mentee mentor`: the help, as before
        typer.echo(e.ctx.get_help())
        return 2
    except clk.UsageError as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        typer.echo(f"error: {' '.join(e.format_message().split())}{hint}", err=True)
        return 2
    except clk.ClickException as e:
        typer.echo(f"error: {' '.join(e.format_message().split())}", err=True)
        return e.exit_code
    except typer.Abort:  # end of input at a prompt
        typer.echo("aborted", err=True)
        return 1
    return code if isinstance(code, int) else 0  # a command's return value is not an exit code


if __name__ == "__main__":
    sys.exit(main())
