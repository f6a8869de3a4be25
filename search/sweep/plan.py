"""What a sweep will do, checked before anything is written: dataset, mentee space, mentor taps, cohort size."""

from __future__ import annotations

import dataclasses
import math
import uuid
from dataclasses import dataclass

import torch

from search.config import ArchConfig
from search.data import Splits, load_dataset
from search.errors import UserError
from search.models import Mentor, create_mentee, tap_shapes
from search.spaces import SearchSpace, choices_of, largest
from search.train.cache import MentorCache

__all__ = ['SweepPlan', 'plan_sweep', 'trial_payload']

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
    from search.train.losses import METRICS
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


def trial_payload(plan: SweepPlan, cache: MentorCache | None, mentor: Mentor, taps: list[str]) -> dict:
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

