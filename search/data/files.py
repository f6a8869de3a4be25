"""Datasets from the user's local files: libsvm text, MNIST-style IDX files, CIFAR-10 python pickles.
Nothing here downloads; every problem with a file is one `UserError` line naming it."""

from __future__ import annotations

import io
import math
import pickle
import struct
from pathlib import Path

import numpy as np

from search.data.registry import Raw, Request, need_root, read_bytes, register_dataset
from search.errors import UserError

__all__: list[str] = []


# --- libsvm text ----------------------------------------------------------------------------------

# Bounds a libsvm file must stay within: it is parsed into Python objects (~100 bytes a value), then
# into one dense float32 matrix (rows x the largest feature index), checked before it is allocated.
MAX_LIBSVM_BYTES = 256 << 20  # 256 MiB of text
MAX_FEATURES = 1_000_000
MAX_DENSE_BYTES = 2 << 30  # 2 GiB

@register_dataset("libsvm:")
def _libsvm(req: Request) -> Raw:
    path = req.root / req.arg if req.root is not None else Path(req.arg)
    # errors="replace": only numbers matter; stray bytes then fail below with a file:line message.
    data = read_bytes(path, f"libsvm file (dataset '{req.name}')", limit=MAX_LIBSVM_BYTES)
    text = data.decode("utf-8", errors="replace")
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
        if row and max(row) > MAX_FEATURES:
            raise UserError(f"{path}:{lineno}: feature index {max(row):,}; expected indices 1..{MAX_FEATURES:,}")
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
    if len(rows) * n_features * 4 > MAX_DENSE_BYTES:  # checked before the dense matrix is allocated
        raise UserError(f"{path}: {len(rows):,} lines x {n_features:,} features = {len(rows) * n_features * 4:,} "
                        f"bytes as dense float32; expected at most {MAX_DENSE_BYTES:,} (fewer lines or features)")
    x = np.zeros((len(rows), n_features), np.float32)
    for i, r in enumerate(rows):
        x[i, [k - 1 for k in r]] = list(r.values())
    # Labels may be -1/+1, 1..3, 0..2, ...: map the sorted distinct values onto 0..C-1.
    y = np.searchsorted(np.array(classes), np.array(labels)).astype(np.int64)
    return Raw(x, y, num_classes=len(classes), norm_axes=(0,))


# --- MNIST-style IDX files ------------------------------------------------------------------------

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801  # ubyte data (0x08), 3 or 1 big-endian dims


def _idx(req: Request) -> Raw:
    root = need_root(req, "a directory with the IDX files " + ", ".join(f"{f}[.gz]" for f in _IDX_FILES))
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
    return Raw(x, y, num_classes=10, x_test=x_test, y_test=y_test)


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
    data = read_bytes(path, "IDX file")
    kind = "images" if magic == _IDX_IMAGES else "labels"
    ndim = magic & 0xFF
    if len(data) < 4 + 4 * ndim:
        raise UserError(f"{path}: truncated: {len(data)} bytes, shorter than an IDX {kind} header")
    found, *dims = struct.unpack(f">{1 + ndim}I", data[:4 + 4 * ndim])
    if found != magic:
        raise UserError(f"{path}: magic number 0x{found:08x}; expected 0x{magic:08x} (IDX {kind})")
    if not all(dims):  # 0 images, or 0x0 pixels: a model cannot be built for it, say so here
        raise UserError(f"{path}: header says {'x'.join(map(str, dims))} {kind}; expected every size ≥ 1")
    size = math.prod(dims)
    if len(data) - 4 - 4 * ndim < size:
        raise UserError(f"{path}: truncated: header says {'x'.join(map(str, dims))} = {size} bytes of "
                        f"{kind}, the file has {len(data) - 4 - 4 * ndim}")
    return np.frombuffer(data, np.uint8, count=size, offset=4 + 4 * ndim).reshape(dims)


# --- CIFAR-10 python pickles ----------------------------------------------------------------------

@register_dataset("cifar10")
def _cifar10(req: Request) -> Raw:
    root = need_root(req, "the directory cifar-10-batches-py (data_batch_1..5, test_batch)")
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
    return Raw(x, y, num_classes=10, x_test=x_test, y_test=y_test, norm_axes=(0, 2, 3))


def _cifar_globals() -> dict[tuple[str, str], object]:
    """The exact (module, name) pairs a CIFAR batch's pickle refers to (numpy arrays, bytes), as numpy 1
    (the official files) and numpy 2 write them, mapped to the objects themselves: nothing is imported
    by name from the file, so no other module's top-level code can run."""
    try:
        from numpy._core import multiarray, numeric  # numpy ≥ 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    import _codecs

    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): _codecs.encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[f"{core}.multiarray", "_reconstruct"] = multiarray._reconstruct
        allowed[f"{core}.multiarray", "scalar"] = multiarray.scalar
        allowed[f"{core}.numeric", "_frombuffer"] = numeric._frombuffer  # type: ignore[attr-defined]
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Only the globals a CIFAR batch needs: a pickle from elsewhere can run any code on load, and
    'load a dataset' must not mean that."""

    allowed = _cifar_globals()

    def find_class(self, module, name):
        found = self.allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return found


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = read_bytes(path, "CIFAR-10 batch")
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

