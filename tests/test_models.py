"""Mentee families: shapes, parameter counts, the flat head's logical shape, errors that name the fix."""

import pytest
import torch

from search.config import ArchConfig
from search.errors import UserError
from search.models import create_mentee, logical_shapes
from search.taps import forward_with_taps


def test_spark_mlp_layers():
    # Spark ML's example: layers [4, 5, 4, 3] = 4 inputs, hidden 5 and 4, 3 classes
    net = create_mentee(ArchConfig("mlp", (5, 4)), (4,), 3)
    assert sum(p.numel() for p in net.parameters()) == (4 * 5 + 5) + (5 * 4 + 4) + (4 * 3 + 3)



def test_flat_head_logical_shape():
    net = create_mentee(ArchConfig("conv1d", (4, 8)), (1, 40), 10)
    assert logical_shapes(net)["head.weight"] == (10, 8, 20)


def test_unknown_family_and_tap():
    with pytest.raises(UserError, match="did you mean 'conv1d'"):
        create_mentee(ArchConfig("conv1", (4,)), (1, 40), 10)
    net = create_mentee(ArchConfig("conv1d", (4,)), (1, 40), 10)
    with pytest.raises(UserError, match="no layer named 'layer7'"):
        forward_with_taps(net, torch.randn(1, 1, 40), ["layer7"])
    with pytest.raises(UserError, match="conv2d"):
        create_mentee(ArchConfig("conv1d", (4,)), (1, 8, 8), 10)

