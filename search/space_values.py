"""The value types of a search space: the strict base model every section is, and searched
values (fixed, a list of choices, or a `Range`) with their bounds. Shared by `search.spaces`,
`search.mentor_spec` and the loss terms' sections (`search.terms`)."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

__all__ = ["SpaceModel", "Range", "Num", "Int", "PositiveNum", "NonNegativeNum", "PositiveInt", "nonempty"]


class SpaceModel(BaseModel):
    # allow_inf_nan=False: `.nan` or `1e999` (inf) in a space is a typo, never a learning rate or a budget.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Range(SpaceModel):
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


def _at_least(bound: float, *, strict: bool = False) -> AfterValidator:
    """Every value a searched number can take (fixed, each choice, both ends of a range) is ≥ bound
    (> bound if strict): a negative learning rate or a zero batch size would only fail mid-sweep."""
    def check(v: Any) -> Any:
        values = [v.low, v.high] if isinstance(v, Range) else v if isinstance(v, list) else [v]
        bad = [x for x in values if x < bound or (strict and x == bound)]
        if bad:
            raise ValueError(f"expected {'>' if strict else '≥'} {bound:g}, got {bad[0]:g}")
        return v
    return AfterValidator(check)


PositiveNum = Annotated[Num, _at_least(0, strict=True)]  # learning rate, temperature, growth
NonNegativeNum = Annotated[Num, _at_least(0)]  # weight decay, loss weights (0 = term off)
PositiveInt = Annotated[Int, _at_least(1)]  # depth, width, kernel, batch size


def nonempty(v: Any) -> Any:
    if isinstance(v, list) and not v:
        raise ValueError("empty list of choices; give at least one value")
    return v
