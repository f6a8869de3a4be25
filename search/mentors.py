"""A mentor: a trained network plus the names of its taps, and its file.

A mentor is either one of our families trained by `mentee mentor train` (saved as spec +
state dict by `save_mentor`) or `package.module:factory` plus a weights file::

    mentor = load_mentor("mentors/mnist1d.pt")
    mentor = load_mentor("w.pt", factory="mypkg.nets:big", taps=["features.3"], input_shape=(1, 40),
                         num_classes=10)
    mentor.tap_shapes(["layer3"])
    early = load_mentor("mentors/mnist1d.pt", version="epoch20")   # a checkpoint kept in the same file

A file saved with `checkpoints` (`mentor.checkpoints` of a space: the weights at the end of
some epochs of the mentor's training) holds them beside the final weights, by version name.

Weights load with `weights_only=True`; every way a file can be wrong is a one-line UserError.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search.config import ArchConfig
from search.errors import UserError
from search.models import create_mentee
from search.taps import check_taps, tap_shapes
from search.teachers import FINAL

__all__ = ["Mentor", "save_mentor", "load_mentor", "MENTOR_FORMAT"]

MENTOR_FORMAT = "mentee-search/mentor-v1"


@dataclass
class Mentor:
    """A trained network plus the names of its taps. `spec` says how to rebuild it."""

    model: nn.Module
    taps: tuple[str, ...]
    input_shape: tuple[int, ...]
    num_classes: int
    spec: dict[str, Any]

    def tap_shapes(self, names: Sequence[str]) -> list[tuple[int, ...]]:
        return tap_shapes(self.model, names, self.input_shape)


def save_mentor(path: str | Path, model: nn.Module, arch: ArchConfig, *, dataset: str,
                input_shape: Sequence[int], num_classes: int, metrics: dict[str, float],
                checkpoints: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """`checkpoints`: other versions of the same network by name (`epoch20`), as state dicts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": MENTOR_FORMAT, "arch": dataclasses.asdict(arch), "dataset": dataset,
            "input_shape": list(input_shape), "num_classes": num_classes, "metrics": dict(metrics),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if checkpoints:  # absent otherwise: files without checkpoints stay byte-for-byte what they were
        blob["checkpoints"] = {name: {k: v.detach().cpu() for k, v in sd.items()} for name, sd in checkpoints.items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)  # never leave a half-written mentor behind
    return path


def _load_weights(path: Path) -> Any:
    if path.is_dir():
        raise UserError(f"{path}: is a directory; expected a mentor weights file (.pt)")
    if not path.is_file():
        raise UserError(f"{path}: mentor weights file not found")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing: noise
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and unpickling-policy errors all mean "not weights"
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a PyTorch weights file ({first})") from None


def _load_state(model: nn.Module, state: Any, path: Path) -> None:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: expected a state dict (name → tensor)")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        raise UserError(f"{path}: weights do not match the mentor: missing {missing[:3]}, unexpected {extra[:3]}")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise UserError(f"{path}: weight '{k}' has shape {tuple(state[k].shape)}, "
                            f"the mentor expects {tuple(v.shape)}")
        # A NaN weight makes every mentor feature NaN: each mentored mentee would diverge mid-sweep.
        if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all()):
            raise UserError(f"{path}: weight '{k}' holds NaN or inf; expected a trained mentor's finite weights")
    model.load_state_dict(state)


def load_mentor(path: str | Path, *, factory: str | None = None, taps: Sequence[str] | None = None,
                input_shape: Sequence[int] | None = None, num_classes: int | None = None,
                version: str | None = None) -> Mentor:
    """Load a mentor saved by `save_mentor`, or build `package.module:factory` and load
    plain weights into it (then `taps`, `input_shape` and `num_classes` are required).
    `version`: one of the file's checkpoints (`epoch20`) instead of the final weights."""
    path = Path(path)
    blob = _load_weights(path)
    if version == FINAL:
        version = None
    if version is not None and factory is not None:
        raise UserError(f"{path}: mentor version '{version}' asked of a factory mentor; only a mentor saved by "
                        "`mentee mentor train` or a sweep holds checkpoints")
    if factory is None:
        if not isinstance(blob, dict) or blob.get("format") != MENTOR_FORMAT:
            raise UserError(f"{path}: not a mentor saved by `mentee mentor train` "
                            f"(for your own network pass --factory package.module:function)")
        try:  # a damaged or hand-made file: a missing key or a wrong type is the file's fault, not a bug
            arch = ArchConfig(**{**blob["arch"], "widths": tuple(int(w) for w in blob["arch"]["widths"])})
            shape, nc = tuple(int(d) for d in blob["input_shape"]), int(blob["num_classes"])
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: mentor file has a missing or malformed 'arch', 'input_shape' or "
                            f"'num_classes' ({type(e).__name__}: {e}); save it again with `mentee mentor train`"
                            ) from None
        model = create_mentee(arch, shape, nc)
        versions = blob.get("checkpoints") or {}
        if not isinstance(versions, dict):
            raise UserError(f"{path}: 'checkpoints' is a {type(versions).__name__}; expected a mapping of version "
                            "names to state dicts")
        if version is not None and version not in versions:
            raise UserError(f"{path}: no mentor version '{version}' in this file; it holds: "
                            f"{', '.join(['final', *versions])}")
        _load_state(model, blob.get("state_dict") if version is None else versions[version], path)
        names = tuple(taps) if taps else tuple(model.taps)
        check_taps(model, names, f"{path}")
        spec = {"kind": "family", "arch": blob["arch"], "dataset": blob.get("dataset"),
                "metrics": blob.get("metrics", {}), "versions": [FINAL, *versions],
                "version": version or FINAL}
        return Mentor(model.eval(), names, shape, nc, spec)
    if not taps or input_shape is None or num_classes is None:
        raise UserError("--factory needs taps, the input shape and the number of classes")
    net = _build_factory(factory)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    _load_state(net, state, path)
    check_taps(net, taps, f"mentor {factory}")
    spec = {"kind": "factory", "factory": factory}
    return Mentor(net.eval(), tuple(taps), tuple(input_shape), int(num_classes), spec)


def _build_factory(factory: str) -> nn.Module:
    mod_name, _, fn_name = factory.partition(":")
    if not mod_name or not fn_name:
        raise UserError(f"mentor factory '{factory}': expected 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"mentor factory '{factory}': {e}") from None
    except (Exception, SystemExit) as e:  # the module's own top-level code failed, or called exit()
        raise UserError(f"mentor factory '{factory}': importing {mod_name} raised {_first_line(e)}") from None
    if not callable(fn):  # e.g. `os:sep`: calling it would be a TypeError traceback
        raise UserError(f"mentor factory '{factory}': '{fn_name}' is a {type(fn).__name__}, not callable; "
                        "expected a function that returns an nn.Module")
    try:
        model = fn()
    except SystemExit as e:  # sys.exit() in a factory would end `mentee` with its code, often 0, having done nothing
        raise UserError(f"mentor factory '{factory}' exited (SystemExit {e.code!r}); expected it to return an "
                        "nn.Module") from None
    except Exception as e:
        raise UserError(f"mentor factory '{factory}' raised {_first_line(e)}; expected it to return an nn.Module "
                        "when called with no arguments") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"mentor factory '{factory}' returned {type(model).__name__}, expected an nn.Module")
    return model


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
