"""The bad-input corpus ("Nothing lost"): every way a user can hand `mentee` a wrong file, flag or URI.

Each case must give exit code 2, exactly one non-empty line on stderr that names the file, field or
flag, no traceback, and leave the working directory (a fresh tmp_path) exactly as it was: no
mlflow.db, no mentee-runs/, no mentor, no output file. Most cases run in-process through Typer's
CliRunner (fast); SUBPROCESS runs a few as a user does, `python -m search.cli`, to see the real
stderr. Library-level cases (LIBRARY) call the loaders directly where no command reaches them yet.

Read the tables top to bottom: one row per bad input, with the words the error line must hold.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from search.cli import app
from search.config import ArchConfig
from search.errors import UserError
from search.mentors import load_mentor, save_mentor
from search.models import create_mentee

REPO = Path(__file__).resolve().parents[1]
MARKER = "unpickled-marker"  # the file a malicious pickle creates when something unpickles it unsafely


# ------------------------------------------------------------------ builders of bad inputs
# Each returns a setup(tmp) that writes the files one case needs, before the "nothing written" snapshot.

def text(name: str, content: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_text(content)


def raw(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_bytes(content)


def folder(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).mkdir()


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for s in setups:
            s(tmp)
    return setup


BASE_SPACE = {
    "name": "bad",
    "dataset": {"name": "mnist1d", "n_samples": 300},
    "mentor": {"path": "mentors/m.pt", "arch": {"widths": [8, 8, 8]}, "epochs": 1},
    "mentee": {"depth": [1, 2], "width": [4, 8], "growth": 1},
    "train": {"epochs": 2},
    "budget": {"mentees": 4, "cohort_size": 2},
}


def space(name: str = "space.yaml", **dotted) -> Callable[[Path], None]:
    """A valid space with `dotted` keys set, e.g. space(**{"mentee.width": [0, 4]})."""
    d = yaml.safe_load(yaml.safe_dump(BASE_SPACE))
    for key, value in dotted.items():
        *path, last = key.split(".")
        node = d
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return text(name, yaml.safe_dump(d, sort_keys=False))


def space_text(extra: str, name: str = "space.yaml") -> Callable[[Path], None]:
    """A valid space followed by raw YAML lines (for what safe_dump cannot write: .nan, anchors, ...)."""
    given = set(re.findall(r"^(\w+):", extra, re.M)) | {"train"}  # a key given twice is itself bad input
    base = {k: v for k, v in BASE_SPACE.items() if k not in given}
    return text(name, yaml.safe_dump(base, sort_keys=False) + extra)


def nested_lists(n: int) -> str:
    return "mentee:\n  width: " + "[" * n + "4" + "]" * n + "\n"


def alias_bomb(levels: int = 9) -> str:
    """"Billion laughs": 9 aliases of 9 aliases of ... = 9**9 values from a few hundred bytes."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + f"\nmentee: {{width: *a{levels - 1}}}\n"


class Unpickle:
    """A pickle whose loading calls open(MARKER, 'w'): proof that something unpickled it unsafely."""

    def __reduce__(self):
        return (open, (MARKER, "w"))


def mentor(name: str = "m.pt", edit: Callable[[dict], object] | None = None, cut: float | None = None,
           input_shape: tuple[int, ...] = (1, 40)) -> Callable[[Path], None]:
    """A real mentor file (conv1d 8-8-8 for MNIST-1D) as `mentee mentor train` saves it, then damaged:
    `edit` changes the loaded blob in place, `cut` keeps that fraction of the bytes."""
    def setup(tmp: Path) -> None:
        arch = ArchConfig("conv1d", (8, 8, 8), 5, True)
        path = save_mentor(tmp / name, create_mentee(arch, input_shape, 10), arch, dataset="mnist1d",
                           input_shape=input_shape, num_classes=10, metrics={"test_acc": 0.5})
        if edit is not None:
            blob = torch.load(path, weights_only=True)
            edit(blob)
            torch.save(blob, path)
        if cut is not None:
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * cut)])
    return setup


def _set(d: dict, key: str, value) -> None:
    d[key] = value


IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_root(damage: str) -> Callable[[Path], None]:
    """An IDX directory ("mnist/") with 20 train and 10 test 28×28 images, one file damaged."""
    def setup(tmp: Path) -> None:
        root = tmp / "mnist"
        root.mkdir()
        files = {}
        for split, n in (("train", 20), ("t10k", 10)):
            files[f"{split}-images-idx3-ubyte"] = struct.pack(">IIII", 0x803, n, 28, 28) + bytes(n * 784)
            files[f"{split}-labels-idx1-ubyte"] = struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n))
        if damage == "truncated":
            files["train-images-idx3-ubyte"] = files["train-images-idx3-ubyte"][:5000]
        elif damage == "magic":
            files["train-labels-idx1-ubyte"] = struct.pack(">II", 0x803, 20) + bytes(20)
        elif damage == "short-header":
            files["t10k-labels-idx1-ubyte"] = b"\x00\x00"
        elif damage == "zero-dims":
            files["train-images-idx3-ubyte"] = struct.pack(">IIII", 0x803, 0, 0, 0)
        elif damage == "gzip-bomb":  # 3 MiB of zeros unpacking past the bound; patched small for the test
            del files["train-images-idx3-ubyte"]
            (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(3 << 20)))
        elif damage == "gzip":
            del files["train-images-idx3-ubyte"]
            (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(5000))[:20])
        for fname, data in files.items():
            (root / fname).write_bytes(data)
    return setup


def cifar_root(batch: bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        root = tmp / "cifar"
        root.mkdir()
        for f in ("data_batch_1", "test_batch"):
            (root / f).write_bytes(batch)
    return setup


NAN_CIFAR = pickle.dumps({b"data": np.full((2, 3072), np.nan, np.float32), b"labels": [0, 1]})


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow sqlite store with one empty experiment, made once; cases get a copy."""
    from search.tracking import SweepTracker

    d = tmp_path_factory.mktemp("store")
    SweepTracker(f"sqlite:///{d}/mlflow.db", "bad")
    _EMPTY_STORE[:] = [d / "mlflow.db"]
    return d / "mlflow.db"


STORE = "needs-store"  # a setup that copies `empty_store` to ./store.db


def STORE_COPY(tmp: Path) -> None:  # noqa: N802 - a setup like the builders above, for use inside both()
    shutil.copy(_EMPTY_STORE[0], tmp / "store.db")


_EMPTY_STORE: list[Path] = []  # filled by the `empty_store` fixture


# ------------------------------------------------------------------ the corpus: in-process CLI

SWEEP = ["sweep", "space.yaml"]  # not --dry-run: a bad space must fail before MLflow or Ray are touched
COMPARE = ["compare", "--n-samples", "300", "--epochs", "1", "--seeds", "1", "--hint", "last:layer3"]
MENTOR_TRAIN = ["mentor", "train", "--n-samples", "300", "--epochs", "1", "--out", "out.pt"]

CASES = [
    # --- spaces: the file itself
    pytest.param(text("space.yaml", "name: x\ndataset: {name: mnist1d\n"), SWEEP,
                 ["space.yaml", "malformed YAML", "line 3"], id="space-malformed-yaml"),
    pytest.param(text("space.yaml", "name: x\n\tmentee: 1\n"), SWEEP,
                 ["space.yaml", "malformed YAML", "line 2", "a tab in the indentation"], id="space-tab-indent"),
    pytest.param(raw("space.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"), SWEEP,
                 ["space.yaml", "not UTF-8"], id="space-binary"),
    pytest.param(raw("space.yaml", "name: caf\u00e9\n".encode("latin-1")), SWEEP, ["space.yaml", "not UTF-8"],
                 id="space-latin1"),
    pytest.param(text("space.yaml", "name: a\x00b\n"), SWEEP, ["space.yaml", "malformed YAML"], id="space-nul-byte"),
    pytest.param(text("space.yaml", ""), SWEEP, ["space.yaml", "empty"], id="space-empty"),
    pytest.param(text("space.yaml", "# only a comment\n\n"), SWEEP, ["space.yaml", "only comments"],
                 id="space-only-comment"),
    pytest.param(text("space.yaml", nested_lists(10_000)), SWEEP, ["space.yaml", "nested more than"],
                 id="space-10000-nested-lists"),
    pytest.param(text("space.yaml", "a: " + "{b: " * 5000 + "1" + "}" * 5000 + "\n"), SWEEP,
                 ["space.yaml", "nested more than"], id="space-5000-nested-mappings"),
    pytest.param(text("space.yaml", alias_bomb()), SWEEP, ["space.yaml", "aliases"], id="space-billion-laughs"),
    pytest.param(text("space.yaml", "".join(f"a{i}: &a{i} [{f'*a{i - 1}' if i else 1}]\n" for i in range(2000))),
                 SWEEP, ["space.yaml", "nested more than", "aliases"], id="space-alias-chain"),
    pytest.param(text("space.yaml", "mentee: &m {width: [*m]}\n"), SWEEP, ["space.yaml", "aliases"],
                 id="space-recursive-alias"),
    pytest.param(text("space.yaml", "name: x\n" + "#" * (1 << 20) + "\n"), SWEEP, ["space.yaml", "1 MiB"],
                 id="space-over-1MiB"),
    pytest.param(text("space.yaml", "- dataset\n- mentee\n"), SWEEP, ["space.yaml", "mapping", "list"],
                 id="space-top-level-list"),
    pytest.param(folder("space.yaml"), SWEEP, ["space.yaml", "directory"], id="space-is-a-directory"),
    pytest.param(None, ["sweep", "missing.yaml"], ["missing.yaml", "not found"], id="space-missing-file"),
    pytest.param(None, ["sweep", "missing.yaml", "--dry-run"], ["missing.yaml", "not found"],
                 id="space-missing-file-dry-run"),
    # --- spaces: keys and types
    pytest.param(space(**{"mentee.widht": [4]}), SWEEP, ["space.yaml", "mentee.widht", "did you mean 'width'"],
                 id="space-unknown-key-typo"),
    pytest.param(space(trian={"epochs": 2}), SWEEP, ["space.yaml", "'trian'", "did you mean 'train'"],
                 id="space-unknown-section"),
    pytest.param(space(**{"train.epochs": "ten"}), SWEEP, ["space.yaml", "train.epochs", "'ten'"],
                 id="space-wrong-type-str-for-int"),
    pytest.param(space(dataset=5), SWEEP, ["space.yaml", "dataset"], id="space-wrong-type-section"),
    pytest.param(space(**{"mentee.width": "wide"}), SWEEP, ["space.yaml", "mentee.width"],
                 id="space-wrong-type-choice"),
    pytest.param(space(**{"mentee.width": []}), SWEEP, ["space.yaml", "mentee.width", "empty"],
                 id="space-empty-choices"),
    pytest.param(space(**{"mentee.width": {"low": 8, "high": 4}}), SWEEP,
                 ["space.yaml", "mentee.width", "must not exceed"], id="space-range-low-above-high"),
    pytest.param(space(**{"train.lr": {"low": 0, "high": 0.1, "log": True}}), SWEEP,
                 ["space.yaml", "train.lr"], id="space-log-range-from-zero"),
    pytest.param(space(objectives=["params", "watts"]), SWEEP, ["space.yaml", "objectives"],
                 id="space-unknown-objective"),
    # --- spaces: numbers that make no sense (NaN, inf, negative, zero)
    pytest.param(space_text("train: {epochs: 2, lr: .nan}\n"), SWEEP, ["space.yaml", "train.lr", "finite"],
                 id="space-lr-nan"),
    pytest.param(space_text("train: {epochs: 2, lr: .inf}\n"), SWEEP, ["space.yaml", "train.lr", "finite"],
                 id="space-lr-inf"),
    pytest.param(space_text("train: {epochs: 2, lr: {low: 1e-3, high: 1e999}}\n"), SWEEP,
                 ["space.yaml", "train.lr.high", "finite"], id="space-lr-range-to-inf"),
    pytest.param(space(**{"train.lr": -0.01}), SWEEP, ["space.yaml", "train.lr", "> 0"], id="space-lr-negative"),
    pytest.param(space(**{"train.lr": [0.01, 0]}), SWEEP, ["space.yaml", "train.lr", "> 0"],
                 id="space-lr-zero-choice"),
    pytest.param(space(**{"train.weight_decay": -1e-4}), SWEEP, ["space.yaml", "train.weight_decay", "≥ 0"],
                 id="space-weight-decay-negative"),
    pytest.param(space(**{"train.epochs": 0}), SWEEP, ["space.yaml", "train.epochs"], id="space-epochs-zero"),
    pytest.param(space(**{"train.epochs": -3}), SWEEP, ["space.yaml", "train.epochs"], id="space-epochs-negative"),
    pytest.param(space(**{"train.batch_size": 0}), SWEEP, ["space.yaml", "train.batch_size", "≥ 1"],
                 id="space-batch-size-zero"),
    pytest.param(space(**{"train.batch_size": [64, -5]}), SWEEP, ["space.yaml", "train.batch_size", "≥ 1"],
                 id="space-batch-size-negative-choice"),
    pytest.param(space(**{"train.seed": -1}), SWEEP, ["space.yaml", "train.seed"], id="space-seed-negative"),
    pytest.param(space(**{"budget.mentees": 0}), SWEEP, ["space.yaml", "budget.mentees"], id="space-mentees-zero"),
    pytest.param(space(**{"budget.mentees": -64}), SWEEP, ["space.yaml", "budget.mentees"],
                 id="space-mentees-negative"),
    pytest.param(space(**{"budget.cohort_size": 0}), SWEEP, ["space.yaml", "budget.cohort_size", "1"],
                 id="space-cohort-size-zero"),
    pytest.param(space(**{"budget.cpus_per_trial": -1}), SWEEP, ["space.yaml", "budget.cpus_per_trial"],
                 id="space-cpus-negative"),
    pytest.param(space(**{"budget.gpus_per_trial": -0.5}), SWEEP, ["space.yaml", "budget.gpus_per_trial"],
                 id="space-gpus-negative"),
    pytest.param(space(**{"budget.early_stopping": {"rungs": [0]}}), SWEEP,
                 ["space.yaml", "budget.early_stopping.rungs"], id="space-rung-zero"),
    pytest.param(space(**{"mentee.depth": 0}), SWEEP, ["space.yaml", "mentee.depth", "≥ 1"], id="space-depth-zero"),
    pytest.param(space(**{"mentee.width": [0, 4]}), SWEEP, ["space.yaml", "mentee.width", "≥ 1"],
                 id="space-width-zero-choice"),
    pytest.param(space(**{"mentee.growth": -1}), SWEEP, ["space.yaml", "mentee.growth", "> 0"],
                 id="space-growth-negative"),
    pytest.param(space(**{"mentee.kernel": 0}), SWEEP, ["space.yaml", "mentee.kernel"], id="space-kernel-zero"),
    pytest.param(space(**{"mentor.epochs": 0}), SWEEP, ["space.yaml", "mentor.epochs"], id="space-mentor-epochs-zero"),
    pytest.param(space(**{"mentor.checkpoints": [1]}), SWEEP, ["space.yaml", "mentor.checkpoints", "outside 1..0"],
                 id="space-checkpoint-not-before-the-last-epoch"),
    pytest.param(space(**{"mentor.teacher": ["final", "epoch5"]}), SWEEP,
                 ["space.yaml", "mentor.teacher", "'epoch5'", "expected one of final"], id="space-teacher-unknown"),
    pytest.param(space(**{"mentor.assistant": {"widths": [4, 4]}}), SWEEP,
                 ["space.yaml", "mentor.assistant", "expected 3 widths"], id="space-assistant-depth"),
    pytest.param(both(mentor("mentors/m.pt"), space(**{"mentor.epochs": 3, "mentor.checkpoints": [1],
                                                        "mentor.teacher": "epoch1"})), SWEEP,
                 ["space.yaml", "mentor.path", "m.pt", "no checkpoint 'epoch1'"],
                 id="space-teacher-not-in-mentor-file"),
    pytest.param(space_text("train: {epochs: 2}\nmentor: {path: mentors/m.pt, epochs: 1, lr: .nan}\n"), SWEEP,
                 ["space.yaml", "mentor.lr"], id="space-mentor-lr-nan"),
    pytest.param(space(**{"dataset.n_samples": 0}), SWEEP, ["space.yaml", "dataset.n_samples"],
                 id="space-n-samples-zero"),
    pytest.param(space(terms={"hint": {"weight": -0.5}}), SWEEP, ["space.yaml", "hint.weight", "≥ 0"],
                 id="space-loss-weight-negative"),
    pytest.param(space_text("train: {epochs: 2}\nterms: {kd: {weight: .nan}}\n"), SWEEP,
                 ["space.yaml", "kd.weight", "finite"], id="space-loss-weight-nan"),
    pytest.param(space(terms={"kd": {"temperature": 0}}), SWEEP, ["space.yaml", "kd.temperature", "> 0"],
                 id="space-temperature-zero"),
    pytest.param(space(terms={"kd": {"temperature": -4}}), SWEEP, ["space.yaml", "kd.temperature", "> 0"],
                 id="space-temperature-negative"),
    pytest.param(space(terms={"hnit": {}}), SWEEP, ["space.yaml", "'hnit'", "did you mean 'hint'"],
                 id="space-unknown-loss-term"),
    # --- datasets (through `mentee mentor train`, which loads the data first)
    pytest.param(None, [*MENTOR_TRAIN, "--dataset", "mnist1e"], ["'mnist1e'", "did you mean 'mnist1d'"],
                 id="data-unknown-name"),
    pytest.param(None, [*MENTOR_TRAIN, "--dataset", "mnist", "--root", "nowhere"], ["nowhere", "mnist"],
                 id="data-missing-root"),
    pytest.param(None, [*MENTOR_TRAIN, "--dataset", "mnist"], ["root", "mnist"], id="data-root-not-set"),
    pytest.param(idx_root("truncated"), [*MENTOR_TRAIN, "--dataset", "mnist", "--root", "mnist"],
                 ["train-images-idx3-ubyte", "truncated"], id="data-idx-truncated"),
    pytest.param(idx_root("magic"), [*MENTOR_TRAIN, "--dataset", "mnist", "--root", "mnist"],
                 ["train-labels-idx1-ubyte", "magic number"], id="data-idx-wrong-magic"),
    pytest.param(idx_root("short-header"), [*MENTOR_TRAIN, "--dataset", "fashion-mnist", "--root", "mnist"],
                 ["t10k-labels-idx1-ubyte", "truncated"], id="data-idx-short-header"),
    pytest.param(idx_root("gzip"), [*MENTOR_TRAIN, "--dataset", "mnist", "--root", "mnist"],
                 ["train-images-idx3-ubyte.gz", "gzip"], id="data-idx-corrupt-gzip"),
    pytest.param(text("d.txt", "1 1:0.5 2:0.1\n0 1:0.2 2:abc\n"), [*MENTOR_TRAIN, "--dataset", "libsvm:d.txt"],
                 ["d.txt:2", "cannot parse"], id="data-libsvm-bad-value"),
    pytest.param(text("d.txt", "1 1:0.5 2:0.1\n0 1 2\n"), [*MENTOR_TRAIN, "--dataset", "libsvm:d.txt"],
                 ["d.txt:2"], id="data-libsvm-no-colon"),
    pytest.param(text("d.txt", "1 1:0.5\n0 0:0.2\n"), [*MENTOR_TRAIN, "--dataset", "libsvm:d.txt"],
                 ["d.txt:2", "index 0"], id="data-libsvm-index-zero"),
    pytest.param(text("d.txt", "1 1:0.5 2:0.1\n0 1:nan 2:0.3\n"), [*MENTOR_TRAIN, "--dataset", "libsvm:d.txt"],
                 ["d.txt:2", "non-finite"], id="data-libsvm-nan-feature"),
    pytest.param(text("d.txt", "1 1:1e999\n0 1:0.3\n"), [*MENTOR_TRAIN, "--dataset", "libsvm:d.txt"],
                 ["d.txt:1", "non-finite"], id="data-libsvm-inf-feature"),
    pytest.param(text("d.txt", "nan 1:0.5\n0 1:0.3\n"), [*MENTOR_TRAIN, "--dataset", "libsvm:d.txt"],
                 ["d.txt:1", "non-finite"], id="data-libsvm-nan-label"),
    pytest.param(raw("d.txt", bytes(range(256)) * 4), [*MENTOR_TRAIN, "--dataset", "libsvm:d.txt"],
                 ["d.txt:"], id="data-libsvm-binary"),
    pytest.param(text("d.txt", ""), [*MENTOR_TRAIN, "--dataset", "libsvm:d.txt"], ["d.txt", "no data lines"],
                 id="data-libsvm-empty"),
    pytest.param(None, [*MENTOR_TRAIN, "--dataset", "libsvm:nope.txt"], ["nope.txt", "no such file"],
                 id="data-libsvm-missing-file"),
    pytest.param(cifar_root(NAN_CIFAR), [*MENTOR_TRAIN, "--dataset", "cifar10", "--root", "cifar"],
                 ["data_batch_1", "uint8"], id="data-cifar-nan-float-features"),
    pytest.param(cifar_root(pickle.dumps(Unpickle())), [*MENTOR_TRAIN, "--dataset", "cifar10", "--root", "cifar"],
                 ["data_batch_1", "refusing"], id="data-cifar-malicious-pickle"),
    pytest.param(space(**{"dataset.name": "libsvm:d.txt"}, **{"mentee.family": "mlp"}),
                 [*SWEEP, "--dry-run"], ["space.yaml", "dataset", "d.txt"], id="data-from-space-missing-file"),
    # --- mentor files (through `mentee compare`, which loads the mentor before training anything)
    pytest.param(None, [*COMPARE, "--mentor", "none.pt"], ["none.pt", "not found"], id="mentor-missing"),
    pytest.param(folder("m.pt"), [*COMPARE, "--mentor", "m.pt"], ["m.pt", "directory"], id="mentor-is-a-directory"),
    pytest.param(text("m.pt", "these are not weights\n"), [*COMPARE, "--mentor", "m.pt"],
                 ["m.pt", "not a PyTorch weights file"], id="mentor-text-file"),
    pytest.param(raw("m.pt", b""), [*COMPARE, "--mentor", "m.pt"], ["m.pt", "not a PyTorch weights file"],
                 id="mentor-empty-file"),
    pytest.param(mentor(cut=0.5), [*COMPARE, "--mentor", "m.pt"], ["m.pt", "not a PyTorch weights file"],
                 id="mentor-truncated"),
    pytest.param(raw("m.pt", pickle.dumps(Unpickle())), [*COMPARE, "--mentor", "m.pt"],
                 ["m.pt", "not a PyTorch weights file"], id="mentor-malicious-plain-pickle"),
    pytest.param(lambda tmp: torch.save({"state_dict": Unpickle()}, tmp / "m.pt"), [*COMPARE, "--mentor", "m.pt"],
                 ["m.pt", "not a PyTorch weights file"], id="mentor-malicious-torch-save"),
    pytest.param(lambda tmp: torch.save({"weights": torch.zeros(3)}, tmp / "m.pt"), [*COMPARE, "--mentor", "m.pt"],
                 ["m.pt", "not a mentor saved by"], id="mentor-plain-tensors"),
    pytest.param(mentor(edit=lambda b: b["state_dict"].__setitem__("layer2.0.weight", torch.zeros(3, 3, 3))),
                 [*COMPARE, "--mentor", "m.pt"], ["m.pt", "layer2.0.weight", "shape"], id="mentor-wrong-shape"),
    pytest.param(mentor(edit=lambda b: b["state_dict"].pop("head.weight")), [*COMPARE, "--mentor", "m.pt"],
                 ["m.pt", "head.weight"], id="mentor-missing-weight"),
    pytest.param(mentor(edit=lambda b: b["state_dict"]["layer1.0.weight"].fill_(float("nan"))),
                 [*COMPARE, "--mentor", "m.pt"], ["m.pt", "layer1.0.weight", "NaN"], id="mentor-nan-weights"),
    pytest.param(mentor(edit=lambda b: b.pop("arch")), [*COMPARE, "--mentor", "m.pt"], ["m.pt", "arch"],
                 id="mentor-no-arch"),
    pytest.param(mentor(edit=lambda b: _set(b, "state_dict", [1, 2])), [*COMPARE, "--mentor", "m.pt"],
                 ["m.pt", "state dict"], id="mentor-state-dict-not-a-dict"),
    pytest.param(mentor(input_shape=(1, 64)), [*COMPARE, "--mentor", "m.pt"], ["m.pt", "(1, 64)", "(1, 40)"],
                 id="mentor-for-another-dataset"),
    # --- CLI flags
    pytest.param(None, ["compare", "--epochs", "0"], ["--epochs", "≥ 1"], id="flag-epochs-zero"),
    pytest.param(None, ["mentor", "train", "--epochs", "0"], ["--epochs", "≥ 1"], id="flag-mentor-epochs-zero"),
    pytest.param(None, ["compare", "--seeds", "-1"], ["--seeds", "≥ 1"], id="flag-seeds-negative"),
    pytest.param(None, ["compare", "--lr", "nan"], ["--lr", "nan"], id="flag-lr-nan"),
    pytest.param(None, ["compare", "--temperature", "0"], ["--temperature", "> 0"], id="flag-temperature-zero"),
    pytest.param(None, ["compare", "--batch-size", "0"], ["--batch-size"], id="flag-batch-size-zero"),
    pytest.param(None, ["compare", "--kd", "-1"], ["--kd", "≥ 0"], id="flag-kd-negative"),
    pytest.param(None, ["compare", "--widths", "8,,8"], ["--widths", "8,,8"], id="flag-widths-empty-part"),
    pytest.param(None, ["compare", "--widths", "8x-1"], ["--widths", "8x-1"], id="flag-widths-negative"),
    pytest.param(None, [*MENTOR_TRAIN, "--widths", "0,8"], ["--widths", "0,8"], id="flag-mentor-widths-zero"),
    pytest.param(None, ["compare", "--hint", "last"], ["--hint", "'last'"], id="flag-hint-no-colon"),
    pytest.param(None, ["compare", "--metric", "rmes"], ["--metric", "rmes"], id="flag-metric-unknown"),
    pytest.param(None, ["compare", "--format", "xml"], ["--format", "xml"], id="flag-compare-format"),
    pytest.param(None, ["pareto", "--format", "xml"], ["--format", "xml"], id="flag-pareto-format"),
    pytest.param(None, ["pareto", "--by", "watts"], ["--by", "watts"], id="flag-pareto-by"),
    pytest.param(None, ["export", "0123abcd", "--format", "tflite"], ["--format", "tflite"], id="flag-export-format"),
    pytest.param(None, ["pick", "--max-params", "lots"], ["--max-params", "lots"], id="flag-max-params-word"),
    pytest.param(None, ["pick", "--max-params", "-5k"], ["--max-params", "negative"], id="flag-max-params-negative"),
    pytest.param(None, ["pick", "--max-params", "nan"], ["--max-params", "nan"], id="flag-max-params-nan"),
    pytest.param(None, ["pick", "--max-params", "1e999"], ["--max-params", "too large"], id="flag-max-params-huge"),
    pytest.param(None, ["pick", "--max-bytes", "12parsecs"], ["--max-bytes", "12parsecs"], id="flag-max-bytes-unit"),
    pytest.param(None, ["pick", "--max-bytes", ""], ["--max-bytes", "empty"], id="flag-max-bytes-empty"),
    pytest.param(None, ["pick"], ["--max-params", "--max-bytes"], id="flag-pick-no-budget"),
    pytest.param(None, ["ui", "--port", "0"], ["--port"], id="flag-ui-port-zero"),
    pytest.param(None, ["quickstart", "--workdir", "qs", "--mentees", "1"], ["--mentees", "≥ 2"],
                 id="flag-quickstart-mentees"),
    pytest.param(folder("out.pt"), MENTOR_TRAIN, ["out.pt", "directory"], id="flag-mentor-out-is-a-directory"),
    # --- tracking URIs and runs
    pytest.param(None, ["pareto", "--tracking-uri", "foo://x"], ["--tracking-uri", "foo", "scheme"],
                 id="uri-unknown-scheme-pareto"),
    pytest.param(None, ["pick", "--max-params", "5k", "--tracking-uri", "foo://x"], ["--tracking-uri", "scheme"],
                 id="uri-unknown-scheme-pick"),
    pytest.param(None, ["export", "0123abcd", "--tracking-uri", "foo://x"], ["--tracking-uri", "scheme"],
                 id="uri-unknown-scheme-export"),
    pytest.param(None, ["ui", "--tracking-uri", "foo://x"], ["--tracking-uri", "scheme"], id="uri-unknown-scheme-ui"),
    pytest.param(space(), [*SWEEP, "--tracking-uri", "foo://x"], ["--tracking-uri", "scheme"],
                 id="uri-unknown-scheme-sweep"),
    pytest.param(None, ["pareto", "--tracking-uri", "mlruns"], ["--tracking-uri", "file store"],
                 id="uri-file-store-dir"),
    pytest.param(None, ["pareto", "--tracking-uri", ""], ["--tracking-uri", "empty"], id="uri-empty"),
    pytest.param(None, ["pareto", "--tracking-uri", "sqlite:///nodir/x.db"], ["nodir/x.db", "no MLflow database"],
                 id="uri-sqlite-missing-dir"),
    pytest.param(None, ["pick", "--max-params", "5k", "--tracking-uri", "nodir/x.db"],
                 ["nodir/x.db", "no MLflow database"], id="uri-db-path-missing-dir"),
    pytest.param(None, ["pareto"], ["mlflow.db", "no MLflow database"], id="uri-default-store-missing"),
    pytest.param(STORE, ["export", "0123456789abcdef", "--tracking-uri", "store.db"],
                 ["0123456789abcdef", "store.db"], id="run-id-unknown"),
    pytest.param(STORE, ["pareto", "--experiment", "nope", "--tracking-uri", "store.db"], ["'nope'", "not found"],
                 id="experiment-unknown"),
    pytest.param(STORE, ["pick", "--max-params", "5k", "--tracking-uri", "store.db"], ["no mentee runs"],
                 id="store-without-runs"),
    # --- issue 18, hardened: numbers beyond sense (bounds stated in the line)
    pytest.param(text("space.yaml", "train: {epochs: " + "9" * 5000 + "}\n"), SWEEP,
                 ["space.yaml", "train.epochs", "5,000 characters", "at most 100"], id="space-int-of-5000-digits"),
    pytest.param(space(**{"mentee.width": {"low": 4, "high": 1e308}}), SWEEP,
                 ["space.yaml", "mentee.width", "≤ 65,536"], id="space-width-range-to-1e308"),
    pytest.param(space(**{"train.lr": 1e308}), SWEEP, ["space.yaml", "train.lr", "≤ 10"], id="space-lr-1e308"),
    pytest.param(space(**{"budget.mentees": 10**12}), SWEEP, ["space.yaml", "budget.mentees", "≤ 1,000,000"],
                 id="space-mentees-10-to-12"),
    pytest.param(space(**{"dataset.n_samples": 10**9}), [*SWEEP, "--dry-run"],
                 ["space.yaml", "dataset.n_samples", "≤ 100,000,000"], id="space-n-samples-10-to-9"),
    pytest.param(space(**{"dataset.n_samples": 10**6}), [*SWEEP, "--dry-run"],
                 ["space.yaml", "dataset", "mnist1d", "at most 200,000"], id="space-mnist1d-samples-10-to-6"),
    pytest.param(space(**{"mentee.depth": 100_000}), SWEEP, ["space.yaml", "mentee.depth", "≤ 64"],
                 id="space-depth-100000"),
    pytest.param(space(**{"train.epochs": 10**30}), SWEEP, ["space.yaml", "train.epochs", "≤ 100,000"],
                 id="space-epochs-10-to-30"),
    pytest.param(space(**{"mentor.arch.widths": [8, 10**9]}), SWEEP, ["space.yaml", "mentor.arch.widths", "65,536"],
                 id="space-mentor-width-10-to-9"),
    pytest.param(space(terms={"kd": {"temperature": 1e308}}), SWEEP, ["space.yaml", "kd.temperature", "1,000,000"],
                 id="space-temperature-1e308"),
    # --- names that would leave their directory, silent acceptance
    pytest.param(space_text('name: "../outside"\n'), SWEEP, ["space.yaml", "name", "'../outside'", "no '/'"],
                 id="space-name-leaves-the-workdir"),
    pytest.param(space_text('name: ""\n'), SWEEP, ["space.yaml", "name", "not empty"], id="space-name-empty"),
    pytest.param(space_text("name: a/b\n"), [*SWEEP, "--dry-run"], ["space.yaml", "name", "'a/b'"],
                 id="space-name-slash"),
    pytest.param(text("space.yaml", "name: x\ntrain:\n  epochs: 2\n  lr: 0.01\n  epochs: 3\n"), SWEEP,
                 ["space.yaml", "train.epochs", "twice", "lines 3 and 5"], id="space-duplicated-key"),
    pytest.param(space(terms={"hint": {"taps": {"layer5": ["layer3"]}}}), SWEEP,
                 ["space.yaml", "terms.hint.taps.layer5", "depth is at most 2"], id="space-hint-tap-no-mentee-has"),
    # --- data files: only regular files, sizes bounded before allocation, no code from a pickle
    pytest.param(lambda tmp: os.mkfifo(tmp / "d.txt"), [*MENTOR_TRAIN, "--dataset", "libsvm:d.txt"],
                 ["d.txt", "a FIFO", "regular file"], id="data-libsvm-fifo"),
    pytest.param(None, [*MENTOR_TRAIN, "--dataset", "libsvm:/dev/zero"], ["/dev/zero", "a device"],
                 id="data-libsvm-device"),
    pytest.param(folder("d.txt"), [*MENTOR_TRAIN, "--dataset", "libsvm:d.txt"], ["d.txt", "directory"],
                 id="data-libsvm-directory"),
    pytest.param(text("d.txt", "1 1:0.5\n0 7000000000:1\n"), [*MENTOR_TRAIN, "--dataset", "libsvm:d.txt"],
                 ["d.txt:2", "7,000,000,000", "1..1,000,000"], id="data-libsvm-huge-feature-index"),
    pytest.param(text("d.txt", "1 900000:1\n0 1:1\n" * 600), [*MENTOR_TRAIN, "--dataset", "libsvm:d.txt"],
                 ["d.txt", "dense", "at most 2,147,483,648"], id="data-libsvm-dense-too-large"),
    pytest.param(idx_root("zero-dims"), [*MENTOR_TRAIN, "--dataset", "mnist", "--root", "mnist"],
                 ["train-images-idx3-ubyte", "0x0x0", "≥ 1"], id="data-idx-zero-dims"),
    pytest.param(idx_root("gzip-bomb"), [*MENTOR_TRAIN, "--dataset", "mnist", "--root", "mnist"],
                 ["train-images-idx3-ubyte.gz", "unpacks to more than"], id="data-idx-gzip-bomb"),
    pytest.param(cifar_root(b"cnumpy.f2py.__main__\nscalar\n."), [*MENTOR_TRAIN, "--dataset", "cifar10", "--root",
                 "cifar"], ["data_batch_1", "refusing global numpy.f2py.__main__.scalar"],
                 id="data-cifar-numpy-submodule"),
    # --- tracking stores: one line at the first touch, nothing written
    pytest.param(folder("dir.db"), ["pareto", "--tracking-uri", "dir.db"], ["dir.db", "is a directory"],
                 id="uri-db-is-a-directory"),
    pytest.param(both(space(), folder("dir.db")), [*SWEEP, "--tracking-uri", "dir.db"], ["dir.db", "is a directory"],
                 id="uri-db-is-a-directory-sweep"),
    pytest.param(text("notes.db", "my notes\n"), ["pareto", "--tracking-uri", "notes.db"],
                 ["notes.db", "not an SQLite database"], id="uri-db-is-a-text-file"),
    pytest.param(both(space(), text("notes.db", "my notes\n")), [*SWEEP, "--tracking-uri", "notes.db"],
                 ["notes.db", "not an SQLite database"], id="uri-db-is-a-text-file-sweep"),
    pytest.param(raw("empty.db", b""), ["pareto", "--tracking-uri", "empty.db"], ["empty.db", "empty"],
                 id="uri-empty-db-for-a-reader"),
    pytest.param(None, ["pareto", "--tracking-uri", "mysql://u@127.0.0.1:1/db"],
                 ["tracking URI", "mysqlclient" if importlib.util.find_spec("MySQLdb") is None else "127.0.0.1:1"],
                 id="uri-mysql-without-driver"),
    pytest.param(None, ["pareto", "--tracking-uri", "databricks"], ["--tracking-uri", "Databricks", "not supported"],
                 id="uri-databricks"),
    pytest.param(None, ["pareto", "--tracking-uri", "http://127.0.0.1:9"], ["127.0.0.1:9", "nothing answers"],
                 id="uri-server-unreachable"),
    pytest.param(space(), [*SWEEP, "--tracking-uri", "http://127.0.0.1:9"], ["127.0.0.1:9", "nothing answers"],
                 id="uri-server-unreachable-sweep"),
    # --- paths a command writes, checked before the work
    pytest.param(both(space(), text("runs", "a file\n")), [*SWEEP, "--workdir", "runs"], ["--workdir", "runs", "file"],
                 id="flag-workdir-is-a-file"),
    pytest.param(both(space(), text("runs", "a file\n")), [*SWEEP, "--workdir", "runs/sub"],
                 ["--workdir", "runs", "not a folder"], id="flag-workdir-under-a-file"),
    pytest.param(both(STORE_COPY, folder("out")), ["dashboard", "--experiment", "bad", "--tracking-uri", "store.db",
                                                   "--out", "out"], ["--out", "out", "directory"],
                 id="flag-dashboard-out-is-a-directory"),
    pytest.param(text("afile", "x\n"), [*MENTOR_TRAIN[:-1], "afile/m.pt"], ["--out", "afile", "not a folder"],
                 id="flag-mentor-out-under-a-file"),
    pytest.param(space(), [*SWEEP, "--resume"], ["--resume", "no MLflow database", "nothing to resume"],
                 id="flag-resume-of-a-space-never-run"),
]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """cwd = a fresh tmp_path; no inherited tracking URI or Ray address; never exec or start Ray."""
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)

    def refuse(*a, **k):
        raise AssertionError("bad input reached a point of no return (exec / ray.init)")

    monkeypatch.setattr(os, "execvp", refuse)  # `mentee ui` would replace the test process
    monkeypatch.setattr(os, "execv", refuse)
    import ray

    monkeypatch.setattr(ray, "init", refuse)
    return tmp_path


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root with size and mtime: "writes nothing" means this is unchanged."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def assert_one_line(stderr: str, stdout: str, expect: list[str]) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr + stdout, stderr + stdout
    for word in expect:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


@pytest.mark.parametrize("setup,args,expect", CASES)
def test_cli_bad_input(setup, args, expect, in_tmp, request, monkeypatch):
    request.getfixturevalue("empty_store")
    if "gzip-bomb" in request.node.name:  # the bound made small, so 3 MiB of zeros stand for a bomb of GiBs
        from search.data import registry

        monkeypatch.setattr(registry, "MAX_FILE_BYTES", 2 << 20)
    if setup == STORE:
        shutil.copy(request.getfixturevalue("empty_store"), in_tmp / "store.db")
    elif setup is not None:
        setup(in_tmp)
    before = snapshot(in_tmp)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.exception!r}\n{result.stderr[-3000:]}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert_one_line(result.stderr, result.stdout, expect)
    assert snapshot(in_tmp) == before
    assert not (in_tmp / MARKER).exists()


def test_tracking_uri_from_the_environment_is_named(in_tmp, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "foo://x")
    result = CliRunner().invoke(app, ["pareto"])
    assert result.exit_code == 2
    assert_one_line(result.stderr, result.stdout, ["$MLFLOW_TRACKING_URI", "foo://x"])
    assert snapshot(in_tmp) == {}


# ------------------------------------------------------------------ library loaders, called directly

def _devices_file(content: str) -> Callable[[Path], object]:
    def call(tmp: Path):
        from search.devices import load_devices

        (tmp / "dev.yaml").write_text(content)
        return load_devices(tmp / "dev.yaml")
    return call


def _get_device(name: str) -> Callable[[Path], object]:
    def call(tmp: Path):
        from search.devices import get_device, load_devices

        return get_device(name, load_devices())
    return call


def _load_mentor_with(factory: str) -> Callable[[Path], object]:
    def call(tmp: Path):
        mentor()(tmp)
        return load_mentor(tmp / "m.pt", factory=factory, taps=["layer1"], input_shape=(1, 40), num_classes=10)
    return call


def _load_mentor_file(content: bytes) -> Callable[[Path], object]:
    def call(tmp: Path):
        (tmp / "m.pt").write_bytes(content)
        return load_mentor(tmp / "m.pt")
    return call


def _fits(budget: dict, resources: dict) -> Callable[[Path], object]:
    def call(tmp: Path):
        from search.spaces import Budget
        from search.sweep.faults import check_cluster_fits

        return check_cluster_fits(Budget(**budget), resources, "space.yaml")
    return call


LIBRARY = [
    pytest.param(_get_device("stm32f764"), ["unknown device 'stm32f764'", "did you mean 'stm32f746'"],
                 id="device-unknown-name"),
    pytest.param(_devices_file("board: {flash: 1 parsec}\n"), ["dev.yaml", "board.flash", "unit"],
                 id="device-unknown-unit"),
    pytest.param(_devices_file("board: {sram: -320KiB}\n"), ["dev.yaml", "board.sram", "≥ 0"],
                 id="device-negative-budget"),
    pytest.param(_devices_file("board: {params: .nan}\n"), ["dev.yaml", "board.params", "finite"],
                 id="device-nan-budget"),
    pytest.param(_devices_file("board: {flash: 1MiB\n"), ["dev.yaml", "malformed YAML"], id="device-malformed-file"),
    pytest.param(_devices_file("board: {falsh: 1MiB}\n"), ["dev.yaml", "board.falsh", "did you mean 'flash'"],
                 id="device-unknown-key"),
    pytest.param(_devices_file(""), ["dev.yaml", "empty"], id="device-empty-file"),
    pytest.param(_devices_file("board: {flash: " + "[" * 5000 + "]" * 5000 + "}\n"),
                 ["dev.yaml", "nested more than", "device file"], id="device-5000-nested-lists"),
    pytest.param(_load_mentor_with("nosuchpkg.nets:big"), ["nosuchpkg.nets:big"], id="mentor-factory-missing-module"),
    pytest.param(_load_mentor_with("os.path"), ["os.path", "package.module:function"], id="mentor-factory-no-colon"),
    pytest.param(_load_mentor_with("os:sep"), ["os:sep", "callable"], id="mentor-factory-not-callable"),
    pytest.param(_load_mentor_with("os:getcwd"), ["os:getcwd", "nn.Module"], id="mentor-factory-not-a-module"),
    pytest.param(_fits({"cpus_per_trial": 10**6}, {"CPU": 2.0}), ["space.yaml", "budget.cpus_per_trial", "1e+06",
                 "has 2"], id="cluster-cpus-per-trial-a-million"),
    pytest.param(_fits({"gpus_per_trial": 1}, {"CPU": 2.0}), ["space.yaml", "budget.gpus_per_trial", "has 0"],
                 id="cluster-gpus-per-trial-without-gpus"),
    pytest.param(_load_mentor_with("sys:exit"), ["sys:exit", "exited", "nn.Module"], id="mentor-factory-exits"),
    pytest.param(_load_mentor_with("json:loads"), ["json:loads", "raised TypeError"], id="mentor-factory-raises"),
    pytest.param(_load_mentor_with("this:s"), ["this:s", "str", "not callable"], id="mentor-factory-a-string"),
    pytest.param(_load_mentor_file(pickle.dumps(Unpickle(), protocol=2)), ["m.pt", "not a PyTorch weights file"],
                 id="mentor-malicious-pickle-protocol-2"),
]


@pytest.mark.parametrize("call,expect", LIBRARY)
def test_library_bad_input(call, expect, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        call(tmp_path)
    message = str(err.value)
    assert "\n" not in message.strip(), message
    for word in expect:
        assert word in message, f"{word!r} not in {message!r}"
    assert not (tmp_path / MARKER).exists()


# ------------------------------------------------------------------ as a user runs it: a real process

SUBPROCESS = [
    pytest.param(text("space.yaml", "name: x\ndataset: {name: mnist1d\n"), SWEEP, ["space.yaml", "malformed YAML"],
                 id="space-malformed-yaml"),
    pytest.param(text("space.yaml", nested_lists(10_000)), SWEEP, ["space.yaml", "nested"], id="space-deep-nesting"),
    pytest.param(text("space.yaml", alias_bomb()), SWEEP, ["space.yaml", "aliases"], id="space-billion-laughs"),
    pytest.param(None, ["pareto", "--tracking-uri", "foo://x"], ["--tracking-uri", "scheme"], id="uri-unknown-scheme"),
    pytest.param(raw("m.pt", pickle.dumps(Unpickle())), [*COMPARE, "--mentor", "m.pt"], ["m.pt", "not a PyTorch"],
                 id="mentor-malicious-pickle"),
    # issue 18: each class of the review's new bad inputs, once as a user meets it
    pytest.param(text("space.yaml", "train: {epochs: " + "9" * 5000 + "}\n"), SWEEP, ["space.yaml", "train.epochs"],
                 id="space-int-of-5000-digits"),
    pytest.param(space(**{"dataset.n_samples": 10**9}), [*SWEEP, "--dry-run"], ["space.yaml", "dataset.n_samples"],
                 id="space-n-samples-dry-run"),
    pytest.param(space_text('name: "../outside"\n'), SWEEP, ["space.yaml", "name"], id="space-name-leaves-the-workdir"),
    pytest.param(text("space.yaml", "name: x\nname: y\n"), SWEEP, ["space.yaml", "'name'", "twice"],
                 id="space-duplicated-key"),
    pytest.param(both(mentor("m.pt"), space_text("mentor: {path: m.pt, factory: 'sys:exit', taps: [layer1]}\n")),
                 [*SWEEP, "--dry-run"], ["space.yaml", "mentor.path", "sys:exit", "exited"], id="mentor-factory-exits"),
    pytest.param(cifar_root(b"cnumpy.f2py.__main__\nscalar\n."), [*MENTOR_TRAIN, "--dataset", "cifar10", "--root",
                 "cifar"], ["data_batch_1", "refusing"], id="data-cifar-numpy-submodule"),
    pytest.param(lambda tmp: os.mkfifo(tmp / "d.txt"), [*MENTOR_TRAIN, "--dataset", "libsvm:d.txt"],
                 ["d.txt", "FIFO"], id="data-libsvm-fifo"),
    pytest.param(folder("dir.db"), ["pareto", "--tracking-uri", "dir.db"], ["dir.db", "directory"],
                 id="uri-db-is-a-directory"),
    pytest.param(None, ["pareto", "--tracking-uri", "http://127.0.0.1:9"], ["127.0.0.1:9"],
                 id="uri-server-unreachable"),
    pytest.param(space(), [*SWEEP, "--resume"], ["--resume", "nothing to resume"], id="resume-of-a-space-never-run"),
    pytest.param(both(space(), text("runs", "x\n")), [*SWEEP, "--workdir", "runs"], ["--workdir"],
                 id="workdir-is-a-file"),
]


@pytest.mark.parametrize("setup,args,expect", SUBPROCESS)
def test_real_process_prints_one_line(setup, args, expect, tmp_path):
    if setup is not None:
        setup(tmp_path)
    before = snapshot(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-m", "search.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stderr[-3000:]}"
    assert r.stderr.startswith("error: ")
    assert_one_line(r.stderr, r.stdout, expect)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / MARKER).exists()


def test_ui_port_taken_is_one_line(tmp_path):
    """`mentee ui --port P` with P held by another server: one line, exit 2, no URL to whatever holds it."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
        r = subprocess.run([sys.executable, "-m", "search.cli", "ui", "--port", str(port)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stderr[-3000:]}"
    assert_one_line(r.stderr, r.stdout, ["--port", str(port)])
    assert "http://" not in r.stdout
    assert snapshot(tmp_path) == {}


# ------------------------------------------------------------------ the rules behind the corpus

def test_weights_and_yaml_are_only_read_safely():
    """torch.load always with weights_only=True; YAML only through its safe loader; no pickle.load,
    eval or exec (the one documented way to run code from a space is mentor.factory: an import)."""
    offenders = []
    for path in sorted((REPO / "search").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
            bad = (name == "torch.load" and kw.get("weights_only") != "True"
                   or name in ("eval", "exec", "pickle.load", "pickle.loads", "yaml.load", "yaml.load_all",
                               "yaml.unsafe_load", "yaml.full_load", "yaml.compose")
                   or name.startswith("yaml.") and "Loader" in kw and "Safe" not in kw["Loader"]
                   and kw["Loader"] != "_SafeLoader")
            if bad:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)[:100]}")
    assert not offenders, "\n".join(offenders)


def test_ui_binds_localhost_unless_told(monkeypatch, tmp_path):
    """`mentee ui` serves on 127.0.0.1 by default; another interface only with --host."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seen = []

    def fake_exec(prog, argv):  # record what would be exec'd instead of replacing the test process
        seen.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execvp", fake_exec)
    monkeypatch.setattr(os, "execv", fake_exec)  # `mentee ui` execs this Python's mlflow by its path
    for extra in ([], ["--host", "0.0.0.0"]):
        CliRunner().invoke(app, ["ui", "--tracking-uri", "x.db", *extra])
    assert seen[0][seen[0].index("--host") + 1] == "127.0.0.1"
    assert seen[1][seen[1].index("--host") + 1] == "0.0.0.0"
