"""Reading a sweep back: one row per mentee run, a member's config and weights, its curves.

    runs = load_runs("mlflow.db", "mnist1d")                   # one row per mentee (RUN_COLUMNS)
    config, weights, meta = load_member("mlflow.db", runs.run_id[0])
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pandas as pd
import torch
from mlflow.exceptions import MlflowException

from search.config import COST_AXES, MemberConfig
from search.errors import UserError
from search.tracking.mlflow import _client, _get_run, _search, resolve_uri

__all__ = ["RUN_COLUMNS", "experiment_id", "load_arch", "load_curves", "load_member", "load_runs", "log_sweep_artifact",
           "ui_command"]

# Columns of `load_runs`, in order, with the dtype each one has even when empty.
RUN_COLUMNS: dict[str, str] = {
    "run_id": "object",
    "parent_run_id": "object",
    "experiment_id": "object",
    "member_id": "object",
    "work": "object",
    "arm": "object",  # mentored | independent: which arm of the search (search/sweep/suggest.py)
    "reeval_of": "object",  # a re-evaluation run: the run it retrains with another seed
    "node_id": "object",
    "status": "object",
    "arch_key": "object",
    "independent": "bool",
    "family": "object",
    "widths": "object",
    "kernel": "int64",
    "mapping": "object",
    "seed": "int64",
    "val_acc": "float64",
    "test_acc": "float64",
    "params": "float64",
    "bytes_fp32": "float64",
    "bytes_int8": "float64",
    "sram_fp32": "float64",
    "sram_int8": "float64",
    "macs": "float64",
    "train_seconds": "float64",
    "epochs_run": "float64",
    "start_time": "datetime64[ns, UTC]",
}


def _reeval_of(tags: Mapping[str, str]) -> str | None:
    """The run a re-evaluation run retrains: its tag, else its member id (`reeval-<run id>-s<seed>`) says
    it; a result replayed from the driver's journal is written without the extra tags."""
    if tags.get("mentee.work") != "reeval":
        return None
    parts = tags.get("mentee.member_id", "").split("-")
    return tags.get("mentee.reeval_of") or (parts[1] if len(parts) == 3 else None)


def _row(run: Any) -> dict[str, Any]:
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    nan = float("nan")
    return {
        "run_id": run.info.run_id,
        "parent_run_id": tags.get("mlflow.parentRunId"),
        "experiment_id": run.info.experiment_id,
        "member_id": tags.get("mentee.member_id"),
        "work": tags.get("mentee.work"),
        # runs logged before the arms: a config without mentor terms was the independent side
        "arm": tags.get("mentee.arm") or ("independent" if params.get("independent") == "True" else "mentored"),
        "reeval_of": _reeval_of(tags),
        "node_id": tags.get("mentee.node_id"),
        "status": tags.get("mentee.status"),
        "arch_key": tags.get("mentee.arch_key"),
        "independent": params.get("independent") == "True",
        "family": tags.get("mentee.family"),
        "widths": params.get("arch.widths"),
        "kernel": int(params.get("arch.kernel", 0)),
        "mapping": tags.get("mentee.mapping"),
        "seed": int(tags.get("mentee.seed", 0)),
        **{
            k: metrics.get(k, nan)
            for k in ("val_acc", "test_acc", *COST_AXES, "train_seconds", "epochs_run")
        },
        "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
    }


def load_runs(
    uri: str | None, experiment: str | None = None, parent_run_id: str | None = None
) -> pd.DataFrame:
    """One row per mentee run (columns `RUN_COLUMNS`); `widths` reads like `8x8`, `status` is
    the word (finished / pruned / failed). Without filters: every mentee run in the store."""
    client = _client(uri, must_exist=True)
    if parent_run_id is not None:
        ids = [_get_run(client, parent_run_id).info.experiment_id]
    elif experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise UserError(
                f"MLflow experiment {experiment!r} not found in {client.tracking_uri}; have {names}"
            )
        ids = [exp.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments(max_results=50_000)]
    query = "tags.`mentee.kind` = 'mentee'"
    if parent_run_id is not None:
        query += f" and tags.`mlflow.parentRunId` = '{parent_run_id}'"
    rows = (
        [_row(r) for r in _search(client, ids, query, order_by=["attributes.start_time ASC"])] if ids else []
    )
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS)).astype(RUN_COLUMNS)


def load_member(uri: str | None, run_id: str) -> tuple[MemberConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """The config, CPU weights and data shape (`input_shape`, `num_classes`) a mentee run logged."""
    client = _client(uri, must_exist=True)
    run = _get_run(client, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            config_path = client.download_artifacts(run_id, "config.json", tmp)
            weights_path = client.download_artifacts(run_id, "mentee.pt", tmp)
        except (MlflowException, OSError) as e:
            status = run.data.tags.get("mentee.status", "?")
            raise UserError(
                f"MLflow run {run_id!r} (status {status}) has no config.json/mentee.pt artifacts"
            ) from e
        config = MemberConfig.from_dict(json.loads(Path(config_path).read_text()))
        weights = torch.load(weights_path, map_location="cpu", weights_only=True)
    tags = run.data.tags
    if "mentee.input_shape" not in tags:
        raise UserError(f"MLflow run {run_id!r} does not record its input shape (tag mentee.input_shape)")
    meta = {"input_shape": tuple(json.loads(tags["mentee.input_shape"])),
            "num_classes": int(tags["mentee.num_classes"])}
    return config, weights, meta


def load_arch(uri: str | None, run_id: str) -> tuple[Any, dict[str, Any]]:
    """A mentee run's architecture and data shape from its params and tags (no artifact download):
    `(ArchConfig, {"input_shape", "num_classes"})`."""
    from search.config import ArchConfig

    run = _get_run(_client(uri, must_exist=True), run_id)
    p, t = run.data.params, run.data.tags
    arch = ArchConfig(p["arch.family"], tuple(int(w) for w in p["arch.widths"].split("x")),
                      int(p.get("arch.kernel", 5)), p.get("arch.batch_norm") == "True")
    shape = tuple(json.loads(t["mentee.input_shape"]))
    return arch, {"input_shape": shape, "num_classes": int(t["mentee.num_classes"])}


def load_curves(uri: str | None, run_id: str) -> dict[str, list[float]]:
    """A mentee run's per-epoch curves (`curve.*` metrics), by name."""
    client = _client(uri, must_exist=True)
    run = _get_run(client, run_id)
    names = [k[len("curve."):] for k in run.data.metrics if k.startswith("curve.")]
    return {n: [m.value for m in sorted(client.get_metric_history(run_id, f"curve.{n}"), key=lambda m: m.step)]
            for n in names}


def log_sweep_artifact(uri: str | None, run_id: str, path: Path) -> None:
    """Attach a file (the dashboard) to a sweep's parent run: the MLflow UI shows it among its artifacts."""
    _client(uri, must_exist=True).log_artifact(run_id, str(path))


def experiment_id(uri: str | None, experiment: str) -> str | None:
    exp = _client(uri, must_exist=True).get_experiment_by_name(experiment)
    return None if exp is None else exp.experiment_id


def ui_command(uri: str | None, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """argv for `mlflow ui` on this store; a relative sqlite path is made absolute so it runs from any cwd."""
    uri = resolve_uri(uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(unquote(uri[len("sqlite:///") :])).resolve())
    return ["mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
