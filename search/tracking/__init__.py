"""Tracking: where a sweep's results live — MLflow, the only room of the package that imports it.

    mlflow    URIs and clients; SweepTracker, the driver's writer (a parent run per sweep,
              a child run per mentee)
    record    how a mentee becomes a run and back: the record's names, written and read in one place
    runs      reading back: load_runs (one row per mentee), load_member, load_curves
    registry  a device's pick in the model registry (alias = the device)
    retry     MLflow calls retried on a second writer's lock or a blip
    journal   results on the driver's disk until MLflow has them

The driver alone writes; trials never touch MLflow.
"""

from search.tracking.journal import ResultJournal
from search.tracking.mlflow import DEFAULT_TRACKING_URI, SweepTracker, mapping_string, resolve_uri
from search.tracking.registry import member_dataset, register_pick, resolve_model_ref
from search.tracking.retry import OUTAGE_SECONDS, TrackingUnavailable
from search.tracking.runs import (
    RUN_COLUMNS,
    experiment_id,
    load_arch,
    load_curves,
    load_member,
    load_runs,
    log_sweep_artifact,
    ui_command,
)

__all__ = ["DEFAULT_TRACKING_URI", "OUTAGE_SECONDS", "RUN_COLUMNS", "ResultJournal", "SweepTracker",
           "TrackingUnavailable", "experiment_id", "load_arch", "load_curves", "load_member", "load_runs",
           "log_sweep_artifact", "mapping_string", "member_dataset", "register_pick", "resolve_model_ref",
           "resolve_uri", "ui_command"]
