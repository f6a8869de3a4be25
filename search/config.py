"""Plain dataclasses that carry one mentee's configuration and result.

Config flows one way: YAML → `search.spaces` (pydantic, validation) → these frozen
dataclasses → models / distill / tune / tracking. Nothing below `spaces.py` reads
YAML; everything below takes these.

A `MemberConfig` is one mentee: architecture, mapping to the mentor, loss weights and
optimiser settings, and its seed. `to_dict`/`from_dict` give a JSON-safe form that
travels through Ray, Optuna and MLflow unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ArchConfig:
    """A mentee architecture: family name plus its shape.

    `widths` are conv channels per layer (conv1d/conv2d) or hidden sizes (mlp);
    depth is `len(widths)`. `kernel` and `batch_norm` are ignored by `mlp`.
    """

    family: str
    widths: tuple[int, ...]
    kernel: int = 5
    batch_norm: bool = False

    @property
    def depth(self) -> int:
        return len(self.widths)

    def key(self) -> str:
        """Short stable id of the architecture: twins share it."""
        return _hash(dataclasses.asdict(self))


@dataclass(frozen=True)
class HintConfig:
    """One mapping term: mentee tap `student` is pulled towards mentor tap `teacher`."""

    student: str
    teacher: str
    metric: str = "rmse"
    weight: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # "cosine" | "onecycle" | "constant"
    seed: int = 0


@dataclass(frozen=True)
class MemberConfig:
    """One mentee to train. All mentor weights 0 → the *independent* mentee."""

    arch: ArchConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    hints: tuple[HintConfig, ...] = ()
    w_ce: float = 1.0
    w_kd: float = 0.0
    temperature: float = 4.0

    @property
    def independent(self) -> bool:
        return self.w_kd == 0 and all(h.weight == 0 for h in self.hints)

    def twin(self) -> "MemberConfig":
        """The independent mentee of the same architecture, optimiser and seed."""
        return dataclasses.replace(self, hints=(), w_kd=0.0)

    def active_hints(self) -> tuple[HintConfig, ...]:
        return tuple(h for h in self.hints if h.weight != 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MemberConfig":
        arch = d["arch"]
        return cls(
            arch=ArchConfig(**{**arch, "widths": tuple(arch["widths"])}),
            train=TrainConfig(**d.get("train", {})),
            hints=tuple(HintConfig(**h) for h in d.get("hints", ())),
            w_ce=d.get("w_ce", 1.0),
            w_kd=d.get("w_kd", 0.0),
            temperature=d.get("temperature", 4.0),
        )

    def key(self) -> str:
        """Stable id of the whole config (seed included)."""
        return _hash(self.to_dict())


@dataclass
class MemberResult:
    """What training one member produced. `status` is the only truth about whether
    it finished: a member stopped early is "pruned" and never belongs on a front."""

    config: MemberConfig
    status: str  # "finished" | "pruned" | "failed"
    val_acc: float = float("nan")
    test_acc: float = float("nan")
    epochs_run: int = 0
    curves: dict[str, list[float]] = field(default_factory=dict)  # per epoch: train_loss, val_acc, test_acc
    cost: dict[str, float] = field(default_factory=dict)  # params, bytes_fp32, bytes_int8, macs
    train_seconds: float = 0.0  # the cohort's training wall time divided among its members
    state_dict: dict[str, Any] | None = None  # the mentee's weights on the CPU (no projections)
    error: str | None = None


def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]
