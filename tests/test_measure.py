"""Cost numbers checked against hand counts."""

from __future__ import annotations

import torch
from torch import nn

from search.measure import cost, count_macs, count_params, latency_ms, weight_bytes


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
