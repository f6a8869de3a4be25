"""Many finished child runs in one call: what the sweep's writer thread hands MLflow.

    runs = [NewRun("conv1d-8x8-indep", tags, params, [("val_acc", 0.91, 0), ("curve.loss", 0.4, 3)],
                   "FINISHED", start_ms, end_ms)]
    ids = create_runs("sqlite:///mlflow.db", experiment_id, runs)     # run ids, in order
    update_runs("sqlite:///mlflow.db", [(ids[0], [("val_acc.s3", 0.92, 0)], {"mentee.seeds": "0,1,2,3"})])

SQL stores (sqlite, postgresql, mysql, mssql): every run, tag, param, metric and MLflow's
`latest_metrics` row (what searches and the UI read) go in ONE transaction through MLflow's own
SqlAlchemyStore engine and its ORM tables (`mlflow.store.tracking.dbmodels.models`): a call is written
whole or not at all, and costs one commit instead of ~5 per run. If the installed MLflow's tables are not
the ones this was written against (checked once per store), the public client API is used instead.

http(s) servers: the public REST API (create_run, log_batch, update_run) from a small thread pool;
if any request fails for good, the runs this call created are deleted, so none is left half-written.

Transient errors (sqlite's "database is locked", a server blip) are retried as everywhere in tracking
(`search/tracking/retry.py`); a SQL call is retried whole, which its transaction makes safe.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (
    MAX_ENTITY_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from search.tracking.retry import call, first_touch

__all__ = ["NewRun", "create_runs", "update_runs"]

# MLflow's set_terminated against a server first fetches the whole run (get_run) to print its URL:
# one request more per run, and a line per mentee on the sweep's screen
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

# What an update adds: (run_id, metrics [(key, value, step)], tags to set).
RunUpdate = tuple[str, list[tuple[str, float, int]], dict[str, str]]

_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_REST_THREADS = 8  # requests in flight to a server: enough to hide latency, few enough not to swamp it
_RUN_NAME_TAG = "mlflow.runName"


@dataclass
class NewRun:
    """One finished child run, everything it holds."""

    run_name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: list[tuple[str, float, int]]  # (key, value, step); NaN values already dropped
    status: str  # "FINISHED" | "KILLED" | "FAILED"
    start_ms: int
    end_ms: int


def create_runs(uri: str, experiment_id: str, runs: Sequence[NewRun]) -> list[str]:
    """Write `runs` as finished runs of the experiment; their ids, in the order given."""
    if not runs:
        return []
    for run in runs:
        _check(run)
    store = _sql_store(uri)
    if store is not None:
        ids: list[str] = call(_sql_create, store, experiment_id, runs, what="create_runs", uri=uri)
        return ids
    return _api_create(uri, experiment_id, runs)


def update_runs(uri: str, updates: Sequence[RunUpdate]) -> None:
    """Add metrics to and set tags on existing runs (re-evaluation adds seeds to a mentee's run)."""
    if not updates:
        return
    for _, metrics, tags in updates:
        _check_keys(metrics, {}, tags)
    store = _sql_store(uri)
    if store is not None:
        call(_sql_update, store, updates, what="update_runs", uri=uri)
        return
    _api_update(uri, updates)


# -- validation: MLflow's own rules, applied once per distinct key ------------------------------------

_valid_keys: set[tuple[str, str]] = set()


def _check(run: NewRun) -> None:
    if run.status not in ("FINISHED", "KILLED", "FAILED"):
        raise MlflowException.invalid_parameter_value(f"run {run.run_name!r}: status {run.status!r} is not "
                                                      "FINISHED, KILLED or FAILED")
    _check_keys(run.metrics, run.params, run.tags)


def _check_keys(metrics: Sequence[tuple[str, float, int]], params: dict[str, str], tags: dict[str, str]) -> None:
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name, _validate_tag_name

    for kind, keys, check in (("metric", (m[0] for m in metrics), _validate_metric_name),
                              ("param", params, _validate_param_name), ("tag", tags, _validate_tag_name)):
        for key in keys:
            if (kind, key) in _valid_keys:
                continue
            check(key)
            if len(key) > MAX_ENTITY_KEY_LENGTH:
                raise MlflowException.invalid_parameter_value(
                    f"{kind} key {key[:60]!r}... is longer than MLflow's {MAX_ENTITY_KEY_LENGTH} characters")
            _valid_keys.add((kind, key))
    for key, value, step in metrics:
        if math.isnan(value) or not isinstance(step, int):
            raise MlflowException.invalid_parameter_value(f"metric {key!r}: value {value!r}, step {step!r}: "
                                                          "NaN is dropped before the writer, steps are ints")


def _param(value: str) -> str:
    return str(value)[:MAX_PARAM_VAL_LENGTH]  # as MLflow truncates a long value (MLFLOW_TRUNCATE_LONG_VALUES)


def _tag(value: str) -> str:
    return str(value)[:MAX_TAG_VAL_LENGTH]


def _finite(value: float) -> float:
    # SQL stores hold no infinities; MLflow stores the largest double in their place
    return max(min(float(value), 1.7976931348623157e308), -1.7976931348623157e308)


# -- SQL stores: MLflow's engine and tables, one transaction per call --------------------------------

_stores: dict[str, Any] = {}
_stores_lock = threading.Lock()

# The columns these writes fill, per table: if the installed MLflow's tables differ, writing rows
# directly could leave runs its own code cannot read, so the public API is used instead.
_EXPECTED = {
    "runs": {"run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status",
             "start_time", "end_time", "deleted_time", "source_version", "lifecycle_stage", "artifact_uri",
             "experiment_id"},
    "tags": {"key", "value", "run_uuid"},
    "params": {"key", "value", "run_uuid"},
    "metrics": {"key", "value", "timestamp", "step", "is_nan", "run_uuid"},
    "latest_metrics": {"key", "value", "timestamp", "step", "is_nan", "run_uuid"},
}


def _models_as_expected() -> bool:
    from mlflow.store.tracking.dbmodels import models as m

    tables: dict[str, Any] = {m.SqlRun.__tablename__: m.SqlRun, m.SqlTag.__tablename__: m.SqlTag,
                              m.SqlParam.__tablename__: m.SqlParam, m.SqlMetric.__tablename__: m.SqlMetric,
                              m.SqlLatestMetric.__tablename__: m.SqlLatestMetric}
    return all(name in tables and {c.name for c in tables[name].__table__.columns} == cols
               for name, cols in _EXPECTED.items())


def _sql_store(uri: str) -> Any | None:
    """MLflow's SqlAlchemyStore for a SQL URI, or None: use the public API. It is the store MLflow itself
    caches for the URI (what every MlflowClient(uri) of the process uses: one engine, one pool), else
    one made here; either way once per URI."""
    if uri.partition(":")[0].split("+")[0].lower() not in _SQL_SCHEMES:
        return None
    with _stores_lock:
        if uri not in _stores:
            from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            store = None
            if _models_as_expected():
                with first_touch(uri):
                    try:
                        from mlflow.tracking._tracking_service.utils import _get_store

                        store = _get_store(uri)
                    except ImportError:  # a private helper: gone in some release
                        pass
                    if not isinstance(store, SqlAlchemyStore):
                        store = SqlAlchemyStore(uri, DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
            _stores[uri] = store
        return _stores[uri]


_METRIC_COLUMNS = ("run_uuid", "key", "value", "timestamp", "step", "is_nan")
_RUN_COLUMNS = ("run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status",
                "start_time", "end_time", "deleted_time", "source_version", "lifecycle_stage", "experiment_id",
                "artifact_uri")
Row = tuple[Any, ...]


def _insert(session: Any, table: Any, columns: Sequence[str], rows: list[Row]) -> None:
    """INSERT many rows given as tuples in `columns` order, the fastest way the database takes them:
    sqlite straight to the driver's executemany (SQLAlchemy's per-row parameter handling cost as much as
    sqlite's own work); PostgreSQL as ONE statement of one array a column (`unnest`), where executemany
    sent a statement a row; anything else through SQLAlchemy's executemany."""
    from sqlalchemy import insert

    if not rows:
        return
    dialect = session.bind.dialect
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    if dialect.name == "sqlite":
        sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({', '.join('?' * len(columns))})"
        session.connection().exec_driver_sql(sql, rows)
    elif dialect.name == "postgresql" and dialect.paramstyle in ("format", "pyformat"):
        arrays = ", ".join(f"%s::{table.c[c].type.compile(dialect=dialect)}[]" for c in columns)
        sql = f"INSERT INTO {quote(table.name)} ({names}) SELECT * FROM unnest({arrays})"
        session.connection().exec_driver_sql(sql, tuple(list(col) for col in zip(*rows)))
    else:
        session.execute(insert(table), [dict(zip(columns, r)) for r in rows])


def _metric_rows(run_id: str, metrics: Sequence[tuple[str, float, int]], timestamp: int) -> list[Row]:
    rows = [(run_id, k, _finite(v), timestamp, s, False) for k, v, s in metrics]
    # a repeated (key, value, step) is one row, as MLflow's log_batch keeps it
    return rows if len(set(rows)) == len(rows) else list(dict.fromkeys(rows))


def _latest(rows: list[Row]) -> list[Row]:
    """MLflow's latest_metrics: per (run, key) the row with the largest (step, timestamp, value)."""
    best: dict[tuple[str, str], Row] = {}
    for r in rows:
        b = best.get(r[:2])
        if b is None or (r[4], r[3], r[2]) > (b[4], b[3], b[2]):
            best[r[:2]] = r
    return list(best.values())


def _sql_create(store: Any, experiment_id: str, runs: Sequence[NewRun]) -> list[str]:
    from mlflow.store.tracking.dbmodels.models import (
        SqlExperiment,
        SqlLatestMetric,
        SqlMetric,
        SqlParam,
        SqlRun,
        SqlTag,
    )
    from mlflow.utils.uri import append_to_uri_path
    from sqlalchemy import select, text

    with store.ManagedSessionMaker(read_only=False) as session:
        if session.bind.dialect.name == "sqlite":
            # this connection's page cache 2 → 64 MiB: a batch's inserts land all over the indexes of a
            # large store (1.30 → 1.12 ms of CPU a mentee on a 4,000-mentee file)
            session.execute(text("PRAGMA cache_size = -65536"))
        found = session.execute(select(SqlExperiment.artifact_location, SqlExperiment.lifecycle_stage)
                                .where(SqlExperiment.experiment_id == int(experiment_id))).first()
        if found is None:
            raise MlflowException(f"No Experiment with id={experiment_id} exists", RESOURCE_DOES_NOT_EXIST)
        if found.lifecycle_stage != "active":
            raise MlflowException.invalid_parameter_value(
                f"The experiment {experiment_id} must be in the 'active' state. "
                f"Current state is {found.lifecycle_stage}.")
        ids = [uuid.uuid4().hex for _ in runs]
        run_rows: list[Row] = []
        tag_rows: list[Row] = []
        param_rows: list[Row] = []
        metric_rows: list[Row] = []
        for run_id, run in zip(ids, runs):
            tags = {**run.tags, _RUN_NAME_TAG: run.run_name}
            # as MLflow's own create_run fills them (source fields empty, user from mlflow.user)
            run_rows.append((run_id, run.run_name, "UNKNOWN", "", "", tags.get("mlflow.user", "unknown"),
                             run.status, run.start_ms, run.end_ms, None, "", "active", int(experiment_id),
                             append_to_uri_path(found.artifact_location, run_id, "artifacts")))
            tag_rows += [(run_id, k, _tag(v)) for k, v in tags.items()]
            param_rows += [(run_id, k, _param(v)) for k, v in run.params.items()]
            metric_rows += _metric_rows(run_id, run.metrics, run.end_ms)
        _insert(session, SqlRun.__table__, _RUN_COLUMNS, run_rows)
        _insert(session, SqlTag.__table__, ("run_uuid", "key", "value"), tag_rows)
        _insert(session, SqlParam.__table__, ("run_uuid", "key", "value"), param_rows)
        _insert(session, SqlMetric.__table__, _METRIC_COLUMNS, metric_rows)
        _insert(session, SqlLatestMetric.__table__, _METRIC_COLUMNS, _latest(metric_rows))
    return ids


def _sql_update(store: Any, updates: Sequence[RunUpdate]) -> None:
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun, SqlTag
    from sqlalchemy import delete, select, update

    now = int(time.time() * 1000)
    with store.ManagedSessionMaker(read_only=False) as session:
        ids = sorted({u[0] for u in updates})
        stages = dict(session.execute(select(SqlRun.run_uuid, SqlRun.lifecycle_stage)
                                      .where(SqlRun.run_uuid.in_(ids))).all())
        for run_id in ids:
            if run_id not in stages:
                raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
            if stages[run_id] != "active":
                raise MlflowException.invalid_parameter_value(f"The run {run_id} must be in the 'active' state.")
        metric_rows = [r for run_id, metrics, _ in updates for r in _metric_rows(run_id, metrics, now)]
        _insert(session, SqlMetric.__table__, _METRIC_COLUMNS, metric_rows)
        latest = SqlLatestMetric.__table__
        old = {(r.run_uuid, r.key): r for r in session.execute(
            select(latest).where(latest.c.run_uuid.in_(ids))).all()} if metric_rows else {}
        added = []
        for new in _latest(metric_rows):
            was = old.get(new[:2])
            if was is None:
                added.append(new)
            elif (new[4], new[3], new[2]) > (was.step, was.timestamp, was.value):
                session.execute(update(latest).where(latest.c.run_uuid == new[0], latest.c.key == new[1])
                                .values(value=new[2], timestamp=new[3], step=new[4], is_nan=False))
        _insert(session, latest, _METRIC_COLUMNS, added)
        for run_id, _, tags in updates:
            if tags:  # a tag set again replaces its value, as MLflow's set_tag does
                session.execute(delete(SqlTag.__table__).where(SqlTag.run_uuid == run_id,
                                                               SqlTag.key.in_(list(tags))))
                _insert(session, SqlTag.__table__, ("run_uuid", "key", "value"),
                        [(run_id, k, _tag(v)) for k, v in tags.items()])


# -- servers (and SQL stores whose tables are not as expected): the public API -----------------------

_clients: dict[str, MlflowClient] = {}


def _client(uri: str) -> MlflowClient:
    with _stores_lock:
        if uri not in _clients:
            _clients[uri] = MlflowClient(uri)
        return _clients[uri]


def _batches(metrics: list[Metric], params: list[Param], tags: list[RunTag]) -> list[tuple[list, list, list]]:
    """log_batch calls within MLflow's limits: 1000 entities, of which at most 100 params and 100 tags."""
    out = []
    while metrics or params or tags:
        p, params = params[:MAX_PARAMS_TAGS_PER_BATCH], params[MAX_PARAMS_TAGS_PER_BATCH:]
        t, tags = tags[:MAX_PARAMS_TAGS_PER_BATCH], tags[MAX_PARAMS_TAGS_PER_BATCH:]
        room = MAX_METRICS_PER_BATCH - len(p) - len(t)
        m, metrics = metrics[:room], metrics[room:]
        out.append((m, p, t))
    return out


def _api_create_one(uri: str, experiment_id: str, run: NewRun, created: list[str]) -> str:
    client = _client(uri)
    tags = {k: _tag(v) for k, v in run.tags.items()}  # create_run takes any number of tags
    made = call(client.create_run, experiment_id, start_time=run.start_ms, tags=tags, run_name=run.run_name,
                what="create_run", uri=uri)
    run_id = made.info.run_id
    created.append(run_id)
    metrics = [Metric(k, _finite(v), run.end_ms, int(s)) for k, v, s in {(k, v, s) for k, v, s in run.metrics}]
    params = [Param(k, _param(v)) for k, v in run.params.items()]
    for m, p, t in _batches(metrics, params, []):
        call(client.log_batch, run_id, metrics=m, params=p, tags=t, what="log_batch", uri=uri)
    call(client.set_terminated, run_id, run.status, run.end_ms, what="set_terminated", uri=uri)
    return run_id


def _api_create(uri: str, experiment_id: str, runs: Sequence[NewRun]) -> list[str]:
    created: list[str] = []  # list.append is atomic: the pool's threads share it
    threads = _REST_THREADS if uri.startswith(("http:", "https:")) else 1  # one writer on a SQL file
    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda r: _api_create_one(uri, experiment_id, r, created), runs))
    except BaseException:
        # all or nothing, as far as a server allows: the runs made so far are deleted
        for run_id in created:
            try:
                _client(uri).delete_run(run_id)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        raise


def _api_update_one(uri: str, update: RunUpdate) -> None:
    run_id, metrics, tags = update
    client, now = _client(uri), int(time.time() * 1000)
    ms = [Metric(k, _finite(v), now, int(s)) for k, v, s in {(k, v, s) for k, v, s in metrics}]
    ts = [RunTag(k, _tag(v)) for k, v in tags.items()]
    for m, _, t in _batches(ms, [], ts):
        call(client.log_batch, run_id, metrics=m, tags=t, what="log_batch", uri=uri)


def _api_update(uri: str, updates: Sequence[RunUpdate]) -> None:
    threads = _REST_THREADS if uri.startswith(("http:", "https:")) else 1
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda u: _api_update_one(uri, u), updates))
