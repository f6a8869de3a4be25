"""The contracts between rooms: every dataclass survives its to/from-dict, and the meaning of
"independent" is one rule."""

import json

import numpy as np
import pytest

from search.config import (
    COST_AXES,
    ArchConfig,
    CohortReport,
    CohortSpec,
    MemberConfig,
    MemberResult,
    Status,
    TermConfig,
    TrainConfig,
    TrialPayload,
    WorkItem,
    WorkKind,
)

HINT = TermConfig("hint", 0.1, {"student": "layer2", "teacher": "layer3", "metric": "rmse"})
KD = TermConfig("kd", 0.5, {"temperature": 4.0})


def member(*terms, seed=0):
    return MemberConfig(ArchConfig("conv1d", (8, 16), 3), TrainConfig(seed=seed), (TermConfig("ce", 1.0), *terms))


def test_independent_is_every_mentor_term_at_zero():
    assert member().independent
    assert member(TermConfig("hint", 0.0, HINT.params)).independent
    assert not member(HINT).independent and not member(KD).independent
    twin = member(HINT, KD).twin()
    assert twin.independent and twin.terms == (TermConfig("ce", 1.0),) and twin.arch == member().arch
    assert member(HINT).arch.key() == twin.arch.key() and member(HINT).key() != twin.key()


def test_round_trips_are_exact_and_json_safe():
    cfg = member(HINT, KD, seed=3)
    assert MemberConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    item = WorkItem("twin-abc", WorkKind.TWIN, cfg.twin())
    spec = CohortSpec((WorkItem("7", WorkKind.SEARCHED, cfg, 7), item))
    assert CohortSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    res = MemberResult(cfg, Status.FINISHED, 0.9, 0.8, 3, {"val_acc": [0.5, 0.9]}, {a: 1.0 for a in COST_AXES})
    rep = CohortReport([res], "node-1", {"train": 1.0})
    back = CohortReport.from_dict(json.loads(json.dumps(rep.to_dict())), {"7": {"w": 1}}, ["7"])
    assert back.members[0].config == cfg and back.members[0].status is Status.FINISHED
    assert back.members[0].state_dict == {"w": 1} and back.node_id == "node-1"
    p = TrialPayload("k", "cpu", "mnist1d", 10, (1, 40), {"x_train": np.zeros((2, 1, 40))}, None, {},
                     {"layer3": (8, 10)}, (5,), 3)
    q = TrialPayload.from_dict(p.to_dict())
    assert q.input_shape == (1, 40) and q.mentor_shapes == {"layer3": (8, 10)} and q.rungs == (5,)


def test_configs_written_before_the_term_registry_still_load():
    old = {"arch": {"family": "conv1d", "widths": [8], "kernel": 5, "batch_norm": False},
           "train": {"epochs": 2}, "hints": [{"student": "layer1", "teacher": "layer3", "metric": "rmse",
                                              "weight": 0.2}], "w_kd": 0.5, "temperature": 2.0, "w_ce": 1.0}
    cfg = MemberConfig.from_dict(old)
    assert [t.kind for t in cfg.terms] == ["ce", "hint", "kd"] and cfg.terms[2].params["temperature"] == 2.0


@pytest.mark.parametrize("s", list(Status))
def test_statuses_are_their_words(s):
    assert str(s) == s.value and Status(s.value) is s
