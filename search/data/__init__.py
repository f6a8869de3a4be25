"""Datasets by name: a small timm-style registry that turns a name into train/val/test tensors.

Usage::

    from search.data import load_dataset, dataset_names

    splits = load_dataset("mnist1d", n_samples=2000, seed=0)     # generated offline, no files
    splits = load_dataset("mnist", root="data/mnist")             # local IDX files (raw or .gz)
    splits = load_dataset("libsvm:data/iris.scale", seed=1)       # any libsvm text file
    print(splits.summary())
    splits = splits.to("cuda")                                    # the trainer moves it once

    @register_dataset("my-data")
    def _my_data(req: Request) -> Raw:
        return Raw(x, y, num_classes=3)                           # numpy arrays; splitting is done here

Names: ``mnist1d`` (default), ``digits``, ``iris``, ``libsvm:<path>``, ``mnist``, ``fashion-mnist``,
``cifar10``. Every loader returns numpy arrays; `load_dataset` does the seeded split, the optional
standardisation (with train-split statistics only, so nothing leaks from val/test) and the conversion
to CPU tensors: x float32, y int64 in 0..C-1. Loading never downloads. Anything wrong with the user's
input raises `UserError` with one line naming the file or option.

The rooms: `registry` (the registry, `load_dataset` and the split rule), `generated` (datasets made
in-process: mnist1d, kept in a file cache because making it costs seconds a sweep; digits, iris),
`files` (the user's local files: libsvm text, IDX, CIFAR-10 pickles).
"""

from search.data import files, generated  # noqa: F401  (registers their loaders)
from search.data.registry import Raw, Request, Splits, dataset_names, load_dataset, register_dataset

__all__ = ["Raw", "Request", "Splits", "dataset_names", "load_dataset", "register_dataset"]
