"""Search spaces: YAML → a validated `SearchSpace`, or one clear line of error.

A space names the dataset, the mentor (a file, or the spec to train it), the mentee
family with its ranges, the mapping and loss-weight choices, the optimiser, the
objectives and the budget. A value that is searched is written as a list of choices
(``[4, 8, 16]``) or a range (``{low: 1e-3, high: 1e-1, log: true}``); a plain value
is fixed. See ``spaces/mnist1d.yaml`` for every key with a comment::

    space = load_space("spaces/mnist1d.yaml")     # raises UserError("spaces/x.yaml: ...")

Nothing in the package below this module reads YAML.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from search.errors import UserError

__all__ = ["SearchSpace", "Range", "load_space", "parse_space", "space_hash", "choices_of", "largest"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Model):
    """A continuous (or integer) range; `log` samples on a log scale."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _order(self) -> "Range":
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) must not exceed high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


# A searched value: fixed, a list of choices, or a range.
Num = Union[float, list[float], Range]
Int = Union[int, list[int], Range]


def _nonempty(v: Any) -> Any:
    if isinstance(v, list) and not v:
        raise ValueError("empty list of choices; give at least one value")
    return v


class DatasetSpec(_Model):
    name: str = "mnist1d"
    root: str | None = None  # directory of local files (mnist, fashion-mnist, cifar10)
    n_samples: int | None = Field(default=None, ge=10)
    seed: int = 0


class MentorArch(_Model):
    family: str = "conv1d"
    widths: list[int] = [64, 128, 128, 128]
    kernel: int = Field(default=5, ge=1)
    batch_norm: bool = True

    @field_validator("widths")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        if not v or any(w < 1 for w in v):
            raise ValueError("widths must be a non-empty list of integers ≥ 1")
        return v


class MentorSpec(_Model):
    """`path` is loaded if it exists; otherwise a mentor of `arch` is trained and saved there."""

    path: str = "mentors/mentor.pt"
    arch: MentorArch = MentorArch()
    epochs: int = Field(default=60, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    batch_size: int = Field(default=128, ge=1)
    seed: int = 0
    factory: str | None = None  # package.module:function for your own nn.Module (then `taps` is required)
    taps: list[str] | None = None


class MenteeSpec(_Model):
    family: str = "conv1d"
    depth: Int = [1, 2, 3]
    width: Int = [4, 8, 16, 32]  # first layer's width
    growth: Num = [1, 2]  # each further layer is `growth` times wider
    kernel: Int = 5
    batch_norm: Union[bool, list[bool]] = False
    max_width: int = Field(default=512, ge=1)

    _ne = field_validator("depth", "width", "growth", "kernel", "batch_norm")(_nonempty)


class MappingSpec(_Model):
    """Hint choices: each mentee tap (`layerN`, `last` or `head`) → mentor taps it may be
    pulled towards; `none` in a list means "no hint from this tap" is a choice too."""

    taps: dict[str, list[str]] = {"last": ["none", "layer3"]}
    metric: Union[str, list[str]] = "rmse"
    weight: Num = Range(low=0.01, high=1.0, log=True)

    _ne = field_validator("metric", "weight")(_nonempty)


class KDSpec(_Model):
    enabled: Union[bool, list[bool]] = False
    weight: Num = Range(low=0.1, high=1.0, log=True)
    temperature: Num = 4.0


class TrainSpec(_Model):
    epochs: int = Field(default=20, ge=1)
    batch_size: Int = 128
    lr: Num = Range(low=1e-3, high=1e-2, log=True)
    weight_decay: Num = 1e-4
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    seed: int = 0

    _ne = field_validator("batch_size", "lr", "weight_decay")(_nonempty)


class EarlyStopping(_Model):
    """Successive halving inside each cohort: at each rung keep the best 1/eta."""

    rungs: list[int] = [5]
    eta: int = Field(default=3, ge=2)


class Budget(_Model):
    mentees: int = Field(default=64, ge=1)  # total, independent twins included
    cohort_size: Union[int, Literal["auto"]] = "auto"  # mentees per trial; auto: from device memory
    concurrency: int = Field(default=1, ge=1)  # trials at once (one per GPU is right for cohorts)
    cpus_per_trial: float = Field(default=1, gt=0)
    gpus_per_trial: Union[float, Literal["auto"]] = "auto"  # auto: 1 if the cluster has GPUs, else 0
    early_stopping: EarlyStopping | None = None


class SearchSpace(_Model):
    name: str | None = None  # experiment name; default: the file's stem
    dataset: DatasetSpec = DatasetSpec()
    mentor: MentorSpec = MentorSpec()
    mentee: MenteeSpec = MenteeSpec()
    mapping: MappingSpec = MappingSpec()
    kd: KDSpec = KDSpec()
    train: TrainSpec = TrainSpec()
    objectives: list[Literal["params", "bytes_fp32", "bytes_int8", "macs"]] = ["params"]
    budget: Budget = Budget()
    sampler: Literal["tpe", "random", "nsga2"] = "tpe"

    @model_validator(mode="after")
    def _cross(self) -> "SearchSpace":
        for tap in self.mapping.taps:
            if not (tap in ("last", "head") or (tap.startswith("layer") and tap[5:].isdigit())):
                raise ValueError(f"mapping.taps: mentee tap '{tap}' is not layerN, last or head")
        if self.budget.early_stopping and any(r >= self.train.epochs for r in self.budget.early_stopping.rungs):
            raise ValueError(f"budget.early_stopping.rungs must be below train.epochs ({self.train.epochs})")
        return self


def choices_of(v: Any) -> list[Any] | None:
    """The finite choices of a searched value (None for a continuous range)."""
    if isinstance(v, Range):
        return None
    return list(v) if isinstance(v, list) else [v]


def largest(v: Any) -> Any:
    """The largest value a searched value can take."""
    return v.high if isinstance(v, Range) else max(choices_of(v))


def _fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model at `loc`, to suggest the closest key."""
    for part in loc[:-1]:
        f = model.model_fields.get(str(part))
        if f is None:
            return []
        ann = f.annotation
        sub = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not sub:
            return []
        model = sub[0]
    return list(model.model_fields)


_TYPE_MISMATCH = re.compile(r"_(type|parsing)$|^(model|dict|list|bool|int|float|string)_")


def _one_line(path: str, err: ValidationError) -> str:
    # A union (fixed | choices | range) reports one error per alternative: the one that is
    # not a plain type mismatch says what the user got wrong (e.g. "low must not exceed high").
    errs = err.errors()
    e = next((x for x in errs if x["type"] == "extra_forbidden"), None) or next(
        (x for x in errs if not _TYPE_MISMATCH.search(x["type"]) and x["type"] != "missing"), errs[0])
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p in (
        "float", "int", "bool", "str", "Range", "list[float]", "list[int]", "list[bool]", "list[str]",
        "literal['auto']", "nullable"))))
    key = ".".join(str(p) for p in loc)
    if e["type"] == "extra_forbidden":
        near = difflib.get_close_matches(str(loc[-1]), _fields(SearchSpace, loc), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        return f"{path}: unknown key '{key}'{hint}"
    msg = e["msg"].removeprefix("Value error, ")
    got = e.get("input")
    got_s = f", got {got!r}" if got is not None and not isinstance(got, dict) and len(repr(got)) < 60 else ""
    return f"{path}: key '{key}': {msg}{got_s}" if key else f"{path}: {msg}"


def parse_space(data: Any, path: str = "<space>") -> SearchSpace:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        space = SearchSpace.model_validate(data)
    except ValidationError as e:
        raise UserError(_one_line(path, e)) from None
    if space.name is None:
        space = space.model_copy(update={"name": Path(path).stem})
    return space


def load_space(path: str | Path) -> SearchSpace:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: space file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{p}: malformed YAML{where}: {getattr(e, 'problem', None) or e}") from None
    return parse_space(data, str(p))


def space_hash(space: SearchSpace) -> str:
    """Short hash of everything that defines the sweep's results (the name excluded)."""
    return hashlib.sha1(space.model_dump_json(exclude={"name", "budget"}).encode()).hexdigest()[:12]
