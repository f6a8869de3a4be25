"""The `mentee` command.

    mentee quickstart                         # mentor, sweep, front and pick on MNIST-1D
    mentee mentor train --dataset mnist1d     # train and save a mentor
    mentee compare --mentor mentors/mnist1d.pt --widths 8 --hint last:layer3 --seeds 3
    mentee sweep spaces/mnist1d.yaml [--dry-run | --resume] [--address auto]
    mentee pareto | mentee pick --max-params 5k | mentee export RUN_ID --format onnx | mentee ui
    mentee devices | mentee sweeps --experiment mnist1d | mentee pareto --sweep ID | mentee --version

Every command turns bad input into one line on stderr and exit code 2.

One module a group of commands: `mentor` (mentor train, compare), `sweep`, `front` (pareto, pick,
dashboard, export), `listing` (devices, sweeps, --version), `ui` (ui, quickstart); `_app` holds the
Typer app and what they share. Each command imports its library modules when it runs, so `mentee --help`
starts fast.
"""

from __future__ import annotations

import sys

import typer

from search.cli._app import app

# Importing the command modules registers their commands on `app`, in this order: `mentee --help`
# lists them so (a workflow's order, not the alphabet's, hence no import sorting here).
# isort: off
from search.cli import mentor, sweep, front, listing, ui  # noqa: F401
# isort: on

__all__ = ["app", "main"]


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
