"""How a mentee becomes an MLflow run, and back: the one place that knows the record's names.

    run = mentee_run(parent_run_id, record, tags, weights, now)   # a bulk.NewRun: tags, params, metrics
    metrics, tags = added_seeds(run.data.tags, run.data.metrics, more, weights)   # re-evaluation's seeds
    seeds, vals, tests = seeds_of(run.data.tags, run.data.metrics)               # each seed's numbers

A mentee's run: `val_acc`/`test_acc` (the means over its seeds), `val_acc_std`, `test_acc_std`,
`n_seeds`, each seed's `val_acc.sN`/`test_acc.sN`; tags `mentee.seeds`, `mentee.failed_seeds`,
`mentee.config` (JSON), `mentee.weights` (seed → the parent's weights file); dotted params
(`arch.widths=8x8`, `train.lr`, `term.<kind>`). The writer (`search.tracking.mlflow`) and the
reader (`search.tracking.runs`) both go through here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

from search.config import MemberConfig, Status
from search.mentees import MenteeRecord, mean_std
from search.tracking.bulk import NewRun

__all__ = ["RUN_STATUS", "added_seeds", "ints", "mapping_string", "member_params", "mentee_run", "run_name",
           "seeds_of"]

RUN_STATUS = {Status.FINISHED: "FINISHED", Status.PRUNED: "KILLED", Status.FAILED: "FAILED"}


def mapping_string(config: MemberConfig) -> str:
    """Readable mentor side, e.g. `layer2->layer3:rmse@0.1;kd@0.5/T4`; `none` when independent.
    Each loss term writes its own part (`search.terms`)."""
    from search.terms import describe_terms  # here: the terms are torch modules, and reading runs needs no torch

    return describe_terms(config.terms)


def _widths(config: MemberConfig) -> str:
    return "x".join(str(w) for w in config.arch.widths)


def run_name(config: MemberConfig) -> str:
    # e.g. conv1d-8x8-hint0.1-kd0.5: enough to tell members apart in the UI's run list.
    parts = [f"{t.kind}{t.weight:g}" for t in config.active_terms() if t.uses_mentor]
    return f"{config.arch.family}-{_widths(config)}-{'-'.join(parts) or 'indep'}"


def member_params(config: MemberConfig) -> dict[str, str]:
    """Dotted params: `arch.widths=8x8`, `train.lr=0.003`, one `term.<kind>` per loss term kind."""
    from search.terms import TERMS  # here: the terms are torch modules, and reading runs needs no torch

    d = config.to_dict()
    out = {f"arch.{k}": _widths(config) if k == "widths" else str(v) for k, v in d["arch"].items()}
    out.update({f"train.{k}": str(v) for k, v in d["train"].items()})
    by_kind: dict[str, list[str]] = {}
    for t in config.terms:  # zero-weight terms included: the params record the config, the tag the effect
        by_kind.setdefault(t.kind, []).append(TERMS[t.kind].describe(t))
    out.update({f"term.{k}": ";".join(v) for k, v in by_kind.items()})
    out["independent"] = str(config.independent)
    return out


def seed_metrics(seeds: Sequence[int], vals: Sequence[float], tests: Sequence[float]) -> list[tuple[str, float, int]]:
    """Each seed's accuracies under its own name: `val_acc.s3`, `test_acc.s3`."""
    return [m for s, v, t in zip(seeds, vals, tests) for m in ((f"val_acc.s{s}", float(v), 0),
                                                               (f"test_acc.s{s}", float(t), 0))]


def summary_metrics(vals: Sequence[float], tests: Sequence[float]) -> list[tuple[str, float, int]]:
    """The mentee's numbers over its seeds, at step = how many seeds: a later re-evaluation logs
    them again at a higher step, and MLflow's latest value (what search and the UI show) is the newest."""
    n = len(vals)
    (va, vs), (ta, ts) = mean_std(vals), mean_std(tests)
    return [("val_acc", va, n), ("val_acc_std", vs, n), ("test_acc", ta, n), ("test_acc_std", ts, n),
            ("n_seeds", float(n), n)]


def ints(text: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in (text or "").split(",") if x.strip())


def seeds_of(tags: Mapping[str, str], metrics: Mapping[str, float]) -> tuple[tuple[int, ...], tuple, tuple]:
    """A mentee's seeds and each one's val and test accuracy. A run written before seeds were fused
    (one seed, no `mentee.seeds`) reads as a mentee of that one seed."""
    nan = float("nan")
    if "mentee.seeds" not in tags:
        seed = int(tags.get("mentee.seed", 0))
        one = ((seed,), (metrics.get("val_acc", nan),), (metrics.get("test_acc", nan),))
        return one if tags.get("mentee.status") == "finished" else ((), (), ())
    seeds = ints(tags["mentee.seeds"])
    return (seeds, tuple(metrics.get(f"val_acc.s{s}", nan) for s in seeds),
            tuple(metrics.get(f"test_acc.s{s}", nan) for s in seeds))


def mentee_run(parent_run_id: str, rec: MenteeRecord, tags: Mapping[str, str], weights: dict[str, str],
               now: int) -> NewRun:
    """What one mentee's child run holds: the tags, params and metrics README's record names."""
    config = rec.config
    metrics = seed_metrics(rec.seeds, rec.val_accs, rec.test_accs)
    metrics += summary_metrics(rec.val_accs, rec.test_accs)
    scalars = {**rec.cost, "train_seconds": rec.train_seconds, "epochs_run": rec.epochs_run}
    metrics += [(k, float(v), 0) for k, v in scalars.items()]
    for name, values in rec.curves.items():
        metrics += [(f"curve.{name}", float(v), step) for step, v in enumerate(values)]
    run_tags = {
        **{str(k): str(v) for k, v in tags.items()},
        "mlflow.parentRunId": parent_run_id,
        "mlflow.runName": run_name(config),
        "mentee.kind": "mentee",
        "mentee.member_id": rec.mentee_id,
        "mentee.work": rec.kind.value,
        "mentee.status": str(rec.status),
        "mentee.arch_key": config.arch.key(),
        "mentee.family": config.arch.family,
        "mentee.mapping": mapping_string(config),
        "mentee.seeds": ",".join(map(str, rec.seeds)),
        "mentee.config": json.dumps(config.to_dict()),
        "mentee.weights": json.dumps(weights),
        "mentee.node_id": rec.node_id,
    }
    if rec.failed_seeds:
        run_tags["mentee.failed_seeds"] = ",".join(map(str, rec.failed_seeds))
    if rec.error:
        run_tags["mentee.error"] = rec.error[:MAX_TAG_VAL_LENGTH]
    return NewRun(run_name=run_name(config), tags=run_tags,
                  params={k: v[:MAX_PARAM_VAL_LENGTH] for k, v in member_params(config).items()},
                  metrics=[m for m in metrics if not math.isnan(m[1])],
                  status=RUN_STATUS.get(rec.status, "FAILED"), start_ms=now, end_ms=now)


def added_seeds(tags: Mapping[str, str], metrics: Mapping[str, float], rec: MenteeRecord,
                weights: dict[str, str]) -> tuple[list[tuple[str, float, int]], dict[str, str]]:
    """Re-evaluation: what to add to a recorded mentee's run (its tags and latest metrics) for the new
    seeds in `rec` — each new seed's values, and the mean and std over every seed so far, logged at
    step = seeds so far (the latest value, what every view reads) — and the tags to set."""
    seeds, vs, ts = seeds_of(tags, metrics)
    vals = {s: v for s, v in zip(seeds, vs) if not math.isnan(v)}
    tests = {s: t for s, t in zip(seeds, ts) if not math.isnan(t)}
    vals.update(zip(rec.seeds, rec.val_accs))
    tests.update(zip(rec.seeds, rec.test_accs))
    all_seeds = sorted(vals)
    out = seed_metrics(rec.seeds, rec.val_accs, rec.test_accs)
    out += summary_metrics([vals[s] for s in all_seeds], [tests.get(s, math.nan) for s in all_seeds])
    new_tags = {"mentee.seeds": ",".join(map(str, all_seeds)),
                "mentee.weights": json.dumps({**json.loads(tags.get("mentee.weights", "{}")), **weights})}
    if tags.get("mentee.status") != str(Status.FINISHED) and rec.status is Status.FINISHED:
        new_tags["mentee.status"] = str(Status.FINISHED)
    return [m for m in out if not math.isnan(m[1])], new_tags
