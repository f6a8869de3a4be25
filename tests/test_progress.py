"""The phases and the progress line as a log reads them (stderr not a terminal: one plain line each)."""

from __future__ import annotations

import pytest

from search.progress import Progress, phase


def test_each_phase_says_its_name_and_time_also_when_it_fails(capsys):
    with phase("starting Ray"):
        pass
    with pytest.raises(RuntimeError), phase("the mentor"):
        raise RuntimeError("no GPU")
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("✓ starting Ray (") and err[0].endswith(" s)")
    assert err[1].startswith("✗ the mentor (")
    with phase("quiet", enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_the_best_accuracy_so_far_stays_the_highest(capsys):
    with Progress(3, "sweep t") as bar:
        bar.advance(1, "1 finished")
        bar.best(0.81)
        bar.advance(1, "2 finished")
        bar.best(0.70)  # lower: the best stays
        bar.best(float("nan"))
        bar.advance(1, "3 finished")
    err = capsys.readouterr().err.splitlines()
    assert err == ["sweep t: 1/3 1 finished", "sweep t: 2/3 2 finished (best val_acc 0.8100)",
                   "sweep t: 3/3 3 finished (best val_acc 0.8100)"]
