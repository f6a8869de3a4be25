"""The sweep driver: Optuna asks in batches, Ray Tune runs cohorts, the driver records.

    summary = run_sweep(load_space("spaces/mnist1d.yaml"))        # local Ray, sqlite MLflow
    summary = run_sweep(space, address="auto", storage="s3://bucket/mentee")   # a cluster

Why this shape: one Ray trial per mentee costs seconds of scheduling for a fraction of
a second of GPU work. So a Ray trial trains a *cohort* of K mentees fused in one
process (`distill.train_cohort`), the driver asks Optuna for K configs at a time
(`study.ask`, multi-objective, every result told back), and only the driver writes to
MLflow and Optuna. The dataset and the mentor cache go into Ray's object store once;
each reused trial process moves them to its device once and keeps them.

Every architecture Optuna proposes is also trained *independently* (all mentor
weights 0, same optimiser and seed): its "twin", so every report can show what
mentorship bought at that size. Twins are MLflow runs, not Optuna trials.

State that makes `--resume` work lives in files the driver owns: the Optuna study
(sqlite under the work directory; each ask stores its full config as a user attr) and
the MLflow child runs (tagged with a member id). Resume re-runs what was asked but
never recorded, tells Optuna what was recorded but not told, and trains nothing twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import optuna

from search.config import MemberConfig
from search.errors import SweepInterrupted, UserError
from search.spaces import SearchSpace, space_hash
from search.sweep.driver import Driver, SweepSummary, Work
from search.sweep.plan import plan_sweep, trial_payload
from search.sweep.raytune import cohort_searcher, recorder_callback
from search.sweep.resume import resume_state
from search.sweep.suggest import make_sampler
from search.tracking import SweepTracker
from search.train.cache import MentorCache
from search.train.device import pick_device
from search.train.mentor import ensure_mentor, mentor_from_spec
from search.train.trial import cohort_trainable

__all__ = ["run_sweep", "SweepSummary"]

log = logging.getLogger(__name__)


def run_sweep(space: SearchSpace, *, tracking_uri: str | None = None, address: str | None = None,
              workdir: str | Path = "mentee-runs", storage: str | None = None, resume: bool = False,
              where: str = "space", show_progress: bool = True,
              configs: list[MemberConfig] | None = None) -> SweepSummary:
    """Run (or with `resume`, continue) a sweep of `space`. `configs`, if given, replaces
    Optuna: exactly those mentees are trained (benchmarks use it to compare like with like)."""
    import ray
    from ray import tune

    from search.progress import Progress

    t0 = time.perf_counter()
    experiment = str(space.name)
    plan = plan_sweep(space, where=where, gpus=0)  # every check that needs no Ray, before anything is written
    tracker = SweepTracker(tracking_uri, experiment)  # creates the experiment before any trial starts
    parent = tracker.find_sweep(experiment) if resume else None
    if resume and parent is None:
        raise UserError(f"--resume: no unfinished sweep of experiment '{experiment}' in {tracker.uri}")

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # results go to MLflow, not CSV/TB files
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # trial errors still reach the driver (Ray re-raises them); worker chatter does not
    ray.init(address=address or os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True, include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)
    logging.getLogger("ray.tune").setLevel(logging.ERROR)  # results live in MLflow, not result.json
    plan = plan.with_gpus(ray.cluster_resources().get("GPU", 0.0))  # the cluster's GPUs, not this machine's
    t_ray = time.perf_counter()

    dev = pick_device(None)
    splits = plan.splits.to(dev)
    mentor = mentor_from_spec(space.mentor, splits)
    if mentor is None:  # first use of this space: train its mentor (saved, so the next sweep loads it)
        with Progress(space.mentor.epochs, f"mentor {space.mentor.path}", enabled=show_progress) as bar:
            mentor = ensure_mentor(space.mentor, splits, on_epoch=lambda e, n: bar.advance(1))
    mentor.model.to(dev)
    taps = sorted({t for ts in space.mapping.taps.values() for t in ts if t != "none"})
    cache = MentorCache.build(mentor, splits.x_train, taps)
    payload = trial_payload(plan, cache, mentor, taps)

    work = Path(workdir).resolve() / experiment
    work.mkdir(parents=True, exist_ok=True)
    shash = space_hash(space)
    if parent is None:
        parent = tracker.start_sweep(experiment, params=_flat(space.model_dump()), tags={"mentee.space_hash": shash})
    study = optuna.create_study(study_name=f"{experiment}-{parent}", storage=_optuna_storage(work),
                                load_if_exists=resume,
                                directions=["maximize"] + ["minimize"] * len(space.objectives),
                                sampler=make_sampler(space))
    summary = SweepSummary(experiment, parent, tracker.uri, planned=space.budget.mentees)
    tags = {"mentee.space_hash": shash, "mentee.dataset": splits.name,
            "mentee.input_shape": json.dumps(list(splits.input_shape)), "mentee.num_classes": str(splits.num_classes)}
    driver = Driver(space, study, tracker, parent, plan.cohort_size, tags, summary, n_train=len(splits.x_train))
    if resume:
        recorded = tracker.existing_member_ids(parent)
        summary.recorded = len(recorded)
        resume_state(driver, recorded)
    if configs is not None:
        driver.pending.extend(Work(f"fixed-{i}", c, None) for i, c in enumerate(configs))
        driver.planned = summary.planned = len(configs)
        driver.space = space.model_copy(update={"budget": space.budget.model_copy(update={"mentees": len(configs)})})

    trainable = tune.with_resources(tune.with_parameters(cohort_trainable, payload=payload),
                                    {"cpu": space.budget.cpus_per_trial, "gpu": plan.gpus_per_trial})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=cohort_searcher(driver), num_samples=-1,
                                    max_concurrent_trials=plan.concurrency, reuse_actors=True,
                                    trial_dirname_creator=lambda t: f"cohort-{t.trial_id}",
                                    trial_name_creator=lambda t: f"cohort-{t.trial_id}"),
        run_config=tune.RunConfig(name=f"{experiment}-{parent[:8]}-{int(time.time())}",
                                  storage_path=storage or str(work / "ray"), verbose=0,
                                  callbacks=[recorder_callback(driver)]),
    )
    total = max(driver.planned, space.budget.mentees) - summary.recorded
    t_fit = time.perf_counter()
    with Progress(total, f"sweep {experiment}", enabled=show_progress) as bar:
        driver.progress = bar
        try:
            tuner.fit()
            t_drain = time.perf_counter()
        finally:
            driver.writer.close()  # everything trained is in MLflow before we return (or die)
    summary.seconds = time.perf_counter() - t0
    summary.phases = {"ray_init": t_ray - t0, "data_mentor_cache": t_fit - t_ray, "fit": t_drain - t_fit,
                      "mlflow_drain": time.perf_counter() - t_drain}
    # Ctrl-C makes Ray Tune stop and return normally: a sweep with members left unrecorded
    # stays KILLED, so that `--resume` finds it
    complete = summary.recorded >= driver.planned >= driver.space.budget.mentees
    tracker.finish_sweep(parent, "FINISHED" if complete else "KILLED",
                         metrics={"wall_seconds": summary.seconds, "finished": summary.finished,
                                  "pruned": summary.pruned, "failed": summary.failed})
    if not complete:
        raise SweepInterrupted(f"sweep '{experiment}' stopped with {summary.recorded} of {driver.planned} "
                               f"mentees recorded; continue it with `mentee sweep ... --resume`")
    return summary


def _optuna_storage(work: Path) -> optuna.storages.BaseStorage:
    """Optuna's journal file: every ask and tell appended and flushed (resume reads it back),
    ~1 ms an operation where sqlite takes 10–40 ms. `optuna-dashboard <file>` shows it live."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return JournalStorage(JournalFileBackend(str(work / "optuna.journal")))


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "taps":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out

