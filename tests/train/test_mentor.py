"""Mentors: trained as a cohort of one, saved as spec + state dict, loaded back the same."""

import torch

from search.config import ArchConfig
from search.mentors import load_mentor
from search.spaces import MentorArch, MentorSpec
from search.taps import forward_with_taps
from search.train.mentor import ensure_mentor, mentor_from_spec, train_mentor


def test_trained_mentor_saves_and_loads_the_same(mnist1d_small, tmp_path):
    path = tmp_path / "m.pt"
    m, metrics = train_mentor(ArchConfig("conv1d", (8, 8), 5, True), mnist1d_small, epochs=2, out=path)
    assert 0.1 < metrics["val_acc"] <= 1 and metrics["params"] > 0
    back = load_mentor(path, input_shape=mnist1d_small.input_shape, num_classes=10)
    x = mnist1d_small.x_val[:16]
    a, fa = forward_with_taps(m.model.eval(), x, ["layer2"])
    b, fb = forward_with_taps(back.model.eval(), x, ["layer2"])
    assert torch.allclose(a, b) and torch.allclose(fa[0], fb[0]) and back.taps == m.taps


def test_ensure_mentor_trains_on_first_use_only(mnist1d_small, tmp_path):
    spec = MentorSpec(path=str(tmp_path / "m.pt"), arch=MentorArch(widths=[8, 8]), epochs=1)
    assert mentor_from_spec(spec, mnist1d_small) is None
    ensure_mentor(spec, mnist1d_small)
    stamp = (tmp_path / "m.pt").stat().st_mtime_ns
    assert mentor_from_spec(spec, mnist1d_small) is not None
    ensure_mentor(spec, mnist1d_small)
    assert (tmp_path / "m.pt").stat().st_mtime_ns == stamp  # loaded, not trained again
