"""Export a trained mentee to ONNX or TorchScript, and prove the file computes the same thing.

    export_model(net, (1, 40), "mentee.onnx", "onnx")         # dynamic batch, checked with onnxruntime
    export_model(net, (4,), "mentee.pt", "torchscript")       # torch.jit.trace, checked with torch.jit.load
    verify_export("mentee.onnx", net, (1, 40), "onnx")        # max |exported − torch| on a batch of 8

The file is written under a temporary name in the target directory and renamed only
after its outputs match the torch model within `atol`: a failed export leaves nothing
behind, and an existing file at `path` is replaced atomically or not at all.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from search.errors import UserError

__all__ = ["export_model", "verify_export", "FORMATS"]

FORMATS = ("onnx", "torchscript")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Both exporters are chatty: jit/legacy ONNX emit DeprecationWarnings, torch.export
    # FutureWarnings, and the ONNX registry logs one warning per missing torchvision op.
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for cat in (DeprecationWarning, FutureWarning, UserWarning, torch.jit.TracerWarning):
                warnings.simplefilter("ignore", cat)
            yield
    finally:
        onnx_log.setLevel(level)


def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format: '{fmt}' is not onnx or torchscript")


def _export_onnx(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    # torch.export-based exporter (dynamo=True, onnxscript) works offline on torch 2.13 CPU
    # and is the supported path; the batch dim is declared dynamic (the example batch is 2,
    # since torch.export specialises sizes 0 and 1). A model torch.export cannot capture
    # (data-dependent control flow) falls back to the legacy TorchScript-based exporter.
    try:
        batch = torch.export.Dim("batch")
        prog = torch.onnx.export(net, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                                 input_names=["input"], output_names=["output"], verbose=False)
        prog.save(str(path), external_data=False)  # one self-contained file: it is renamed afterwards
    except Exception:  # any capture failure: try the other exporter
        axes = {"input": {0: "batch"}, "output": {0: "batch"}}
        torch.onnx.export(net, (example,), str(path), dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes=axes)


def _run_exported(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out, *_) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        return torch.from_numpy(out)
    loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return loaded(x)


def _max_diff(path: Path, net: nn.Module, input_shape: tuple[int, ...], fmt: str) -> float:
    # A batch size (8) other than the export example's (2): this also checks the batch is dynamic.
    x = torch.randn((8, *input_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = net(x)
    with _quiet():
        got = _run_exported(path, fmt, x)
    if got.shape != want.shape:
        raise RuntimeError(f"{path}: exported model returned shape {tuple(got.shape)}, "
                           f"torch {tuple(want.shape)}")
    return float((got.float() - want.float()).abs().max())


def _cpu_eval(model: nn.Module) -> nn.Module:
    # A copy, so exporting never moves the caller's model off its device or out of train mode.
    return copy.deepcopy(model).cpu().eval()


def verify_export(path: str | Path, model: nn.Module, input_shape: tuple[int, ...], fmt: str) -> float:
    """Max abs difference between the exported file and `model` (eval, CPU) on a random batch of 8."""
    _check_fmt(fmt)
    return _max_diff(Path(path), _cpu_eval(model), tuple(input_shape), fmt)


def export_model(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, fmt: str, *,
                 atol: float = 1e-4) -> Path:
    """Export `model` (eval mode, CPU, dynamic batch) to `path` and verify it; return `path`.

    Raises RuntimeError (and writes nothing) if the exported outputs differ by more than `atol`."""
    _check_fmt(fmt)
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: directory '{path.parent}' does not exist")
    if path.is_dir():  # os.replace onto a directory fails only after the whole export
        raise UserError(f"{path}: is a directory; expected the file to write, e.g. {path / 'mentee.onnx'}")
    net = _cpu_eval(model)
    input_shape = tuple(input_shape)
    example = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(1))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _quiet(), torch.no_grad():
            if fmt == "onnx":
                _export_onnx(net, example, tmp)
            else:
                torch.jit.save(torch.jit.trace(net, example), str(tmp))
        diff = _max_diff(tmp, net, input_shape, fmt)
        if not diff <= atol:  # `not <=` so a NaN difference fails too
            raise RuntimeError(f"{path}: exported {fmt} model differs from the torch model by {diff:.3g} "
                               f"(max abs, batch of 8) > atol {atol:g}; nothing written")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
