"""Have a trained mentor: load it, or train one from a family spec and save it.

    mentor = ensure_mentor(space.mentor, splits)          # loads space.mentor.path, or trains it
    mentor = train_mentor(arch, splits, epochs=60)       # Mentor + its accuracies
    mentor = train_mentor(arch, splits, epochs=60, checkpoints=[20], out="m.pt")   # also keeps epoch 20
    assistant, _ = train_assistant(space.mentor, mentor, splits, out="a.pt")      # distilled from the mentor

Training a mentor is training one independent mentee of a bigger architecture, so it
reuses the cohort loop (a cohort of one) and inherits its determinism and NaN checks. So
does a teacher assistant: a cohort of one whose loss adds KD from the mentor's cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from search.config import ArchConfig, MemberConfig, Status, TermConfig, TrainConfig
from search.data import Splits
from search.errors import TrainingDiverged, UserError
from search.mentor_spec import MentorSpec
from search.mentors import Mentor, load_mentor, save_mentor
from search.models import create_mentee
from search.teachers import FINAL, checkpoint_name
from search.train.cache import MentorCache
from search.train.cohort import train_cohort

__all__ = ["train_mentor", "train_assistant", "ensure_mentor", "mentor_from_spec", "checkpoint_versions"]


def train_mentor(arch: ArchConfig, splits: Splits, *, epochs: int = 60, lr: float = 3e-3, batch_size: int = 128,
                 seed: int = 0, out: str | Path | None = None,
                 on_epoch: Callable[[int, int], None] | None = None, checkpoints: Sequence[int] = (),
                 terms: Sequence[TermConfig] = (), cache: MentorCache | None = None) -> tuple[Mentor, dict[str, float]]:
    """Train `arch` on `splits` (already on the training device); save to `out` if given, with
    the weights at the end of each epoch in `checkpoints` (versions `epochN` of the same file).
    `terms`: loss terms beside the label loss, reading `cache` (a teacher assistant's KD)."""
    bad = [e for e in checkpoints if not 1 <= e < epochs]
    if bad:
        raise ValueError(f"checkpoint epoch {bad[0]} is outside 1..{epochs - 1}")
    cfg = MemberConfig(arch=arch, train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                                                    weight_decay=5e-4, schedule="onecycle", seed=seed),
                       terms=(TermConfig("ce", 1.0), *terms))
    (res,) = train_cohort([cfg], splits, cache=cache, on_epoch=on_epoch, snapshot_at=tuple(checkpoints))
    if res.status is not Status.FINISHED:
        raise TrainingDiverged(f"mentor training failed: {res.error}")
    assert res.state_dict is not None  # train_cohort keeps a finished member's weights unless told not to
    model = create_mentee(arch, splits.input_shape, splits.num_classes)
    model.load_state_dict(res.state_dict)
    metrics = {"val_acc": res.val_acc, "test_acc": res.test_acc, "params": res.cost["params"]}
    metrics.update({f"{checkpoint_name(e)}.val_acc": res.curves["val_acc"][e - 1] for e in checkpoints})
    if out is not None:
        save_mentor(out, model, arch, dataset=splits.name, input_shape=splits.input_shape,
                    num_classes=splits.num_classes, metrics=metrics,
                    checkpoints={checkpoint_name(e): res.snapshots[e] for e in checkpoints})
    spec = {"kind": "family", "arch": arch.__dict__, "dataset": splits.name, "metrics": metrics}
    return Mentor(model.eval(), tuple(model.taps), splits.input_shape, splits.num_classes, spec), metrics


def train_assistant(spec: MentorSpec, mentor: Mentor, splits: Splits, *, out: str | Path | None = None,
                    on_epoch: Callable[[int, int], None] | None = None) -> tuple[Mentor, dict[str, float]]:
    """A teacher assistant (`spec.assistant`: Mirzadeh et al. 2020): the mentor's family, kernel and
    depth at the assistant's widths, trained with the mentor's recipe on labels plus KD from the
    mentor's logits. With `via`, a chain: each assistant of `via` in turn, then this one, each
    distilled from the one before (only the last is saved to `out`). `mentor` must be on `splits`' device."""
    a = spec.assistant
    if a is None or mentor.spec.get("kind") != "family":
        raise UserError("a teacher assistant needs mentor.assistant and a mentor of one of our families")
    m = ArchConfig.from_dict(mentor.spec["arch"])
    for field, widths in [*((f"via[{i}]", w) for i, w in enumerate(a.via)), ("widths", a.widths)]:
        if len(widths) != m.depth:
            raise UserError(f"mentor.assistant.{field}: expected {m.depth} widths (the mentor file's depth), "
                            f"got {len(widths)}")
    kd = TermConfig("kd", float(a.kd_weight), {"temperature": float(a.temperature)})
    teacher, metrics = mentor, dict[str, float]()
    for i, widths in enumerate([*a.via, a.widths]):
        arch = ArchConfig(m.family, tuple(widths), m.kernel, m.batch_norm)
        cache = MentorCache.build(teacher, splits.x_train, [])  # the teacher's logits: the soft targets
        last = i == len(a.via)
        teacher, metrics = train_mentor(arch, splits, epochs=a.epochs, lr=a.lr, batch_size=spec.batch_size,
                                        seed=spec.seed, out=out if last else None, on_epoch=on_epoch, terms=(kd,),
                                        cache=cache)
        teacher.model.to(splits.x_train.device)  # the next step's teacher, where the data is
    return teacher, metrics


def checkpoint_versions(spec: MentorSpec) -> list[str]:
    """The checkpoints (`epochN`) among the teachers a space offers: the mentor file must hold them."""
    names = {checkpoint_name(e) for e in spec.checkpoints}
    return [v for v in spec.teachers() if v in names]


def mentor_from_spec(spec: MentorSpec, splits: Splits, version: str | None = None) -> Mentor | None:
    """Load the mentor a space names (or its checkpoint `version`), or None if its file does not
    exist yet. The file must hold every checkpoint the space's teachers name."""
    path = Path(spec.path)
    if not path.exists():
        if spec.factory:
            raise UserError(f"{path}: mentor weights file not found (needed by factory {spec.factory})")
        return None
    mentor = load_mentor(path, factory=spec.factory, taps=spec.taps, input_shape=splits.input_shape,
                         num_classes=splits.num_classes, version=version)
    if tuple(mentor.input_shape) != tuple(splits.input_shape) or mentor.num_classes != splits.num_classes:
        raise UserError(f"{path}: mentor expects inputs {tuple(mentor.input_shape)} and {mentor.num_classes} "
                        f"classes, but dataset '{splits.name}' has {tuple(splits.input_shape)} and "
                        f"{splits.num_classes}")
    lacking = [v for v in checkpoint_versions(spec) if v not in mentor.spec.get("versions", [FINAL])]
    if lacking:
        raise UserError(f"{path}: the mentor file holds no checkpoint '{lacking[0]}' (mentor.teacher names it; the "
                        f"file holds {', '.join(mentor.spec.get('versions', [FINAL]))}); it was trained without "
                        "it: move the file away to train the mentor again with mentor.checkpoints")
    return mentor


def ensure_mentor(spec: MentorSpec, splits: Splits, on_epoch: Callable[[int, int], None] | None = None) -> Mentor:
    mentor = mentor_from_spec(spec, splits)
    if mentor is not None:
        return mentor
    mentor, _ = train_mentor(spec.arch.config(), splits, epochs=spec.epochs, lr=spec.lr, batch_size=spec.batch_size,
                             seed=spec.seed, out=spec.path, on_epoch=on_epoch,
                             checkpoints=spec.checkpoints)
    return mentor
