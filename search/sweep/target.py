"""The device a sweep searches for (`target:` in a space): configs over its budget are never trained.

    profile = target_profile(space)                   # None when the space names no target
    note = check_space(space, (1, 40), 10, where)     # plan time: "18 of 24 architectures fit"; none → UserError
    trial, cfg = ask_fitting(study, space, tags, ask) # Driver._ask: asks until a config fits the device

What is known before training — params, flash (weight bytes), SRAM (the activation arena), MACs — comes from
`measure.architecture_cost` on the CPU, once per architecture (the driver never touches CUDA). A config over
the device's budget is never trained:

- Optuna is told at once. Every targeted trial carries one constraint per budget, `trial.set_constraint(axis,
  (device value − limit) / limit)` (≤ 0 fits; relative, so bytes and MACs weigh alike in the sum TPE ranks
  infeasible trials by). An infeasible trial is told PRUNED: Optuna 5's TPE reads COMPLETE and PRUNED trials,
  puts every infeasible one on its "bad" side ranked by total violation (`_split_trials`), so its next
  proposals move away from over-budget regions; FAIL would be ignored. NSGA-II reads COMPLETE trials only,
  so for it the trial is told COMPLETE with the worst accuracy (0) and its real costs: constrained
  domination ranks it below every feasible trial, and `study.best_trials` leaves infeasible trials out.
- MLflow gets nothing. A child run means a trained mentee everywhere downstream (front, pick, dashboard,
  resume's member ids); a skipped config has no accuracy. The record is in the Optuna study, where the
  sampler needs it: the trial, its constraints and a `mentee.skipped` user attr (costs and misses).
- The driver keeps asking until the cohort is full. After MAX_SKIPS_IN_A_ROW over-budget proposals in a row
  it stops with one line (UserError): the device is too small for (nearly all of) the space.

Latency cannot be known in advance on a cluster (it is measured on the picking machine, 1-thread ONNX
Runtime, times the profile's `scale`), so latency budgets are applied at pick time only
(`search.results.pick.pick_for_device`).
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any

import optuna

from search.config import COST_AXES, ArchConfig, MemberConfig
from search.devices import BudgetMiss, DeviceProfile, format_cost, get_device, load_devices
from search.errors import UserError
from search.spaces import Range, SearchSpace, choices_of

__all__ = ["MAX_SKIPS_IN_A_ROW", "target_profile", "arch_cost", "sweep_misses", "constraints", "ask_fitting",
           "space_architectures", "check_space", "int_values"]

# Over-budget proposals in a row before the sweep gives up. TPE learns from them, so a space where a few
# percent of the architectures fit gets there in tens of asks; 200 in a row means (almost) nothing fits.
MAX_SKIPS_IN_A_ROW = 200
# Architectures `check_space` sizes at plan time (~20 ms each): all of them when the space has no more.
PLAN_ARCHS = 64
_COSTS: dict[tuple, dict[str, int]] = {}


@functools.lru_cache(maxsize=16)
def _profile(target: str, devices: str | None) -> DeviceProfile:
    return get_device(target, load_devices(devices))


def target_profile(space: SearchSpace) -> DeviceProfile | None:
    """The space's target device (its `devices` file added to the shipped profiles), or None."""
    target = getattr(space, "target", None)
    return None if target is None else _profile(target, getattr(space, "devices", None))


def arch_cost(arch: ArchConfig, input_shape: tuple[int, ...], num_classes: int) -> dict[str, int]:
    """`measure.architecture_cost` of an architecture on the CPU, computed once per process."""
    from search.measure import architecture_cost
    from search.models import create_mentee

    key = (arch, tuple(input_shape), int(num_classes))
    if key not in _COSTS:
        _COSTS[key] = architecture_cost(create_mentee(arch, input_shape, num_classes), tuple(input_shape))
    return dict(_COSTS[key])


def sweep_misses(profile: DeviceProfile, cost: Mapping[str, Any]) -> list[BudgetMiss]:
    """The budgets a cost misses among those known before training (every budget but latency)."""
    return [m for m in profile.check(cost) if m.budget.axis in COST_AXES]


def constraints(profile: DeviceProfile, cost: Mapping[str, float]) -> dict[str, float]:
    """Optuna constraint per budget known before training: (device value − limit) / limit, ≤ 0 fits."""
    out = {}
    for b in profile.budgets:
        if b.axis in COST_AXES:
            over = b.device_value(float(cost[b.axis])) - b.limit
            out[b.axis] = over / b.limit if b.limit > 0 else over
    return out


def _shape(tags: Mapping[str, str]) -> tuple[tuple[int, ...], int]:
    # the driver's tags carry the data's shape (run_sweep sets them from the plan's splits)
    return tuple(json.loads(tags["mentee.input_shape"])), int(tags["mentee.num_classes"])


def ask_fitting(study: optuna.Study, space: SearchSpace, tags: Mapping[str, str],
                ask: Callable[[], tuple[optuna.Trial, MemberConfig]], *,
                max_skips: int | None = None) -> tuple[optuna.Trial, MemberConfig]:
    """`ask()` until its config fits the space's target; without a target, `ask()` once. Each over-budget
    trial is told to Optuna at once (see the module docstring) and never trained. Call it under the
    driver's lock: it asks and tells."""
    profile = target_profile(space)
    if profile is None:
        return ask()
    input_shape, num_classes = _shape(tags)
    max_skips = max_skips or MAX_SKIPS_IN_A_ROW
    for _ in range(max_skips):
        trial, cfg = ask()
        cost = arch_cost(cfg.arch, input_shape, num_classes)
        for axis, value in constraints(profile, cost).items():
            trial.set_constraint(axis, value)
        misses = sweep_misses(profile, cost)
        if not misses:
            return trial, cfg
        trial.set_user_attr("mentee.skipped", {"config": cfg.to_dict(), "cost": cost,
                                               "misses": [str(m) for m in misses]})
        if space.sampler == "nsga2":  # NSGA-II reads COMPLETE trials only
            study.tell(trial, [0.0] + [float(cost[o]) for o in space.objectives])
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    configs = f"{max_skips} config{'s' * (max_skips > 1)}"
    raise UserError(f"space '{space.name}': key 'target': {configs} in a row that Optuna proposed are "
                    f"over {profile.name}'s budget (the last: {cfg.arch.family} {'x'.join(map(str, cfg.arch.widths))}: "
                    f"{'; '.join(str(m) for m in misses)}); expected a space whose mentees mostly fit: "
                    "narrow mentee.width/depth or pick a bigger device")


# ---- plan time ------------------------------------------------------------------------------------------

def _values(spec: Any, integer: bool) -> list:
    """A searched value's choices; a range's ends and a few points between (geometric for a log range)."""
    found = choices_of(spec)
    if found is not None:
        return found
    assert isinstance(spec, Range)
    lo, hi = spec.low, spec.high
    pts = [lo * (hi / lo) ** (i / 4) for i in range(5)] if spec.log and lo > 0 else [lo + (hi - lo) * i / 4
                                                                                     for i in range(5)]
    return sorted({int(round(p)) for p in pts} if integer else set(pts))


def int_values(spec: Any) -> list[int]:
    """Every integer a searched integer can take: its choices, or every one in its range (depths)."""
    if isinstance(spec, Range):
        return list(range(int(spec.low), int(spec.high) + 1))
    return [int(v) for v in choices_of(spec) or []]


def space_architectures(space: SearchSpace, limit: int = PLAN_ARCHS) -> tuple[list[ArchConfig], bool]:
    """Architectures of the space (built as `suggest_member` builds them), at most `limit`, and whether
    that is all of them. Depth, width, growth, kernel and batch norm: choices, or a range's ends and a few
    points between; more than `limit` → an even spread over the (sorted) list."""
    m = space.mentee
    found = set()
    exhaustive = not any(isinstance(v, Range) for v in (m.width, m.growth, m.kernel))
    for d, w, g, k, bn in itertools.product(int_values(m.depth), _values(m.width, True), _values(m.growth, False),
                                            _values(m.kernel, True), _values(m.batch_norm, False)):
        widths = tuple(max(1, min(m.max_width, round(int(w) * float(g) ** i))) for i in range(int(d)))
        found.add(ArchConfig(m.family, widths, int(k), bool(bn)))
    archs = sorted(found, key=lambda a: (a.depth, a.widths, a.kernel, a.batch_norm))
    if len(archs) > limit:
        step = len(archs) / limit
        archs, exhaustive = [archs[int(i * step)] for i in range(limit)], False
    return archs, exhaustive


def check_space(space: SearchSpace, input_shape: tuple[int, ...], num_classes: int, where: str) -> str:
    """Plan time: how many of the space's architectures fit its target ("" without one). If none does and
    the list was the whole space, a UserError names the closest one: nothing would ever be trained."""
    profile = target_profile(space)
    if profile is None:
        return ""
    archs, exhaustive = space_architectures(space)
    fit, closest = 0, None
    for arch in archs:
        try:
            cost = arch_cost(arch, input_shape, num_classes)
        except UserError:  # a depth the input cannot take; _check_mentee_space reports those
            continue
        misses = sweep_misses(profile, cost)
        fit += not misses
        score = sum(m.over / m.budget.limit for m in misses if m.over is not None and m.budget.limit > 0)
        if misses and (closest is None or score < closest[0]):
            closest = (score, arch, misses)
    budgets = ", ".join(f"{b.axis} ≤ {format_cost(b.axis, b.max_cost)}" for b in profile.budgets
                        if b.axis in COST_AXES) or "no size budget"
    if fit == 0 and exhaustive and closest is not None:
        _, arch, misses = closest
        raise UserError(f"{where}: key 'target': no mentee of this space fits {profile.name} ({budgets}); "
                        f"the closest, {arch.family} {'x'.join(map(str, arch.widths))}: "
                        f"{'; '.join(str(m) for m in misses)}; expected smaller mentee ranges or a bigger device")
    of = f"{fit} of {len(archs)} architectures" + ("" if exhaustive else " sampled")
    later = "; latency checked at pick time" if profile.budget("latency_ms") else ""
    return f"{profile.name} ({budgets}): {of} fit, the rest are never trained{later}"
