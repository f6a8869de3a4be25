"""What a mentee costs: parameters, weight memory, activation memory, MACs, latency, training memory.

    count_params(net)                       # 55 for nn.Linear(10, 5)
    weight_bytes(net, "int8")               # per-channel int8 Conv/Linear weights, the rest fp32
    count_macs(net, (1, 40))                # multiply-accumulates for one sample
    latency_ms(net, (1, 40), batch=1)       # median wall time of one forward pass (torch)
    cost(net, (1, 40))                      # {"params", "bytes_fp32", "bytes_int8", "macs"}: training logs it
    peak_activation_bytes(net, (1, 40))     # SRAM: the activation arena's high-water mark, int8
    architecture_cost(net, (1, 40))         # every cost known before training (the sweep's call)
    latency_ms_ort(net, (1, 40))            # pick time: ONNX Runtime, 1 thread, one sample
    training_memory_bytes(net, (1, 40), 32) # training on the device: weights, grads, AdamW, activations

Cost axes (MLflow metric names, runs-frame columns, dashboard axes; search.devices.AXES lists them):
params (count), bytes_fp32 / bytes_int8 (weight bytes: flash), sram_fp32 / sram_int8 (peak activation
bytes: SRAM), macs (per sample), latency_ms (ms on the picking machine).

None of these change the model: train/eval mode is restored per module and no weight is
touched (MACs and latency are measured in eval mode, under no_grad).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import statistics
import time
import warnings
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "weight_bytes", "count_macs", "latency_ms", "cost", "peak_activation_bytes",
           "architecture_cost", "latency_ms_ort", "training_memory", "training_memory_bytes"]

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


def architecture_cost(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Every cost of an architecture known before training, all ints: params, bytes_fp32, bytes_int8,
    sram_fp32, sram_int8, macs. Latency is measured apart, at pick time (`latency_ms_ort`)."""
    c = cost(model, input_shape)
    return {"params": c["params"], "bytes_fp32": c["bytes_fp32"], "bytes_int8": c["bytes_int8"],
            "sram_fp32": peak_activation_bytes(model, input_shape, "fp32"),
            "sram_int8": peak_activation_bytes(model, input_shape, "int8"), "macs": c["macs"]}


# ---- activation memory: an arena planned like TFLite Micro's ------------------------------------------------

def export_onnx(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """The model as ONNX bytes for one sample (input "x", output "y"), exported from a CPU copy in eval mode.

    The legacy TorchScript exporter (dynamo=False): ~10 ms for a small conv1d mentee against ~4 s for
    the dynamo one (measured here, torch 2.13), and the sweep sizes every distinct architecture."""
    p = next(iter(model.parameters()), None)
    net = model if p is None or p.device.type == "cpu" else copy.deepcopy(model).cpu()
    buf = io.BytesIO()
    with _eval_no_grad(net), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation and tracer warnings say nothing about this model
        # buf: the legacy exporter writes to a file-like object too; torch's annotation names paths only
        torch.onnx.export(net, (_sample(net, (1, *input_shape), torch.device("cpu")),), buf,  # type: ignore[arg-type]
                          dynamo=False,
                          training=torch.onnx.TrainingMode.EVAL, input_names=["x"], output_names=["y"])
    return buf.getvalue()


# Ops a microcontroller runtime runs in place (an activation fused into the conv before it, a folded
# batch norm, a reshape that is a view): their output takes the input's buffer when this op is that
# input's only reader. Element-wise binary ops qualify only with a weight as the other operand.
_IN_PLACE = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Selu", "Gelu",
    "Softplus", "Identity", "Dropout", "Cast", "BatchNormalization", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
    "Add", "Sub", "Mul", "Div",
})
_FLOAT_TYPES = {1, 10, 11, 16}  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16: stored at the deployment precision
_ARENA_CACHE: dict[tuple, list[tuple[int, int, int, int]]] = {}
_ARENA_CACHE_MAX = 4096


def _arch_key(model: nn.Module, input_shape: tuple[int, ...]) -> tuple:
    # What fixes the graph: the module tree (its repr names every layer's shape, kernel, stride), the
    # parameter and buffer shapes and the input shape. Weights' values do not change the arena.
    return (type(model).__module__, type(model).__qualname__, repr(model),
            tuple((n, tuple(p.shape), p.dtype) for n, p in model.named_parameters()),
            tuple((n, tuple(b.shape), b.dtype) for n, b in model.named_buffers()), tuple(input_shape))


def arena_buffers(onnx_model) -> list[tuple[int, int, int, int]]:
    """(elements, element bytes or 0 for a float tensor, first op, last op) for every buffer the arena
    holds: graph inputs, intermediates and outputs; weights (initializers, constants and what is
    computed from them alone) are excluded. A graph input lives from op 0, an output to the last op;
    an in-place op's output shares its input's buffer, which then lives until the output's last reader."""
    import onnx
    from onnx import helper

    g = onnx.shape_inference.infer_shapes(onnx_model, strict_mode=True).graph
    weights = {t.name for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" or (any(node.input) and all(i in weights for i in node.input if i)):
            weights.update(node.output)
    types = {v.name: v.type.tensor_type for v in [*g.input, *g.value_info, *g.output]}

    def size(name: str) -> tuple[int, int]:
        t = types.get(name)
        if t is None or not t.HasField("shape") or any(not d.HasField("dim_value") for d in t.shape.dim):
            raise ValueError(f"ONNX tensor '{name}' has no static shape; cannot plan its memory")
        n = math.prod(d.dim_value for d in t.shape.dim)
        return n, 0 if t.elem_type in _FLOAT_TYPES else helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize

    last_op = len(g.node) - 1
    outputs = {o.name for o in g.output}
    readers: dict[str, int] = {}
    for node in g.node:
        for name in set(node.input) - weights - {""}:
            readers[name] = readers.get(name, 0) + 1
    owner: dict[str, str] = {}  # tensor → the tensor whose buffer it lives in
    span: dict[str, list[int]] = {}  # buffer (its owner's name) → [first op, last op]
    for v in g.input:
        if v.name not in weights:
            owner[v.name] = v.name
            span[v.name] = [0, last_op if v.name in outputs else 0]
    for i, node in enumerate(g.node):
        live_in = [x for x in node.input if x and x not in weights]
        for x in live_in:
            span[owner[x]][1] = max(span[owner[x]][1], i)
        for out in node.output:
            if not out or out in weights:
                continue
            x = live_in[0] if len(live_in) == 1 else None
            if (node.op_type in _IN_PLACE and x is not None and readers.get(x) == 1 and x not in outputs
                    and size(x) == size(out)):
                owner[out] = owner[x]
            else:
                owner[out] = out
                span[out] = [i, i]
            if out in outputs:
                span[owner[out]][1] = last_op
    return [(*size(name), first, last) for name, (first, last) in span.items()]


def plan_arena(buffers: list[tuple[int, int, int]], align: int = 16) -> int:
    """TFLite Micro's GreedyMemoryPlanner on (bytes, first op, last op) buffers: largest first, each at
    the lowest offset where it overlaps no placed buffer alive at some same op (inclusive bounds);
    sizes rounded up to `align` (TFLM aligns to 16 B). Returns the arena's high-water mark in bytes."""
    sized = [(-(-b // align) * align, f, la) for b, f, la in buffers if b > 0]
    order = sorted(range(len(sized)), key=lambda i: (-sized[i][0], sized[i][1], i))
    placed: list[tuple[int, int, int, int]] = []  # (offset, bytes, first, last)
    peak = 0
    for i in order:
        nbytes, first, last = sized[i]
        offset = 0
        for o, s, _, _ in sorted(p for p in placed if p[2] <= last and p[3] >= first):
            if o >= offset + nbytes:  # the gap below this neighbour holds it
                break
            offset = max(offset, o + s)
        placed.append((offset, nbytes, first, last))
        peak = max(peak, offset + nbytes)
    return peak


def peak_activation_bytes(model: nn.Module, input_shape: tuple[int, ...], dtype: str = "int8", *,
                          align: int = 16) -> int:
    """SRAM an inference needs for activations: the high-water mark of a tensor arena planned like
    TFLite Micro's (graph input, intermediates and output; weights live in flash). Float tensors are
    stored at `dtype` ("int8": 1 B, "fp32": 4 B), integer ones at their own size. The ONNX graph and
    its lifetimes are cached per architecture (`_arch_key`), so a second call costs microseconds."""
    if dtype not in ("fp32", "int8"):
        raise ValueError(f"dtype must be 'fp32' or 'int8', got {dtype!r}")
    key = _arch_key(model, input_shape)
    if key not in _ARENA_CACHE:
        import onnx

        if len(_ARENA_CACHE) >= _ARENA_CACHE_MAX:
            _ARENA_CACHE.pop(next(iter(_ARENA_CACHE)))  # oldest first
        _ARENA_CACHE[key] = arena_buffers(onnx.load_from_string(export_onnx(model, tuple(input_shape))))
    float_bytes = 1 if dtype == "int8" else 4
    return plan_arena([(n * (eb or float_bytes), f, la) for n, eb, f, la in _ARENA_CACHE[key]], align)


# ---- latency and training memory -----------------------------------------------------------------------------

def latency_ms_ort(model: nn.Module, input_shape: tuple[int, ...], *, repeats: int = 200, warmup: int = 20) -> float:
    """Median ms of one single-sample inference in ONNX Runtime on this machine, with one thread
    (intra_op and inter_op): the number a device profile's latency `scale` multiplies."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    sess = ort.InferenceSession(export_onnx(model, tuple(input_shape)), opts, providers=["CPUExecutionProvider"])
    x = {"x": np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)}
    for _ in range(warmup):
        sess.run(None, x)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        sess.run(None, x)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


# Optimiser state per trainable parameter element, in tensors like the parameter.
_OPTIMIZER_STATE = {"sgd": 0, "sgd_momentum": 1, "rmsprop": 1, "adagrad": 1, "adam": 2, "adamw": 2}


def training_memory(model: nn.Module, input_shape: tuple[int, ...], batch_size: int,
                    optimizer: str = "adamw") -> dict[str, int]:
    """Bytes to train the model on a device at `batch_size`, by part (the seed paper's "train the mentee
    on the phone" use). What is counted:

    - weights: every parameter and persistent float buffer (BN running stats), at their dtype;
    - gradients: one per trainable parameter;
    - optimizer: its state per trainable parameter (AdamW/Adam 2, SGD with momentum/RMSprop/Adagrad 1, SGD 0);
    - activations: what autograd saves for the backward pass in one training-mode forward of a batch
      plus a cross-entropy loss, each storage once (a ReLU's output read by the next conv counts once;
      the input batch counts; weights saved by an op do not count again);
    - backward: the gradients in flight while the backward pass crosses the widest layer — the one
      arriving at its output and the one it passes back — taken as twice the largest saved tensor.

    Not counted: a convolution's own workspace (im2col) in its backward, allocator slack, the framework's
    own memory and the data set. Checked against torch's measured peak of a training step on the CPU
    (tests/test_measure.py: within 15% on a conv1d, a conv2d and an MLP; a wide conv2d on 3×32×32 inputs
    measured 20% above, its workspace). fp32 training; mixed precision would take less."""
    if optimizer not in _OPTIMIZER_STATE:
        raise ValueError(f"optimizer must be one of {', '.join(_OPTIMIZER_STATE)}, got {optimizer!r}")
    params = list({id(p): p for p in model.parameters()}.values())
    trainable = [p for p in params if p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in params)
    weights += sum(b.numel() * b.element_size() for b in _buffers_that_matter(model))
    grads = sum(p.numel() * p.element_size() for p in trainable)
    # A CPU copy in train mode: the caller's BN running stats stay untouched, and no CUDA is needed.
    net = copy.deepcopy(model).cpu().float().train()
    held = {t.untyped_storage().data_ptr() for t in [*net.parameters(), *net.buffers()]}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in held:
            saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    x = torch.randn((batch_size, *input_shape))
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
        if out.dim() == 2:
            nn.functional.cross_entropy(out, torch.zeros(batch_size, dtype=torch.long))
        else:
            out.float().pow(2).mean()
    parts = {"weights": weights, "gradients": grads, "optimizer": _OPTIMIZER_STATE[optimizer] * grads,
             "activations": sum(saved.values()), "backward": 2 * max(saved.values(), default=0)}
    return {**parts, "total": sum(parts.values())}


def training_memory_bytes(model: nn.Module, input_shape: tuple[int, ...], batch_size: int,
                          optimizer: str = "adamw") -> int:
    """Total of `training_memory`: weights + gradients + optimiser state + saved activations + the
    backward pass's gradients in flight, in bytes."""
    return training_memory(model, input_shape, batch_size, optimizer)["total"]
