"""The dataset registry, `load_dataset` and the split rule (see `search.data` for the usage)."""

from __future__ import annotations

import difflib
import os
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from search.errors import UserError

__all__ = ["Splits", "Request", "Raw", "dataset_names", "load_dataset", "register_dataset", "need_root",
           "read_bytes", "MAX_FILE_BYTES"]


@dataclass
class Splits:
    """Train/val/test tensors of one dataset, plus what a model needs to know about its inputs."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]  # per sample, with the channel dim for images/sequences

    def to(self, device) -> Splits:
        moved = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_val", "y_val",
                                                           "x_test", "y_test")}
        return replace(self, **moved)

    def summary(self) -> str:
        return (f"{self.name}: train {len(self.y_train)}, val {len(self.y_val)}, test {len(self.y_test)}, "
                f"input {tuple(self.input_shape)}, {self.num_classes} classes")


@dataclass(frozen=True)
class Request:
    """What a loader may use. `arg` is the text after ':' (only for names registered as 'prefix:')."""

    name: str
    arg: str
    root: Path | None
    n_samples: int | None
    seed: int


@dataclass
class Raw:
    """A loader's result. Without an official test set, (x, y) is all of the data and gets split three
    ways; with one, (x, y) is the official train part and only val is carved from it."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    norm_axes: tuple[int, ...] | None = None  # standardise over these axes with train statistics


_REGISTRY: dict[str, Callable[[Request], Raw]] = {}
MAX_SAMPLES = 100_000_000  # n_samples beyond it is a typo: no dataset here comes near


def register_dataset(name: str) -> Callable:
    """Register `fn(req: Request) -> Raw` under `name`; a name ending in ':' takes an argument."""

    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"dataset '{name}' is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def dataset_names() -> list[str]:
    """Registered names, sorted; 'libsvm:' means 'libsvm:<path>'."""
    return sorted(_REGISTRY)


def load_dataset(name: str, *, root: str | Path | None = None, n_samples: int | None = None,
                 seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> Splits:
    """Load `name` and split it with `seed`: same seed, same splits. Everything stays on the CPU.

    Without an official test set: a seeded permutation, test = first `test_fraction`, val = next
    `val_fraction`, train = the rest. With one (mnist, fashion-mnist, cifar10) `test_fraction` is unused
    and val = `val_fraction` of the official train part. `n_samples` subsamples (seeded) the data that
    gets split, i.e. the train part where there is an official test set; for mnist1d it is the number
    of samples generated.
    """
    _check_options(n_samples, seed, val_fraction, test_fraction)
    prefix, colon, arg = name.partition(":")
    key = prefix + colon
    if key not in _REGISTRY and key + ":" in _REGISTRY:
        raise UserError(f"dataset '{name}': expected '{key}:<path>'")
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, _REGISTRY, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"unknown dataset '{name}': {hint}expected one of {', '.join(dataset_names())}")
    if colon and not arg:
        raise UserError(f"dataset '{name}': expected '{key}<path>', got nothing after ':'")
    req = Request(name, arg, Path(root).expanduser() if root is not None else None, n_samples, seed)
    raw = _REGISTRY[key](req)
    return _split(name, raw, n_samples, seed, val_fraction, 0.0 if raw.x_test is not None else test_fraction)


def _check_options(n_samples, seed, val_fraction, test_fraction) -> None:
    if n_samples is not None and not (_is_int(n_samples) and 1 <= n_samples <= MAX_SAMPLES):
        raise UserError(f"option n_samples: expected an integer in 1..{MAX_SAMPLES:,} or None, got {n_samples!r}")
    # RandomState and mnist1d's np.random.seed both need a 32-bit unsigned seed.
    if not (_is_int(seed) and 0 <= seed < 2**32):
        raise UserError(f"option seed: expected an integer in [0, 2**32), got {seed!r}")
    for opt, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise UserError(f"option {opt}: expected a number in [0, 1), got {f!r}")
    if val_fraction + test_fraction >= 1:
        raise UserError(f"options val_fraction + test_fraction = {val_fraction + test_fraction:g}: "
                        "expected < 1 so that something is left to train on")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _split(name: str, raw: Raw, n_samples: int | None, seed: int, val_fraction: float,
           test_fraction: float) -> Splits:
    # RandomState, not default_rng: numpy promises its stream never changes, so splits stay the same
    # across numpy versions (and runs recorded earlier stay comparable).
    perm = np.random.RandomState(seed).permutation(len(raw.y))[:n_samples]
    n = len(perm)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n - n_test - n_val < 1:
        raise UserError(f"dataset '{name}': {n} samples leave none to train on with val_fraction="
                        f"{val_fraction:g} and test_fraction={test_fraction:g}; expected more samples")
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    x, y = raw.x, raw.y
    x_test, y_test = (x[test], y[test]) if raw.x_test is None else (raw.x_test, raw.y_test)
    # Fancy indexing copies, so in-place standardisation never touches the loader's (cached) arrays.
    parts = [x[train].astype(np.float32, copy=False), x[val].astype(np.float32, copy=False),
             np.array(x_test, dtype=np.float32)]  # the official test arrays are the loader's: copy
    if raw.norm_axes is not None:
        mean = parts[0].mean(axis=raw.norm_axes, keepdims=True, dtype=np.float64).astype(np.float32)
        std = parts[0].std(axis=raw.norm_axes, keepdims=True)
        std[std == 0] = 1  # a constant feature carries no information; keep it finite (zero)
        for p in parts:
            p -= mean
            p /= std
    xs = [torch.from_numpy(np.ascontiguousarray(p)) for p in parts]
    ys = [torch.from_numpy(np.asarray(v, dtype=np.int64)) for v in (y[train], y[val], y_test)]
    return Splits(name, xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], raw.num_classes, tuple(xs[0].shape[1:]))



# --- helpers for loaders --------------------------------------------------------------------------

def need_root(req: Request, expected: str) -> Path:
    if req.root is None:
        raise UserError(f"dataset '{req.name}': option root is not set; expected {expected}")
    if not req.root.is_dir():
        raise UserError(f"{req.root}: not a directory (root of dataset '{req.name}'); expected {expected}")
    return req.root


# The largest data file read (its bytes, or what a .gz unpacks to): every dataset this reads is far
# smaller (CIFAR-10's batches are 30 MiB each, MNIST's images 47 MiB); a bigger file is a wrong file,
# and reading it whole would be the out-of-memory the check is there to prevent.
MAX_FILE_BYTES = 2 << 30  # 2 GiB


def read_bytes(path: Path, what: str, *, limit: int | None = None) -> bytes:
    """The file's bytes, gunzipped if it ends in .gz; every I/O or gzip failure becomes a UserError.
    Only a regular file is read (a FIFO or a device would read forever), and only up to `limit`
    (MAX_FILE_BYTES) bytes, packed or unpacked, checked before anything that size is allocated."""
    limit = MAX_FILE_BYTES if limit is None else limit
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise wait here forever
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file ({what})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e}); expected a readable {what}") from None
    mode, size = os.fstat(fd).st_mode, os.fstat(fd).st_size
    if not stat.S_ISREG(mode) or size > limit:
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise UserError(f"{path}: is a directory; expected a {what}")
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
            raise UserError(f"{path}: {kind}; expected a {what}, a regular file")
        raise UserError(f"{path}: {size:,} bytes; expected a {what} of at most {limit:,} bytes")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise UserError(f"{path}: cannot read ({e.strerror or e}); expected a readable {what}") from None
    if len(data) > limit:  # it grew while we read it
        raise UserError(f"{path}: more than {limit:,} bytes; expected a {what} of at most {limit:,} bytes")
    if path.suffix == ".gz":
        data = _gunzip(path, data, what, limit)
    return data


def _gunzip(path: Path, data: bytes, what: str, limit: int) -> bytes:
    """gzip.decompress with a bound on what comes out: a few MiB of zeros can unpack to many GiB."""
    out: list[bytes] = []
    total = 0
    try:
        while data:
            d = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer
            chunk = d.decompress(data, limit + 1 - total)
            total += len(chunk)
            if total > limit or d.unconsumed_tail:
                raise UserError(f"{path}: unpacks to more than {limit:,} bytes; expected a {what} of at most "
                                f"{limit:,} bytes")
            if not d.eof:
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
            out.append(chunk)
            data = d.unused_data  # a .gz may hold several members, one after another
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: corrupt gzip ({e}); expected a gzip-compressed {what}") from None
    return b"".join(out)
