"""The value types of a search space: the strict base model every section is, and searched
values (fixed, a list of choices, or a `Range`) with their bounds. Shared by `search.spaces`,
`search.mentor_spec` and the loss terms' sections (`search.terms`)."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

__all__ = ["SpaceModel", "Range", "Num", "Int", "PositiveNum", "NonNegativeNum", "PositiveInt", "nonempty", "within",
           "MAX_VALUE"]


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


# The largest value any searched number may take unless its field says less: far above any real weight,
# temperature or size, far below where a float overflows (1e308) or a range of integers never ends.
MAX_VALUE = 1e6


def within(low: float, high: float = MAX_VALUE, *, strict: bool = False) -> AfterValidator:
    """Every value a searched number can take (fixed, each choice, both ends of a range) is in
    [low, high] ((low, high] if strict): a negative learning rate, a zero batch size or 1e308 would
    only fail mid-sweep, or overflow."""
    def check(v: Any) -> Any:
        values = [v.low, v.high] if isinstance(v, Range) else v if isinstance(v, list) else [v]
        bad = [x for x in values if x < low or (strict and x == low) or x > high]
        if bad:
            raise ValueError(f"expected {'>' if strict else '≥'} {low:g} and ≤ {_text(high)}, got {bad[0]:g}")
        return v
    return AfterValidator(check)


def _text(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:g}"  # 1,000,000 rather than 1e+06


PositiveNum = Annotated[Num, within(0, strict=True)]  # learning rate, temperature, growth
NonNegativeNum = Annotated[Num, within(0)]  # weight decay, loss weights (0 = term off)
PositiveInt = Annotated[Int, within(1)]  # depth, width, kernel, batch size


def nonempty(v: Any) -> Any:
    if isinstance(v, list) and not v:
        raise ValueError("empty list of choices; give at least one value")
    return v
