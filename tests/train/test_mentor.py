"""Mentors: trained as a cohort of one, saved as spec + state dict, loaded back the same."""

import pytest
import torch

from search.config import ArchConfig
from search.errors import UserError
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


def test_checkpoints_are_kept_in_the_mentor_file(mnist1d_small, tmp_path):
    """The version `epoch1` of a mentor trained 3 epochs is its weights at the end of epoch 1: its
    validation accuracy is the one training recorded for that epoch, and it is not the final one."""
    path = tmp_path / "m.pt"
    _, metrics = train_mentor(ArchConfig("conv1d", (8, 8), 5, True), mnist1d_small, epochs=3, lr=1e-2,
                              checkpoints=[1, 2], out=path)
    final = load_mentor(path)
    assert final.spec["versions"] == ["final", "epoch1", "epoch2"]
    x, y = mnist1d_small.x_val, mnist1d_small.y_val
    for e in (1, 2):
        early = load_mentor(path, version=f"epoch{e}")
        with torch.no_grad():
            acc = (early.model.eval()(x).argmax(-1) == y).float().mean().item()
        assert acc == pytest.approx(metrics[f"epoch{e}.val_acc"], abs=1.5 / len(y))
        assert not torch.equal(early.model.layer1[0].weight, final.model.layer1[0].weight)
    with pytest.raises(UserError, match=r"m.pt: no mentor version 'epoch5' in this file; it holds: final, epoch1, "):
        load_mentor(path, version="epoch5")
    with pytest.raises(ValueError, match="checkpoint epoch 3 is outside 1..2"):
        train_mentor(ArchConfig("conv1d", (8, 8), 5, True), mnist1d_small, epochs=3, checkpoints=[3])


def test_a_mentor_file_without_the_checkpoint_a_space_teaches_from_is_one_line(mnist1d_small, tmp_path):
    spec = MentorSpec(path=str(tmp_path / "m.pt"), arch=MentorArch(widths=[8, 8]), epochs=2)
    ensure_mentor(spec, mnist1d_small)  # trained before the space named checkpoints
    later = MentorSpec(path=spec.path, arch=MentorArch(widths=[8, 8]), epochs=2, checkpoints=[1],
                       teacher=["final", "epoch1"])
    with pytest.raises(UserError, match="m.pt: the mentor file holds no checkpoint 'epoch1'") as e:
        mentor_from_spec(later, mnist1d_small)
    assert "\n" not in str(e.value) and "move the file away" in str(e.value)
    unused = MentorSpec(path=spec.path, arch=MentorArch(widths=[8, 8]), epochs=2, checkpoints=[1])
    assert mentor_from_spec(unused, mnist1d_small) is not None  # kept, but no teacher asks for it


def test_a_chain_of_assistants_distils_each_from_the_one_before(mnist1d_small, tmp_path):
    """mentor → via[0] → the assistant: each step one training of `epochs`, only the last saved; an
    empty chain leaves the spec's dump (its hash, the assistant file's key) as it was."""
    from search.spaces import AssistantSpec
    from search.train.mentor import train_assistant

    mentor, _ = train_mentor(ArchConfig("conv1d", (16, 16, 16), 5, True), mnist1d_small, epochs=1)
    spec = MentorSpec(path=str(tmp_path / "m.pt"), arch=MentorArch(widths=[16, 16, 16]), epochs=1,
                      assistant=AssistantSpec(widths=[4, 4, 4], epochs=2, via=[[8, 8, 8]]))
    epochs: list[int] = []
    out = tmp_path / "a.pt"
    chained, _ = train_assistant(spec, mentor, mnist1d_small, out=out, on_epoch=lambda e, n: epochs.append(e))
    assert len(epochs) == 4  # two steps of 2 epochs
    assert tuple(load_mentor(out).spec["arch"]["widths"]) == (4, 4, 4) and chained.model.layer1[0].weight.shape[0] == 4
    direct = MentorSpec(**{**spec.model_dump(), "assistant": AssistantSpec(widths=[4, 4, 4], epochs=2)})
    alone, _ = train_assistant(direct, mentor, mnist1d_small)
    assert not torch.equal(alone.model.layer1[0].weight, chained.model.layer1[0].weight)  # another teacher
    assert "via" not in direct.assistant.model_dump() and spec.assistant.model_dump()["via"] == [[8, 8, 8]]
    bad = MentorSpec(**{**spec.model_dump(), "assistant": AssistantSpec(widths=[4, 4, 4], via=[[8, 8]])})
    with pytest.raises(UserError, match=r"mentor.assistant.via\[0\]: expected 3 widths"):
        train_assistant(bad, mentor, mnist1d_small)
