"""The `mentor:` section of a search space: the mentor to load or train, the early-stopped
checkpoints its training keeps, a teacher assistant, and which of them mentees learn from."""

from __future__ import annotations

from typing import Any, Union

from pydantic import Field, field_validator, model_serializer, model_validator

from search.config import ArchConfig
from search.space_values import SpaceModel
from search.teachers import ASSISTANT, FINAL, checkpoint_name

__all__ = ["MentorArch", "AssistantSpec", "MentorSpec"]


# Bounds of sense, as the space's own (search/spaces.py): a mentor is a network a GPU trains in hours.
MAX_LAYERS, MAX_WIDTH, MAX_EPOCHS, MAX_BATCH, MAX_LR = 64, 65_536, 100_000, 1 << 20, 10.0


def _widths(v: list[int]) -> list[int]:
    if not v or len(v) > MAX_LAYERS or any(not 1 <= w <= MAX_WIDTH for w in v):
        raise ValueError(f"widths must be a list of 1 to {MAX_LAYERS} integers, each in 1..{MAX_WIDTH:,}")
    return v


class MentorArch(SpaceModel):
    family: str = "conv1d"
    widths: list[int] = [64, 128, 128, 128]
    kernel: int = Field(default=5, ge=1, le=1_024)
    batch_norm: bool = True

    _w = field_validator("widths")(_widths)

    def config(self) -> ArchConfig:
        return ArchConfig(self.family, tuple(self.widths), self.kernel, self.batch_norm)


class AssistantSpec(SpaceModel):
    """A teacher assistant (Mirzadeh et al. 2020): a mentor of the mentor's family, kernel and depth
    (so its tap names are the mentor's) but narrower, distilled from the mentor (label loss plus
    `kd_weight` · KD at `temperature`) on first use and saved beside the mentor file. `via`: a chain
    for a large gap, wider assistants distilled in turn (mentor → via[0] → … → this one), each by the
    same recipe from the one before; only the last is kept and taught from."""

    widths: list[int]
    epochs: int = Field(default=40, ge=1, le=MAX_EPOCHS)
    lr: float = Field(default=3e-3, gt=0, le=MAX_LR)
    kd_weight: float = Field(default=0.5, gt=0, le=1e6)
    temperature: float = Field(default=4.0, gt=0, le=1e6)
    via: list[list[int]] = Field(default=[], max_length=8)

    _w = field_validator("widths")(_widths)

    @field_validator("via")
    @classmethod
    def _via(cls, v: list[list[int]]) -> list[list[int]]:
        return [_widths(w) for w in v]

    @model_serializer(mode="wrap")
    def _without_empty_via(self, handler):
        # left out while empty: the space's hash and the assistant file's key stay what they were before it
        out = handler(self)
        return {k: v for k, v in out.items() if not (k == "via" and not v)}


class MentorSpec(SpaceModel):
    """`path` is loaded if it exists; otherwise a mentor of `arch` is trained and saved there.

    The versions a mentee may learn from (`teacher`): `final` (the trained mentor), `epochN` for
    each of `checkpoints` (the mentor's weights at the end of epoch N of its training: Cho &
    Hariharan 2019, early-stopped teachers teach small students better) and `assistant` if the
    space defines one (a mid-sized network between mentor and mentee: Mirzadeh et al. 2020)."""

    path: str = "mentors/mentor.pt"
    arch: MentorArch = MentorArch()
    epochs: int = Field(default=60, ge=1, le=MAX_EPOCHS)
    lr: float = Field(default=3e-3, gt=0, le=MAX_LR)
    batch_size: int = Field(default=128, ge=1, le=MAX_BATCH)
    seed: int = Field(default=0, ge=0, lt=2**32)  # numpy and mnist1d take 32-bit unsigned seeds
    factory: str | None = None  # package.module:function for your own nn.Module (then `taps` is required)
    taps: list[str] | None = None
    checkpoints: list[int] = []  # epochs whose weights mentor training keeps: versions `epochN`
    assistant: AssistantSpec | None = None
    teacher: Union[str, list[str]] = FINAL  # the version(s) a mentored mentee learns from: a searched choice

    @field_validator("checkpoints")
    @classmethod
    def _checkpoints(cls, v: list[int], info: Any) -> list[int]:
        epochs = info.data.get("epochs")
        for e in v:
            if epochs is not None and not 1 <= e < epochs:
                raise ValueError(f"epoch {e} is outside 1..{epochs - 1} (mentor.epochs is {epochs}; the last "
                                 f"epoch's weights are the version '{FINAL}')")
        return sorted(set(v))

    @field_validator("assistant")
    @classmethod
    def _assistant(cls, v: AssistantSpec | None, info: Any) -> AssistantSpec | None:
        arch = info.data.get("arch")
        if v is not None and arch is not None and len(v.widths) != len(arch.widths):
            raise ValueError(f"widths: expected {len(arch.widths)} widths, one per layer of mentor.arch (so "
                             f"the assistant's taps are the mentor's), got {len(v.widths)}")
        return v

    @field_validator("teacher")
    @classmethod
    def _teacher(cls, v: Union[str, list[str]], info: Any) -> Union[str, list[str]]:
        if isinstance(v, list) and not v:
            raise ValueError(f"empty list of choices; give at least one (e.g. [{FINAL}])")
        if "checkpoints" not in info.data or "assistant" not in info.data:
            return v  # a bad checkpoints or assistant key is reported on its own
        known = cls.versions(info.data["checkpoints"], info.data["assistant"])
        for name in v if isinstance(v, list) else [v]:
            if name not in known:
                raise ValueError(f"'{name}' is not a mentor version this space defines; expected one of "
                                 f"{', '.join(known)} (epochN needs N in mentor.checkpoints, assistant needs "
                                 "mentor.assistant)")
        return v

    @model_validator(mode="after")
    def _trained_here(self) -> "MentorSpec":
        if self.factory and (self.checkpoints or self.assistant):
            raise ValueError("checkpoints and assistant need a mentor trained from mentor.arch, not a "
                             "mentor.factory")
        return self

    @staticmethod
    def versions(checkpoints: list[int], assistant: AssistantSpec | None) -> list[str]:
        return [FINAL, *map(checkpoint_name, checkpoints), *([ASSISTANT] if assistant else [])]

    def teachers(self) -> list[str]:
        """The versions mentored mentees may learn from (each a choice of `teacher`)."""
        return list(self.teacher) if isinstance(self.teacher, list) else [self.teacher]
