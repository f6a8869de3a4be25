"""Reading a sweep back: one row per mentee run, a member's config and weights, its curves.

    runs = load_runs("mlflow.db", "mnist1d")                   # one row per mentee (RUN_COLUMNS)
    config, weights, meta = load_member("mlflow.db", runs.run_id[0])
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pandas as pd
from mlflow.exceptions import MlflowException

from search.config import COST_AXES, MemberConfig, seed_member_id
from search.errors import UserError
from search.tracking.fastread import RunRecord, experiment_ids, read_runs
from search.tracking.mlflow import _client, _get_run, resolve_uri
from search.tracking.record import ints, seeds_of
from search.tracking.stores import check_store

if TYPE_CHECKING:
    import torch

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
    "node_id": "object",
    "status": "object",
    "arch_key": "object",
    "independent": "bool",
    "family": "object",
    "widths": "object",
    "kernel": "int64",
    "mapping": "object",
    "seeds": "object",  # tuple of ints: the mentee's finished seeds
    "n_seeds": "int64",
    "val_acc": "float64",  # the mean over its seeds (choosing)
    "val_acc_std": "float64",
    "test_acc": "float64",  # the mean over its seeds (reporting)
    "test_acc_std": "float64",
    "val_accs": "object",  # tuple of floats, aligned with seeds
    "test_accs": "object",
    "failed_seeds": "object",  # tuple of ints: seeds that did not finish
    "config": "object",  # the MemberConfig as JSON (its first seed's)
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


def _row(run: RunRecord | Any) -> dict[str, Any]:
    """One frame row of a run: a RunRecord (`read_runs`) or an MLflow Run (get_run, search_runs)."""
    run = run if isinstance(run, RunRecord) else RunRecord.from_run(run)
    tags, params, metrics = run.tags, run.params, run.metrics
    nan = float("nan")
    seeds, vals, tests = seeds_of(tags, metrics)
    return {
        "run_id": run.run_id,
        "parent_run_id": tags.get("mlflow.parentRunId"),
        "experiment_id": run.experiment_id,
        "member_id": tags.get("mentee.member_id"),
        "work": tags.get("mentee.work"),
        # runs logged before the arms: a config without mentor terms was the independent side
        "arm": tags.get("mentee.arm") or ("independent" if params.get("independent") == "True" else "mentored"),
        "node_id": tags.get("mentee.node_id"),
        "status": tags.get("mentee.status"),
        "arch_key": tags.get("mentee.arch_key"),
        "independent": params.get("independent") == "True",
        "family": tags.get("mentee.family"),
        "widths": params.get("arch.widths"),
        "kernel": int(params.get("arch.kernel", 0)),
        "mapping": tags.get("mentee.mapping"),
        "seeds": seeds,
        "n_seeds": len(seeds),
        **{
            k: metrics.get(k, nan)
            for k in ("val_acc", "val_acc_std", "test_acc", "test_acc_std", *COST_AXES, "train_seconds", "epochs_run")
        },
        "val_accs": vals,
        "test_accs": tests,
        "failed_seeds": ints(tags.get("mentee.failed_seeds")),
        "config": tags.get("mentee.config"),
        "start_time": pd.Timestamp(run.start_time, unit="ms", tz="UTC"),
    }


def load_runs(
    uri: str | None, experiment: str | None = None, parent_run_id: str | None = None
) -> pd.DataFrame:
    """One row per mentee run (columns `RUN_COLUMNS`); `widths` reads like `8x8`, `status` is
    the word (finished / pruned / failed). Without filters: every mentee run in the store."""
    uri = resolve_uri(uri)
    check_store(uri, reader=True)
    # a SQL store is read with SQLAlchemy alone (search/tracking/fastread.py); else MLflow's client
    ids = experiment_ids(uri, experiment, parent_run_id)
    if ids is None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)  # the store was checked above
        if parent_run_id is not None:
            ids = [_get_run(client, parent_run_id).info.experiment_id]
        elif experiment is not None:
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                names = sorted(e.name for e in client.search_experiments())
                raise UserError(f"MLflow experiment {experiment!r} not found in {uri}; have {names}")
            ids = [exp.experiment_id]
        else:
            ids = [e.experiment_id for e in client.search_experiments(max_results=50_000)]
    wanted = {"mentee.kind": "mentee"}
    if parent_run_id is not None:
        wanted["mlflow.parentRunId"] = parent_run_id
    # on SQL stores a few plain queries, not search_runs' whole Run objects; the per-epoch curves are not
    # columns (load_curves reads them)
    rows = [_row(r) for r in read_runs(uri, ids, wanted, skip_metrics=("curve.",))]
    # a store written before seeds were fused may hold re-evaluation runs: seeds of another run, not mentees
    rows = [r for r in rows if r["work"] != "reeval"]
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS)).astype(RUN_COLUMNS)


def best_seed(tags: Mapping[str, str], metrics: Mapping[str, float]) -> int | None:
    """The mentee's seed with the best validation accuracy (ties: the lowest seed): whose weights
    `load_member` returns, so export and the registry hold one real network chosen on validation."""
    seeds, vals, _ = seeds_of(tags, metrics)
    ranked = [(v, -s) for s, v in zip(seeds, vals) if v == v]
    return -max(ranked)[1] if ranked else None


def load_member(uri: str | None, run_id: str) -> tuple[MemberConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """The config, CPU weights and data shape (`input_shape`, `num_classes`) of a mentee run: the
    weights of its best-validation seed (`meta["seed"]`, with that seed's own `val_acc`/`test_acc`
    beside the mentee's means `mentee_val_acc`/`mentee_test_acc`). Weights live in one file per
    write batch under the parent run's `weights/` (tag `mentee.weights`); runs written before
    that carry their own `config.json` and `mentee.pt`."""
    import torch  # here, not at import: `pareto`, `pick` and `dashboard` read runs without it

    client = _client(uri, must_exist=True)
    run = _get_run(client, run_id)
    tags, metrics = run.data.tags, run.data.metrics
    where = f"MLflow run {run_id!r} in {client.tracking_uri}"
    if "mentee.input_shape" not in tags:
        raise UserError(f"{where} does not record its input shape (tag mentee.input_shape)")
    seed = best_seed(tags, metrics)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if "mentee.weights" in tags:
                refs = json.loads(tags["mentee.weights"])
                if seed is None or str(seed) not in refs:
                    raise UserError(f"{where} (status {tags.get('mentee.status', '?')}) has no finished seed "
                                    "with weights")
                config = MemberConfig.from_dict(json.loads(tags["mentee.config"]))
                config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
                path = client.download_artifacts(tags["mlflow.parentRunId"], refs[str(seed)], tmp)
                weights = torch.load(path, map_location="cpu", weights_only=True)[
                    seed_member_id(tags["mentee.member_id"], seed)]
            else:
                config_path = client.download_artifacts(run_id, "config.json", tmp)
                weights_path = client.download_artifacts(run_id, "mentee.pt", tmp)
                config = MemberConfig.from_dict(json.loads(Path(config_path).read_text()))
                weights = torch.load(weights_path, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except (MlflowException, OSError) as e:
        raise UserError(f"{where} (status {tags.get('mentee.status', '?')}): its weights could not be read "
                        f"from the artifact store ({str(e).splitlines()[0][:160]})") from e
    except (pickle.UnpicklingError, RuntimeError, KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        # a tampered or foreign file: weights_only refuses code, and a wrong layout says so here
        raise UserError(f"{where}: its config or weights artifact is damaged or not a mentee's "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from e
    meta = {"input_shape": tuple(json.loads(tags["mentee.input_shape"])),
            "num_classes": int(tags["mentee.num_classes"]), "seed": config.train.seed,
            "val_acc": metrics.get(f"val_acc.s{seed}", metrics.get("val_acc", float("nan"))),
            "test_acc": metrics.get(f"test_acc.s{seed}", metrics.get("test_acc", float("nan"))),
            "mentee_val_acc": metrics.get("val_acc", float("nan")),
            "mentee_test_acc": metrics.get("test_acc", float("nan"))}
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
