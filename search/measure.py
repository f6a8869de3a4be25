"""What a mentee costs: parameters, weight memory, MACs per sample, latency.

    count_params(net)                       # 55 for nn.Linear(10, 5)
    weight_bytes(net, "int8")               # per-channel int8 Conv/Linear weights, the rest fp32
    count_macs(net, (1, 40))                # multiply-accumulates for one sample
    latency_ms(net, (1, 40), batch=1)       # median wall time of one forward pass
    cost(net, (1, 40))                      # {"params", "bytes_fp32", "bytes_int8", "macs"}

None of these change the model: train/eval mode is restored per module and no weight is
touched (MACs and latency are measured in eval mode, under no_grad).
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "weight_bytes", "count_macs", "latency_ms", "cost"]

# Weights an int8 deployment quantises per output channel; everything else stays fp32.
_QUANTISED = (nn.Linear, nn.modules.conv._ConvNd)


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or frozen (shared ones once); buffers are not parameters."""
    return sum(p.numel() for p in model.parameters())


def _buffers_that_matter(model: nn.Module) -> Iterator[torch.Tensor]:
    # Persistent floating-point buffers (BN running mean/var) ship with the weights;
    # integer counters such as num_batches_tracked and non-persistent scratch do not.
    seen: set[int] = set()
    for mod in model.modules():
        for name, buf in mod.named_buffers(recurse=False):
            if buf is None or name in mod._non_persistent_buffers_set or not buf.is_floating_point():
                continue
            if id(buf) not in seen:
                seen.add(id(buf))
                yield buf


def weight_bytes(model: nn.Module, dtype: str = "fp32") -> int:
    """Bytes of weights to store: "fp32" (4 B each) or "int8" (Conv/Linear weights at 1 B plus
    one fp32 scale per output channel; biases, norms and buffers at 4 B)."""
    if dtype not in ("fp32", "int8"):
        raise ValueError(f"dtype must be 'fp32' or 'int8', got {dtype!r}")
    buffers = 4 * sum(b.numel() for b in _buffers_that_matter(model))
    if dtype == "fp32":
        return 4 * count_params(model) + buffers
    quantised: set[int] = set()
    total = 0
    for mod in model.modules():
        w = getattr(mod, "weight", None)
        if isinstance(mod, _QUANTISED) and isinstance(w, nn.Parameter) and id(w) not in quantised:
            quantised.add(id(w))
            # out_channels / out_features rather than weight.shape[0]: ConvTranspose keeps
            # its outputs on dim 1.
            out = mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels
            total += w.numel() + 4 * out
    rest = sum(p.numel() for p in model.parameters() if id(p) not in quantised)
    return total + 4 * rest + buffers


@contextlib.contextmanager
def _eval_no_grad(model: nn.Module) -> Iterator[nn.Module]:
    # Remember every module's flag, not just the root's: a caller may have frozen BN
    # layers in eval while the rest trains.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


def _sample(model: nn.Module, shape: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
    p = next(iter(model.parameters()), None)
    dev = device if device is not None else (p.device if p is not None else "cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return torch.randn(shape, device=dev, dtype=dtype)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates for one sample of `input_shape` (no batch dim), = FLOPs // 2.

    Counts what FlopCounterMode counts (matmuls, convolutions, attention); element-wise
    ops such as BN, ReLU and pooling are free, which is the usual convention."""
    with _eval_no_grad(model):
        counter = FlopCounterMode(display=False)  # display=True prints a table on exit
        with counter:
            model(_sample(model, (1, *input_shape)))
    return int(counter.get_total_flops()) // 2


def latency_ms(model: nn.Module, input_shape: tuple[int, ...], *, batch: int = 1, repeats: int = 50,
               device: str = "cpu") -> float:
    """Median wall time in ms of one forward pass on `batch` samples, after warm-up."""
    dev = torch.device(device)
    p = next(iter(model.parameters()), None)
    # Time a copy if the model lives elsewhere: moving the caller's model would change it.
    net = model if p is None or p.device == dev else copy.deepcopy(model).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = []
    with _eval_no_grad(net):
        x = _sample(net, (batch, *input_shape), dev)
        for _ in range(max(3, repeats // 5)):  # warm-up: allocator, kernel selection, caches
            net(x)
        sync()
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            net(x)
            sync()
            times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def cost(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """The four cost axes a front can use, all ints: params, bytes_fp32, bytes_int8, macs."""
    return {
        "params": count_params(model),
        "bytes_fp32": weight_bytes(model, "fp32"),
        "bytes_int8": weight_bytes(model, "int8"),
        "macs": count_macs(model, tuple(input_shape)),
    }
