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

import dataclasses
import json
import logging
import math
import os
import queue
import threading
import time
import uuid
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from search.config import ArchConfig, HintConfig, MemberConfig, MemberResult, TrainConfig
from search.data import Splits, load_dataset
from search.distill import MentorCache, pick_device
from search.errors import SweepInterrupted, UserError
from search.mentor import ensure_mentor, mentor_from_spec
from search.models import Mentor, create_mentee, tap_shapes
from search.spaces import Range, SearchSpace, choices_of, largest, space_hash
from search.tracking import SweepTracker, load_runs
from search.trial import cohort_trainable

__all__ = ["run_sweep", "plan_sweep", "suggest_member", "SweepSummary"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ sampling

def _pick(trial: optuna.Trial, name: str, spec: Any, integer: bool = False) -> Any:
    """A fixed value stays fixed; a list is a categorical; a Range is a float/int range."""
    if isinstance(spec, Range):
        if integer:
            return trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
        return trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    if isinstance(spec, list):
        return spec[0] if len(spec) == 1 else trial.suggest_categorical(name, spec)
    return spec


def _student_tap(tap: str, depth: int) -> str | None:
    if tap == "last":
        return f"layer{depth}"
    if tap == "head":
        return "head"
    return tap if int(tap[5:]) <= depth else None  # layerN deeper than this mentee: no hint


def suggest_member(trial: optuna.Trial, space: SearchSpace) -> MemberConfig:
    """Define-by-run: one mentee config from an Optuna trial."""
    m, t = space.mentee, space.train
    depth = int(_pick(trial, "depth", m.depth, integer=True))
    width = int(_pick(trial, "width", m.width, integer=True))
    growth = float(_pick(trial, "growth", m.growth))
    widths = tuple(max(1, min(m.max_width, round(width * growth ** i))) for i in range(depth))
    arch = ArchConfig(m.family, widths, int(_pick(trial, "kernel", m.kernel, integer=True)),
                      bool(_pick(trial, "batch_norm", m.batch_norm)))
    hints = []
    for tap, targets in space.mapping.taps.items():
        teacher = _pick(trial, f"hint.{tap}", targets)
        student = _student_tap(tap, depth)
        if teacher == "none" or student is None:
            continue
        hints.append(HintConfig(student, teacher, _pick(trial, f"metric.{tap}", space.mapping.metric),
                                float(_pick(trial, f"weight.{tap}", space.mapping.weight))))
    w_kd, temp = 0.0, 4.0
    if _pick(trial, "kd", space.kd.enabled):
        w_kd = float(_pick(trial, "kd.weight", space.kd.weight))
        temp = float(_pick(trial, "kd.temperature", space.kd.temperature))
    train = TrainConfig(epochs=t.epochs, batch_size=int(_pick(trial, "batch_size", t.batch_size, integer=True)),
                        lr=float(_pick(trial, "lr", t.lr)), weight_decay=float(_pick(trial, "wd", t.weight_decay)),
                        schedule=t.schedule, seed=t.seed)
    return MemberConfig(arch=arch, train=train, hints=tuple(hints), w_kd=w_kd, temperature=temp)


def _sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    seed = space.train.seed
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if space.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    # group + multivariate: the hint weight exists only when a hint is chosen
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def _result_from_dict(cfg: MemberConfig, d: dict, state: dict | None) -> MemberResult:
    return MemberResult(config=cfg, status=d["status"], val_acc=d["val_acc"], test_acc=d["test_acc"],
                        epochs_run=d["epochs_run"], curves=d["curves"], cost=d["cost"],
                        train_seconds=d["train_seconds"], state_dict=state, error=d["error"])


# ----------------------------------------------------------------- the driver

@dataclass
class SweepSummary:
    experiment: str
    parent_run_id: str
    tracking_uri: str
    planned: int
    recorded: int = 0
    finished: int = 0
    pruned: int = 0
    failed: int = 0
    trials: int = 0
    seconds: float = 0.0
    mentee_samples: float = 0.0  # samples × epochs over all members: the throughput numerator
    phases: dict[str, float] = field(default_factory=dict)  # seconds: ray, data+mentor, fit, drain
    trial_timings: list[dict[str, float]] = field(default_factory=list)  # per cohort, measured in the trial


@dataclass
class _Work:
    member_id: str
    config: MemberConfig
    optuna_number: int | None  # None for twins


@dataclass
class _Driver:
    """Asks Optuna for cohorts, records results. Runs in the driver process only."""

    space: SearchSpace
    study: optuna.Study
    tracker: SweepTracker
    parent_run_id: str
    cohort_size: int
    tags: dict[str, str]
    summary: SweepSummary
    pending: deque = field(default_factory=deque)
    have_independent: set = field(default_factory=set)  # arch keys with an independent member
    planned: int = 0
    progress: Any = None
    n_train: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)  # the study: asks here, tells on the writer
    writer: "_Writer" = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.writer = _Writer(self.write)

    def _ask(self) -> None:
        with self.lock:
            trial = self.study.ask()
            cfg = suggest_member(trial, self.space)
            trial.set_user_attr("config", cfg.to_dict())
        self.planned += 1
        self.pending.append(_Work(str(trial.number), cfg, trial.number))
        self._twin_of(cfg)

    def _twin_of(self, cfg: MemberConfig) -> None:
        key = cfg.arch.key()
        if key in self.have_independent:
            return
        self.have_independent.add(key)
        if not cfg.independent:
            self.planned += 1
            self.pending.append(_Work(f"twin-{key}", cfg.twin(), None))

    def next_cohort(self) -> dict | None:
        while len(self.pending) < self.cohort_size and self.planned < self.space.budget.mentees:
            self._ask()
        if not self.pending:
            return None
        work = [self.pending.popleft() for _ in range(min(self.cohort_size, len(self.pending)))]
        return {"member_ids": [w.member_id for w in work], "members": [w.config.to_dict() for w in work],
                "optuna": [w.optuna_number for w in work]}

    def record(self, config: dict, result: dict, ckpt_dir: str | None) -> None:
        """A cohort finished: queue each member for the writer (weights read now, while the
        checkpoint directory is certain to exist)."""
        self.summary.trials += 1
        self.summary.trial_timings.append(result.get("timing", {}))
        path = Path(ckpt_dir) / "weights.pt" if ckpt_dir else None
        weights = torch.load(path, weights_only=True) if path is not None and path.exists() else {}
        for mid, cd, num, rd in zip(config["member_ids"], config["members"], config["optuna"], result["members"]):
            self.writer.put((mid, num, _result_from_dict(MemberConfig.from_dict(cd), rd, weights.get(mid))))

    def fail(self, config: dict, error: str) -> None:
        self.summary.trials += 1
        for mid, cd, num in zip(config["member_ids"], config["members"], config["optuna"]):
            self.writer.put((mid, num, MemberResult(config=MemberConfig.from_dict(cd), status="failed",
                                                    error=error[:500])))

    def write(self, mid: str, num: int | None, res: MemberResult) -> None:
        """MLflow first, then Optuna: a member told to Optuna is always in MLflow, which is
        what resume relies on. Runs on the writer thread, so training never waits for it."""
        tags = {**self.tags, "mentee.twin": str(mid.startswith("twin-"))}
        self.tracker.log_member(self.parent_run_id, res, tags=tags, member_id=mid)
        if num is not None:
            self._tell(num, res.status, res.val_acc, res.cost)
        self._count(res.status, res.epochs_run * self.n_train)

    def _tell(self, number: int, status: str, val_acc: float, cost: dict) -> None:
        with self.lock:
            if status == "finished":
                self.study.tell(number, [val_acc] + [cost[o] for o in self.space.objectives])
            else:  # a pruned member must never look finished to the sampler's front
                state = optuna.trial.TrialState.PRUNED if status == "pruned" else optuna.trial.TrialState.FAIL
                self.study.tell(number, state=state)

    def _count(self, status: str, samples: float) -> None:
        s = self.summary
        s.recorded += 1
        s.mentee_samples += samples
        setattr(s, status, getattr(s, status) + 1)
        if self.progress is not None:
            self.progress.advance(1, f"{s.finished} finished, {s.pruned} pruned, {s.failed} failed")


class _Writer:
    """One background thread that does the driver's slow writes in order (MLflow on sqlite
    costs ~30 ms a run); `close` waits for the queue and re-raises a failed write."""

    def __init__(self, fn):
        self.fn, self.q, self.error = fn, queue.Queue(), None
        self.thread = threading.Thread(target=self._loop, name="mentee-writer", daemon=True)
        self.thread.start()

    def put(self, item: tuple) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(item)

    def _loop(self) -> None:
        while (item := self.q.get()) is not None:
            if self.error is None:
                try:
                    self.fn(*item)
                except BaseException as e:  # noqa: BLE001 - handed to the driver thread in close()
                    self.error = e

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _tuner_callback(driver: _Driver):
    from ray import tune

    class Recorder(tune.Callback):
        """Hands each finished cohort (metrics and checkpointed weights) to the driver."""

        def __init__(self, driver: _Driver):
            self.driver = driver

        def __getstate__(self) -> dict:  # Ray pickles callbacks into its experiment state;
            return {}  # ours live in Optuna and MLflow, and the lock and thread can't be pickled

        def on_trial_complete(self, iteration, trials, trial, **info):
            ckpt = trial.checkpoint
            if ckpt is None:
                self.driver.record(trial.config, trial.last_result, None)
                return
            with ckpt.as_directory() as d:
                self.driver.record(trial.config, trial.last_result, d)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.driver.fail(trial.config, str(getattr(trial, "error_msg", None) or "trial raised an error"))

    return Recorder(driver)


def _searcher(driver: _Driver):
    from ray.tune.search import Searcher

    class CohortSearcher(Searcher):
        """Each Ray trial's config is a whole cohort, asked from Optuna in one batch."""

        def __init__(self, driver: _Driver):
            super().__init__()
            self.driver = driver

        def __getstate__(self) -> dict:
            return {k: v for k, v in self.__dict__.items() if k != "driver"}

        def suggest(self, trial_id: str) -> dict | None:
            cohort = self.driver.next_cohort()
            return cohort if cohort is not None else Searcher.FINISHED

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            pass  # the Recorder callback tells Optuna: it also has the checkpoint with the weights

    return CohortSearcher(driver)


# ------------------------------------------------------------------ plan & run

@dataclass
class SweepPlan:
    space: SearchSpace
    splits: Splits
    mentor_taps: tuple[str, ...]
    cohort_size: int
    gpus_per_trial: float
    concurrency: int
    device: str

    def with_gpus(self, gpus: float) -> "SweepPlan":
        """The plan's resources and cohort size for a cluster with `gpus` GPUs."""
        b = self.space.budget
        g = (1.0 if gpus > 0 else 0.0) if b.gpus_per_trial == "auto" else float(b.gpus_per_trial)
        k = b.cohort_size if b.cohort_size != "auto" else _auto_cohort(self.space, self.splits, g)
        return dataclasses.replace(self, cohort_size=min(k, b.mentees), gpus_per_trial=g,
                                   device="cuda" if g > 0 else "cpu")

    def describe(self) -> list[tuple[str, str]]:
        b = self.space.budget
        trials = math.ceil(b.mentees / self.cohort_size)
        return [("experiment", str(self.space.name)), ("dataset", self.splits.summary()),
                ("mentee family", self.space.mentee.family), ("mentees (twins included)", str(b.mentees)),
                ("cohort size", str(self.cohort_size)), ("trials (cohorts)", f"~{trials}"),
                ("concurrent trials", str(self.concurrency)),
                ("resources per trial", f"{b.cpus_per_trial:g} CPU, {self.gpus_per_trial:g} GPU"),
                ("epochs per mentee", str(self.space.train.epochs)),
                ("early stopping", "off" if b.early_stopping is None else
                 f"rungs {b.early_stopping.rungs}, keep 1/{b.early_stopping.eta}"),
                ("objectives", "max val_acc, min " + ", min ".join(self.space.objectives)),
                ("sampler", self.space.sampler)]


def _check_mentee_space(space: SearchSpace, splits: Splits, where: str) -> None:
    m = space.mentee
    depths = choices_of(m.depth) or range(int(m.depth.low), int(m.depth.high) + 1)
    for d in sorted({int(d) for d in depths}):
        try:  # the largest kernel shrinks the input most: check that one, not an arbitrary 3
            create_mentee(ArchConfig(m.family, (4,) * d, int(largest(m.kernel))), splits.input_shape,
                          splits.num_classes)
        except UserError as e:
            raise UserError(f"{where}: key 'mentee': {e}") from None


def plan_sweep(space: SearchSpace, *, where: str = "space", gpus: float | None = None) -> SweepPlan:
    """Validate everything that can be checked before training; nothing is written."""
    d = space.dataset
    try:
        splits = load_dataset(d.name, root=d.root, n_samples=d.n_samples, seed=d.seed)
    except UserError as e:
        raise UserError(f"{where}: key 'dataset': {e}") from None
    _check_mentee_space(space, splits, where)
    mentor_taps = _mentor_taps(space, splits, where)
    for tap, targets in space.mapping.taps.items():
        for t in targets:
            if t != "none" and t not in mentor_taps:
                raise UserError(f"{where}: key 'mapping.taps.{tap}': the mentor has no tap '{t}'; "
                                f"its taps are {', '.join(mentor_taps)}")
    from search.distill import METRICS
    for metric in space.mapping.metric if isinstance(space.mapping.metric, list) else [space.mapping.metric]:
        if metric not in METRICS:
            raise UserError(f"{where}: key 'mapping.metric': unknown metric '{metric}'; expected one of "
                            f"{', '.join(sorted(METRICS))}")
    plan = SweepPlan(space, splits, mentor_taps, 1, 0.0, space.budget.concurrency, "cpu")
    return plan.with_gpus(float(torch.cuda.device_count()) if gpus is None else gpus)


def _mentor_taps(space: SearchSpace, splits: Splits, where: str) -> tuple[str, ...]:
    spec = space.mentor
    if spec.taps:
        return tuple(spec.taps)
    if spec.factory:
        raise UserError(f"{where}: key 'mentor.taps': required with mentor.factory")
    a = spec.arch
    return tuple(create_mentee(ArchConfig(a.family, tuple(a.widths), a.kernel, a.batch_norm),
                               splits.input_shape, splits.num_classes).taps)


def _auto_cohort(space: SearchSpace, splits: Splits, gpus: float) -> int:
    """K from device memory: the widest mentee's activations for one batch, with room
    for backward and optimiser state, into a quarter of a GPU's free memory."""
    if gpus <= 0:
        return 8  # CPU: fusing still saves Python overhead, but cores are few
    if not torch.cuda.is_available():
        return 64  # a GPU cluster driven from a CPU head: a safe default
    m = space.mentee
    w, g = largest(m.width), largest(m.growth)
    widths = tuple(min(m.max_width, round(w * g ** i)) for i in range(int(largest(m.depth))))
    net = create_mentee(ArchConfig(m.family, widths, 3, False), splits.input_shape, splits.num_classes)
    act = sum(math.prod(s) for s in tap_shapes(net, net.taps, splits.input_shape))
    per = int(largest(space.train.batch_size)) * act * 4 * 8 + sum(p.numel() for p in net.parameters()) * 4 * 6
    free, _ = torch.cuda.mem_get_info()
    # ≤ 64: a sweep then has several cohorts, and MLflow writes of one overlap the next's training
    return int(max(1, min(64, free * gpus / 4 // per)))


def _payload(plan: SweepPlan, cache: MentorCache | None, mentor: Mentor, taps: list[str]) -> dict:
    s = plan.splits
    es = plan.space.budget.early_stopping
    return {
        "key": uuid.uuid4().hex, "device": plan.device,
        "splits": {"name": s.name, "num_classes": s.num_classes, "input_shape": list(s.input_shape),
                   "tensors": {k: getattr(s, k).numpy() for k in
                               ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}},
        "cache": None if cache is None else {"logits": cache.logits.cpu().numpy(),
                                             "feats": {k: v.cpu().numpy() for k, v in cache.feats.items()}},
        "mentor_shapes": dict(zip(taps, mentor.tap_shapes(taps))),
        "rungs": list(es.rungs) if es else [], "eta": es.eta if es else 3,
    }


def _resume_state(driver: _Driver, recorded: set[str]) -> None:
    """Rebuild the driver's queue and counts from the study and MLflow after an interruption."""
    frame = load_runs(driver.tracker.uri, parent_run_id=driver.parent_run_id)
    by_member = {r["member_id"]: r for _, r in frame.iterrows()} if len(frame) else {}
    for status, n in frame["status"].value_counts().items():
        if status in ("finished", "pruned", "failed"):
            setattr(driver.summary, status, int(n))
    # recorded twins count towards the budget, as they did before the interruption
    twins = {m[len("twin-"):] for m in recorded if m.startswith("twin-")}
    driver.have_independent |= twins
    driver.planned += len(twins)
    mentored = []
    for t in driver.study.trials:
        cfg = MemberConfig.from_dict(t.user_attrs["config"])
        driver.planned += 1
        if cfg.independent:
            driver.have_independent.add(cfg.arch.key())
        else:
            mentored.append(cfg)
        if t.state != optuna.trial.TrialState.RUNNING:
            continue
        mid = str(t.number)
        if mid in by_member:  # recorded, but the driver died before telling Optuna
            r = by_member[mid]
            driver._tell(t.number, r["status"], r["val_acc"], {o: r[o] for o in driver.space.objectives})
        else:
            driver.pending.append(_Work(mid, cfg, t.number))
    for cfg in mentored:  # twins asked for but never recorded are trained now
        driver._twin_of(cfg)


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
    payload = _payload(plan, cache, mentor, taps)

    work = Path(workdir).resolve() / experiment
    work.mkdir(parents=True, exist_ok=True)
    shash = space_hash(space)
    if parent is None:
        parent = tracker.start_sweep(experiment, params=_flat(space.model_dump()), tags={"mentee.space_hash": shash})
    study = optuna.create_study(study_name=f"{experiment}-{parent}", storage=_optuna_storage(work),
                                load_if_exists=resume,
                                directions=["maximize"] + ["minimize"] * len(space.objectives),
                                sampler=_sampler(space))
    summary = SweepSummary(experiment, parent, tracker.uri, planned=space.budget.mentees)
    tags = {"mentee.space_hash": shash, "mentee.dataset": splits.name,
            "mentee.input_shape": json.dumps(list(splits.input_shape)), "mentee.num_classes": str(splits.num_classes)}
    driver = _Driver(space, study, tracker, parent, plan.cohort_size, tags, summary, n_train=len(splits.x_train))
    if resume:
        recorded = tracker.existing_member_ids(parent)
        summary.recorded = len(recorded)
        _resume_state(driver, recorded)
    if configs is not None:
        driver.pending.extend(_Work(f"fixed-{i}", c, None) for i, c in enumerate(configs))
        driver.planned = summary.planned = len(configs)
        driver.space = space.model_copy(update={"budget": space.budget.model_copy(update={"mentees": len(configs)})})

    trainable = tune.with_resources(tune.with_parameters(cohort_trainable, payload=payload),
                                    {"cpu": space.budget.cpus_per_trial, "gpu": plan.gpus_per_trial})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=_searcher(driver), num_samples=-1,
                                    max_concurrent_trials=plan.concurrency, reuse_actors=True,
                                    trial_dirname_creator=lambda t: f"cohort-{t.trial_id}",
                                    trial_name_creator=lambda t: f"cohort-{t.trial_id}"),
        run_config=tune.RunConfig(name=f"{experiment}-{parent[:8]}-{int(time.time())}",
                                  storage_path=storage or str(work / "ray"), verbose=0,
                                  callbacks=[_tuner_callback(driver)]),
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
