import sys
import textwrap

import pytest
import torch
from torch import nn

from search.config import ArchConfig
from search.errors import UserError
from search.models import (
    Projection,
    create_mentee,
    forward_with_taps,
    load_mentor,
    logical_shapes,
    save_mentor,
    tap_shapes,
)


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


def test_spark_mlp_layers():
    # Spark ML's example: layers [4, 5, 4, 3] = 4 inputs, hidden 5 and 4, 3 classes
    net = create_mentee(ArchConfig("mlp", (5, 4)), (4,), 3)
    assert sum(p.numel() for p in net.parameters()) == (4 * 5 + 5) + (5 * 4 + 4) + (4 * 3 + 3)


@pytest.mark.parametrize("src,dst", [((4, 40), (16, 10)), ((4, 5), (16, 20)), ((8, 4, 4), (32, 8, 8)),
                                     ((8, 10), (64,)), ((12,), (16, 5)), ((12,), (7,))])
def test_projection_shapes(src, dst):
    p = Projection(src, dst)
    out = p(torch.randn(2, *src))
    target = p.target(torch.randn(2, *dst))
    assert out.shape == target.shape


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


def test_mentor_round_trip_and_bad_files(tmp_path):
    arch = ArchConfig("conv1d", (8, 8), batch_norm=True)
    net = create_mentee(arch, (1, 40), 10)
    path = save_mentor(tmp_path / "m.pt", net, arch, dataset="mnist1d", input_shape=(1, 40), num_classes=10,
                       metrics={"test_acc": 0.5})
    m = load_mentor(path)
    x = torch.randn(4, 1, 40)
    assert torch.equal(m.model(x), net.eval()(x))
    assert m.taps == ("layer1", "layer2", "head")

    (tmp_path / "text.pt").write_text("not weights")
    with pytest.raises(UserError, match="text.pt: not a PyTorch weights file"):
        load_mentor(tmp_path / "text.pt")
    with pytest.raises(UserError, match="not found"):
        load_mentor(tmp_path / "missing.pt")
    # the right format but a state dict of another shape
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["layer1.0.weight"] = torch.zeros(3, 1, 5)
    torch.save(blob, tmp_path / "shape.pt")
    with pytest.raises(UserError, match=r"shape.pt: weight 'layer1.0.weight' has shape \(3, 1, 5\)"):
        load_mentor(tmp_path / "shape.pt")


def test_user_mentor_by_factory_and_hooks(tmp_path, monkeypatch):
    # any nn.Module: tapped by dotted names through hooks, forward untouched
    (tmp_path / "my_nets.py").write_text(textwrap.dedent("""
        from torch import nn
        def big():
            return nn.Sequential(nn.Conv1d(1, 6, 3, padding=1), nn.ReLU(),
                                 nn.Sequential(nn.Conv1d(6, 6, 3, padding=1), nn.ReLU()),
                                 nn.Flatten(), nn.Linear(240, 10))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_nets", None)
    import my_nets

    net = my_nets.big()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    m = load_mentor(tmp_path / "w.pt", factory="my_nets:big", taps=["2.0", "4"], input_shape=(1, 40),
                    num_classes=10)
    assert m.tap_shapes(["2.0", "4"]) == [(6, 40), (10,)]
    with pytest.raises(UserError, match="no layer named '2.5'"):
        load_mentor(tmp_path / "w.pt", factory="my_nets:big", taps=["2.5"], input_shape=(1, 40), num_classes=10)
    with pytest.raises(UserError, match="my_nets:nope"):
        load_mentor(tmp_path / "w.pt", factory="my_nets:nope", taps=["4"], input_shape=(1, 40), num_classes=10)
    assert isinstance(m.model, nn.Module)
