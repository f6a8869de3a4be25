"""The trial side's Ray functions, called in-process: the cohort trial and the mentor task."""

import numpy as np
import pytest

from search.config import ArchConfig, CohortSpec, MemberConfig, TermConfig, TrainConfig, WorkItem, WorkKind
from search.spaces import AssistantSpec, MentorArch, MentorSpec
from search.train import trial
from search.train.trial import cohort_gap, on_device, prepare_mentor, splits_to_arrays


@pytest.fixture(scope="module")
def data(mnist1d_small):
    s = mnist1d_small
    return {"name": s.name, "tensors": splits_to_arrays(s), "num_classes": s.num_classes,
            "input_shape": tuple(s.input_shape)}


def test_prepare_mentor_trains_once_then_loads(data, tmp_path):
    spec = MentorSpec(path=str(tmp_path / "m.pt"), arch=MentorArch(widths=[8, 8, 8]), epochs=1)
    first = prepare_mentor(spec, data, ["layer2", "layer3"], None, "cpu")
    assert first["trained_file"] is not None  # first use: trained, and the file's bytes come back
    assert first["logits"].shape == (len(data["tensors"]["x_train"]), 10)
    assert set(first["feats"]) == {"layer2", "layer3"} and first["shapes"]["layer3"][0] == 8
    again = prepare_mentor(spec, data, ["layer3"], first["trained_file"], "cpu")
    assert again["trained_file"] is None  # loaded, not trained
    np.testing.assert_allclose(again["feats"]["layer3"].astype(np.float32),
                               first["feats"]["layer3"].astype(np.float32), atol=1e-3)


def test_payload_lands_on_the_device_once(data, tmp_path):
    from search.config import TrialPayload

    p = TrialPayload("sweep-1", "cpu", data["name"], 10, data["input_shape"], data["tensors"], None, {}, {})
    splits, cache = on_device(p)
    assert cache is None and splits.x_train.shape[1:] == tuple(data["input_shape"])
    assert on_device(p)[0] is splits  # the same process, the same sweep: built once
    q = TrialPayload("sweep-2", "cpu", data["name"], 10, data["input_shape"], data["tensors"], None, {}, {})
    assert on_device(q)[0] is not splits  # a new sweep frees the old one


def test_cohort_spec_is_the_trial_config():
    cfg = MemberConfig(ArchConfig("conv1d", (4,)), TrainConfig(epochs=1), (TermConfig("ce", 1.0),))
    spec = CohortSpec((WorkItem("0", WorkKind.SEARCHED, cfg, 0),))
    assert CohortSpec.from_dict(spec.to_dict()).items[0].config == cfg


def test_prepare_mentor_distils_the_assistant_once_then_loads_it(data, tmp_path):
    """Other teachers' outputs come qualified: a checkpoint from the mentor file, the assistant trained
    by the first task (its file's bytes come back for the driver) and only loaded by later ones."""
    spec = MentorSpec(path=str(tmp_path / "m.pt"), arch=MentorArch(widths=[8, 8, 8]), epochs=2, checkpoints=[1],
                      assistant=AssistantSpec(widths=[4, 4, 4], epochs=1), teacher=["final", "epoch1", "assistant"])
    names = ["assistant/layer3", "assistant/logits", "epoch1/layer3", "epoch1/logits", "layer3"]
    first = prepare_mentor(spec, data, names, None, "cpu")
    assert first["trained_file"] is not None and first["trained_assistant"] is not None
    assert set(first["feats"]) == set(names)
    assert first["shapes"]["assistant/layer3"][0] == 4 and first["shapes"]["epoch1/layer3"][0] == 8
    assert "assistant/logits" not in first["shapes"]
    again = prepare_mentor(spec, data, names, first["trained_file"], "cpu", first["trained_assistant"])
    assert again["trained_file"] is None and again["trained_assistant"] is None  # loaded, nothing trained
    for n in names:
        np.testing.assert_allclose(again["feats"][n].astype(np.float32), first["feats"][n].astype(np.float32),
                                   atol=1e-3)
    final_only = prepare_mentor(spec, data, ["layer3"], first["trained_file"], "cpu")
    assert final_only["trained_assistant"] is None and set(final_only["feats"]) == {"layer3"}  # not asked: not made


def test_gap_between_cohorts_is_from_one_end_of_training_to_the_next_start(monkeypatch):
    """A process's first cohort has no gap; each later one reports the seconds since the last one's
    training ended: the GPU's idle time that benchmarks add up (bench/sweep_throughput.py)."""
    monkeypatch.setattr(trial, "_LAST_TRAIN_END", None)
    assert cohort_gap(100.0, 130.0) == {}
    assert cohort_gap(130.5, 160.0) == {"gap": 0.5}
    assert cohort_gap(162.0, 190.0) == {"gap": 2.0}
