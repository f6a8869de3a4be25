"""The budget that fits the hardware: seeds per mentee by device, whole mentees a cohort, and
`mentees: auto` filling `minutes` at the pace measured as the sweep runs."""

from __future__ import annotations

import time

import pytest

from search.errors import UserError
from search.spaces import load_space, parse_space
from search.sweep.driver import MenteeBudget, SweepSummary
from search.sweep.plan import plan_sweep

SPACE = {"name": "b", "dataset": {"name": "mnist1d", "n_samples": 300},
         "mentee": {"family": "conv1d", "depth": [1, 2], "width": [4, 8]},
         "mentor": {"arch": {"family": "conv1d", "widths": [8, 8, 8]}, "taps": ["layer3"]}}


def space(**budget):
    return parse_space({**SPACE, "budget": budget}, "test")


def test_seeds_default_by_device_and_cohorts_hold_whole_mentees():
    s = space(mentees=10)
    assert s.budget.seeds_for(gpus=1) == 3 and s.budget.seeds_for(gpus=0) == 2
    assert space(mentees=10, seeds=5).budget.seeds_for(gpus=1) == 5
    plan = plan_sweep(s, gpus=0)
    assert plan.seeds == 2 and plan.cohort_size % 2 == 0  # 2 seeds, so an even number of members
    g = plan.for_cluster(gpus=1, gpu_free_bytes=80e9)
    assert g.seeds == 3 and g.cohort_size % 3 == 0 and g.cohort_size <= 10 * 3
    assert ("seeds per mentee", "3 (fused in one cohort)") in g.describe()


def test_mentees_auto_needs_minutes():
    with pytest.raises(UserError, match="budget.*minutes"):
        space(mentees="auto")
    s = space(mentees="auto", minutes=3)
    assert s.budget.mentees == "auto" and s.budget.minutes == 3
    assert dict(plan_sweep(s, gpus=0).describe())["mentees (twins included)"] == "auto: as many as 3 min hold"


def test_mentee_budget_fills_the_minutes_at_the_measured_pace():
    summary = SweepSummary("x", "p", "u", planned=0)
    b = MenteeBudget(minutes=10, first_wave=16)
    assert b.mentees(summary) == 16  # nothing back yet: one wave
    b.started = time.monotonic() - 60  # a minute in, 32 mentees back: 32 a minute
    summary.returned = 32
    # 10 min less the 20% kept for racing = 8 min; 7 left at 32 a minute → 224 more
    assert b.mentees(summary) == pytest.approx(32 + 224, abs=2)
    b.started = time.monotonic() - 9 * 60  # past the search's share: no more
    assert b.mentees(summary) == 32
    resumed = MenteeBudget(minutes=10, first_wave=16, base=100)  # a resumed sweep: its own 10 minutes
    summary.returned = 100
    assert resumed.mentees(summary) == 116


def test_shipped_default_space_fills_a_time_budget():
    s = load_space("spaces/mnist1d.yaml")
    assert s.budget.mentees == "auto" and s.budget.minutes and s.budget.seeds == "auto"
