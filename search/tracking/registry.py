"""The model registry: a device's pick, registered under the experiment's name with the device as alias.

    name, version, alias = register_pick("mlflow.db", run_id, "stm32f746")   # models:/<exp>@stm32f746
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mlflow.exceptions import MlflowException

from search.errors import UserError
from search.tracking.mlflow import _client, _get_run

__all__ = ["member_dataset", "register_pick", "resolve_model_ref"]


# ---- the model registry: a device's pick, by alias ---------------------------------------------------------

def _alias(device: str) -> str:
    # MLflow aliases take letters, digits, '_' and '-', and refuse 'latest' and 'v<number>' (version names)
    alias = re.sub(r"[^\w-]", "-", device)
    return f"device-{alias}" if alias == "latest" or re.fullmatch(r"v\d+", alias) else alias


def register_pick(uri: str | None, run_id: str, device: str, *, name: str | None = None,
                  tags: Mapping[str, Any] | None = None) -> tuple[str, str, str]:
    """Register a mentee run in the model registry and point the alias `device` at it: `models:/NAME@DEVICE`
    then names the device's current pick. NAME defaults to the run's experiment (the space's name). The
    version's source is the run's artifacts (config.json, mentee.pt, arch.json). Picking the same run again
    reuses its version. Returns (name, version, alias)."""
    client = _client(uri, must_exist=True)
    run = _get_run(client, run_id)
    name = name or client.get_experiment(run.info.experiment_id).name
    try:
        client.create_registered_model(name, tags={"mentee.kind": "mentee"},
                                       description="mentees picked for devices by `mentee pick --device`")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    same = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == run_id]
    version = same[0] if same else client.create_model_version(
        name, source=f"runs:/{run_id}", run_id=run_id, await_creation_for=0,
        tags={str(k): str(v) for k, v in (tags or {}).items()})
    alias = _alias(device)
    client.set_registered_model_alias(name, alias, version.version)
    return name, str(version.version), alias


def resolve_model_ref(uri: str | None, ref: str) -> str:
    """A run id from `models:/NAME@ALIAS` or `models:/NAME/VERSION`; anything else is taken as a run id."""
    if not ref.startswith("models:/"):
        return ref
    name, at, alias = ref[len("models:/"):].partition("@")
    client = _client(uri, must_exist=True)
    try:
        if at:
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, _, version = name.partition("/")
            mv = client.get_model_version(name, version)
    except MlflowException as e:
        raise UserError(f"{ref}: no such registered model version in {client.tracking_uri} "
                        f"(expected models:/NAME@ALIAS or models:/NAME/VERSION)") from e
    if mv.run_id is None:  # registered from a path, not from a run: there is no mentee run to read
        raise UserError(f"{ref}: that model version was not registered from a run; expected a mentee's pick")
    return mv.run_id


def member_dataset(uri: str | None, run_id: str) -> dict[str, Any]:
    """The dataset a mentee run was trained on, as its sweep's parent run recorded the space
    (`dataset.name`, `.root`, `.n_samples`, `.seed`): what calibrates and checks an int8 export."""
    client = _client(uri, must_exist=True)
    run = _get_run(client, run_id)
    parent = run.data.tags.get("mlflow.parentRunId")
    params = _get_run(client, parent).data.params if parent else {}
    if "dataset.name" not in params:
        raise UserError(f"MLflow run {run_id!r}: its sweep's parent run does not record the dataset (dataset.*)")

    def value(k: str) -> str | None:
        v = params.get(f"dataset.{k}")
        return None if v in (None, "None") else v

    n = value("n_samples")
    return {"name": params["dataset.name"], "root": value("root"), "n_samples": None if n is None else int(n),
            "seed": int(value("seed") or 0)}
