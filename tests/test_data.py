"""search.data: every loader on small files in the real formats, the split rule, and bad input."""

from __future__ import annotations

import gzip
import os
import pickle
import random
import struct

import numpy as np
import pytest
import torch

from search.data import Raw, Splits, dataset_names, generated, load_dataset, register_dataset, registry
from search.errors import UserError

LIBSVM = """\
# Spark's sample_multiclass_classification_data.txt style
1 1:-0.222222 2:0.5 3:-0.762712 4:-0.833333
1 1:-0.555556 2:0.25 3:-0.864407 4:-0.916667

0 1:-0.722222 2:-0.166667 3:-0.694915 4:-0.916667
2 1:0.166667 2:-0.416667 3:0.457627 4:0.5   # trailing comment
0 1:-0.833333 3:-0.864407 4:-0.916667
2 1:0.5 2:-0.166667 3:0.627119 4:0.833333
"""


# --- writers for the real formats -------------------------------------------------------------------

def write_idx(path, arr: np.ndarray, gz: bool = False, magic: int | None = None):
    magic = magic if magic is not None else (0x803 if arr.ndim == 3 else 0x801)
    blob = struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)
    return path


def make_idx_dir(root, n_train=40, n_test=10, size=28, gz=False):
    """Images whose first two pixels encode their index, so every sample can be identified later."""
    root.mkdir(exist_ok=True)
    for prefix, n, offset in (("train", n_train, 0), ("t10k", n_test, 100)):
        imgs = np.zeros((n, size, size), np.uint8)
        imgs[:, 0, 0] = np.arange(n) + offset
        imgs[:, 0, 1] = 255
        write_idx(root / f"{prefix}-images-idx3-ubyte", imgs, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz)
    return root


def make_cifar_dir(root, n=30, batches=(1, 2), protocol=2, numpy1=False):
    root.mkdir(exist_ok=True)
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in batches] + ["test_batch"]:
        d = {b"batch_label": name.encode(), b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
             b"labels": list(rng.randint(0, 10, n)), b"filenames": [b"x.png"] * n}
        blob = pickle.dumps(d, protocol=protocol)
        if numpy1:  # the real files name numpy 1's module (protocol 2 writes globals as text lines)
            blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (root / name).write_bytes(blob)
    return root


def ids(x: torch.Tensor) -> set[int]:
    """Sample ids from make_idx_dir's images (pixel (0, 0) holds the index / 255)."""
    return {round(v * 255) for v in x[:, 0, 0, 0].tolist()}


def assert_well_formed(s: Splits, shape, classes):
    assert s.input_shape == shape and s.num_classes == classes
    for x, y in ((s.x_train, s.y_train), (s.x_val, s.y_val), (s.x_test, s.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.device.type == "cpu" and tuple(x.shape[1:]) == shape and len(x) == len(y)
        assert y.numel() == 0 or 0 <= int(y.min()) <= int(y.max()) < classes


def same(a: Splits, b: Splits) -> bool:
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("x_train", "y_train", "x_val", "y_val",
                                                                    "x_test", "y_test"))


# --- registry and Splits ---------------------------------------------------------------------------

def test_names_and_custom_registration(monkeypatch):
    expected = {"mnist1d", "digits", "iris", "libsvm:", "mnist", "fashion-mnist", "cifar10"}
    assert expected <= set(dataset_names())
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_dataset("toy")
    def _toy(req):
        return Raw(np.arange(20, dtype=np.float32)[:, None], np.arange(20) % 2, num_classes=2)

    s = load_dataset("toy", seed=3)
    assert "toy" in dataset_names() and (len(s.y_train), len(s.y_val), len(s.y_test)) == (14, 2, 4)
    assert sorted(torch.cat([s.x_train, s.x_val, s.x_test]).flatten().tolist()) == list(range(20))
    with pytest.raises(ValueError):
        register_dataset("toy")(_toy)


def test_to_and_summary():
    s = load_dataset("iris")
    moved = s.to("cpu")
    assert moved is not s and same(moved, s)
    line = s.summary()
    assert "\n" not in line and all(t in line for t in ("iris", "105", "15", "30", "(4,)", "3 classes"))


# --- embedded datasets -----------------------------------------------------------------------------

def test_mnist1d_small_restores_global_rng_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MENTEE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(generated, "_MNIST1D_MEMO", {})  # made here, not read from a cache
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # mnist1d's own get_dataset would drop a pickle here
    np.random.seed(123)
    random.seed(123)
    np_state, py_state = np.random.get_state(), random.getstate()
    s = load_dataset("mnist1d", n_samples=500, seed=0)
    after = np.random.get_state()
    assert np_state[0] == after[0] and np.array_equal(np_state[1], after[1]) and np_state[2:] == after[2:]
    assert random.getstate() == py_state and os.listdir(tmp_path / "cwd") == []
    assert_well_formed(s, (1, 40), 10)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (350, 50, 100)
    assert set(s.y_train.tolist()) == set(range(10))
    assert same(s, load_dataset("mnist1d", n_samples=500, seed=0))  # cached, and the cache is not mutated
    assert not torch.equal(s.x_train, load_dataset("mnist1d", n_samples=500, seed=1).x_train)


def test_mnist1d_is_made_once_then_read_from_the_file_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MENTEE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(generated, "_MNIST1D_MEMO", {})
    made = load_dataset("mnist1d", n_samples=300, seed=4)
    (cached,) = (tmp_path / "cache").iterdir()
    assert cached.name.startswith("mnist1d-300-seed4-") and cached.suffix == ".npz"

    def must_not_make(n, seed):
        raise AssertionError("made again instead of read from the cache")

    monkeypatch.setattr(generated, "_MNIST1D_MEMO", {})  # a new process: only the file is left
    monkeypatch.setattr(generated, "_make_mnist1d", must_not_make)
    assert same(load_dataset("mnist1d", n_samples=300, seed=4), made)
    assert list((tmp_path / "cache").iterdir()) == [cached]  # no temporary file left behind


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 not a zip", "wrong arrays"])
def test_a_damaged_cache_file_is_made_again(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("MENTEE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(generated, "_MNIST1D_MEMO", {})
    made = load_dataset("mnist1d", n_samples=200, seed=0)
    (cached,) = tmp_path.iterdir()
    if damage == "wrong arrays":
        np.savez(cached, x=np.zeros((3, 1, 40), np.float32), y=np.zeros(3, np.int64))
    else:
        cached.write_bytes(damage)
    monkeypatch.setattr(generated, "_MNIST1D_MEMO", {})
    assert same(load_dataset("mnist1d", n_samples=200, seed=0), made)
    monkeypatch.setattr(generated, "_MNIST1D_MEMO", {})
    monkeypatch.setattr(generated, "_make_mnist1d", lambda n, seed: pytest.fail("the repaired file was not read"))
    assert same(load_dataset("mnist1d", n_samples=200, seed=0), made)


def test_an_unwritable_cache_is_skipped(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("MENTEE_CACHE_DIR", str(tmp_path / "file" / "cache"))
    monkeypatch.setattr(generated, "_MNIST1D_MEMO", {})
    s = load_dataset("mnist1d", n_samples=100, seed=0)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 100


def test_mnist1d_n_samples_is_exact():
    s = load_dataset("mnist1d", n_samples=205, seed=0)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 205


def test_digits():
    s = load_dataset("digits")
    assert_well_formed(s, (1, 8, 8), 10)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (1258, 180, 359)
    assert 0 <= float(s.x_train.min()) and float(s.x_train.max()) <= 1
    assert same(s, load_dataset("digits")) and not same(s, load_dataset("digits", seed=1))
    small = load_dataset("digits", n_samples=100, val_fraction=0.2, test_fraction=0.3)
    assert (len(small.y_train), len(small.y_val), len(small.y_test)) == (50, 20, 30)


def test_iris_standardised_with_train_statistics():
    s = load_dataset("iris", seed=2)
    assert_well_formed(s, (4,), 3)
    assert torch.allclose(s.x_train.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(s.x_train.std(0, unbiased=False), torch.ones(4), atol=1e-4)
    assert not torch.allclose(s.x_test.mean(0), torch.zeros(4), atol=1e-3)  # test stats were not used


# --- libsvm ----------------------------------------------------------------------------------------

def test_libsvm_parses_and_maps_labels(tmp_path, monkeypatch):
    (tmp_path / "d.txt").write_text(LIBSVM)
    monkeypatch.chdir(tmp_path)
    s = load_dataset("libsvm:d.txt", val_fraction=0.0, test_fraction=0.0)
    assert_well_formed(s, (4,), 3)
    assert len(s.y_train) == 6
    assert sorted(s.y_train.tolist()) == [0, 0, 1, 1, 2, 2]
    assert torch.allclose(s.x_train.mean(0), torch.zeros(4), atol=1e-6)
    assert s.name == "libsvm:d.txt"


@pytest.mark.parametrize("labels", [("-1", "+1"), ("1", "3"), ("2.0", "7"), ("0", "1")])
def test_libsvm_labels_any_numbers(tmp_path, labels):
    lines = [f"{labels[i % 2]} {i % 3 + 1}:{i}.5 5:{i}" for i in range(20)]
    (tmp_path / "b.svm").write_text("\n".join(lines))
    s = load_dataset("libsvm:b.svm", root=tmp_path, seed=4)
    assert_well_formed(s, (5,), 2)
    x, y = torch.cat([s.x_train, s.x_val, s.x_test]), torch.cat([s.y_train, s.y_val, s.y_test])
    # feature 5 is the row number (standardising keeps its order): labels alternate, first one -> 0
    assert y[x[:, 4].argsort()].tolist() == [i % 2 for i in range(20)]


def test_libsvm_constant_feature_and_splits_disjoint(tmp_path):
    # feature 1 is the row id (identifies each sample), feature 2 is constant (std 0 -> stays finite)
    (tmp_path / "c.txt").write_text("".join(f"{i % 4} 1:{i} 2:7\n" for i in range(50)))
    s = load_dataset("libsvm:c.txt", root=str(tmp_path), seed=5)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (35, 5, 10) and torch.isfinite(s.x_train).all()
    allx = torch.cat([s.x_train, s.x_val, s.x_test])[:, 0]
    assert len(set(allx.tolist())) == 50  # every row exactly once: disjoint and complete
    assert same(s, load_dataset("libsvm:c.txt", root=tmp_path, seed=5))
    assert not torch.equal(s.x_test, load_dataset("libsvm:c.txt", root=tmp_path, seed=6).x_test)


# --- IDX (mnist, fashion-mnist) ---------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name,size", [("mnist", 28), ("fashion-mnist", 5)])
def test_idx(tmp_path, gz, name, size):
    root = make_idx_dir(tmp_path / "m", size=size, gz=gz)
    s = load_dataset(name, root=root, seed=1)
    assert_well_formed(s, (1, size, size), 10)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (36, 4, 10)
    assert ids(s.x_test) == set(range(100, 110))  # the official test file, whole and in order
    assert s.y_test.tolist() == [i % 10 for i in range(10)]
    train, val = ids(s.x_train), ids(s.x_val)
    assert not train & val and train | val == set(range(40))
    assert float(s.x_train[:, 0, 0, 1].min()) == 1.0 and float(s.x_train.max()) <= 1
    assert same(s, load_dataset(name, root=root, seed=1))
    assert ids(load_dataset(name, root=root, seed=2).x_val) != val


def test_idx_n_samples_subsamples_train_only(tmp_path):
    root = make_idx_dir(tmp_path / "m")
    s = load_dataset("mnist", root=root, n_samples=20)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (18, 2, 10)


# --- CIFAR-10 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol,numpy1", [(2, True), (2, False), (pickle.HIGHEST_PROTOCOL, False)])
def test_cifar10(tmp_path, protocol, numpy1):
    root = make_cifar_dir(tmp_path / "cifar-10-batches-py", batches=(1, 3), protocol=protocol, numpy1=numpy1)
    s = load_dataset("cifar10", root=root, seed=0)
    assert_well_formed(s, (3, 32, 32), 10)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (54, 6, 30)
    assert torch.allclose(s.x_train.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(s.x_train.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    test = pickle.loads((root / "test_batch").read_bytes())
    assert s.y_test.tolist() == list(test[b"labels"])
    assert same(s, load_dataset("cifar10", root=root, seed=0))
    assert not torch.equal(s.x_val, load_dataset("cifar10", root=root, seed=1).x_val)


# --- bad input: always one-line UserError naming the file / dataset / option -----------------------

def raises(match: str, *args, **kwargs) -> str:
    with pytest.raises(UserError) as e:
        load_dataset(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and match in msg, msg
    return msg


def test_bad_names_and_options(tmp_path):
    assert "did you mean 'mnist1d'" in raises("mnist-1d", "mnist-1d")
    raises("cifar10", "cifar")
    raises("libsvm:<path>", "libsvm")
    raises("libsvm:", "libsvm:")
    raises("mnist", "mnist")  # no root
    raises("cifar10", "cifar10")
    raises("nowhere", "mnist", root=tmp_path / "nowhere")
    raises("n_samples", "iris", n_samples=0)
    raises("seed", "iris", seed=-1)
    raises("val_fraction", "iris", val_fraction=1.5)
    raises("test_fraction", "iris", val_fraction=0.5, test_fraction=0.5)
    raises("none to train on", "iris", n_samples=2, val_fraction=0.5, test_fraction=0.4)


@pytest.mark.parametrize("missing", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_idx_missing_file(tmp_path, missing):
    root = make_idx_dir(tmp_path / "m")
    (root / missing).unlink()
    msg = raises(missing, "mnist", root=root)
    assert "t10k-images-idx3-ubyte" in msg  # lists what was expected


def test_idx_truncated(tmp_path):
    root = make_idx_dir(tmp_path / "m")
    f = root / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    assert "truncated" in raises(str(f), "mnist", root=root)
    f.write_bytes(b"\x00\x00")
    assert "truncated" in raises(str(f), "mnist", root=root)


def test_idx_wrong_magic(tmp_path):
    root = make_idx_dir(tmp_path / "m")
    labels = root / "train-labels-idx1-ubyte"
    (root / "train-images-idx3-ubyte").write_bytes(labels.read_bytes())
    assert "magic" in raises("train-images-idx3-ubyte", "mnist", root=root)


@pytest.mark.parametrize("blob", [b"not gzip at all", gzip.compress(b"\x00" * 500)[:30],
                                  b"\x1f\x8b\x08\x00" + b"\xff" * 40])
def test_idx_corrupt_gzip(tmp_path, blob):
    root = make_idx_dir(tmp_path / "m", gz=True)
    f = root / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(blob)
    assert "gzip" in raises(str(f), "mnist", root=root)


def test_idx_label_count_mismatch(tmp_path):
    root = make_idx_dir(tmp_path / "m")
    write_idx(root / "train-labels-idx1-ubyte", np.zeros(39, np.uint8))
    msg = raises("train-labels-idx1-ubyte", "mnist", root=root)
    assert "39" in msg and "40" in msg


def test_cifar_missing_files(tmp_path):
    root = make_cifar_dir(tmp_path / "c", batches=(2,))
    (root / "test_batch").unlink()
    raises("test_batch", "cifar10", root=root)
    root = make_cifar_dir(tmp_path / "d", batches=())
    raises("data_batch_1", "cifar10", root=root)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("obj", [
    None,  # replaced by garbage bytes below
    [1, 2, 3],
    {b"data": np.zeros((30, 3072), np.uint8)},
    {b"data": np.zeros((30, 100), np.uint8), b"labels": [0] * 30},
    {b"data": np.zeros((30, 3072), np.float32), b"labels": [0] * 30},
    {b"data": np.zeros((30, 3072), np.uint8), b"labels": [0] * 29},
    {b"data": np.zeros((30, 3072), np.uint8), b"labels": [12] * 30},
    {b"data": np.zeros((30, 3072), np.uint8), b"labels": Evil()},
])
def test_cifar_bad_pickles(tmp_path, obj):
    root = make_cifar_dir(tmp_path / "c", batches=(1,))
    f = root / "data_batch_1"
    f.write_bytes(b"\x80\x04garbage" if obj is None else pickle.dumps(obj))
    raises("data_batch_1", "cifar10", root=root)


@pytest.mark.parametrize("text,line", [
    ("1 1:0.5\n\n1 1:x\n", 3),
    ("1 1:0.5\nfoo 1:2\n", 2),
    ("1 1:0.5 2\n", 1),
    ("1 0:0.5\n", 1),
    ("1 1.5:2\n", 1),
    ("1 1:nan\n", 1),
])
def test_libsvm_bad_lines(tmp_path, text, line):
    (tmp_path / "bad.txt").write_text(text)
    raises(f"bad.txt:{line}", "libsvm:bad.txt", root=tmp_path)


@pytest.mark.parametrize("text", ["", "# only a comment\n\n", "1\n2\n", "1 1:0.5\n1 2:3\n"])
def test_libsvm_empty_or_degenerate(tmp_path, text):
    (tmp_path / "e.txt").write_text(text)
    raises("e.txt", "libsvm:e.txt", root=tmp_path)


def test_libsvm_missing_file(tmp_path):
    raises("absent.txt", "libsvm:absent.txt", root=tmp_path)
    raises(str(tmp_path), f"libsvm:{tmp_path}")  # a directory is not a readable file


def test_loading_writes_no_file(tmp_path, monkeypatch):
    root = make_idx_dir(tmp_path / "m", gz=True)
    make_cifar_dir(tmp_path / "c")
    (tmp_path / "d.txt").write_text(LIBSVM)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    load_dataset("mnist", root=root)
    load_dataset("cifar10", root=tmp_path / "c")
    load_dataset("libsvm:d.txt", test_fraction=0.0, val_fraction=0.0)
    load_dataset("digits")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
