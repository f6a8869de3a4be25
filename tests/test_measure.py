"""Cost numbers checked against hand counts."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from search.config import ArchConfig
from search.measure import (
    architecture_cost,
    arena_buffers,
    cost,
    count_macs,
    count_params,
    export_onnx,
    latency_ms,
    latency_ms_ort,
    peak_activation_bytes,
    plan_arena,
    training_memory,
    training_memory_bytes,
    weight_bytes,
)
from search.models import create_mentee


def conv_net() -> nn.Module:
    # conv 4·1·5 + 4 = 24, BN 4 + 4 = 8 (+ 8 running stats), head 160·3 + 3 = 483
    return nn.Sequential(nn.Conv1d(1, 4, kernel_size=5, padding=2), nn.BatchNorm1d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 40, 3))


def test_linear_by_hand():
    net = nn.Linear(10, 5)
    assert count_params(net) == 55
    assert weight_bytes(net, "fp32") == 55 * 4
    assert weight_bytes(net, "int8") == 50 * 1 + 5 * 4 + 5 * 4  # weights, per-channel scales, bias
    assert count_macs(net, (10,)) == 50
    assert cost(net, (10,)) == {"params": 55, "bytes_fp32": 220, "bytes_int8": 90, "macs": 50}


def test_conv_by_hand():
    assert count_macs(nn.Conv1d(1, 4, kernel_size=5, padding=2), (1, 40)) == 4 * 40 * 5
    net = conv_net()
    assert count_params(net) == 24 + 8 + 483
    assert weight_bytes(net, "fp32") == 4 * 515 + 4 * 8  # running mean/var count, num_batches_tracked not
    int8 = (20 + 4 * 4) + (480 + 3 * 4) + 4 * (4 + 8 + 3) + 4 * 8
    assert weight_bytes(net, "int8") == int8
    assert count_macs(net, (1, 40)) == 800 + 480  # BN and ReLU are free
    c = cost(net, (1, 40))
    assert c == {"params": 515, "bytes_fp32": 2092, "bytes_int8": 620, "macs": 1280}
    assert all(type(v) is int for v in c.values())


def test_frozen_params_count_buffers_are_not_params():
    net = conv_net()
    net[0].weight.requires_grad_(False)
    assert count_params(net) == 515
    shared = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    shared.append(shared[0])  # a tied layer is stored once
    assert count_params(shared) == 12
    assert weight_bytes(shared, "int8") == 9 + 3 * 4 + 3 * 4


def test_mode_and_weights_untouched():
    net = conv_net().train()
    net[1].eval()  # a frozen BN inside a training model keeps its own flag
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cost(net, (1, 40))
    latency_ms(net, (1, 40), repeats=3)
    assert net.training and net[0].training and not net[1].training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN running stats not updated by a train-mode forward
    net.eval()
    cost(net, (1, 40))
    assert not net.training and not net[0].training


def test_no_table_printed(capsys):
    count_macs(conv_net(), (1, 40))
    assert capsys.readouterr().out == ""


def test_latency_positive():
    ms = latency_ms(nn.Linear(10, 5), (10,), batch=4, repeats=5)
    assert 0 < ms < 1000


class Skip(nn.Module):
    """x → a → relu → c → d → (+ relu out) → head: a residual, so two activations meet at the Add."""

    def __init__(self):
        super().__init__()
        self.a, self.c, self.d, self.head = nn.Linear(16, 32), nn.Linear(32, 8), nn.Linear(8, 32), nn.Linear(32, 4)

    def forward(self, x):
        b = torch.relu(self.a(x))
        return self.head(b + self.d(self.c(b)))


def test_arena_planner_by_hand():
    # ONNX ops: 0 Gemm a, 1 Relu, 2 Gemm c, 3 Gemm d, 4 Add, 5 Gemm head. At int8 a float element is 1 B.
    # Buffers (bytes, first op, last op):
    #   x   16 [0, 0]   graph input, read by op 0
    #   a   32 [0, 4]   Relu runs in place (its only reader), so relu(a) shares a's buffer, read by 2 and 4
    #   c    8 [2, 3]
    #   d   32 [3, 4]
    #   e   32 [4, 5]   the Add's output (two activations in: not in place)
    #   out  4 [5, 5]   graph output, alive to the last op
    # Greedy, largest first (ties by first use): a @0; d meets a at op 3-4 → @32; e meets a and d at op 4
    # → @64; x meets only a → @32; c meets a [0,32) and d [32,64) → @64; out meets only e → @0.
    # High-water mark = e's end = 96 B (every buffer laid end to end would take 124 B; at op 4 a, d and e
    # are alive together, 96 B, so 96 is also the least possible). fp32: every size ×4 → 384 B.
    net = Skip()
    bufs = arena_buffers(onnx.load_from_string(export_onnx(net, (16,))))
    assert sorted(bufs) == sorted([(16, 0, 0, 0), (32, 0, 0, 4), (8, 0, 2, 3), (32, 0, 3, 4), (32, 0, 4, 5),
                                   (4, 0, 5, 5)])
    assert peak_activation_bytes(net, (16,), "int8", align=1) == 96
    assert peak_activation_bytes(net, (16,), "fp32", align=1) == 384
    # TFLM's 16 B alignment: c 8 → 16 B and out 4 → 16 B still fit in the same gaps: 96 again.
    assert peak_activation_bytes(net, (16,)) == 96


def test_plan_arena_reuses_and_aligns():
    assert plan_arena([(10, 0, 0), (10, 1, 1)], align=1) == 10  # lifetimes apart: one slot serves both
    assert plan_arena([(10, 0, 1), (10, 1, 2)], align=1) == 20  # both alive at op 1 (bounds inclusive)
    assert plan_arena([(10, 0, 1), (10, 1, 2)], align=16) == 32  # each rounded up to 16 B
    # 40 [0,2] @0; 30 [0,0] meets it → @40; 20 [1,1] meets only the 40 (the 30 is dead by op 1) → @40,
    # the 30's old slot. Peak 40 + 30 = 70.
    assert plan_arena([(40, 0, 2), (30, 0, 0), (20, 1, 1)], align=1) == 70


def test_mentee_sram_by_hand():
    # conv1d widths (8, 16, 32), kernel 5, input (1, 40); stride 2 after the first layer:
    # activations 1·40 = 40, 8·40 = 320, 16·20 = 320, 32·10 = 320 (ReLU and Flatten in place), logits 10.
    # Two neighbouring 320 B tensors are alive while a conv runs: 640 B at int8, 2560 B at fp32.
    net = create_mentee(ArchConfig("conv1d", (8, 16, 32)), (1, 40), 10)
    assert peak_activation_bytes(net, (1, 40), "int8") == 640
    assert peak_activation_bytes(net, (1, 40), "fp32") == 2560
    # Batch norm exports as Cast → BatchNormalization → Relu after each conv: all in place, same arena.
    bn = create_mentee(ArchConfig("conv1d", (8, 16, 32), batch_norm=True), (1, 40), 10)
    assert peak_activation_bytes(bn, (1, 40), "int8") == 640


def test_arena_cached_per_architecture_and_cheap():
    peak_activation_bytes(create_mentee(ArchConfig("conv1d", (4, 4)), (1, 40), 10), (1, 40))  # warm the exporter
    t0 = time.perf_counter()
    first = peak_activation_bytes(create_mentee(ArchConfig("conv1d", (12, 24, 12)), (1, 40), 10), (1, 40))
    t_new = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = peak_activation_bytes(create_mentee(ArchConfig("conv1d", (12, 24, 12)), (1, 40), 10), (1, 40))
    t_cached = time.perf_counter() - t0
    assert first == again == 2 * 24 * 20  # layer2 (24·20 = 480) beside layer1 (12·40 = 480) or layer3 (12·10)
    assert t_new < 0.5 and t_cached < 0.02, (t_new, t_cached)


def test_architecture_cost_axes():
    net = conv_net()
    c = architecture_cost(net, (1, 40))
    assert list(c) == ["params", "bytes_fp32", "bytes_int8", "sram_fp32", "sram_int8", "macs"]
    assert {k: c[k] for k in ("params", "bytes_fp32", "bytes_int8", "macs")} == cost(net, (1, 40))
    # int8: conv output 4·40 = 160 B (BN, ReLU, Flatten in place) @0; the input 40 → 48 B aligned, alive
    # with it at the conv → @160; logits 3 → 16 B, alive with it at the head → @160. Peak 208 B.
    # fp32: conv output 640 @0, input 160 @640 → 800 B.
    assert c["sram_int8"] == 208 and c["sram_fp32"] == 800
    assert all(type(v) is int for v in c.values())


def test_latency_ort_positive_and_grows_with_work():
    small = nn.Linear(10, 5)
    big = nn.Sequential(nn.Conv1d(1, 128, 9, padding=4), nn.ReLU(), nn.Conv1d(128, 128, 9, padding=4), nn.ReLU())
    big.train()
    t_small = latency_ms_ort(small, (10,), repeats=20)
    t_big = latency_ms_ort(big, (1, 512), repeats=5, warmup=2)  # 75M MACs vs 50
    assert 0 < t_small < 50 < 1000 * t_big and t_big > 10 * t_small, (t_small, t_big)
    assert big.training  # exported in eval, mode given back


def test_training_memory_by_hand():
    # Linear(10, 5), batch 4, AdamW: weights 55·4 = 220 B, grads 220, two moments 440.
    # Saved for backward: the input batch 4·10·4 = 160, log_softmax's output 4·5·4 = 80 (read again by
    # nll_loss: one storage), the int64 targets 4·8 = 32 and nll_loss's fp32 total weight 4 → 276.
    # In flight in backward: twice the largest saved tensor (the input batch, 160).
    m = training_memory(nn.Linear(10, 5), (10,), 4)
    assert m == {"weights": 220, "gradients": 220, "optimizer": 440, "activations": 276, "backward": 320,
                 "total": 1476}
    # Linear 10→8, ReLU, Linear 8→5 with SGD: weights (88 + 45)·4 = 532, grads 532, no state; ReLU saves
    # its output 4·8·4 = 128, which the second Linear saves too (counted once): 160 + 128 + 80 + 32 + 4.
    net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 5))
    assert training_memory_bytes(net, (10,), 4, "sgd") == 532 + 532 + 404 + 2 * 160
    net[0].weight.requires_grad_(False)  # frozen: no gradient, no optimiser state
    assert training_memory(net, (10,), 4, "adamw")["gradients"] == 532 - 320
    with pytest.raises(ValueError, match="optimizer"):
        training_memory(net, (10,), 4, "lion")


def test_training_memory_grows_with_batch_and_leaves_model_alone():
    net = conv_net().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    m8, m64 = training_memory(net, (1, 40), 8), training_memory(net, (1, 40), 64)
    assert m64["activations"] > 7 * m8["activations"] and m64["weights"] == m8["weights"]
    assert not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # the train-mode forward ran on a copy


def torch_peak_bytes(net: nn.Module, input_shape: tuple[int, ...], batch: int) -> int:
    """torch's own measure: the CPU memory timeline of its profiler (every tensor by category, op by op)
    over one AdamW training step after a first one made the gradients and the optimiser state."""
    import json
    import warnings

    torch.manual_seed(0)
    net = net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, y = torch.randn(batch, *input_shape), torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True,
                                record_shapes=True, with_stack=True) as prof:
        step()
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore", FutureWarning)  # deprecated for CUDA's snapshots; the CPU's only view
        prof.export_memory_timeline(f"{tmp}/timeline.json", device="cpu")
        _, sizes = json.loads(Path(f"{tmp}/timeline.json").read_text())
    return max(sum(s) for s in sizes)


@pytest.mark.parametrize("arch,shape", [
    (ArchConfig("conv1d", (8, 16), 5, True), (1, 40)),
    (ArchConfig("conv2d", (8, 16), 3, True), (1, 28, 28)),
    (ArchConfig("mlp", (64, 32), 1, False), (1, 40)),
], ids=["conv1d", "conv2d", "mlp"])
def test_training_memory_within_15_percent_of_torchs_measured_peak(arch, shape):
    """What a device profile's `train` budget is checked with, against what torch measures on the CPU."""
    net = create_mentee(arch, shape, 10)
    est = training_memory_bytes(net, shape, 64, "adamw")
    peak = torch_peak_bytes(net, shape, 64)
    assert abs(est / peak - 1) <= 0.15, (est, peak, est / peak)
