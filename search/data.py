"""Datasets by name: a small timm-style registry that turns a name into train/val/test tensors.

Usage::

    from search.data import load_dataset, dataset_names

    splits = load_dataset("mnist1d", n_samples=2000, seed=0)     # generated offline, no files
    splits = load_dataset("mnist", root="data/mnist")             # local IDX files (raw or .gz)
    splits = load_dataset("libsvm:data/iris.scale", seed=1)       # any libsvm text file
    print(splits.summary())
    splits = splits.to("cuda")                                    # the trainer moves it once

    @register_dataset("my-data")
    def _my_data(req: _Request) -> _Raw:
        return _Raw(x, y, num_classes=3)                          # numpy arrays; splitting is done here

Names: ``mnist1d`` (default), ``digits``, ``iris``, ``libsvm:<path>``, ``mnist``, ``fashion-mnist``,
``cifar10``. Every loader returns numpy arrays; `load_dataset` does the seeded split, the optional
standardisation (with train-split statistics only, so nothing leaks from val/test) and the conversion
to CPU tensors: x float32, y int64 in 0..C-1. Loading never writes a file and never downloads.
Anything wrong with the user's input raises `UserError` with one line naming the file or option.
"""

from __future__ import annotations

import difflib
import gzip
import io
import math
import pickle
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from search.errors import UserError

__all__ = ["Splits", "dataset_names", "load_dataset", "register_dataset"]


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
class _Request:
    """What a loader may use. `arg` is the text after ':' (only for names registered as 'prefix:')."""

    name: str
    arg: str
    root: Path | None
    n_samples: int | None
    seed: int


@dataclass
class _Raw:
    """A loader's result. Without an official test set, (x, y) is all of the data and gets split three
    ways; with one, (x, y) is the official train part and only val is carved from it."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    norm_axes: tuple[int, ...] | None = None  # standardise over these axes with train statistics


_REGISTRY: dict[str, Callable[[_Request], _Raw]] = {}


def register_dataset(name: str) -> Callable:
    """Register `fn(req: _Request) -> _Raw` under `name`; a name ending in ':' takes an argument."""

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
    req = _Request(name, arg, Path(root).expanduser() if root is not None else None, n_samples, seed)
    raw = _REGISTRY[key](req)
    return _split(name, raw, n_samples, seed, val_fraction, 0.0 if raw.x_test is not None else test_fraction)


def _check_options(n_samples, seed, val_fraction, test_fraction) -> None:
    if n_samples is not None and not (_is_int(n_samples) and n_samples >= 1):
        raise UserError(f"option n_samples: expected an integer ≥ 1 or None, got {n_samples!r}")
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


def _split(name: str, raw: _Raw, n_samples: int | None, seed: int, val_fraction: float,
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


# --- embedded datasets --------------------------------------------------------------------------

_MNIST1D_CACHE: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


@register_dataset("mnist1d")
def _mnist1d(req: _Request) -> _Raw:
    # make_dataset makes num_samples // 10 per class: round up, and the split subsamples to exactly n.
    n = -(-(req.n_samples or 5000) // 10) * 10
    if (n, req.seed) not in _MNIST1D_CACHE:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples, args.seed = n, req.seed
        # make_dataset reseeds the global numpy and python RNGs; put them back so loading is side-effect
        # free (a caller's seeded experiment must not change because it loaded data). We never call
        # get_dataset: it would download, and write a pickle to the cwd.
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            d = make_dataset(args)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)[:, None, :]
        _MNIST1D_CACHE[n, req.seed] = x, np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    x, y = _MNIST1D_CACHE[n, req.seed]
    return _Raw(x, y, num_classes=10)


@register_dataset("digits")
def _digits(req: _Request) -> _Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    return _Raw((d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64), num_classes=10)


@register_dataset("iris")
def _iris(req: _Request) -> _Raw:
    from sklearn.datasets import load_iris

    d = load_iris()
    return _Raw(d.data.astype(np.float32), d.target.astype(np.int64), num_classes=3, norm_axes=(0,))


# --- libsvm text ----------------------------------------------------------------------------------

@register_dataset("libsvm:")
def _libsvm(req: _Request) -> _Raw:
    path = req.root / req.arg if req.root is not None else Path(req.arg)
    # errors="replace": only numbers matter; stray bytes then fail below with a file:line message.
    text = _read_bytes(path, f"dataset '{req.name}'").decode("utf-8", errors="replace")
    labels, rows = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        try:
            label, row = float(tokens[0]), {}
            for tok in tokens[1:]:
                idx, val = tok.split(":")
                row[int(idx)] = float(val)
        except ValueError:
            raise UserError(f"{path}:{lineno}: cannot parse {line.strip()[:60]!r}: expected "
                            "'label index:value ...' with numbers and integer indices") from None
        bad = [i for i in row if i < 1]
        if bad or not all(map(math.isfinite, [label, *row.values()])):
            what = f"index {bad[0]} (indices start at 1)" if bad else "a non-finite number"
            raise UserError(f"{path}:{lineno}: {what}; expected finite numbers and indices ≥ 1")
        labels.append(label)
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no data lines; expected libsvm lines 'label index:value ...'")
    n_features = max((max(r) for r in rows if r), default=0)
    if n_features == 0:
        raise UserError(f"{path}: no features on any line; expected 'label index:value ...'")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise UserError(f"{path}: every line has label {labels[0]:g}; expected at least 2 classes")
    x = np.zeros((len(rows), n_features), np.float32)
    for i, r in enumerate(rows):
        x[i, [k - 1 for k in r]] = list(r.values())
    # Labels may be -1/+1, 1..3, 0..2, ...: map the sorted distinct values onto 0..C-1.
    y = np.searchsorted(np.array(classes), np.array(labels)).astype(np.int64)
    return _Raw(x, y, num_classes=len(classes), norm_axes=(0,))


# --- MNIST-style IDX files ------------------------------------------------------------------------

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801  # ubyte data (0x08), 3 or 1 big-endian dims


def _idx(req: _Request) -> _Raw:
    root = _need_root(req, "a directory with the IDX files " + ", ".join(f"{f}[.gz]" for f in _IDX_FILES))
    files = []
    for base in _IDX_FILES:
        found = [p for p in (root / base, root / f"{base}.gz") if p.is_file()]
        if not found:
            raise UserError(f"{root / base}: missing (nor {base}.gz) for dataset '{req.name}'; expected "
                            f"all of {', '.join(_IDX_FILES)} (raw or .gz)")
        files.append(found[0])
    x, y = _idx_pair(files[0], files[1])
    x_test, y_test = _idx_pair(files[2], files[3])
    if x.shape[1:] != x_test.shape[1:]:
        raise UserError(f"{files[2]}: images are {x_test.shape[2:]}, but {files[0].name} has "
                        f"{x.shape[2:]}; expected the same size")
    return _Raw(x, y, num_classes=10, x_test=x_test, y_test=y_test)


register_dataset("mnist")(_idx)
register_dataset("fashion-mnist")(_idx)


def _idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(images_path, _IDX_IMAGES)
    labels = _read_idx(labels_path, _IDX_LABELS)
    if len(labels) != len(images):
        raise UserError(f"{labels_path}: {len(labels)} labels, but {images_path.name} has {len(images)} "
                        "images; expected one label per image")
    if labels.size and labels.max() > 9:
        raise UserError(f"{labels_path}: label {labels.max()}; expected labels 0..9")
    # Scale to [0, 1] and add the channel dim; height/width come from the header, not assumed 28.
    return (images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    data = _read_bytes(path, "IDX file")
    kind = "images" if magic == _IDX_IMAGES else "labels"
    ndim = magic & 0xFF
    if len(data) < 4 + 4 * ndim:
        raise UserError(f"{path}: truncated: {len(data)} bytes, shorter than an IDX {kind} header")
    found, *dims = struct.unpack(f">{1 + ndim}I", data[:4 + 4 * ndim])
    if found != magic:
        raise UserError(f"{path}: magic number 0x{found:08x}; expected 0x{magic:08x} (IDX {kind})")
    size = math.prod(dims)
    if len(data) - 4 - 4 * ndim < size:
        raise UserError(f"{path}: truncated: header says {'x'.join(map(str, dims))} = {size} bytes of "
                        f"{kind}, the file has {len(data) - 4 - 4 * ndim}")
    return np.frombuffer(data, np.uint8, count=size, offset=4 + 4 * ndim).reshape(dims)


# --- CIFAR-10 python pickles ----------------------------------------------------------------------

@register_dataset("cifar10")
def _cifar10(req: _Request) -> _Raw:
    root = _need_root(req, "the directory cifar-10-batches-py (data_batch_1..5, test_batch)")
    batches = [root / f"data_batch_{i}" for i in range(1, 6) if (root / f"data_batch_{i}").is_file()]
    if not batches or not (root / "test_batch").is_file():
        missing = root / ("data_batch_1" if not batches else "test_batch")
        raise UserError(f"{missing}: missing for dataset '{req.name}'; expected cifar-10-batches-py "
                        "with at least one data_batch_<1..5> and test_batch")
    train = [_read_cifar_batch(p) for p in batches]
    x_test, y_test = _read_cifar_batch(root / "test_batch")
    x = np.concatenate([b[0] for b in train])
    y = np.concatenate([b[1] for b in train])
    # Per-channel standardisation over (N, H, W), with train statistics.
    return _Raw(x, y, num_classes=10, x_test=x_test, y_test=y_test, norm_axes=(0, 2, 3))


class _CifarUnpickler(pickle.Unpickler):
    """Only the globals a CIFAR batch needs (numpy arrays, bytes): a pickle from elsewhere can run any
    code on load, and 'load a dataset' must not mean that."""

    def find_class(self, module, name):
        numpy_array = module.split(".")[0] == "numpy" and name in {"_reconstruct", "ndarray", "dtype",
                                                                    "_frombuffer", "scalar"}
        if numpy_array or (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = _read_bytes(path, "CIFAR-10 batch")
    try:
        d = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # a corrupt pickle can raise nearly anything (EOFError, KeyError, ...)
        raise UserError(f"{path}: not a readable pickle ({type(e).__name__}: {e}); expected a "
                        "CIFAR-10 python batch") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise UserError(f"{path}: expected a CIFAR-10 batch, a dict with b'data' and b'labels', got "
                        f"{type(d).__name__}{' with keys ' + str(sorted(d)) if isinstance(d, dict) else ''}")
    data = d[b"data"]
    try:
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        labels = np.zeros((0, 0), dtype=np.int64)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", type(data).__name__)
        raise UserError(f"{path}: b'data' is {shape}; expected a uint8 array of shape (N, 3072)")
    if labels.shape != (len(data),) or (labels.size and not 0 <= labels.min() <= labels.max() <= 9):
        raise UserError(f"{path}: b'labels' is not {len(data)} integers in 0..9; expected one per image")
    # Rows are 1024 red, 1024 green, 1024 blue values, each 32x32 row-major: exactly (3, 32, 32).
    return (data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0), labels


# --- shared helpers -------------------------------------------------------------------------------

def _need_root(req: _Request, expected: str) -> Path:
    if req.root is None:
        raise UserError(f"dataset '{req.name}': option root is not set; expected {expected}")
    if not req.root.is_dir():
        raise UserError(f"{req.root}: not a directory (root of dataset '{req.name}'); expected {expected}")
    return req.root


def _read_bytes(path: Path, what: str) -> bytes:
    """The file's bytes, gunzipped if it ends in .gz; every I/O or gzip failure becomes a UserError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file ({what})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e}); expected a readable {what}") from None
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{path}: corrupt gzip ({e}); expected a gzip-compressed {what}") from None
    return data
