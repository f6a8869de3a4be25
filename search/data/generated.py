"""Datasets made in-process, no files needed: mnist1d (Greydanus 2020), sklearn's digits and iris.

Making mnist1d costs seconds (importing the package, which imports matplotlib, and interpolating
every sample in Python): 3.4 s on 2 CPU cores, half of what a sweep against a running Ray
waited for before its first cohort. So what it makes is kept in a file
cache: `$MENTEE_CACHE_DIR`, else `$XDG_CACHE_HOME/mentee-search`, else `~/.cache/mentee-search`,
one .npz per (samples, seed, mnist1d version). A file that cannot be read is made again; a cache
that cannot be written is skipped: it is only ever a shortcut.
"""

from __future__ import annotations

import os
import random
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from search.data.registry import Raw, Request, register_dataset
from search.errors import UserError

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """Where generated datasets are kept (read at each call, so a test or a user can point it elsewhere)."""
    if os.environ.get("MENTEE_CACHE_DIR"):
        return Path(os.environ["MENTEE_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mentee-search"


_MNIST1D_MEMO: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # this process's, over the file


# mnist1d is made on the spot, ~3 s per 5,000 samples on 2 cores: 200,000 is minutes, more is a typo
MAX_MNIST1D_SAMPLES = 200_000


@register_dataset("mnist1d")
def _mnist1d(req: Request) -> Raw:
    if req.n_samples is not None and req.n_samples > MAX_MNIST1D_SAMPLES:
        raise UserError(f"dataset 'mnist1d': n_samples {req.n_samples:,}; expected at most {MAX_MNIST1D_SAMPLES:,} "
                        "(it is generated, ~3 s per 5,000 samples)")
    # make_dataset makes num_samples // 10 per class: round up, and the split subsamples to exactly n.
    n = -(-(req.n_samples or 5000) // 10) * 10
    if (n, req.seed) not in _MNIST1D_MEMO:
        path = cache_dir() / f"mnist1d-{n}-seed{req.seed}-v{metadata.version('mnist1d')}.npz"
        _MNIST1D_MEMO[n, req.seed] = _read_cached(path, n) or _keep(path, *_make_mnist1d(n, req.seed))
    x, y = _MNIST1D_MEMO[n, req.seed]
    return Raw(x, y, num_classes=10)


def _make_mnist1d(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = n, seed
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
    return x, np.concatenate([d["y"], d["y_test"]]).astype(np.int64)


def _read_cached(path: Path, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, or None if the file is missing, unreadable, or not what we wrote."""
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    ok = (x.dtype == np.float32 and y.dtype == np.int64 and x.ndim == 3 and x.shape[:2] == (n, 1)
          and y.shape == (n,) and np.isfinite(x).all() and y.min() >= 0 and y.max() < 10)
    return (x, y) if ok else None


def _keep(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Write the arrays to the cache (whole, or not at all: a temporary file renamed into place,
    so a reader never sees half of one); a cache that cannot be written is skipped."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, x=x, y=y)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return x, y


@register_dataset("digits")
def _digits(req: Request) -> Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    return Raw((d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64), num_classes=10)


@register_dataset("iris")
def _iris(req: Request) -> Raw:
    from sklearn.datasets import load_iris

    d = load_iris()
    return Raw(d.data.astype(np.float32), d.target.astype(np.int64), num_classes=3, norm_axes=(0,))

