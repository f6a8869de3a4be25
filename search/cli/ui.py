"""`mentee ui` (the MLflow UI on 127.0.0.1, with the URL of the sweep's runs) and `mentee quickstart`
(mentor, sweep, front and pick in one go, for a first look)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from search.cli._app import URI_HELP, _console, _friendly, _number, app, free_port
from search.cli.front import pareto, pick
from search.errors import UserError


@app.command()
@_friendly
def ui(
    tracking_uri: Optional[str] = typer.Option(None, help=URI_HELP),
    port: int = typer.Option(5000, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; only this machine can connect unless you "
                                                "pass another (0.0.0.0 = every network: the UI has no login)."),
    experiment: Optional[str] = typer.Option(None, help="Experiment (= space name) whose latest sweep the printed "
                                                        "URL opens; default: the latest sweep of any."),
    sweep: Optional[str] = typer.Option(None, help="The sweep the URL opens (its parent run id, as `mentee sweeps` "
                                                   "lists it)."),
):
    """Start the MLflow UI on 127.0.0.1 (or --host); print the URL of the sweep's mentees, ready to read.

    The URL opens the sweep's mentees flat, sorted by val_acc, with val_acc, test_acc, params, bytes_int8
    and arm as columns (a view stored on the experiment, as MLflow's Share button stores one)."""
    from search.tracking import experiment_id, resolve_uri, ui_command
    from search.tracking.sweeps import latest_sweep, share_sweep_view

    free_port(host, port)  # one line, exit 2, if taken: MLflow would print a traceback
    uri = resolve_uri(tracking_uri)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    exp_id = None
    if experiment is not None:
        exp_id = experiment_id(uri, experiment)
        if exp_id is None:
            raise UserError(f"--experiment: no experiment '{experiment}' in {uri}")
    if sweep is None:
        try:
            sweep = latest_sweep(uri, experiment)
        except UserError:  # no store yet: the UI still starts
            sweep = None
    url = None
    if sweep is not None:
        exp_id, key = share_sweep_view(uri, sweep)
        url = experiment_url(base, exp_id, key)
    elif exp_id is not None:
        url = experiment_url(base, exp_id)
    # this Python's mlflow (a pipx or un-activated venv has none on PATH); one worker and no job runner:
    # a UI for one person, not MLflow's default of 4 workers plus a job consumer
    argv = [sys.executable, "-m", "mlflow", *ui_command(uri, host=host, port=port)[1:], "--workers", "1"]
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    typer.echo(f"MLflow UI on {base}  (Ctrl-C stops it)")
    if url is not None:
        typer.echo(f"the sweep's runs: {url}")
    sys.stdout.flush()
    os.execv(argv[0], argv)


def experiment_url(base: str, exp_id: str, share_key: str | None = None) -> str:
    """The UI page of an experiment's training runs. MLflow 3.17's UI opens every experiment on its GenAI
    overview unless the URL (or the browser's last choice) says `workflowType=machine_learning`; the
    experiment tag `mlflow.experimentKind` alone no longer decides it. `share_key`: a view stored on the
    experiment (search.tracking.sweeps.share_sweep_view) that the runs page applies — on its own route,
    /experiments/ID/runs (the experiment's landing page ignores the key); compareRunsMode=TABLE opens the
    table, not the charts."""
    if share_key:
        return (f"{base}/#/experiments/{exp_id}/runs?workflowType=machine_learning&compareRunsMode=TABLE"
                f"&viewStateShareKey={share_key}")
    return f"{base}/#/experiments/{exp_id}?workflowType=machine_learning"


@app.command()
@_friendly
def quickstart(
    workdir: Path = typer.Option(Path("."), help="Where mentors/, mlflow.db and mentee-runs/ go."),
    mentees: int = typer.Option(20, help="Mentees in the sweep (≥ 2, both arms: half independent)."),
):
    """Mentor on MNIST-1D, a small sweep, the Pareto front and a pick, all recorded in MLflow."""
    from search.spaces import load_space
    from search.sweep.run import run_sweep

    _number("--mentees", mentees, low=2)  # before workdir is created
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    space_file = Path(__file__).resolve().parents[2] / "spaces" / "quickstart.yaml"  # beside the package
    sp = load_space(space_file)
    sp = sp.model_copy(update={"budget": sp.budget.model_copy(update={"mentees": mentees})})
    con = _console()
    con.print(f"[bold]1/3[/] mentor: {sp.mentor.path} ({'loading' if Path(sp.mentor.path).exists() else 'training'})")
    con.print(f"[bold]2/3[/] sweep of {mentees} mentees, half of them independent, each trained with several seeds "
              f"(Ray Tune + Optuna, recorded in MLflow); then up to {sp.budget.reevaluate_seeds} more seeds for the "
              "mentees near the fronts")
    summary = run_sweep(sp, where=str(space_file))
    typer.echo(f"sweep done in {summary.seconds:.0f} s: {summary.finished} finished, {summary.pruned} pruned")
    con.print("[bold]3/3[/] the front and a pick")
    # every option passed: called as functions, the commands would otherwise get typer's OptionInfo defaults
    pareto(experiment=sp.name, sweep=None, tracking_uri=None, by="params", fmt="table", wide=False, gains_too=True,
           device=None, devices=None)
    from search.tracking import load_runs, resolve_uri
    df = load_runs(resolve_uri(None), sp.name)
    median = int(df[df.status == "finished"]["params"].median())
    pick(max_params=str(median), max_bytes=None, max_macs=None, device=None, devices=None, experiment=sp.name,
         sweep=None, tracking_uri=None, fmt="table", register=False, alias=None)
    typer.echo(f"browse every mentee: `mentee ui` in {Path.cwd()}, then open the URL it prints (the sweep's "
               "mentees, sorted by val_acc)")

