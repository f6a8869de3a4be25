"""Tracking: where a sweep's results live. MLflow is the implementation (`tracking.mlflow`),
and the only room of the package that imports mlflow; the driver alone writes."""

from search.tracking.mlflow import (
    DEFAULT_TRACKING_URI,
    RUN_COLUMNS,
    SweepTracker,
    experiment_id,
    load_curves,
    load_member,
    load_runs,
    log_sweep_artifact,
    mapping_string,
    resolve_uri,
    ui_command,
)

__all__ = ["DEFAULT_TRACKING_URI", "RUN_COLUMNS", "SweepTracker", "experiment_id", "load_curves", "load_member",
           "load_runs", "log_sweep_artifact", "mapping_string", "resolve_uri", "ui_command"]
