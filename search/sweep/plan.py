"""What a sweep will do, checked before anything is written, and sized to the cluster it runs on.

    plan = plan_sweep(space, where="spaces/x.yaml")       # validates; loads the dataset; no Ray, no CUDA
    plan = plan.for_cluster(gpus=4, gpu_free_bytes=80e9)  # cohort size and concurrency for 4 GPUs

The driver never touches CUDA: the cluster's GPU count comes from Ray, and a GPU's free
memory from the mentor task that ran on one (`search.train.trial.prepare_mentor`).
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from search.config import ArchConfig, TrialPayload
from search.data import Splits, load_dataset
from search.errors import UserError
from search.models import create_mentee
from search.spaces import SearchSpace, largest
from search.sweep.target import check_space, int_values
from search.taps import tap_shapes
from search.terms import TERMS
from search.train.trial import splits_to_arrays

__all__ = ["SweepPlan", "plan_sweep", "trial_payload"]

# A cohort's upper bound: a sweep then has several cohorts, so Optuna learns between waves
# and the MLflow writes of one cohort overlap the next one's training. Depth, width and kernel
# pad into 1-3 fused groups (search/train/layout.py), so 256 mixed members still train as a few
# fused steps (~4 M mentee-samples/s on an H100: bench/sweep_throughput.py --only steps).
MAX_COHORT = 256


@dataclass
class SweepPlan:
    space: SearchSpace
    splits: Splits
    mentor_taps: tuple[str, ...]
    cohort_size: int
    gpus_per_trial: float
    concurrency: int
    device: str
    target: str = ""  # what the space's target device lets through (search/sweep/target.py); "" without one
    seeds: int = 1  # seeds per mentee in the search (budget.seeds, auto by the cluster's GPUs)

    def for_cluster(self, gpus: float, cpus: float = 1.0, gpu_free_bytes: float = 0.0) -> SweepPlan:
        """Resources, concurrency and cohort size for a cluster with `gpus` GPUs and `cpus` CPUs.

        `concurrency: auto` runs one cohort per GPU (per `cpus_per_trial` CPUs without GPUs);
        `cohort_size: auto` takes K from a GPU's free memory (≤ MAX_COHORT), then evens the
        cohorts out so the number of cohorts is a multiple of the concurrency: every GPU gets
        work and the last wave is not one GPU working alone."""
        b = self.space.budget
        g = (1.0 if gpus > 0 else 0.0) if b.gpus_per_trial == "auto" else float(b.gpus_per_trial)
        if b.concurrency != "auto":
            conc = int(b.concurrency)
        elif g > 0:
            conc = max(1, int(gpus // g))
        else:
            conc = max(1, int(cpus // b.cpus_per_trial))
        seeds = b.seeds_for(g)
        # members to train: every seed of every mentee (`mentees: auto` sizes cohorts for full waves)
        members = (b.mentees if isinstance(b.mentees, int) else MAX_COHORT * conc) * seeds
        if b.cohort_size != "auto":
            k = int(b.cohort_size)
        else:
            cap = _memory_cap(self.space, self.splits, gpu_free_bytes * g) if g > 0 else 8 * seeds
            cohorts = math.ceil(members / cap)
            cohorts = math.ceil(cohorts / conc) * conc  # whole waves
            k = math.ceil(members / cohorts)
            k = max(seeds, k // seeds * seeds)  # whole mentees: a mentee's seeds train in one cohort
        return dataclasses.replace(self, cohort_size=max(1, min(k, members)), gpus_per_trial=g,
                                   concurrency=conc, device="cuda" if g > 0 else "cpu", seeds=seeds)

    def describe(self) -> list[tuple[str, str]]:
        b = self.space.budget
        mentees = f"auto: as many as {b.minutes:g} min hold" if b.mentees == "auto" else str(b.mentees)
        trials = "measured as it runs" if b.mentees == "auto" else \
            f"~{math.ceil(int(b.mentees) * self.seeds / self.cohort_size)}"
        race = f", racing: up to {self.seeds + b.reevaluate_seeds} for mentees near the fronts" \
            if b.reevaluate_seeds else ""
        return [("experiment", str(self.space.name)), ("dataset", self.splits.summary()),
                ("mentee family", self.space.mentee.family), ("mentees (twins included)", mentees),
                ("seeds per mentee", f"{self.seeds} (fused in one cohort){race}"),
                ("cohort size", f"{self.cohort_size} members"), ("trials (cohorts)", trials),
                ("concurrent trials", str(self.concurrency)),
                ("resources per trial", f"{b.cpus_per_trial:g} CPU, {self.gpus_per_trial:g} GPU"),
                ("epochs per mentee", str(self.space.train.epochs)),
                ("early stopping", "off" if b.early_stopping is None else
                 f"rungs {b.early_stopping.rungs}, keep 1/{b.early_stopping.eta}"),
                ("objectives", "max val_acc, min " + ", min ".join(self.space.objectives)),
                ("sampler", self.space.sampler)] + ([("target", self.target)] if self.target else [])


def _check_mentee_space(space: SearchSpace, splits: Splits, where: str) -> None:
    m = space.mentee
    for d in sorted(set(int_values(m.depth))):
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
    for name, section in space.terms.items():
        for t in sorted(TERMS[name].mentor_tap_choices(section) - set(mentor_taps)):
            raise UserError(f"{where}: key 'terms.{name}.taps': the mentor has no tap '{t}'; "
                            f"its taps are {', '.join(mentor_taps)}")
    target = check_space(space, tuple(splits.input_shape), splits.num_classes, where)  # none fits → UserError
    plan = SweepPlan(space, splits, mentor_taps, 1, 0.0, 1, "cpu", target)
    # this machine's GPUs for a dry run (device_count reads the driver; it makes no CUDA context)
    return plan.for_cluster(gpus=float(torch.cuda.device_count()) if gpus is None else gpus)


def _mentor_taps(space: SearchSpace, splits: Splits, where: str) -> tuple[str, ...]:
    spec = space.mentor
    if Path(spec.path).exists():
        # A broken mentor file fails here, before MLflow or Ray are touched (loading it on the CPU
        # takes milliseconds; its taps are the file's, which may differ from the space's arch)
        from search.train.mentor import mentor_from_spec

        try:
            mentor = mentor_from_spec(spec, splits)
        except UserError as e:
            raise UserError(f"{where}: key 'mentor.path': {e}") from None
        if mentor is not None:  # None only if the file went away since the look above
            return tuple(mentor.taps)
    if spec.taps:
        return tuple(spec.taps)
    if spec.factory:
        raise UserError(f"{where}: key 'mentor.taps': required with mentor.factory")
    return tuple(create_mentee(spec.arch.config(), splits.input_shape, splits.num_classes).taps)


def _memory_cap(space: SearchSpace, splits: Splits, free_bytes: float) -> int:
    """Members that fit a quarter of a GPU's free memory: the widest mentee's activations for
    one batch, with room for backward and optimiser state. Unknown free memory → MAX_COHORT."""
    if free_bytes <= 0:
        return MAX_COHORT
    m = space.mentee
    w, g = largest(m.width), largest(m.growth)
    widths = tuple(min(m.max_width, round(w * g ** i)) for i in range(int(largest(m.depth))))
    net = create_mentee(ArchConfig(m.family, widths, 3, False), splits.input_shape, splits.num_classes)
    act = sum(math.prod(s) for s in tap_shapes(net, net.taps, splits.input_shape))
    per = int(largest(space.train.batch_size)) * act * 4 * 8 + sum(p.numel() for p in net.parameters()) * 4 * 6
    return int(max(1, min(MAX_COHORT, free_bytes / 4 // per)))


def trial_payload(plan: SweepPlan, mentor: dict) -> TrialPayload:
    """What every trial shares, from the plan and the mentor task's result."""
    s, es = plan.splits, plan.space.budget.early_stopping
    return TrialPayload(key=uuid.uuid4().hex, device=plan.device, dataset=s.name, num_classes=s.num_classes,
                        input_shape=tuple(s.input_shape), tensors=splits_to_arrays(s),
                        mentor_logits=mentor["logits"], mentor_feats=mentor["feats"],
                        mentor_shapes=mentor["shapes"], rungs=tuple(es.rungs) if es else (),
                        eta=es.eta if es else 3)
