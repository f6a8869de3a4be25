"""The `mentee` app and what its commands share: bad input → one line and exit 2 (`_friendly`),
flag checks that run before any work, the tracking-URI help. The commands live one group a module
beside this one; `search.cli` imports them all, which registers them on `app`."""

from __future__ import annotations

import functools
import math
import re

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

