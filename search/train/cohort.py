"""Train a cohort: every member of a list of configs, fused by structure, in one process.

    results = train_cohort(configs, splits, cache=MentorCache.build(mentor, splits.x_train, taps))

A cohort is split into fused groups (`group.FusedGroup`); each epoch launches every
group's epoch and evaluation on its own CUDA stream and reads the numbers after one
synchronisation. Optional successive halving drops members at rungs, ranked by the same
Pareto rank the reports use (`search.pareto.pareto_rank`).
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
from search.pareto import pareto_rank
from search.train.cache import MentorCache
from search.train.device import on_stream
from search.train.group import FusedGroup, group_key
from search.train.losses import TERMS

__all__ = ["train_cohort"]


def train_cohort(cfgs: Sequence[MemberConfig], splits: Splits, *, cache: MentorCache | None = None,
                 mentor_shapes: dict[str, tuple[int, ...]] | None = None,
                 rungs: Sequence[int] = (), eta: int = 3, keep_weights: bool = True, use_graph: bool = True,
                 fuse: bool = True, timing: dict[str, float] | None = None,
                 on_epoch: Callable[[int, int], None] | None = None) -> list[MemberResult]:
    """Train every member of a cohort; return one `MemberResult` per config, in order.

    `splits` and `cache` must already be on the training device. `rungs` are epochs at
    which successive halving drops all but the best 1/eta of the still-running members,
    ranked by Pareto rank on (val acc, params) so that small mentees are not dropped
    just for being small; a dropped member ends with status "pruned"."""
    cfgs = list(cfgs)
    mentor_shapes = mentor_shapes or {}
    mentored = [t for c in cfgs for t in c.active_terms() if t.uses_mentor]
    need = {m for t in mentored for m in TERMS[t.kind].mentor_taps(t.params)}
    if mentored and cache is None:
        raise ValueError("mentored members need a MentorCache")
    missing = need - set(cache.feats if cache else ())
    if missing:
        raise ValueError(f"mentor cache lacks taps {sorted(missing)}")
    dev = splits.x_train.device
    if cache is not None and cache.logits.device != dev:
        cache = cache.to(dev)
    if dev.type == "cpu":
        # Adam's second moments of tiny gradients go denormal; the CPU then runs them ~100× slower
        torch.set_flush_denormal(True)
    by_key: dict[tuple, list[int]] = {}
    for i, c in enumerate(cfgs):
        by_key.setdefault(group_key(c) if fuse else (i,), []).append(i)
    t0 = time.perf_counter()
    groups = [FusedGroup(ix, [cfgs[i] for i in ix], splits, mentor_shapes, dev, use_graph) for ix in by_key.values()]
    t1 = time.perf_counter()
    curves: list[dict[str, list[float]]] = [{"train_loss": [], "val_acc": []} for _ in cfgs]
    test_acc = [float("nan")] * len(cfgs)
    status = [Status.FINISHED] * len(cfgs)
    errors: list[str | None] = [None] * len(cfgs)
    real_params = [_cost(c.arch, splits)["params"] for c in cfgs]
    epochs = max(c.train.epochs for c in cfgs)
    steps_per_epoch = {id(g): max(1, len(splits.x_train) // g.cfgs[0].train.batch_size) for g in groups}
    for e in range(epochs):
        # launch every group's epoch and evaluation first, read the numbers after. On a GPU
        # each group runs on its own CUDA stream: a tiny model's kernels fill a few SMs, so
        # groups' steps run side by side instead of queueing behind each other.
        launched = []
        for g in groups:
            ep = g.cfgs[0].train.epochs
            if e >= ep:
                continue
            with on_stream(g, dev):
                loss = g.train_epoch(splits, cache, steps_per_epoch[id(g)] * ep)
                val = g.accuracy(splits.x_val, splits.y_val)
                test = g.accuracy(splits.x_test, splits.y_test) if e + 1 == ep else None  # test once, at the end
            launched.append((g, loss, val, test))
        if dev.type == "cuda":
            torch.cuda.synchronize()  # every stream's epoch is done before its numbers are read
        for g, loss, val, test in launched:
            loss, val = loss.cpu(), val.cpu()
            alive = []
            for r, i in enumerate(g.idx):
                curves[i]["train_loss"].append(float(loss[r]))
                curves[i]["val_acc"].append(float(val[r]))
                if test is not None:
                    test_acc[i] = float(test[r])
                if not math.isfinite(float(loss[r])):
                    status[i], errors[i] = Status.FAILED, f"loss became {float(loss[r])} in epoch {e + 1}"
                else:
                    alive.append(r)
            if len(alive) < len(g.idx):
                g.keep(alive) if alive else groups.remove(g)
        if e + 1 in rungs:
            running = [(g, r, i) for g in groups for r, i in enumerate(g.idx) if e + 1 < g.cfgs[r].train.epochs]
            if len(running) > 1:
                ranks = pareto_rank([curves[i]["val_acc"][-1] for _, _, i in running],
                                     [real_params[i] for _, _, i in running])
                order = sorted(range(len(running)), key=lambda j: (ranks[j], -curves[running[j][2]]["val_acc"][-1]))
                stop = {running[j][2] for j in order[max(1, math.ceil(len(running) / eta)):]}
                for g in list(groups):
                    rows = [r for r, i in enumerate(g.idx) if i not in stop]
                    for i in g.idx:
                        if i in stop:
                            status[i] = Status.PRUNED
                    if len(rows) < len(g.idx):
                        g.keep(rows) if rows else groups.remove(g)
        if on_epoch is not None:
            on_epoch(e + 1, epochs)
    t2 = time.perf_counter()
    out = _results(cfgs, groups, splits, curves, test_acc, status, errors, keep_weights, (t2 - t1) / len(cfgs))
    if timing is not None:  # where a cohort's seconds go, for benchmarks
        timing.update(groups=len(by_key), build=t1 - t0, epochs=t2 - t1, results=time.perf_counter() - t2)
    return out


_COSTS: dict[tuple, dict[str, float]] = {}


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
        if i in where and keep_weights:
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
