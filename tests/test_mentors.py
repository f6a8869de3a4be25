"""A mentor's file: our families' spec + weights round-trip, any nn.Module by factory, bad files named."""

import sys
import textwrap

import pytest
import torch
from torch import nn

from search.config import ArchConfig
from search.errors import UserError
from search.mentors import load_mentor, save_mentor
from search.models import create_mentee


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
