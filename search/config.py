"""The contracts every room shares: plain dataclasses, each with one to/from-dict.

Config flows one way: YAML → `search.spaces` (pydantic, validation) → these frozen
dataclasses → train / sweep / tracking. Nothing below `spaces.py` reads YAML.

    cfg = MemberConfig(ArchConfig("conv1d", (8, 8)), terms=(TermConfig("ce", 1.0),
                       TermConfig("kd", 0.5, {"temperature": 4.0})))
    cfg.independent          # False: a mentor term has weight > 0
    cfg.twin()               # the same mentee with every mentor term dropped

What crosses the line between the driver and a trial:
    CohortSpec    the driver → a trial: which members to train (WorkItems)
    TrialPayload  the driver → every trial, once, via Ray's object store: data, mentor cache
    CohortReport  a trial → the driver: one MemberResult per member, timings, the node
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

__all__ = ["ArchConfig", "TermConfig", "TrainConfig", "MemberConfig", "MemberResult", "Status", "WorkKind",
           "WorkItem", "seed_member_id", "CohortSpec", "TrialPayload", "CohortReport", "COST_AXES", "CostAxis",
           "LABEL_TERM"]

# The cost axes a front can be drawn on; every cost dict has these keys, in this order.
CostAxis = Literal["params", "bytes_fp32", "bytes_int8", "sram_fp32", "sram_int8", "macs"]
COST_AXES: tuple[str, ...] = get_args(CostAxis)

# The one loss term that needs no mentor. Every other registered term is a *mentor term*
# (`search.terms` checks this when a term registers).
LABEL_TERM = "ce"


class Status(enum.StrEnum):
    """How a member's training ended. Only FINISHED members belong on a front: a pruned one
    stopped early (its accuracy is not comparable), a failed one has none."""

    FINISHED = "finished"
    PRUNED = "pruned"
    FAILED = "failed"


class WorkKind(enum.StrEnum):
    """Why a member is trained: asked from Optuna, the independent twin of an asked
    architecture, a fixed config handed in by the caller (benchmarks), or a re-evaluation of
    a recorded member with another seed (`search.sweep.reeval`)."""

    SEARCHED = "searched"
    TWIN = "twin"
    FIXED = "fixed"
    REEVAL = "reeval"


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchConfig:
        return cls(d["family"], tuple(int(w) for w in d["widths"]), int(d.get("kernel", 5)),
                   bool(d.get("batch_norm", False)))


@dataclass(frozen=True)
class TermConfig:
    """One term of a member's loss: a registered kind (`search.terms.TERMS`), its
    weight and its parameters (e.g. a hint's `student`, `teacher`, `metric`; KD's
    `temperature`). A mentor term of weight 0 does nothing."""

    kind: str
    weight: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_mentor(self) -> bool:
        return self.kind != LABEL_TERM

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "weight": self.weight, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TermConfig:
        return cls(str(d["kind"]), float(d["weight"]), dict(d.get("params", {})))


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
    """One mentee to train: architecture, optimiser and seed, and the terms of its loss.
    Every mentor term at weight 0 → the *independent* mentee."""

    arch: ArchConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    terms: tuple[TermConfig, ...] = (TermConfig(LABEL_TERM, 1.0),)

    @property
    def independent(self) -> bool:
        return all(t.weight == 0 for t in self.terms if t.uses_mentor)

    def active_terms(self) -> tuple[TermConfig, ...]:
        return tuple(t for t in self.terms if t.weight != 0)

    def twin(self) -> MemberConfig:
        """The independent mentee of the same architecture, optimiser and seed."""
        return dataclasses.replace(self, terms=tuple(t for t in self.terms if not t.uses_mentor))

    def to_dict(self) -> dict[str, Any]:
        return {"arch": dataclasses.asdict(self.arch), "train": dataclasses.asdict(self.train),
                "terms": [t.to_dict() for t in self.terms]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemberConfig:
        if "terms" in d:
            terms = tuple(TermConfig.from_dict(t) for t in d["terms"])
        else:  # written before loss terms were a registry (hints / w_kd / temperature fields)
            terms = (TermConfig(LABEL_TERM, float(d.get("w_ce", 1.0))),
                     *(TermConfig("hint", float(h["weight"]), {k: h[k] for k in ("student", "teacher", "metric")})
                       for h in d.get("hints", ())))
            if d.get("w_kd"):
                terms += (TermConfig("kd", float(d["w_kd"]), {"temperature": float(d.get("temperature", 4.0))}),)
        return cls(arch=ArchConfig.from_dict(d["arch"]), train=TrainConfig(**d.get("train", {})), terms=terms)

    def key(self) -> str:
        """Stable id of the whole config (seed included)."""
        return _hash(self.to_dict())


@dataclass
class MemberResult:
    """What training one member produced. `status` is the only truth about whether it
    finished."""

    config: MemberConfig
    status: Status
    val_acc: float = float("nan")
    test_acc: float = float("nan")
    epochs_run: int = 0
    curves: dict[str, list[float]] = field(default_factory=dict)  # per epoch: train_loss, val_acc
    cost: dict[str, float] = field(default_factory=dict)  # COST_AXES
    train_seconds: float = 0.0  # the cohort's training wall time divided among its members
    state_dict: dict[str, Any] | None = None  # the mentee's weights on the CPU (travel apart: a checkpoint)
    error: str | None = None
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)  # epoch → weights (train_cohort's snapshot_at)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, without the weights."""
        return {"config": self.config.to_dict(), "status": self.status.value, "val_acc": self.val_acc,
                "test_acc": self.test_acc, "epochs_run": self.epochs_run, "curves": self.curves,
                "cost": self.cost, "train_seconds": self.train_seconds, "error": self.error}

    @classmethod
    def from_dict(cls, d: dict[str, Any], state_dict: dict[str, Any] | None = None) -> MemberResult:
        return cls(config=MemberConfig.from_dict(d["config"]), status=Status(d["status"]),
                   val_acc=d["val_acc"], test_acc=d["test_acc"], epochs_run=d["epochs_run"], curves=d["curves"],
                   cost=d["cost"], train_seconds=d["train_seconds"], state_dict=state_dict, error=d["error"])


@dataclass(frozen=True)
class WorkItem:
    """One member the driver wants trained: one seed of one mentee. `optuna_number` is set for
    SEARCHED items only. A mentee is one config trained with several seeds fused in one cohort;
    its seed members share `mentee_id` and are recorded together, as one MLflow run, once all
    `seeds` of this round are back (`search.sweep.mentees`)."""

    member_id: str
    kind: WorkKind
    config: MemberConfig
    optuna_number: int | None = None
    mentee_id: str | None = None  # None: a mentee of one seed, named by member_id
    seeds: int = 1  # how many seed members of the mentee this round trains (its record waits for all)

    @property
    def mentee(self) -> str:
        return self.member_id if self.mentee_id is None else self.mentee_id

    def to_dict(self) -> dict[str, Any]:
        return {"member_id": self.member_id, "kind": self.kind.value, "config": self.config.to_dict(),
                "optuna_number": self.optuna_number, "mentee_id": self.mentee_id, "seeds": self.seeds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkItem:
        return cls(d["member_id"], WorkKind(d["kind"]), MemberConfig.from_dict(d["config"]), d["optuna_number"],
                   d.get("mentee_id"), int(d.get("seeds", 1)))


def seed_member_id(mentee_id: str, seed: int) -> str:
    """The member id of one seed of a mentee: `17@s2` (Optuna trial 17, seed 2)."""
    return f"{mentee_id}@s{seed}"


@dataclass(frozen=True)
class CohortSpec:
    """What one Ray trial trains: its `to_dict` is the trial's config."""

    items: tuple[WorkItem, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"items": [w.to_dict() for w in self.items]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CohortSpec:
        return cls(tuple(WorkItem.from_dict(w) for w in d["items"]))


@dataclass
class TrialPayload:
    """Everything every trial of a sweep shares, put into Ray's object store once: the data
    splits and the mentor cache as numpy arrays (each trial process moves them to its device
    once), the mentor's tap shapes (hint projections are built from them) and halving."""

    key: str  # a new sweep in a reused trial process: free the old sweep's tensors
    device: str  # "cuda" or "cpu"
    dataset: str
    num_classes: int
    input_shape: tuple[int, ...]
    tensors: dict[str, np.ndarray]  # x_train, y_train, x_val, y_val, x_test, y_test
    mentor_logits: np.ndarray | None
    mentor_feats: dict[str, np.ndarray]
    mentor_shapes: dict[str, tuple[int, ...]]
    rungs: tuple[int, ...] = ()
    eta: int = 3

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialPayload:
        return cls(**{**d, "input_shape": tuple(d["input_shape"]), "rungs": tuple(d["rungs"]),
                      "mentor_shapes": {k: tuple(v) for k, v in d["mentor_shapes"].items()}})


@dataclass
class CohortReport:
    """What a trial reports for its cohort (the weights travel apart, in its checkpoint)."""

    members: list[MemberResult]
    node_id: str = ""
    timing: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"members": [m.to_dict() for m in self.members], "node_id": self.node_id, "timing": self.timing,
                "finished": sum(m.status is Status.FINISHED for m in self.members)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], weights: dict[str, dict[str, Any]] | None = None,
                  member_ids: list[str] | None = None) -> CohortReport:
        weights, ids = weights or {}, member_ids or []
        members = [MemberResult.from_dict(m, weights.get(ids[i]) if i < len(ids) else None)
                   for i, m in enumerate(d["members"])]
        return cls(members, d.get("node_id", ""), d.get("timing", {}))


def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]
