"""`mentee sweep`: validate a space, print its plan (`--dry-run`) or run it (`--resume` continues one)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from search.cli._app import URI_HELP, _friendly, app, sweep_paths_ok


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
    sweep_paths_ok(workdir, tracking_uri, resume)  # a file as --workdir, --resume of a store never made
    from search.sweep.faults import watch_for_node_death
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
    watch_for_node_death()  # a Ray node death ends the driver from C++: the parent says --resume, exit 75
    summary = run_sweep(sp, tracking_uri=tracking_uri, address=address, workdir=workdir, storage=storage,
                        resume=resume, where=str(space))
    typer.echo(f"sweep '{summary.experiment}' done in {summary.seconds:.1f} s: {summary.finished} finished, "
               f"{summary.pruned} pruned, {summary.failed} failed mentees in {summary.trials} trials "
               f"(parent run {summary.parent_run_id}); see `mentee pareto --experiment {summary.experiment}"
               + (f" --tracking-uri {tracking_uri}`" if tracking_uri else "`"))
