"""Have a trained mentor: load it, or train one from a family spec and save it.

    mentor = ensure_mentor(space.mentor, splits)          # loads space.mentor.path, or trains it
    mentor = train_mentor(arch, splits, epochs=60)       # Mentor + its accuracies

Training a mentor is training one independent mentee of a bigger architecture, so it
reuses the cohort loop (a cohort of one) and inherits its determinism and NaN checks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from search.config import ArchConfig, MemberConfig, Status, TrainConfig
from search.data import Splits
from search.errors import TrainingDiverged, UserError
from search.mentors import Mentor, load_mentor, save_mentor
from search.models import create_mentee
from search.train.cohort import train_cohort

__all__ = ["train_mentor", "ensure_mentor", "mentor_from_spec"]


def train_mentor(arch: ArchConfig, splits: Splits, *, epochs: int = 60, lr: float = 3e-3, batch_size: int = 128,
                 seed: int = 0, out: str | Path | None = None,
                 on_epoch: Callable[[int, int], None] | None = None) -> tuple[Mentor, dict[str, float]]:
    """Train `arch` on `splits` (already on the training device); save to `out` if given."""
    cfg = MemberConfig(arch=arch, train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                                                    weight_decay=5e-4, schedule="onecycle", seed=seed))
    (res,) = train_cohort([cfg], splits, on_epoch=on_epoch)
    if res.status is not Status.FINISHED:
        raise TrainingDiverged(f"mentor training failed: {res.error}")
    assert res.state_dict is not None  # train_cohort keeps a finished member's weights unless told not to
    model = create_mentee(arch, splits.input_shape, splits.num_classes)
    model.load_state_dict(res.state_dict)
    metrics = {"val_acc": res.val_acc, "test_acc": res.test_acc, "params": res.cost["params"]}
    if out is not None:
        save_mentor(out, model, arch, dataset=splits.name, input_shape=splits.input_shape,
                    num_classes=splits.num_classes, metrics=metrics)
    spec = {"kind": "family", "arch": arch.__dict__, "dataset": splits.name, "metrics": metrics}
    return Mentor(model.eval(), tuple(model.taps), splits.input_shape, splits.num_classes, spec), metrics


def mentor_from_spec(spec, splits: Splits) -> Mentor | None:
    """Load the mentor a space names, or None if its file does not exist yet."""
    path = Path(spec.path)
    if not path.exists():
        if spec.factory:
            raise UserError(f"{path}: mentor weights file not found (needed by factory {spec.factory})")
        return None
    mentor = load_mentor(path, factory=spec.factory, taps=spec.taps, input_shape=splits.input_shape,
                         num_classes=splits.num_classes)
    if tuple(mentor.input_shape) != tuple(splits.input_shape) or mentor.num_classes != splits.num_classes:
        raise UserError(f"{path}: mentor expects inputs {tuple(mentor.input_shape)} and {mentor.num_classes} "
                        f"classes, but dataset '{splits.name}' has {tuple(splits.input_shape)} and "
                        f"{splits.num_classes}")
    return mentor


def ensure_mentor(spec, splits: Splits, on_epoch: Callable[[int, int], None] | None = None) -> Mentor:
    mentor = mentor_from_spec(spec, splits)
    if mentor is not None:
        return mentor
    mentor, _ = train_mentor(spec.arch.config(), splits, epochs=spec.epochs, lr=spec.lr, batch_size=spec.batch_size,
                             seed=spec.seed, out=spec.path, on_epoch=on_epoch)
    return mentor
