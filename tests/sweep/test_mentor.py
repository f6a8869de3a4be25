"""The driver's side of the mentor: it saves what the Ray task trained (the mentor, its teacher
assistant, the cache) and never trains; a later sweep sends the assistant's file back instead."""

from __future__ import annotations

import numpy as np

from search.spaces import parse_space
from search.sweep.mentor import mentor_outputs
from search.sweep.plan import plan_sweep


def test_the_assistant_is_trained_once_and_its_file_reused(ray_local, tmp_path):
    space = parse_space({
        "dataset": {"name": "mnist1d", "n_samples": 300},
        "mentor": {"path": str(tmp_path / "m.pt"), "arch": {"widths": [8, 8, 8]}, "epochs": 2, "checkpoints": [1],
                   "assistant": {"widths": [4, 4, 4], "epochs": 1}, "teacher": ["final", "epoch1", "assistant"]},
        "mentee": {"depth": [1, 2], "width": [4]},
        "terms": {"hint": {"taps": {"last": ["layer3"]}}, "kd": {"enabled": [False, True]}},
        "train": {"epochs": 1},
    }, "teach.yaml")
    plan = plan_sweep(space, where="teach.yaml", gpus=0)
    first = mentor_outputs(space, plan, gpus=0)
    assert first["trained_assistant"] is not None
    assert set(first["feats"]) == {"layer3", "epoch1/layer3", "epoch1/logits", "assistant/layer3", "assistant/logits"}
    (assistant,) = tmp_path.glob("m.pt.assistant-*.pt")
    (cache,) = tmp_path.glob("m.pt.cache-*.npz")
    stamp = assistant.stat().st_mtime_ns

    again = mentor_outputs(space, plan, gpus=0)  # the cache file: no task at all
    assert again["from_cache_file"] == str(cache) and set(again["feats"]) == set(first["feats"])
    cache.unlink()  # the task runs again: it gets the assistant's file and loads it
    third = mentor_outputs(space, plan, gpus=0)
    assert third["trained_assistant"] is None and third["trained_file"] is None
    assert assistant.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(third["feats"]["assistant/layer3"].astype(np.float32),
                               first["feats"]["assistant/layer3"].astype(np.float32), atol=1e-3)

    final_only = parse_space({**space.model_dump(), "mentor": {**space.mentor.model_dump(), "teacher": "final"}})
    assert mentor_outputs(final_only, plan, gpus=0)["trained_assistant"] is None  # not a teacher: not made
    assert len(list(tmp_path.glob("m.pt.assistant-*.pt"))) == 1


def test_a_chain_of_assistants_is_another_assistant_file_and_no_chain_keeps_the_old_one(tmp_path):
    from pathlib import Path

    from search.sweep.mentor import _assistant_path

    mentor = {"path": str(tmp_path / "m.pt"), "arch": {"widths": [8, 8, 8]}, "teacher": ["final", "assistant"]}
    base = {"dataset": {"name": "mnist1d", "n_samples": 300}, "mentee": {"depth": [1, 2], "width": [4]},
            "terms": {"kd": {"enabled": [False, True]}}}
    one = parse_space({**base, "mentor": {**mentor, "assistant": {"widths": [4, 4, 4]}}})
    empty = parse_space({**base, "mentor": {**mentor, "assistant": {"widths": [4, 4, 4], "via": []}}})
    chain = parse_space({**base, "mentor": {**mentor, "assistant": {"widths": [4, 4, 4], "via": [[6, 6, 6]]}}})
    path = Path(mentor["path"])
    assert _assistant_path(path, b"m", one) == _assistant_path(path, b"m", empty) != _assistant_path(path, b"m", chain)
