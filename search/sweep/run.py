"""run_sweep: the composition of the driver side. It never trains and never touches CUDA.

    summary = run_sweep(load_space("spaces/mnist1d.yaml"))        # local Ray, sqlite MLflow
    summary = run_sweep(space, address="auto", storage="s3://bucket/mentee")   # a cluster

Why this shape: one Ray trial per mentee costs seconds of scheduling for a fraction of a
second of GPU work. So a Ray trial trains a *cohort* of K mentees fused in one process
(`search.train.cohort`), the driver asks Optuna for K configs at a time (multi-objective,
every result told back), and only the driver writes to MLflow and Optuna. The mentor is
loaded or trained, and its cache built, by a Ray task on a GPU node
(`search.train.trial.prepare_mentor`); the data and the cache go into Ray's object store
once, and each trial process moves them to its device once and keeps them.

State that makes `--resume` work lives in files the driver owns: the Optuna study (a
journal under the work directory; each ask stores its full config as a user attr) and the
MLflow child runs (tagged with a member id). Resume re-runs what was asked but never
recorded, tells Optuna what was recorded but not told, and trains nothing twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection

from search.config import MemberConfig, WorkKind
from search.errors import SweepInterrupted, UserError
from search.spaces import SearchSpace, space_hash
from search.sweep.driver import Driver, MenteeBudget, SweepSummary
from search.sweep.faults import check_cluster_fits, raise_if_node_died, warn_if_unauthenticated
from search.sweep.ledger import MethodLedger
from search.sweep.mentor import mentor_outputs
from search.sweep.plan import plan_sweep, trial_payload
from search.sweep.racing import race
from search.sweep.raytune import cohort_searcher, recorder_callback
from search.sweep.resume import journal_storage, replay_journal, resume_state
from search.sweep.suggest import make_sampler
from search.tracking import ResultJournal, SweepTracker, load_runs
from search.train.trial import cohort_trainable

__all__ = ["run_sweep", "SweepSummary"]


def run_sweep(space: SearchSpace, *, tracking_uri: str | None = None, address: str | None = None,
              workdir: str | Path = "mentee-runs", storage: str | None = None, resume: bool = False,
              where: str = "space", show_progress: bool = True,
              configs: list[MemberConfig] | None = None) -> SweepSummary:
    """Run (or with `resume`, continue) a sweep of `space`. `configs`, if given, replaces
    Optuna: exactly those mentees are trained (benchmarks use it to compare like with like)."""
    from search.progress import Progress, console, phase

    t0, t0_wall = time.perf_counter(), time.time()
    experiment = str(space.name)
    plan = plan_sweep(space, where=where, gpus=0)  # every check that needs no Ray, before anything is written
    tracker = SweepTracker(tracking_uri, experiment)  # creates the experiment before any trial starts
    parent = tracker.find_sweep(experiment) if resume else None
    if resume and parent is None:
        raise UserError(f"--resume: no unfinished sweep of experiment '{experiment}' in {tracker.uri}")

    with phase("starting Ray" if address is None else f"connecting to Ray at {address}", enabled=show_progress):
        resources = connect_ray(address)
    check_cluster_fits(space.budget, resources, where)  # a trial Ray can never place would hang the sweep
    t_ray = time.perf_counter()
    if show_progress and not Path(space.mentor.path).exists():
        console.print(f"mentor {space.mentor.path}: training it first ({space.mentor.epochs} epochs, on a GPU node "
                      "if the cluster has one); the next sweep of this space loads it")
    with phase(f"the mentor: {space.mentor.path} and its cached outputs", enabled=show_progress):
        mentor = mentor_outputs(space, plan, gpus=resources.get("GPU", 0.0))
    plan = plan.for_cluster(resources.get("GPU", 0.0), resources.get("CPU", 1.0), mentor["device_free_bytes"])
    if plan.gpus_per_trial > 0 and resources.get("GPU", 0.0) < plan.gpus_per_trial:
        raise UserError(f"{where}: key 'budget.gpus_per_trial': the space asks for {plan.gpus_per_trial:g} GPU per "
                        f"trial, but the Ray cluster has {resources.get('GPU', 0.0):g}")
    payload = trial_payload(plan, mentor)
    t_mentor = time.perf_counter()

    work = Path(workdir).resolve() / experiment
    work.mkdir(parents=True, exist_ok=True)
    shash = space_hash(space)
    if parent is None:
        parent = tracker.start_sweep(experiment, params=_flat(space.model_dump()), tags={"mentee.space_hash": shash})
    directions = [StudyDirection.MAXIMIZE] + [StudyDirection.MINIMIZE] * len(space.objectives)
    study = optuna.create_study(study_name=f"{experiment}-{parent}", storage=_optuna_storage(work),
                                load_if_exists=resume, directions=directions, sampler=make_sampler(space))
    b = space.budget
    mentee_budget = None
    if b.mentees == "auto":  # fill budget.minutes: one wave first, then as many as the measured rate holds
        mentee_budget = MenteeBudget(float(b.minutes or 0), max(1, plan.cohort_size // plan.seeds) * plan.concurrency)
    summary = SweepSummary(experiment, parent, tracker.uri, planned=b.mentees if isinstance(b.mentees, int) else 0)
    splits = plan.splits
    tags = {"mentee.space_hash": shash, "mentee.dataset": splits.name,
            "mentee.input_shape": json.dumps(list(splits.input_shape)), "mentee.num_classes": str(splits.num_classes)}
    driver = Driver(space, study, tracker, parent, plan.cohort_size, tags, summary, n_train=len(splits.x_train),
                    journal=ResultJournal(work / "journal" / parent),  # results on disk until MLflow has them
                    seeds=plan.seeds, mentee_budget=mentee_budget)
    # what earlier sweeps of this experiment (and, resumed, this one) learnt about which mentor methods pay;
    # a space without mentor terms has nothing to learn, and its start-up reads nothing back
    earlier = load_runs(tracker.uri, experiment) if driver.arms.on and tracker.has_mentees() else None
    if earlier is not None and len(earlier):
        driver.arms.ledger = MethodLedger.from_runs(earlier)
    if resume:  # what the journal kept (an MLflow outage, a kill mid-write) is written first, never retrained
        recorded = tracker.existing_member_ids(parent)
        resume_state(driver, recorded | replay_journal(driver, recorded))
    if configs is not None:  # each fixed config one mentee, with the sweep's seeds
        done = tracker.existing_member_ids(parent)
        for i, c in enumerate(configs):
            if f"fixed-{i}" not in done:
                driver.queue_mentee(f"fixed-{i}", WorkKind.FIXED, c)
        driver.planned = summary.planned = len(configs)
        driver.mentee_budget = None
        driver.space = space.model_copy(update={"budget": space.budget.model_copy(update={"mentees": len(configs)})})

    tuner = _tuner(plan, payload, driver, storage or str(work / "ray"), f"{experiment}-{parent[:8]}-{int(time.time())}")
    total = max(driver.planned, driver.budget) - summary.recorded
    t_fit = time.perf_counter()
    with Progress(total, f"sweep {experiment}", enabled=show_progress) as bar:
        driver.progress = bar
        try:
            tuner.fit()
            t_drain = time.perf_counter()
        except Exception as e:
            raise_if_node_died(e)  # the driver's Ray node died: one line, exit 75, --resume (sweep/faults.py)
            raise
        finally:
            driver.writer.close()  # everything trained is in MLflow before we return (or die)
    summary.seconds = time.perf_counter() - t0
    summary.phases = {"ray_init": t_ray - t0, "mentor": t_mentor - t_ray, "setup": t_fit - t_mentor,
                      "fit": t_drain - t_fit, "mlflow_drain": time.perf_counter() - t_drain}
    starts = [t["train_started_at"] for t in summary.trial_timings if "train_started_at" in t]
    if starts:  # the sweep's fixed cost: from the call to the first cohort's training
        summary.phases["to_first_cohort"] = min(starts) - t0_wall
    # Ctrl-C makes Ray Tune stop and return normally: a sweep with members left unrecorded
    # stays KILLED, so that `--resume` finds it
    summary.planned = driver.planned
    complete = summary.recorded >= driver.planned >= driver.budget and not driver.gather.partial
    if complete and configs is None and space.budget.reevaluate_seeds:
        # racing: mentees not clearly dominated within their arm get more seeds, added to their runs, in
        # fused cohorts through the same machinery (search/sweep/racing.py); never halved
        t_re = time.perf_counter()
        deadline = None if mentee_budget is None else mentee_budget.started + 60 * mentee_budget.minutes
        complete = race(driver, plan.seeds + space.budget.reevaluate_seeds, show_progress=show_progress,
                        precision=space.budget.precision, deadline=deadline,
                        tuner_for=lambda d: _tuner(plan, dataclasses.replace(payload, rungs=()), d,
                                                   storage or str(work / "ray"),
                                                   f"{experiment}-{parent[:8]}-race-{int(time.time())}"))
        summary.phases["reeval"] = time.perf_counter() - t_re
        summary.seconds = time.perf_counter() - t0
    tracker.finish_sweep(parent, "FINISHED" if complete else "KILLED",
                         metrics={"wall_seconds": summary.seconds, "finished": summary.finished,
                                  "pruned": summary.pruned, "failed": summary.failed,
                                  "requeued": summary.requeued, "nodes": len(summary.nodes)})
    if not complete:
        raise SweepInterrupted(f"sweep '{experiment}' stopped with {summary.recorded} of {driver.planned} "
                               f"mentees recorded; continue it with `mentee sweep ... --resume`")
    return summary


# Ray 2.59+ turns token authentication on for a local cluster (the secure default, kept) and says so
# at every ray.init: one WARNING line from this logger that a user can do nothing about. The
# opposite notice (authentication *off*) and every other warning still print.
_RAY_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"


def _quiet_token_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled")


def connect_ray(address: str | None) -> dict[str, float]:
    """Join the Ray at `address` ($RAY_ADDRESS, or a local one started now); the cluster's resources.
    A running Ray (`ray start --head` once) saves each sweep the start-up."""
    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # results go to MLflow, not CSV/TB files
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger(_RAY_TOKEN_LOGGER).addFilter(_quiet_token_notice)  # auth stays on; only the notice goes
    address = address or os.environ.get("RAY_ADDRESS")
    # trial errors still reach the driver (Ray re-raises them); worker chatter does not; a local
    # Ray's dashboard stays off, and binds 127.0.0.1 if a user turns it on
    if address is None:
        # Ray joins the cluster of this machine's last `ray start` (the address file it wrote under
        # $RAY_TMPDIR or /tmp/ray): ~1 s instead of ~12 s a sweep. If that cluster has stopped, the
        # file outlives it and ray.init would wait minutes for it: probe it first, else start one here.
        from ray._private.utils import read_ray_address

        last = read_ray_address()
        host, _, port = (last or "").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except (OSError, ValueError):
            address = "local"
    try:
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, dashboard_host="127.0.0.1",
                 logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        if address == "local":
            raise
        raise UserError(f"--address {address}: no Ray cluster answers there ({str(e).splitlines()[0][:160]})") from None
    logging.getLogger("ray.tune").setLevel(logging.ERROR)  # results live in MLflow, not result.json
    warn_if_unauthenticated(address)  # one line if the cluster it joined takes anyone's jobs (sweep/faults.py)
    return dict(ray.cluster_resources())


def _tuner(plan, payload, driver: Driver, storage: str, name: str):
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(cohort_trainable, payload=payload),
                                    {"cpu": plan.space.budget.cpus_per_trial, "gpu": plan.gpus_per_trial})
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=cohort_searcher(driver, plan.concurrency), num_samples=-1,
                                    reuse_actors=True,
                                    trial_dirname_creator=lambda t: f"cohort-{t.trial_id}",
                                    trial_name_creator=lambda t: f"cohort-{t.trial_id}"),
        # a trial whose process or node dies is restarted up to 2 times by Tune; after that the
        # driver queues its members again (Driver.lost)
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0, callbacks=[recorder_callback(driver)],
                                  failure_config=tune.FailureConfig(max_failures=2)),
    )


def _optuna_storage(work: Path) -> optuna.storages.BaseStorage:
    """Optuna's journal file: every ask and tell appended and flushed (resume reads it back),
    ~1 ms an operation where sqlite takes 10–40 ms. `optuna-dashboard <file>` shows it live.
    Its lock and its last line survive a killed driver (`resume.journal_storage`)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return journal_storage(work / "optuna.journal")


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "taps":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out

