import glob
import subprocess
import sys

import pytest

from search.errors import UserError
from search.spaces import Range, load_space, parse_space, space_hash


@pytest.mark.parametrize("path", sorted(p for p in glob.glob("spaces/*.yaml") if not p.endswith("devices.yaml")))
def test_shipped_spaces_are_valid(path):
    space = load_space(path)
    assert space.name and space.budget.mentees >= 1


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
    ({"train": {"epochs": "many"}}, "key 'train.epochs': Input should be a valid integer"),
    ({"mentee": {"depth": []}}, "key 'mentee.depth': empty list of choices"),
    ({"budget": {"mentees": 0}}, "key 'budget.mentees'"),
    ({"mapping": {"taps": {"layerX": ["none"]}}}, "mentee tap 'layerX' is not layerN, last or head"),
    ({"terms": {"hint": {"taps": {"layerX": ["none"]}}}}, "hint.taps: mentee tap 'layerX' is not layerN"),
    ({"terms": {"kdd": {}}}, "unknown loss term 'kdd' (did you mean 'kd'?)"),
    ({"terms": {"kd": {"temperature": 0}}}, "kd.temperature: expected > 0"),
    ({"terms": {"attention": {"wieght": 1}}}, "unknown key 'attention.wieght'"),
    ({"terms": {}, "kd": {}}, "not also as 'mapping'/'kd'"),
    ({"objectives": ["acc"]}, "key 'objectives.0'"),
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
