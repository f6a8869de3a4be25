"""Taps read by name through forward hooks, and projections between tap shapes."""

import pytest
import torch

from search.config import ArchConfig
from search.models import create_mentee
from search.taps import Projection, forward_with_taps, tap_shapes


@pytest.mark.parametrize("family,shape,widths,expect", [
    ("conv1d", (1, 40), (4, 8, 16), [(4, 40), (8, 20), (16, 10), (10,)]),
    ("conv2d", (1, 8, 8), (4, 8), [(4, 8, 8), (8, 4, 4), (10,)]),
    ("mlp", (4,), (5, 4), [(5,), (4,), (10,)]),
])
def test_tap_shapes(family, shape, widths, expect):
    net = create_mentee(ArchConfig(family, widths, kernel=3), shape, 10)
    assert list(net.taps) == [f"layer{i + 1}" for i in range(len(widths))] + ["head"]
    assert tap_shapes(net, net.taps, shape) == expect
    out, feats = forward_with_taps(net, torch.randn(3, *shape), net.taps)
    assert out.shape == (3, 10) and [tuple(f.shape[1:]) for f in feats] == expect


@pytest.mark.parametrize("src,dst", [((4, 40), (16, 10)), ((4, 5), (16, 20)), ((8, 4, 4), (32, 8, 8)),
                                     ((8, 10), (64,)), ((12,), (16, 5)), ((12,), (7,))])
def test_projection_shapes(src, dst):
    p = Projection(src, dst)
    out = p(torch.randn(2, *src))
    target = p.target(torch.randn(2, *dst))
    assert out.shape == target.shape

