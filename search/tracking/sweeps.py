"""An experiment's sweeps (parent runs), one row each, and one mentee's record by run id.

    sweeps = list_sweeps("mlflow.db", "mnist1d")     # sweep, name, started, status, mentees, finished, best
    row = mentee_row("mlflow.db", run_id)             # one row of load_runs, read by its id
    full = resolve_run_id("mlflow.db", "a6f3b2c1")   # a run id from its first characters (as tables show it)
"""

from __future__ import annotations

import pandas as pd

from search.errors import UserError
from search.tracking.mlflow import _client, _get_run, _search
from search.tracking.runs import _row, load_runs

__all__ = ["SHARE_TAG_PREFIX", "SWEEP_COLUMNS", "VIEW_COLUMNS", "latest_sweep", "list_sweeps", "mentee_row",
           "resolve_run_id", "share_sweep_view", "sweep_view"]

SWEEP_COLUMNS = ["sweep", "name", "experiment", "started", "status", "mentees", "finished", "best_val_acc",
                 "best_run_id"]


def _experiment_ids(client, experiment: str | None) -> dict[str, str]:
    if experiment is None:
        return {e.experiment_id: e.name for e in client.search_experiments(max_results=50_000)}
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise UserError(f"MLflow experiment {experiment!r} not found in {client.tracking_uri}; have {names}")
    return {exp.experiment_id: exp.name}


def list_sweeps(uri: str | None, experiment: str | None = None) -> pd.DataFrame:
    """One row per sweep (newest first): its parent run id, name, experiment, start (UTC), MLflow status,
    how many mentees it recorded and finished, and its best mentee by val_acc (the seed mean: what
    `pick` chooses by)."""
    client = _client(uri, must_exist=True)
    names = _experiment_ids(client, experiment)
    parents = list(_search(client, list(names), "tags.`mentee.kind` = 'sweep'",
                           order_by=["attributes.start_time DESC"])) if names else []
    runs = load_runs(uri, experiment)
    rows = []
    for p in parents:
        mine = runs[runs["parent_run_id"] == p.info.run_id]
        done = mine[mine["status"] == "finished"].dropna(subset=["val_acc"])
        best = done.sort_values(["val_acc", "params", "run_id"], ascending=[False, True, True],
                                kind="mergesort").head(1)
        rows.append({
            "sweep": p.info.run_id, "name": p.data.tags.get("mlflow.runName", p.info.run_name),
            "experiment": names.get(p.info.experiment_id, p.info.experiment_id),
            "started": pd.Timestamp(p.info.start_time, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M"),
            "status": p.info.status, "mentees": len(mine), "finished": len(done),
            "best_val_acc": float(best["val_acc"].iloc[0]) if len(best) else float("nan"),
            "best_run_id": best["run_id"].iloc[0] if len(best) else None,
        })
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def mentee_row(uri: str | None, run_id: str) -> pd.Series:
    """One mentee run as `load_runs` reads it (the same columns), by its id, with where its files are:
    `artifact_uri` (the run's) and `weights_at` (the mentee.weights tag, if the sweep wrote one)."""
    client = _client(uri, must_exist=True)
    run = _get_run(client, run_id)
    weights_at = None
    refs, parent = run.data.tags.get("mentee.weights"), run.data.tags.get("mlflow.parentRunId")
    if refs and parent:  # the seeds' weights: a file per write batch among the parent run's artifacts
        import json
        import posixpath

        first = next(iter(json.loads(refs).values()), "")
        weights_at = f"{_get_run(client, parent).info.artifact_uri}/{posixpath.dirname(first)}".rstrip("/")
    return pd.Series({**_row(run), "artifact_uri": run.info.artifact_uri, "weights_at": weights_at})


def resolve_run_id(uri: str | None, prefix: str) -> str:
    """A full run id from its first characters (tables show 8); a full id comes back as it is."""
    if len(prefix) >= 32:
        return prefix
    ids = [r for r in load_runs(uri)["run_id"] if r.startswith(prefix)]
    if len(ids) == 1:
        return ids[0]
    where = _client(uri).tracking_uri
    if not ids:
        raise UserError(f"run '{prefix}' not found in {where}: no mentee run id starts with it")
    raise UserError(f"'{prefix}' starts {len(ids)} mentee run ids in {where}; give more of it")


# ---- the MLflow UI opened ready ---------------------------------------------------------------------------
# MLflow's experiment page (mlflow/server/js/src/experiment-tracking/components/experiment-page/hooks/
# useSharedExperimentViewState.ts) reads `?viewStateShareKey=K` from the URL, finds the experiment tag
# `mlflow.sharedViewState.K` and applies its JSON: the search facets (searchFilter, orderByKey, orderByAsc,
# startTime, lifecycleFilter, datasetsFilter, modelVersionFilter: the URL's own query keys) and the UI state
# (models/ExperimentPageUIState.ts: selectedColumns as "metrics.`val_acc`", runsExpanded, groupBy, ...). It
# replaces the whole UI state, so every field is given (createExperimentPageUIState's defaults).
SHARE_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_COLUMNS = ["metrics.`val_acc`", "metrics.`n_seeds`", "metrics.`test_acc`", "metrics.`test_acc_std`",
                "metrics.`params`", "metrics.`bytes_int8`", "tags.`mentee.arm`", "params.`arch.widths`",
                "tags.`mentee.mapping`"]


def sweep_view(parent_run_id: str) -> dict:
    """The view state `mentee ui` opens: the sweep's mentees alone (its parent filtered out, so they stand
    flat, not folded under it), val_acc first among the columns, best val_acc on top."""
    return {
        "searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        "orderByKey": "metrics.`val_acc`", "orderByAsc": False, "startTime": "ALL", "lifecycleFilter": "Active",
        "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": VIEW_COLUMNS, "runsExpanded": {}, "runsPinned": [], "runsHidden": [],
        "runsVisibilityMap": {}, "runsHiddenMode": "SHOW_ALL", "viewMaximized": False, "runListHidden": False,
        "isAccordionReordered": False, "useGroupedValuesInCharts": True, "hideEmptyCharts": True, "groupBy": None,
        "groupsExpanded": {}, "autoRefreshEnabled": False,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def share_sweep_view(uri: str | None, parent_run_id: str) -> tuple[str, str]:
    """Store the sweep's view on its experiment (a tag, as the UI's own Share button does) and return
    (experiment id, share key); the key is the sweep's id, so calling again rewrites the same tag."""
    import json

    client = _client(uri, must_exist=True)
    exp_id = _get_run(client, parent_run_id).info.experiment_id
    key = f"mentee-{parent_run_id}"
    client.set_experiment_tag(exp_id, SHARE_TAG_PREFIX + key, json.dumps(sweep_view(parent_run_id)))
    return exp_id, key


def latest_sweep(uri: str | None, experiment: str | None = None) -> str | None:
    """The newest sweep's parent run id (of the experiment, or of any), None in a store without one."""
    client = _client(uri, must_exist=True)
    ids = list(_experiment_ids(client, experiment))
    runs = _search(client, ids, "tags.`mentee.kind` = 'sweep'", order_by=["attributes.start_time DESC"]) if ids else []
    return next((r.info.run_id for r in runs), None)
