"""A progress bar for long work that stays quiet when output is not a terminal.

    with Progress(total=128, title="sweep") as bar:
        bar.advance(1, "12 finished")
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as _RichProgress

__all__ = ["Progress", "console"]

console = Console(stderr=True)


class Progress:
    def __init__(self, total: int, title: str, *, enabled: bool = True):
        self.enabled = enabled
        self.total, self.title, self.done = total, title, 0
        self._bar: _RichProgress | None = None
        self._interactive = sys.stderr.isatty()

    def __enter__(self) -> "Progress":
        if self.enabled and self._interactive:
            self._bar = _RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                      console=console, transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=self.total, note="")
        return self

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n, note=note)
        elif self.enabled:  # logs and CI: one plain line per step of progress
            console.print(f"{self.title}: {self.done}/{self.total} {note}", highlight=False)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
