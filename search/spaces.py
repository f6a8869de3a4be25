"""Search spaces: YAML → a validated `SearchSpace`, or one clear line of error.

A space names the dataset, the mentor (a file, or the spec to train it), the mentee
family with its ranges, the mapping and loss-weight choices, the optimiser, the
objectives and the budget. A value that is searched is written as a list of choices
(``[4, 8, 16]``) or a range (``{low: 1e-3, high: 1e-1, log: true}``); a plain value
is fixed. See ``spaces/mnist1d.yaml`` for every key with a comment::

    space = load_space("spaces/mnist1d.yaml")     # raises UserError("spaces/x.yaml: ...")

Nothing in the package below this module reads YAML. The value types (ranges, searched
numbers) are in `search.space_values`, the `mentor:` section in `search.mentor_spec`; both are
importable from here.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from search.config import CostAxis
from search.errors import UserError
from search.mentor_spec import AssistantSpec, MentorArch, MentorSpec
from search.safe_yaml import read_yaml
from search.space_values import Int, NonNegativeNum, Num, PositiveNum, Range, SpaceModel, nonempty, within

__all__ = ["SearchSpace", "Range", "load_space", "parse_space", "space_hash", "choices_of", "largest", "MentorSpec",
           "AssistantSpec", "MentorArch", "PositiveNum", "NonNegativeNum"]



# Bounds of sense on what a space sets: far above any real sweep, far below where a number overflows,
# hangs a dry run or allocates what no machine has. Each is stated in the error that refuses it.
MAX_DEPTH = 64  # layers of a mentee (each is built to check the space; 100,000 would take minutes)
MAX_WIDTH = 65_536  # channels or units of one layer
MAX_KERNEL = 1_024
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20
MAX_LR = 10.0
MAX_SAMPLES = 100_000_000  # as search.data.registry.MAX_SAMPLES
# an experiment name becomes a folder (the work directory's, Ray's) and a run name: a safe charset, no
# '/', no '..', nothing hidden, so a space can never make a sweep write outside its work directory
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


class DatasetSpec(SpaceModel):
    name: str = "mnist1d"
    root: str | None = None  # directory of local files (mnist, fashion-mnist, cifar10)
    n_samples: int | None = Field(default=None, ge=10, le=MAX_SAMPLES)
    seed: int = Field(default=0, ge=0, lt=2**32)  # numpy and mnist1d take 32-bit unsigned seeds


class MenteeSpec(SpaceModel):
    family: str = "conv1d"
    depth: Annotated[Int, within(1, MAX_DEPTH)] = [1, 2, 3]
    width: Annotated[Int, within(1, MAX_WIDTH)] = [4, 8, 16, 32]  # first layer's width
    growth: Annotated[Num, within(0, 16, strict=True)] = [1, 2]  # each further layer is `growth` times wider
    kernel: Annotated[Int, within(1, MAX_KERNEL)] = 5
    batch_norm: Union[bool, list[bool]] = False
    max_width: int = Field(default=512, ge=1, le=MAX_WIDTH)

    _ne = field_validator("depth", "width", "growth", "kernel", "batch_norm")(nonempty)


class TrainSpec(SpaceModel):
    epochs: int = Field(default=20, ge=1, le=MAX_EPOCHS)
    batch_size: Annotated[Int, within(1, MAX_BATCH)] = 128
    lr: Annotated[Num, within(0, MAX_LR, strict=True)] = Range(low=1e-3, high=1e-2, log=True)
    weight_decay: Annotated[Num, within(0, MAX_LR)] = 1e-4
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    seed: int = Field(default=0, ge=0, lt=2**32)  # numpy and mnist1d take 32-bit unsigned seeds

    _ne = field_validator("batch_size", "lr", "weight_decay")(nonempty)


class EarlyStopping(SpaceModel):
    """Successive halving inside each cohort: at each rung keep the best 1/eta."""

    rungs: list[Annotated[int, Field(ge=1)]] = [5]
    eta: int = Field(default=3, ge=2, le=1000)


MAX_MENTEES = 1_000_000  # a sweep's mentees: beyond this no store, searcher or sampler stays responsive


class Budget(SpaceModel):
    # total mentees (configs), independent twins included; auto: as many as `minutes` holds, measured
    # on the first cohorts (search/sweep/driver.py MenteeBudget)
    mentees: Union[Annotated[int, Field(ge=1, le=MAX_MENTEES)], Literal["auto"]] = 64
    minutes: float | None = Field(default=None, gt=0, le=7 * 24 * 60)  # wall-clock budget for `mentees: auto`
    # seeds each config is trained with, fused in one cohort, recorded as one mentee; auto: 3 with GPUs, 2 without
    seeds: Union[Annotated[int, Field(ge=1, le=100)], Literal["auto"]] = "auto"
    # mentees per trial; auto: from device memory
    cohort_size: Union[Annotated[int, Field(ge=1)], Literal["auto"]] = "auto"
    concurrency: Union[Annotated[int, Field(ge=1)], Literal["auto"]] = "auto"  # cohorts at once; auto: one per GPU
    cpus_per_trial: float = Field(default=1, gt=0)
    # auto: 1 if the cluster has GPUs, else 0
    gpus_per_trial: Union[Annotated[float, Field(ge=0)], Literal["auto"]] = "auto"
    early_stopping: EarlyStopping | None = None
    # after the search, racing (search/sweep/racing.py): mentees not clearly dominated within their arm get up
    # to this many more seeds, added to their runs; 0 = off. Shipped spaces set it; unset, a space keeps 0
    reevaluate_seeds: int = Field(default=0, ge=0, le=100)
    # racing gives a contender no more seeds once its own 95% interval is within ± this (0.015: 1.5 points)
    precision: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _auto_needs_minutes(self) -> Budget:
        if self.mentees == "auto" and self.minutes is None:
            raise ValueError("mentees: auto needs budget.minutes (the wall-clock time to fill)")
        return self

    def seeds_for(self, gpus: float) -> int:
        """Seeds a mentee gets in the search: as set, or auto — 3 where GPUs train, 2 on CPUs."""
        return self.seeds if isinstance(self.seeds, int) else (3 if gpus > 0 else 2)


class SearchSpace(SpaceModel):
    name: str | None = None  # experiment name; default: the file's stem
    dataset: DatasetSpec = DatasetSpec()
    mentor: MentorSpec = MentorSpec()
    mentee: MenteeSpec = MenteeSpec()
    # the loss terms a mentee may get, by registered name (`search.terms.TERMS`), each
    # with its own section; the label term `ce` is always there
    terms: dict[str, Any] = Field(default={"ce": {}, "hint": {}}, validate_default=True)
    train: TrainSpec = TrainSpec()
    objectives: list[CostAxis] = ["params"]
    budget: Budget = Budget()
    sampler: Literal["tpe", "random", "nsga2"] = "tpe"
    # your own device profiles (YAML, as spaces/devices.yaml), added to the shipped ones; `--devices` sets it
    devices: str | None = None
    # the device the sweep searches for: mentees over its size budgets are never trained (search/sweep/target.py)
    target: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (not NAME_PATTERN.fullmatch(v) or ".." in v):
            raise ValueError(f"expected 1-100 letters, digits, '.', '_' or '-' (it names the experiment and its "
                             f"folders: no '/', no '..', not empty, not starting with '.' or '-'), got {v!r}")
        return v

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: str | None) -> str | None:
        from search.devices import load_devices  # devices.py reads YAML through this module

        if v is not None:
            try:
                load_devices(v)
            except UserError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | None, info: Any) -> str | None:
        from search.devices import load_devices

        if v is None or "devices" not in info.data:  # a bad devices file is reported on its own key
            return v
        known = load_devices(info.data["devices"])
        if v not in known:
            near = difflib.get_close_matches(v.lower(), list(known), n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise ValueError(f"not a device profile ({hint}known: {', '.join(sorted(known))}), got {v!r}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _legacy_keys(cls, data: Any) -> Any:
        """`mapping:` (hints) and `kd:` were top-level keys before loss terms were a registry."""
        if isinstance(data, dict) and ("mapping" in data or "kd" in data):
            if "terms" in data:
                raise ValueError("give loss terms under 'terms' only, not also as 'mapping'/'kd'")
            data = dict(data)
            terms = {"ce": {}, "hint": data.pop("mapping", {})}
            if "kd" in data:
                terms["kd"] = data.pop("kd")
            data["terms"] = terms
        return data

    @field_validator("terms", mode="before")
    @classmethod
    def _terms(cls, v: Any) -> dict[str, Any]:
        from search.terms import TERMS

        if not isinstance(v, dict):
            raise ValueError("expected a mapping of loss-term names to their settings")
        out = {}
        for name, section in {"ce": {}, **v}.items():
            if name not in TERMS:
                near = difflib.get_close_matches(str(name), list(TERMS), n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                raise ValueError(f"unknown loss term '{name}'{hint}; registered: {', '.join(TERMS)}")
            if isinstance(section, BaseModel):
                out[name] = section
                continue
            try:
                out[name] = TERMS[name].Space.model_validate(section if section is not None else {})
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in (name, *err["loc"]))
                if err["type"] == "extra_forbidden":
                    raise ValueError(f"unknown key '{where}'") from None
                raise ValueError(f"{where}: {err['msg'].removeprefix('Value error, ')}") from None
        return out

    @model_validator(mode="after")
    def _cross(self) -> "SearchSpace":
        if self.budget.early_stopping and any(r >= self.train.epochs for r in self.budget.early_stopping.rungs):
            raise ValueError(f"budget.early_stopping.rungs must be below train.epochs ({self.train.epochs})")
        deepest = int(largest(self.mentee.depth))
        for name, section in self.terms.items():  # a mentee tap no mentee has: the term would never apply
            for tap in getattr(section, "taps", None) or {}:
                if tap.startswith("layer") and tap[5:].isdigit() and not 1 <= int(tap[5:]) <= deepest:
                    raise ValueError(f"key 'terms.{name}.taps.{tap}': no mentee has a tap '{tap}' (mentee.depth is "
                                     f"at most {deepest}: its taps are layer1..layer{deepest}, last and head)")
        return self


def choices_of(v: Any) -> list[Any] | None:
    """The finite choices of a searched value (None for a continuous range)."""
    if isinstance(v, Range):
        return None
    return list(v) if isinstance(v, list) else [v]


def largest(v: Any) -> Any:
    """The largest value a searched value can take."""
    return v.high if isinstance(v, Range) else max(v) if isinstance(v, list) else v


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


# pydantic's messages for a value of the wrong type, in our words
_OUR_WORDS = {"int_parsing": "expected an integer", "int_type": "expected an integer",
              "int_from_float": "expected an integer", "float_parsing": "expected a number",
              "float_type": "expected a number", "bool_parsing": "expected true or false",
              "bool_type": "expected true or false", "string_type": "expected text", "list_type": "expected a list",
              "dict_type": "expected a mapping", "model_type": "expected a mapping",
              "model_attributes_type": "expected a mapping", "finite_number": "expected a finite number"}
_TYPE_MISMATCH = re.compile(r"_(type|parsing)$|^(model|dict|list|bool|int|float|string)_")


def _one_line(path: str, err: ValidationError) -> str:
    # A union (fixed | choices | range) reports one error per alternative: the one that is
    # not a plain type mismatch says what the user got wrong (e.g. "low must not exceed high").
    errs = err.errors()
    e = next((x for x in errs if x["type"] == "extra_forbidden"), None) or next(
        (x for x in errs if not _TYPE_MISMATCH.search(x["type"]) and x["type"] != "missing"), errs[0])
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p in (
        "float", "int", "bool", "str", "Range", "list[float]", "list[int]", "list[bool]", "list[str]",
        "literal['auto']", "nullable", "constrained-int", "constrained-float"))))
    key = ".".join(str(p) for p in loc)
    if e["type"] == "extra_forbidden":
        near = difflib.get_close_matches(str(loc[-1]), _fields(SearchSpace, loc), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        return f"{path}: unknown key '{key}'{hint}"
    msg = e["msg"].removeprefix("Value error, ")
    bound = {"less_than_equal": "≤ {le}", "less_than": "< {lt}", "greater_than_equal": "≥ {ge}",
             "greater_than": "> {gt}"}.get(e["type"])
    if bound:  # the bound in our words (pydantic's change between releases), with thousands separated
        msg = "expected " + bound.format(**{k: f"{v:,}" if isinstance(v, int) else v for k, v in e["ctx"].items()})
    elif e["type"] in _OUR_WORDS:
        msg = _OUR_WORDS[e["type"]]
    elif e["type"] == "literal_error":
        msg = f"expected one of {e['ctx']['expected']}"
    got = e.get("input")
    show = got is not None and not isinstance(got, dict) and len(repr(got)) < 60 and ", got " not in msg
    got_s = f", got {got!r}" if show else ""  # (a message of ours may already say what it got)
    return f"{path}: key '{key}': {msg}{got_s}" if key else f"{path}: {msg}"


def parse_space(data: Any, path: str = "<space>", *, devices: str | Path | None = None) -> SearchSpace:
    """`devices`: a device-profile file that replaces the space's own `devices` key (`--devices FILE`)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    if devices is not None:
        data = {**data, "devices": str(devices)}
    try:
        space = SearchSpace.model_validate(data)
    except ValidationError as e:
        raise UserError(_one_line(path, e)) from None
    if space.name is None:  # the file's stem, in the name's safe charset
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip(".-") or "space"
        space = space.model_copy(update={"name": stem.replace("..", ".")[:100]})
    return space


# A space is a page of YAML: a bigger file is a wrong file (read_yaml caps nesting and aliases).
MAX_SPACE_BYTES = 1 << 20  # 1 MiB


def load_space(path: str | Path, *, devices: str | Path | None = None) -> SearchSpace:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a directory; expected a space file (YAML), e.g. spaces/mnist1d.yaml")
    if not p.is_file():
        raise UserError(f"{p}: space file not found")
    if p.stat().st_size > MAX_SPACE_BYTES:
        raise UserError(f"{p}: {p.stat().st_size:,} bytes; a space file is at most {MAX_SPACE_BYTES:,} bytes (1 MiB)")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text (byte {e.start}); expected a YAML space file") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read ({e.strerror or e}); expected a readable YAML space file") from None
    data = read_yaml(p, text, like="a space like spaces/mnist1d.yaml")
    if data is None:  # empty, or only comments: surely not the file the user meant
        raise UserError(f"{p}: no keys (the file is empty or only comments); expected a space like "
                        "spaces/mnist1d.yaml")
    return parse_space(data, str(p), devices=devices)


def space_hash(space: SearchSpace) -> str:
    """Short hash of everything that defines the sweep's results (the name excluded)."""
    # mentor keys added later are left out while unset, so a space's hash stays what it was before them
    later = {k for k in ("checkpoints", "assistant", "teacher")
             if getattr(space.mentor, k) == MentorSpec.model_fields[k].default}
    exclude: dict[str, Any] = {"name": True, "budget": True, **({"mentor": later} if later else {})}
    return hashlib.sha1(space.model_dump_json(exclude=exclude).encode()).hexdigest()[:12]
