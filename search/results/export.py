"""Export a trained mentee to ONNX or TorchScript, and prove the file computes the same thing.

    export_model(net, (1, 40), "mentee.onnx", "onnx")         # dynamic batch, checked with onnxruntime
    export_model(net, (4,), "mentee.pt", "torchscript")       # torch.jit.trace, checked with torch.jit.load
    verify_export("mentee.onnx", net, (1, 40), "onnx")        # max |exported − torch| on a batch of 8
    rep = export_int8(net, (1, 40), "mentee-int8.onnx", calibration=x_train[:256], check=(x_test, y_test))
    rep.agreement, rep.weight_bytes                           # argmax agreement with torch; int8 weight bytes
    fits, line = flash_check(profile, rep.weight_bytes, "int8")  # the device's flash budget, checked again

The file is written under a temporary name in the target directory and renamed only
after its outputs match the torch model within `atol`: a failed export leaves nothing
behind, and an existing file at `path` is replaced atomically or not at all.

int8 goes through ONNX Runtime's quantizer: static (QDQ, per-channel int8 weights, int8 activations
calibrated on samples of the dataset) or, without calibration samples, dynamic (int8 weights,
activations quantised at run time). An int8 model does not match its float model to 1e-4, so it is
not held to `atol`: it is measured instead, by how often its argmax agrees with the torch model's.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from search.errors import UserError

__all__ = ["export_model", "verify_export", "export_int8", "Int8Report", "flash_check", "onnx_weight_bytes",
           "FORMATS"]

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
        assert prog is not None  # dynamo=True always returns the program (None is the legacy exporter's)
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


# ---- int8 through ONNX Runtime's quantizer --------------------------------------------------------------------

@dataclass
class Int8Report:
    """What an int8 export produced and how close it stays to the torch model."""

    path: Path
    method: str  # "static, 256 calibration samples" or "dynamic"
    file_bytes: int  # the int8 ONNX file
    weight_bytes: int  # its initializers: int8 weights, int32 biases, scales and zero points
    fp32_weight_bytes: int  # the same in the float model it came from
    samples: int  # checked on this many inputs
    on_data: bool  # the check batch came from the dataset (else random inputs: agreement means little)
    agreement: float  # fraction of inputs whose argmax matches the torch model's
    max_abs_diff: float  # of the logits
    acc_int8: float | None = None  # accuracy on the check batch, when it has labels
    acc_torch: float | None = None


def onnx_weight_bytes(path: str | Path) -> int:
    """Bytes of an ONNX file's initializers: its weights (and, in an int8 model, biases, scales, zero points)."""
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer)


def _quantize(src: Path, dst: Path, calibration: np.ndarray | None) -> str:
    from onnxruntime import quantization as q

    root = logging.getLogger()  # the quantizer logs "please consider pre-processing" on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        if calibration is None:
            q.quantize_dynamic(str(src), str(dst), weight_type=q.QuantType.QInt8)
            return "dynamic"
        batches = [{"input": calibration[i:i + 64]} for i in range(0, len(calibration), 64)]

        class Reader(q.CalibrationDataReader):
            def __init__(self):
                self.it = iter(batches)

            def get_next(self):
                return next(self.it, None)

        # QDQ with int8 weights (per output channel) and int8 activations: ORT's recommended default on CPU,
        # and the arithmetic of TFLite Micro's int8 kernels
        q.quantize_static(str(src), str(dst), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8)
        return f"static, {len(calibration)} calibration samples"
    finally:
        root.setLevel(level)


def _as_np(a: np.ndarray | torch.Tensor) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def export_int8(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, *,
                calibration: np.ndarray | torch.Tensor | None = None,
                check: tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor | None] | None = None) -> Int8Report:
    """Export `model` to an int8 ONNX file at `path` (dynamic batch) and compare it with the torch model.

    `calibration`: inputs (N, *input_shape) for static quantisation; None → dynamic. `check`: (inputs,
    labels or None) to compare on; None → 256 random inputs (said so in the report). The float model is
    exported and verified first (`export_model`); the file appears at `path` only when all went well."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: directory '{path.parent}' does not exist")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; expected the file to write, e.g. {path / 'mentee-int8.onnx'}")
    net = _cpu_eval(model)
    input_shape = tuple(input_shape)
    if check is None:
        x, y = torch.randn((256, *input_shape), generator=torch.Generator().manual_seed(0)).numpy(), None
    else:
        x, y = _as_np(check[0]).astype(np.float32), None if check[1] is None else _as_np(check[1])
    calib = None if calibration is None else _as_np(calibration)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_model(net, input_shape, fp32, "onnx")
        method = _quantize(fp32, int8, None if calib is None else calib.astype(np.float32))
        import onnxruntime as ort

        sess = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
        if got.shape != want.shape:
            raise RuntimeError(f"{path}: int8 model returned shape {got.shape}, torch {want.shape}; nothing written")
        rep = Int8Report(path, method, int8.stat().st_size, onnx_weight_bytes(int8), onnx_weight_bytes(fp32), len(x),
                         check is not None, float((got.argmax(1) == want.argmax(1)).mean()),
                         float(np.abs(got - want).max()))
        if y is not None:
            rep.acc_int8, rep.acc_torch = float((got.argmax(1) == y).mean()), float((want.argmax(1) == y).mean())
        os.replace(int8, path)
    return rep


def flash_check(profile, weight_bytes: int, precision: str) -> tuple[bool, str]:
    """Whether `weight_bytes` of weights stored at `precision` fit the device's flash budget (with its
    overhead), and one line that says so. A profile that budgets int8 weights is told plainly when the
    file checked is fp32."""
    from search.devices import format_cost

    b = profile.budget("bytes_int8") or profile.budget("bytes_fp32")
    if b is None:
        return True, f"{profile.name} has no flash budget"
    total = b.device_value(weight_bytes)
    fits = total <= b.limit
    parts = f"{format_cost(b.axis, weight_bytes)} of {precision} weights"
    if b.overhead:
        parts += f" + {format_cost(b.axis, b.overhead)} overhead = {format_cost(b.axis, total)}"
    line = (f"{profile.name} flash: {parts} {'≤' if fits else '>'} {format_cost(b.axis, b.limit)}: "
            + ("fits" if fits else f"no longer fits (over by {format_cost(b.axis, total - b.limit)})"))
    if b.axis == "bytes_int8" and precision != "int8":
        line += "; the profile counts int8 weights: export with --int8"
    return fits, line
