import glob
import subprocess
import sys

import pytest

from search.errors import UserError
from search.spaces import Range, load_space, parse_space, space_hash


@pytest.mark.parametrize("path", sorted(p for p in glob.glob("spaces/*.yaml") if not p.endswith("devices.yaml")))
def test_shipped_spaces_are_valid(path):
    space = load_space(path)
    assert space.name == path.removeprefix("spaces/").removesuffix(".yaml")  # each names its experiment so


def test_iris_space_holds_the_spark_layers():
    # Spark ML's perceptron example: layers [4, 5, 4, 3] → hidden widths (5, 4)
    s = load_space("spaces/iris.yaml")
    assert s.mentee.family == "mlp" and 5 in s.mentee.width and 2 in s.mentee.depth
    assert round(5 * 0.8) == 4 and 0.8 in s.mentee.growth


@pytest.mark.parametrize("data,expect", [
    ({"mentee": {"widht": 3}}, "unknown key 'mentee.widht' (did you mean 'width'?)"),
    ({"trian": {}}, "unknown key 'trian' (did you mean 'train'?)"),
    ({"train": {"lr": {"low": 1, "high": 0.1}}}, "key 'train.lr': low (1) must not exceed high (0.1)"),
    ({"train": {"lr": {"low": 0, "high": 0.1, "log": True}}}, "key 'train.lr': a log range needs low > 0"),
    ({"train": {"epochs": "many"}}, "key 'train.epochs': expected an integer, got 'many'"),
    ({"train": {"epochs": 10**9}}, "key 'train.epochs': expected ≤ 100,000, got 1000000000"),
    ({"mentee": {"depth": 100_000}}, "key 'mentee.depth': expected ≥ 1 and ≤ 64, got 100000"),
    ({"name": "../x"}, "key 'name': expected 1-100 letters"),
    ({"terms": {"hint": {"taps": {"layer9": ["layer3"]}}}}, "key 'terms.hint.taps.layer9': no mentee has a tap"),
    ({"mentee": {"depth": []}}, "key 'mentee.depth': empty list of choices"),
    ({"budget": {"mentees": 0}}, "key 'budget.mentees': expected ≥ 1"),
    ({"mapping": {"taps": {"layerX": ["none"]}}}, "mentee tap 'layerX' is not layerN, last or head"),
    ({"terms": {"hint": {"taps": {"layerX": ["none"]}}}}, "hint.taps: mentee tap 'layerX' is not layerN"),
    ({"terms": {"kdd": {}}}, "unknown loss term 'kdd' (did you mean 'kd'?)"),
    ({"terms": {"kd": {"temperature": 0}}}, "kd.temperature: expected > 0"),
    ({"terms": {"attention": {"wieght": 1}}}, "unknown key 'attention.wieght'"),
    ({"terms": {}, "kd": {}}, "not also as 'mapping'/'kd'"),
    ({"objectives": ["acc"]}, "key 'objectives.0': expected one of"),
    ({"budget": {"early_stopping": {"rungs": [50]}}}, "rungs must be below train.epochs"),
])
def test_bad_spaces_give_one_line(data, expect):
    with pytest.raises(UserError) as e:
        parse_space(data, "x.yaml")
    msg = str(e.value)
    assert msg.startswith("x.yaml: ") and expect in msg and "\n" not in msg


def test_malformed_yaml_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("mentee:\n  depth: [1, 2\n")
    with pytest.raises(UserError, match=r"bad.yaml: malformed YAML at line \d+"):
        load_space(p)


def test_ranges_and_hash():
    s = parse_space({"train": {"lr": {"low": 0.001, "high": 0.1, "log": True}}}, "a.yaml")
    assert isinstance(s.train.lr, Range) and s.name == "a"
    t = parse_space({"train": {"lr": 0.01}}, "a.yaml")
    assert space_hash(s) != space_hash(t)
    assert space_hash(s) == space_hash(parse_space({"train": {"lr": {"low": 0.001, "high": 0.1, "log": True}},
                                                    "budget": {"mentees": 3}}, "b.yaml"))


def test_cli_bad_space_exits_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mentee:\n  widht: 4\n")
    r = subprocess.run([sys.executable, "-m", "search.cli", "sweep", str(bad)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "did you mean 'width'" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no mlflow.db, no runs, no Ray


def test_default_terms_are_validated_sections():
    """A space without `terms:` gets the default sections as term models, not raw dicts."""
    s = parse_space({}, "x.yaml")
    assert set(s.terms) == {"ce", "hint"} and all(hasattr(sec, "model_dump") for sec in s.terms.values())


@pytest.mark.parametrize("mentor,expect", [
    ({"checkpoints": [60]}, "key 'mentor.checkpoints': epoch 60 is outside 1..59"),
    ({"epochs": 10, "checkpoints": [0, 5]}, "key 'mentor.checkpoints': epoch 0 is outside 1..9"),
    ({"checkpoints": "20"}, "key 'mentor.checkpoints'"),
    ({"teacher": "epoch20"}, "key 'mentor.teacher': 'epoch20' is not a mentor version this space defines; "
                             "expected one of final"),
    ({"checkpoints": [20], "teacher": ["final", "epoch30"]},
     "key 'mentor.teacher': 'epoch30' is not a mentor version this space defines; expected one of final, epoch20"),
    ({"teacher": ["final", "assistant"]}, "'assistant' is not a mentor version"),
    ({"teacher": []}, "key 'mentor.teacher': empty list of choices"),
    ({"assistant": {"widths": [16, 32]}}, "key 'mentor.assistant': widths: expected 4 widths"),
    ({"assistant": {"widths": [16, 32, 32, 0]}}, "key 'mentor.assistant.widths'"),
    ({"assistant": {"widths": [16, 32, 32, 32], "epochs": 0}}, "key 'mentor.assistant.epochs'"),
    ({"assistant": {"widths": [16, 32, 32, 32], "kd": 1}}, "unknown key 'mentor.assistant.kd'"),
    ({"assistant": {"epochs": 3}}, "key 'mentor.assistant.widths'"),
    ({"factory": "pkg:net", "taps": ["a"], "checkpoints": [3]}, "key 'mentor': checkpoints and assistant need a "
                                                                "mentor trained from mentor.arch"),
])
def test_bad_teachers_give_one_line(mentor, expect):
    with pytest.raises(UserError) as e:
        parse_space({"mentor": mentor}, "x.yaml")
    msg = str(e.value)
    assert msg.startswith("x.yaml: ") and expect in msg and "\n" not in msg, msg


def test_teachers_keep_old_hashes_and_the_default_space_offers_them_all():
    s = load_space("spaces/mnist1d.yaml")
    assert s.mentor.teachers() == ["final", "epoch20", "assistant"] and s.mentor.checkpoints == [20]
    assert s.mentor.assistant is not None and len(s.mentor.assistant.widths) == len(s.mentor.arch.widths)
    plain = parse_space({}, "a.yaml")
    assert space_hash(plain) == "addb41e05c21"  # as before teachers were a key
    assert space_hash(plain) == space_hash(parse_space({"mentor": {"teacher": "final", "checkpoints": []}}, "b.yaml"))
    assert space_hash(plain) != space_hash(parse_space({"mentor": {"checkpoints": [20]}}, "c.yaml"))
