"""What a long run is doing: its phases, a progress bar with the best accuracy so far; quiet off a terminal.

    with phase("starting Ray"):                 # a spinner, then "✓ starting Ray (2.9 s)"
        connect()
    with Progress(total=128, title="sweep") as bar:
        bar.advance(1, "12 finished")
        bar.best(0.9275)                          # "best val_acc 0.9275" beside the bar, kept if lower comes

Off a terminal (logs, CI) each phase is one line when it ends and each step one plain line, so a log reads
top to bottom; `enabled=False` prints nothing at all.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as _RichProgress

__all__ = ["Progress", "console", "phase"]

console = Console(stderr=True)


@contextmanager
def phase(name: str, *, enabled: bool = True) -> Iterator[None]:
    """One phase of a run, said while it runs (a spinner on a terminal) and timed when it ends. A phase that
    fails says so too, with its time, before the error propagates."""
    if not enabled:
        yield
        return
    t0 = time.perf_counter()
    status = console.status(f"{name} …") if sys.stderr.isatty() else None
    ok = False
    try:
        if status is not None:
            with status:
                yield
        else:
            yield
        ok = True
    finally:
        mark = "✓" if ok else "✗"
        console.print(f"{mark} {name} ({time.perf_counter() - t0:.1f} s)", highlight=False)


class Progress:
    def __init__(self, total: int, title: str, *, enabled: bool = True, metric: str = "val_acc"):
        self.enabled = enabled
        self.total, self.title, self.done = total, title, 0
        self.metric = metric
        self.best_acc: float | None = None  # best(): the highest `metric` so far
        self._bar: _RichProgress | None = None
        self._interactive = sys.stderr.isatty()

    def __enter__(self) -> "Progress":
        if self.enabled and self._interactive:
            self._bar = _RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[best]}"), TextColumn("{task.fields[note]}"),
                                      TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
            self._bar.__enter__()
            # at 0/N for the first cohort's whole training: say what is going on
            self._task = self._bar.add_task(self.title, total=self.total, best="",
                                            note="training the first cohort")
        return self

    def _best_text(self) -> str:
        return "" if self.best_acc is None else f"best {self.metric} {self.best_acc:.4f}"

    def best(self, acc: float | None) -> None:
        """Show the best accuracy so far (a lower one than shown changes nothing; None or NaN is ignored)."""
        if acc is None or acc != acc or (self.best_acc is not None and acc <= self.best_acc):
            return
        self.best_acc = float(acc)
        if self._bar is not None:
            self._bar.update(self._task, best=self._best_text())

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n, note=note)
        elif self.enabled:  # logs and CI: one plain line per step of progress
            best = f" ({self._best_text()})" if self.best_acc is not None else ""
            console.print(f"{self.title}: {self.done}/{self.total} {note}{best}", highlight=False)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
