"""Device profiles: what a target device can hold, read from YAML, checked against a row of costs.

    devices = load_devices()                     # spaces/devices.yaml, plus a user's --devices FILE if given
    dev = get_device("stm32f746", devices)       # unknown name → UserError naming the closest one
    dev.fits(row)                                # row: a mapping (or pandas row) of cost axes, see AXES
    for miss in dev.check(row):                  # which budget fails and by how much, e.g.
        print(miss)  # sram_int8: 300 KB + 32 KiB overhead = 332.8 KB > 320 KiB (over by 5.088 KB)

A profile file maps device names to budgets; every budget is optional::

    stm32f746:
      description: STM32F746 (Cortex-M7, 216 MHz)
      source: ST DS10916 datasheet
      params: 500k                                          # a count: k, M, G
      macs: 60M
      flash: {limit: 1MiB, precision: int8, overhead: 64KiB}  # weights at int8 + runtime ≤ 1 MiB
      sram: {limit: 320KiB, precision: int8, overhead: 32KiB} # peak activation arena + runtime ≤ 320 KiB
      latency: {limit: 200ms, scale: 300}                   # latency measured here × 300 ≤ 200 ms
      train: {limit: 256KiB, batch_size: 8, optimizer: sgd} # training it there (measure.training_memory)

Sizes take B, KB, KiB, MB, MiB, GB, GiB (KB = 1000 B, KiB = 1024 B; a bare number is bytes), counts
k, M, G, latency ms, s or us (a bare number is ms). `flash: 1MB` is short for `{limit: 1MB}` (int8, no
overhead). A user's file adds devices or replaces shipped ones whole, by name.

Each budget reads one cost column (AXES; the same names as MLflow metrics and dashboard axes) and
fits when `value × scale + overhead ≤ limit`. A `train` budget reads the column of its batch size and
optimiser (`TrainSpec.axis`, e.g. train_bytes.b8.sgd), which results.costs.with_training_memory fills.
`Budget.max_cost` is the largest column value that fits: where the dashboard draws the device's line.

Latency on the device: a profile scales the latency measured on the picking machine
(`measure.latency_ms_ort`, 1 thread) by `scale`. A lookup table measured on the device would plug in
as another way to get the device value: `latency: {limit: 50ms, table: board_ms.csv}` mapping each
arch_key to its measured ms; `Budget.device_value` would read the row's arch_key there instead of
multiplying (rows absent from the table are "not measured"), and the dashboard, having no single
line to draw, would list the fitting runs instead. Not implemented yet: the key is refused today.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.errors import UserError
from search.safe_yaml import read_yaml

__all__ = ["AXES", "Budget", "BudgetMiss", "DeviceProfile", "load_devices", "get_device", "format_cost", "format_bytes",
           "SHIPPED_DEVICES", "OPTIMIZERS", "TrainSpec", "TRAIN_AXIS"]

SHIPPED_DEVICES = Path(__file__).resolve().parent.parent / "spaces" / "devices.yaml"

# Cost axes: column name → (what it is, unit kind). The names are the MLflow metric names, the
# runs frame's columns and the dashboard's axes; measure.architecture_cost computes all but latency.
AXES: dict[str, tuple[str, str]] = {
    "params": ("parameters", "count"),
    "bytes_int8": ("flash: weights at int8", "bytes"),
    "bytes_fp32": ("flash: weights at fp32", "bytes"),
    "sram_int8": ("SRAM: peak activations at int8", "bytes"),
    "sram_fp32": ("SRAM: peak activations at fp32", "bytes"),
    "macs": ("MACs per sample", "count"),
    "latency_ms": ("latency here, 1-thread ONNX Runtime", "ms"),
}

_UNITS: dict[str, dict[str, float]] = {
    "bytes": {"": 1, "b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30},
    "count": {"": 1, "k": 10**3, "m": 10**6, "g": 10**9},
    "ms": {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 1e-3},
}
_EXAMPLE = {"bytes": "a size such as 320KiB or 1MB (units B, KB, KiB, MB, MiB, GB, GiB)",
            "count": "a count such as 500k or 2M (units k, M, G)",
            "ms": "a time such as 20ms or 0.5s (units ms, s, us)"}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_PRECISIONS = ("int8", "fp32")
_PROFILE_KEYS = ("description", "source", "params", "macs", "flash", "sram", "latency", "train")
_FIELDS = {"params": ("limit",), "macs": ("limit",), "flash": ("limit", "precision", "overhead"),
           "sram": ("limit", "precision", "overhead"), "latency": ("limit", "scale"),
           "train": ("limit", "batch_size", "optimizer")}
# measure.training_memory's optimisers (state tensors per parameter); tests/test_devices checks they agree
OPTIMIZERS = ("sgd", "sgd_momentum", "rmsprop", "adagrad", "adam", "adamw")
TRAIN_AXIS = "train_bytes"
MAX_DEVICE_FILE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Budget:
    """One limit of a device on one cost column: fits when value × scale + overhead ≤ limit."""

    axis: str  # the cost column it reads (a key of AXES)
    limit: float  # on the device, in the axis unit (count, bytes or ms)
    overhead: float = 0.0  # what the runtime takes from the same memory (bytes)
    scale: float = 1.0  # device value per measured value (latency: device ms / ms here)

    @property
    def max_cost(self) -> float:
        """The largest column value that fits (the dashboard's budget line)."""
        return (self.limit - self.overhead) / self.scale

    def device_value(self, value: float) -> float:
        return value * self.scale + self.overhead


@dataclass(frozen=True)
class BudgetMiss:
    """A budget a row does not meet; value None means the row lacks that cost (not measured)."""

    budget: Budget
    value: float | None
    over: float | None  # device value − limit, in the axis unit; None if not measured

    def __str__(self) -> str:
        b = self.budget
        if self.value is None or self.over is None:
            return f"{b.axis}: not measured (the budget is {format_cost(b.axis, b.limit)})"
        parts = format_cost(b.axis, self.value)
        if b.scale != 1:
            parts += f" × {b.scale:g}"
        if b.overhead:
            parts += f" + {format_cost(b.axis, b.overhead)} overhead"
        if b.scale != 1 or b.overhead:
            parts += f" = {format_cost(b.axis, b.device_value(self.value))}"
        return f"{b.axis}: {parts} > {format_cost(b.axis, b.limit)} (over by {format_cost(b.axis, self.over)})"


@dataclass(frozen=True)
class TrainSpec:
    """Training on the device: memory to train a mentee at `batch_size` with `optimizer` (weights, gradients,
    optimiser state, saved activations: measure.training_memory) ≤ `limit`. Its budget reads the column
    `axis` (train_bytes.b<batch>.<optimizer>), which results.fronts.with_training_memory computes."""

    limit: float
    batch_size: int
    optimizer: str

    @property
    def axis(self) -> str:
        return f"{TRAIN_AXIS}.b{self.batch_size}.{self.optimizer}"


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str = ""
    source: str = ""
    budgets: tuple[Budget, ...] = ()
    train: TrainSpec | None = None  # its budget is among `budgets` too (axis TrainSpec.axis)

    def budget(self, axis: str) -> Budget | None:
        return next((b for b in self.budgets if b.axis == axis), None)

    def check(self, row: Mapping[str, Any]) -> list[BudgetMiss]:
        """Every budget the row misses (empty: it fits). A missing or NaN cost never fits."""
        misses = []
        for b in self.budgets:
            v = row.get(b.axis)
            v = None if v is None or _is_nan(v) else float(v)
            if v is None:
                misses.append(BudgetMiss(b, None, None))
            elif b.device_value(v) > b.limit:
                misses.append(BudgetMiss(b, v, b.device_value(v) - b.limit))
        return misses

    def fits(self, row: Mapping[str, Any]) -> bool:
        return not self.check(row)


def _is_nan(v: Any) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return False


def format_bytes(v: float) -> str:
    """A size for people, binary units throughout (1 KiB = 1024 B): 812 B, 9.281 KiB, 1 MiB."""
    scaled = next(((v / f, s) for f, s in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")) if abs(v) >= f), None)
    if scaled is None:
        return f"{v:.4g} B"
    return f"{scaled[0]:.4g} {scaled[1]}"


def format_cost(axis: str, v: float) -> str:
    """A cost in its unit for people: 327.7 KiB, 1.5M, 0.42 ms. Sizes in binary units (KiB, MiB) as
    vendors mean their "320 KB" of SRAM; counts with k, M, G."""
    kind = AXES.get(axis, ("", "bytes" if axis.startswith(TRAIN_AXIS) else "count"))[1]
    if kind == "ms":
        return f"{v:.3g} ms"
    if kind == "bytes":
        return format_bytes(v)
    suffixes = [(1e9, "G"), (1e6, "M"), (1e3, "k")]
    scaled = next(((v / f, s) for f, s in suffixes if abs(v) >= f), (v, ""))
    return f"{scaled[0]:.4g}{scaled[1]}"


# ---- reading profile files -------------------------------------------------------------------------------

def _got(v: Any) -> str:
    # Never repr a container: an alias bomb would expand here; the type is enough to see the mistake.
    return f"a {type(v).__name__}" if isinstance(v, (list, dict)) else repr(v)


def _quantity(path: Path, key: str, v: Any, kind: str) -> float:
    bad = f"{path}: key '{key}': expected {_EXAMPLE[kind]}"
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise UserError(f"{bad}, got {_got(v)}")
    if isinstance(v, str):
        m = _NUMBER.match(v)
        if v.strip().startswith("-"):
            raise UserError(f"{path}: key '{key}': a budget must be ≥ 0, got {v!r}")
        if not m:
            raise UserError(f"{bad}, got {v!r}")
        unit = m.group(2).lower()
        if unit not in _UNITS[kind]:
            raise UserError(f"{path}: key '{key}': unknown unit '{m.group(2)}'; expected {_EXAMPLE[kind]}")
        n = float(m.group(1)) * _UNITS[kind][unit]
    else:
        n = float(v) * _UNITS[kind][""]
    if math.isnan(n) or math.isinf(n):
        raise UserError(f"{path}: key '{key}': expected a finite number, got {v!r}")
    if n < 0:
        raise UserError(f"{path}: key '{key}': a budget must be ≥ 0, got {v!r}")
    return n


def _budget(path: Path, name: str, key: str, spec: Any) -> Budget:
    where = f"{name}.{key}"
    if not isinstance(spec, dict):
        spec = {"limit": spec}
    for k in spec:
        if k not in _FIELDS[key]:
            raise UserError(f"{path}: key '{where}.{k}': unknown key; expected one of {', '.join(_FIELDS[key])}")
    if "limit" not in spec:
        raise UserError(f"{path}: key '{where}': missing 'limit'")
    if key in ("params", "macs"):
        return Budget(key, _quantity(path, f"{where}.limit", spec["limit"], "count"))
    if key == "train":
        return _train(path, where, spec)[1]
    if key == "latency":
        limit = _quantity(path, f"{where}.limit", spec["limit"], "ms")
        scale = spec.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise UserError(f"{path}: key '{where}.scale': expected a number > 0 (device ms per ms measured "
                            f"here), got {_got(scale)}")
        return Budget("latency_ms", limit, scale=float(scale))
    precision = spec.get("precision", "int8")
    if precision not in _PRECISIONS:
        raise UserError(f"{path}: key '{where}.precision': expected int8 or fp32, got {_got(precision)}")
    limit = _quantity(path, f"{where}.limit", spec["limit"], "bytes")
    overhead = _quantity(path, f"{where}.overhead", spec.get("overhead", 0), "bytes")
    if overhead >= limit > 0:
        raise UserError(f"{path}: key '{where}.overhead': {format_cost('bytes_int8', overhead)} leaves nothing "
                        f"of the {format_cost('bytes_int8', limit)} limit; expected less than the limit")
    axis = ("bytes_" if key == "flash" else "sram_") + precision
    return Budget(axis, limit, overhead=overhead)


def _profile(path: Path, name: Any, spec: Any) -> DeviceProfile:
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(f"{path}: device name {_got(name)}: expected lower-case letters, digits, '-', '_' or '.'")
    if not isinstance(spec, dict):
        raise UserError(f"{path}: key '{name}': expected a mapping of budgets (flash, sram, params, macs, "
                        f"latency), got {_got(spec)}")
    for k in spec:
        if k not in _PROFILE_KEYS:
            near = difflib.get_close_matches(str(k), _PROFILE_KEYS, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise UserError(f"{path}: key '{name}.{k}': unknown key{hint}; expected one of {', '.join(_PROFILE_KEYS)}")
    for k in ("description", "source"):
        if not isinstance(spec.get(k, ""), str):
            raise UserError(f"{path}: key '{name}.{k}': expected text, got {_got(spec[k])}")
    budgets = tuple(_budget(path, name, k, spec[k]) for k in _FIELDS if k in spec)
    train = _train(path, f"{name}.train", spec["train"])[0] if "train" in spec else None
    return DeviceProfile(name, spec.get("description", ""), spec.get("source", ""), budgets, train)


def _train(path: Path, where: str, spec: dict) -> tuple[TrainSpec, Budget]:
    limit = _quantity(path, f"{where}.limit", spec["limit"], "bytes")
    batch = spec.get("batch_size", 32)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserError(f"{path}: key '{where}.batch_size': expected an integer ≥ 1, got {_got(batch)}")
    opt = spec.get("optimizer", "sgd")
    if opt not in OPTIMIZERS:
        raise UserError(f"{path}: key '{where}.optimizer': expected one of {', '.join(OPTIMIZERS)}, got {_got(opt)}")
    t = TrainSpec(limit, batch, opt)
    return t, Budget(t.axis, limit)


def _read(path: Path) -> dict[str, DeviceProfile]:
    if not path.is_file():
        raise UserError(f"{path}: device file not found" if not path.exists() else f"{path}: not a file")
    if path.stat().st_size > MAX_DEVICE_FILE_BYTES:
        raise UserError(f"{path}: {path.stat().st_size:,} bytes; a device file is at most "
                        f"{MAX_DEVICE_FILE_BYTES:,} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); expected a YAML device file") from None
    data = read_yaml(path, text, like="a device file like spaces/devices.yaml")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of device names to profiles, got "
                        f"{'an empty file' if data is None else _got(data)}")
    return {name: _profile(path, name, spec) for name, spec in data.items()}


def load_devices(extra: str | Path | None = None) -> dict[str, DeviceProfile]:
    """The shipped profiles, then `extra`'s (a user's --devices FILE), which add or replace by name."""
    devices = _read(SHIPPED_DEVICES)
    if extra is not None:
        devices.update(_read(Path(extra)))
    return devices


def get_device(name: str, devices: Mapping[str, DeviceProfile]) -> DeviceProfile:
    if name in devices:
        return devices[name]
    near = difflib.get_close_matches(name.lower(), list(devices), n=1)
    hint = f"did you mean '{near[0]}'?" if near else f"expected one of {', '.join(sorted(devices))}"
    raise UserError(f"unknown device '{name}'; {hint}")
