"""The `mentee` app and what its commands share: bad input → one line and exit 2 (`_friendly`),
flag checks that run before any work (numbers, the paths a command will write, a port to listen on),
the tracking-URI help. The commands live one group a module
beside this one; `search.cli` imports them all, which registers them on `app`."""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import typer

from search.errors import SweepInterrupted, TrainingDiverged, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find the best small network a device can hold, trained under a mentor.")
mentor_app = typer.Typer(no_args_is_help=True, help="Train mentors.")
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



# ----------------------------------------------------------------- paths a command will write, checked first

def _file_on_the_way(path: Path) -> Path | None:
    """The first existing ancestor of `path` that is not a folder (then nothing can be made under it)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def writable_file(path: Path, flag: str) -> None:
    """`path` can become a file: not a folder, nothing but folders above it. Checked before any work, so
    a wrong --out costs a blink, not the work and then a traceback."""
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a directory; expected a file to write, e.g. {path / 'out'}")
    blocker = _file_on_the_way(path)
    if blocker is not None:
        raise UserError(f"{flag} {path}: {blocker} is a file, not a folder; expected a path whose folders are "
                        "folders")


def work_dir(path: Path, flag: str) -> None:
    """`path` is, or can become, a folder."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: is a file; expected a folder (it is made if missing)")
    blocker = _file_on_the_way(path)
    if blocker is not None:
        raise UserError(f"{flag} {path}: {blocker} is a file, not a folder; expected a folder path")


def free_port(host: str, port: int, flag: str = "--port") -> None:
    """Nothing listens on host:port yet: a server started there would fail with a traceback, or a URL
    printed for it would open whatever holds the port."""
    import socket

    if not 0 < port < 65536:
        raise UserError(f"{flag}: expected 1..65535, got {port}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"{flag} {port}: cannot listen on {host} ({e.strerror or e}: taken by another "
                            f"server?); pass another, e.g. {flag} {port + 1}") from None


def sweep_paths_ok(workdir: Path, tracking_uri: str | None, resume: bool) -> None:
    """`mentee sweep`'s paths, before any work: --workdir is (or can become) a folder, and `--resume` finds
    the store its sweep was recorded in — a missing one is never created for it."""
    work_dir(workdir, "--workdir")
    if not resume:
        return
    from search.tracking import resolve_uri
    from search.tracking.stores import check_store

    try:
        check_store(resolve_uri(tracking_uri), reader=True)
    except UserError as e:
        raise UserError(f"--resume: {e}; nothing to resume (run the sweep without --resume first)") from None
