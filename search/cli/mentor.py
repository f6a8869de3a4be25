"""`mentee mentor train` (a mentor, alone or data-parallel with Ray Train) and `mentee compare`
(one mentee with and without its mentor over a few seeds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from search.cli._app import _console, _friendly, _number, _widths, app, mentor_app, writable_file
from search.errors import UserError


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
    device: str = typer.Option("auto", "--accelerator", help="Where to train: cpu, cuda or auto."),
    workers: int = typer.Option(1, help="Data-parallel workers (Ray Train DDP; one GPU each with --accelerator "
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
    writable_file(out, "--out" if space is None else f"{space}: key 'mentor.path'")  # now, not after training
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
    device: str = typer.Option("auto", "--accelerator", help="Where to train: cpu, cuda or auto."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
):
    """Train one mentee independently and mentored over N seeds; print both side by side."""
    from search.config import ArchConfig, TermConfig
    from search.data import load_dataset
    from search.progress import Progress
    from search.terms import METRICS
    from search.train.compare import compare_mentorship

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
