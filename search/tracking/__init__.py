"""Tracking: where a sweep's results live. MLflow is the implementation (`tracking.mlflow`),
and the only room of the package that imports mlflow; the driver alone writes, retrying what
a second writer or a blip causes (`tracking.retry`) and keeping results on its disk until
MLflow has them (`tracking.journal`)."""

from search.tracking.journal import ResultJournal
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
from search.tracking.retry import OUTAGE_SECONDS, TrackingUnavailable

__all__ = ["DEFAULT_TRACKING_URI", "OUTAGE_SECONDS", "RUN_COLUMNS", "ResultJournal", "SweepTracker",
           "TrackingUnavailable", "experiment_id", "load_curves", "load_member", "load_runs", "log_sweep_artifact",
           "mapping_string", "resolve_uri", "ui_command"]
