"""Train a cohort: every member of a list of configs, fused by structure, in one process.

    results = train_cohort(configs, splits, cache=MentorCache.build(mentor, splits.x_train, taps))

A cohort is split into a few fused groups (`group.plan_groups`, `group.FusedGroup`); each
epoch launches every group's epoch and evaluation on its own CUDA stream. Nothing is read
back until the end (one synchronisation per cohort), or at a halving rung: optional
successive halving drops members there, ranked by Pareto rank on (accuracy, parameters): the
front that `search.pareto` draws, and the fronts behind it (`pareto_rank`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch

from search.config import ArchConfig, MemberConfig, MemberResult, Status
from search.data import Splits
from search.measure import architecture_cost
from search.models import create_mentee
from search.terms import TERMS
from search.train.cache import MentorCache
from search.train.device import on_stream
from search.train.group import MAX_GROUPS, FusedGroup, plan_groups

__all__ = ["train_cohort", "pareto_rank"]


def train_cohort(cfgs: Sequence[MemberConfig], splits: Splits, *, cache: MentorCache | None = None,
                 mentor_shapes: dict[str, tuple[int, ...]] | None = None,
                 rungs: Sequence[int] = (), eta: int = 3, keep_weights: bool = True, use_graph: bool = True,
                 fuse: bool = True, max_groups: int = MAX_GROUPS, timing: dict[str, float] | None = None,
                 on_epoch: Callable[[int, int], None] | None = None,
                 snapshot_at: Sequence[int] = ()) -> list[MemberResult]:
    """Train every member of a cohort; return one `MemberResult` per config, in order.

    `splits` and `cache` must already be on the training device. `fuse=False` trains every
    member as a group of its own (the reference the fused run must match). `rungs` are epochs
    at which successive halving drops all but the best 1/eta of the still-running members,
    ranked by Pareto rank on (val acc, params) so that small mentees are not dropped just for
    being small; a dropped member ends with status "pruned". A member whose loss goes NaN or
    inf ends "failed"; it keeps training to the end beside the others (members are
    independent), because noticing it earlier would cost a host sync every epoch.

    `snapshot_at`: epochs at whose end every member still training keeps a copy of its weights
    (`MemberResult.snapshots`, e.g. a mentor's early-stopped versions); one host sync each."""
    cfgs = list(cfgs)
    mentor_shapes = mentor_shapes or {}
    mentored = [t for c in cfgs for t in c.active_terms() if t.uses_mentor]
    need = {m for t in mentored for m in TERMS[t.kind].mentor_outputs(t.params)}
    if mentored and cache is None:
        raise ValueError("mentored members need a MentorCache")
    missing = need - (cache.names() if cache else set())
    if missing:
        raise ValueError(f"mentor cache lacks outputs {sorted(missing)}")
    dev = splits.x_train.device
    if cache is not None and cache.logits.device != dev:
        cache = cache.to(dev)
    if dev.type == "cpu":
        # Adam's second moments of tiny gradients go denormal; the CPU then runs them ~100× slower
        torch.set_flush_denormal(True)
    t0 = time.perf_counter()
    parts = plan_groups(cfgs, splits.input_shape, splits.num_classes, max_groups) if fuse \
        else [[i] for i in range(len(cfgs))]
    groups = [FusedGroup(ix, [cfgs[i] for i in ix], splits, mentor_shapes, dev, use_graph) for ix in parts]
    t1 = time.perf_counter()
    curves: list[dict[str, list[float]]] = [{"train_loss": [], "val_acc": []} for _ in cfgs]
    test_acc = [float("nan")] * len(cfgs)
    status = [Status.FINISHED] * len(cfgs)
    errors: list[str | None] = [None] * len(cfgs)
    real_params = [_cost(c.arch, splits)["params"] for c in cfgs]
    epochs = max(c.train.epochs for c in cfgs)
    done: list[FusedGroup] = []  # groups whose members have all finished (their numbers read at the end)
    snapshots: dict[int, dict[int, dict[str, torch.Tensor]]] = {}  # member → epoch → weights
    for e in range(epochs):
        # launch every group's epoch; nothing is read back. On a GPU each group runs on its own
        # CUDA stream: a tiny model's kernels fill a few SMs, so groups' steps run side by side.
        for g in groups:
            with on_stream(g, dev):
                g.train_epoch(splits, cache, e)
        if e == 0 and timing is not None:  # the first epoch holds the warm-up steps and graph capture
            if dev.type == "cuda":
                torch.cuda.synchronize()  # one wait, for benchmarks: what capture costs beside a replayed epoch
            timing["first_epoch"] = time.perf_counter() - t1
        if e + 1 in snapshot_at:
            _snapshot(groups, e + 1, splits, snapshots)
        done += [g for g in groups if e + 1 == g.epochs]
        groups = [g for g in groups if e + 1 < g.epochs]
        if e + 1 in rungs and groups:
            _halve(groups, e, curves, test_acc, status, errors, real_params, eta)
        if on_epoch is not None:
            on_epoch(e + 1, epochs)
    if dev.type == "cuda":
        torch.cuda.synchronize()  # every stream's work is done: the one wait of the cohort
    for g in done:
        _read(g, list(range(len(g.idx))), g.epochs, curves, test_acc, status, errors)
    t2 = time.perf_counter()
    out = _results(cfgs, done, splits, curves, test_acc, status, errors, keep_weights, (t2 - t1) / len(cfgs))
    for i, snaps in snapshots.items():
        out[i].snapshots = snaps
    if timing is not None:  # where a cohort's seconds go, for benchmarks
        timing.update(groups=len(parts), build=t1 - t0, epochs=t2 - t1, results=time.perf_counter() - t2)
    return out


def _snapshot(groups: list[FusedGroup], epoch: int, splits: Splits,
              snapshots: dict[int, dict[int, dict[str, torch.Tensor]]]) -> None:
    """Every training member's weights now (the end of `epoch`), cropped to its own shapes."""
    if groups and groups[0].flat.is_cuda:
        torch.cuda.synchronize()  # each group ran on its own stream
    for g in groups:
        for r, i in enumerate(g.idx):
            net = create_mentee(g.cfgs[r].arch, splits.input_shape, splits.num_classes)
            snapshots.setdefault(i, {})[epoch] = g.crop(r, net)


def _read(g: FusedGroup, rows: list[int], epochs: int, curves, test_acc, status, errors) -> None:
    """Copy rows' numbers for their first `epochs` epochs from the device into the cohort's lists;
    a member whose loss was not finite is failed from that epoch on (its curve ends there)."""
    loss, val = g.loss_hist[:epochs].cpu(), g.val_hist[:epochs].cpu()
    test = g.test_acc.cpu() if g.test_acc is not None else None
    for r in rows:
        i = g.idx[r]
        col_loss, col_val = loss[:, r].tolist(), val[:, r].tolist()
        n = epochs
        bad = next((k for k in range(n) if not math.isfinite(col_loss[k])), None)
        if bad is not None:
            n = bad + 1
            status[i], errors[i] = Status.FAILED, f"loss became {col_loss[bad]} in epoch {bad + 1}"
        curves[i]["train_loss"], curves[i]["val_acc"] = col_loss[:n], col_val[:n]
        if test is not None and status[i] is Status.FINISHED:
            test_acc[i] = float(test[r])


def _halve(groups: list[FusedGroup], e: int, curves, test_acc, status, errors, real_params, eta: int) -> None:
    """Successive halving at the end of epoch e (a host sync: rungs are rare). Keeps the best
    1/eta of the running members; the rest, and members whose loss went non-finite, stop."""
    if groups[0].flat.is_cuda:
        torch.cuda.synchronize()
    running = []
    for g in groups:
        loss = g.loss_hist[: e + 1].cpu()
        for r, i in enumerate(g.idx):
            if bool(torch.isfinite(loss[:, r]).all()):
                running.append((g, r, i, float(g.val_hist[e, r])))
    stop = set()
    if len(running) > 1:
        ranks = pareto_rank([acc for *_, acc in running], [real_params[i] for _, _, i, _ in running])
        order = sorted(range(len(running)), key=lambda j: (ranks[j], -running[j][3]))
        stop = {running[j][2] for j in order[max(1, math.ceil(len(running) / eta)):]}
    alive = {i for _, _, i, _ in running} - stop
    for g in list(groups):
        gone = [r for r, i in enumerate(g.idx) if i not in alive]
        if not gone:
            continue
        _read(g, gone, e + 1, curves, test_acc, status, errors)
        for r in gone:
            if status[g.idx[r]] is Status.FINISHED:
                status[g.idx[r]] = Status.PRUNED
        rows = [r for r in range(len(g.idx)) if r not in gone]
        if rows:
            g.keep(rows)
        else:
            groups.remove(g)


_COSTS: dict[tuple, dict[str, int]] = {}


def _cost(arch: ArchConfig, splits: Splits) -> dict[str, float]:
    """Cost of an architecture, measured once per process (MAC counting runs a forward)."""
    key = (arch, tuple(splits.input_shape), splits.num_classes)
    if key not in _COSTS:
        # params, weight bytes, peak activation memory (SRAM) and MACs: measured once per process
        _COSTS[key] = architecture_cost(create_mentee(arch, splits.input_shape, splits.num_classes),
                                        tuple(splits.input_shape))
    return dict(_COSTS[key])


def _results(cfgs, groups, splits, curves, test_acc, status, errors, keep_weights, share) -> list[MemberResult]:
    """`share`: the cohort's training wall time divided among its members (they train together)."""
    where = {i: (g, r) for g in groups for r, i in enumerate(g.idx)}
    out = []
    for i, c in enumerate(cfgs):
        state = None
        if i in where and keep_weights and status[i] is Status.FINISHED:
            g, r = where[i]
            state = g.crop(r, create_mentee(c.arch, splits.input_shape, splits.num_classes))
        cv = curves[i]
        out.append(MemberResult(
            config=c, status=status[i],
            val_acc=cv["val_acc"][-1] if cv["val_acc"] else float("nan"),
            test_acc=test_acc[i] if status[i] is Status.FINISHED else float("nan"),
            epochs_run=len(cv["val_acc"]), curves=cv,
            cost=_cost(c.arch, splits), train_seconds=share,
            state_dict=state, error=errors[i]))
    return out


def pareto_rank(acc: list[float], cost: list[int]) -> list[int]:
    """Non-dominated sorting rank (0 = on the front) on (acc max, cost min): what successive
    halving keeps members by. Here and not in `search.pareto`, which needs pandas: the trial
    side imports torch and nothing it does not use."""
    n, rank, left = len(acc), [0] * len(acc), set(range(len(acc)))
    r = 0
    while left:
        front = {i for i in left if not any(
            acc[j] >= acc[i] and cost[j] <= cost[i] and (acc[j] > acc[i] or cost[j] < cost[i])
            for j in left)}
        for i in front:
            rank[i] = r
        left -= front
        r += 1
    assert len(rank) == n
    return rank
