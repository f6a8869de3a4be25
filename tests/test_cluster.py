"""cluster.yaml is a valid Ray cluster-launcher config, checked offline.

`prepare_config` + `validate_config` are what `ray up` runs before it touches the cloud.
For the AWS provider in Ray 2.60, `prepare_config` only merges the shipped
`ray/autoscaler/aws/defaults.yaml` and fills per-type worker limits: no credentials, no
network (those come later, in `bootstrap_config`, which we do not call). `validate_config`
checks the result against the shipped `ray-schema.json`, whose objects forbid unknown keys,
so a misspelt key fails here rather than half-way through `ray up`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_valid_against_ray_schema(raw):
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)  # raises on any schema violation
    assert config["cluster_name"] == "mentee-search"
    assert config["provider"]["type"] == "aws"


def test_node_types(raw):
    config = prepare_config(copy.deepcopy(raw))
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert "GPU" not in head["resources"] and head["max_workers"] == 0
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    # one GPU worker waits (the mentor's task and `concurrency: auto` need a GPU when a sweep
    # starts); the rest come only while a sweep's pending cohorts ask for them
    assert all(t["min_workers"] == 1 < t["max_workers"] for t in workers)
    assert sum(t["max_workers"] for t in workers) <= config["max_workers"]


def test_project_is_mounted_and_installed(raw):
    config = prepare_config(copy.deepcopy(raw))
    # the project, and the token of Ray's token authentication, on every node
    assert config["file_mounts"] == {"~/mentee-search": ".", "~/.ray/auth_token": "~/.ray/auth_token"}
    # prepare_config folds setup_commands into both head and worker setup.
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any("pip install" in c and "-e ~/mentee-search" in c for c in config[key])
    head_start = " ".join(config["head_start_ray_commands"])
    assert (
        "--head --port=6379" in head_start
        and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    )
    assert any("$RAY_HEAD_IP:6379" in c for c in config["worker_start_ray_commands"])
    # every node's Ray with token authentication on; the dashboard on the head's loopback only
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert all("RAY_AUTH_MODE=token ray start" in c for c in config[key] if "ray start" in c), key
    assert "--dashboard-host=0.0.0.0" not in head_start


@pytest.mark.parametrize(
    "misspell",
    [
        lambda c: c.__setitem__("setup_comands", c.pop("setup_commands")),  # top level
        lambda c: c["available_node_types"]["gpu_worker"].__setitem__("max_worker", 4),  # in a node type
        lambda c: c["docker"].__setitem__("run_option", c["docker"].pop("run_options")),  # in docker
    ],
    ids=["top-level", "node-type", "docker"],
)
def test_misspelt_key_fails(raw, misspell):
    misspell(raw)
    with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
        validate_config(prepare_config(raw))
