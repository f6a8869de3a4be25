"""Reading many runs back fast: per run only its id, experiment, status, start, tags, params and latest metrics.

    ids = experiment_ids("sqlite:///mlflow.db", experiment="mnist1d")       # None: not a SQL store
    for run in read_runs("sqlite:///mlflow.db", ids, {"mentee.kind": "mentee"}):
        run.run_id, run.tags["mentee.member_id"], run.params["arch.widths"], run.metrics["val_acc"]

`search_runs` builds a whole Run object per run (info, every tag, param and metric, inputs) in pages of
1,000: ~3.6 ms a run on 2 busy cores, 36 s for a sweep of 10,000 mentees. On SQL stores this asks the
database four plain queries (the runs, then their tags, params and latest metrics, each filtered by the
same subquery) and builds plain dicts: 0.7 s of CPU for those 10,000. It reads MLflow's tables with
SQLAlchemy alone: opening MLflow's own store (its module, its schema check) cost a reading command ~0.9 s
of CPU more than the read. If the tables are not as expected (another MLflow), or on a server, it falls
back to `search_runs`, page by page. Both give the same records, in the same order as
`search_runs(order_by=["attributes.start_time ASC"])`.
"""

from __future__ import annotations

import gc
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from search.errors import UserError

__all__ = ["RunRecord", "experiment_ids", "read_runs"]

_PAGE = 1000  # search_runs' page size
_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


class RunRecord(NamedTuple):
    """What a reader needs of a run."""

    run_id: str
    experiment_id: str
    status: str  # MLflow's: FINISHED, KILLED, FAILED, RUNNING
    start_time: int  # ms since the epoch
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # the latest value of each metric

    @classmethod
    def from_run(cls, run: Any) -> RunRecord:
        """The record of an MLflow Run (get_run, search_runs)."""
        return cls(run.info.run_id, run.info.experiment_id, run.info.status, run.info.start_time,
                   run.data.tags, run.data.params, run.data.metrics)


def read_runs(uri: str, experiment_ids: Sequence[str], tags_equal: Mapping[str, str], *,
              skip_metrics: Sequence[str] = ()) -> list[RunRecord]:
    """Active runs of the experiments whose tags hold every `tags_equal` pair, oldest first; metrics whose
    key starts with one of `skip_metrics` (e.g. `curve.`) are left out."""
    if not experiment_ids:
        return []
    runs = _sql(uri, _by_sql, experiment_ids, tags_equal)
    if runs is None:
        from mlflow.tracking import MlflowClient

        runs = list(_by_search(MlflowClient(uri), experiment_ids, tags_equal))
    prefixes = tuple(skip_metrics)
    if prefixes:  # a few rows a run: cheaper dropped here than asked of every database in its own words
        for r in runs:
            for k in [k for k in r.metrics if k.startswith(prefixes)]:
                del r.metrics[k]
    return runs


def experiment_ids(uri: str, experiment: str | None = None, parent_run_id: str | None = None) -> list[str] | None:
    """The experiments a read covers, as `load_runs` names them: the parent run's, the named one, or every
    active one. None: not a SQL store this can read (ask MLflow's client). UserError: no such one."""
    return _sql(uri, _scope, uri, experiment, parent_run_id)


# -- SQL stores: MLflow's tables read with SQLAlchemy alone -------------------------------------------

_engines: dict[str, Any] = {}
_engines_lock = threading.Lock()


def _engine(uri: str) -> Any | None:
    if uri.partition(":")[0].split("+")[0].lower() not in _SQL_SCHEMES:
        return None
    with _engines_lock:
        if uri not in _engines:
            from sqlalchemy import create_engine

            # a reader waits for a writer's commit as MLflow's own sessions do (busy_timeout 20 s)
            args = {"timeout": 20} if uri.startswith("sqlite") else {}
            _engines[uri] = create_engine(uri, connect_args=args)
        return _engines[uri]


def _sql(uri: str, read: Any, *args: Any) -> Any:
    """read(connection, tables, *args) on a SQL store; None where there is none, or its tables are not
    MLflow's as this knows them (a missing table or column): the caller asks MLflow instead."""
    from sqlalchemy.exc import NoSuchTableError, OperationalError, ProgrammingError

    engine = _engine(uri)
    if engine is None:
        return None
    try:
        with engine.connect() as db:
            return read(db, _tables(), *args)
    except (OperationalError, ProgrammingError, NoSuchTableError) as e:
        if "lock" in str(e).lower():  # a writer that held on past the timeout: not a schema question
            raise
        return None


def _tables() -> Any:
    """MLflow's tracking tables, the columns read here (MLflow's own ORM models cost a second to import)."""
    from types import SimpleNamespace

    from sqlalchemy import column, table

    return SimpleNamespace(
        experiments=table("experiments", column("experiment_id"), column("name"), column("lifecycle_stage")),
        runs=table("runs", column("run_uuid"), column("experiment_id"), column("status"), column("start_time"),
                   column("lifecycle_stage")),
        tags=table("tags", column("run_uuid"), column("key"), column("value")),
        params=table("params", column("run_uuid"), column("key"), column("value")),
        latest_metrics=table("latest_metrics", column("run_uuid"), column("key"), column("value"),
                             column("is_nan")))


def _scope(db: Any, t: Any, uri: str, experiment: str | None, parent_run_id: str | None) -> list[str]:
    from sqlalchemy import select

    if parent_run_id is not None:  # as get_run: a deleted parent still names its experiment
        found = db.execute(select(t.runs.c.experiment_id).where(t.runs.c.run_uuid == parent_run_id)).first()
        if found is None:
            raise UserError(f"MLflow run {parent_run_id!r} not found in {uri}")
        return [str(found[0])]
    active = select(t.experiments.c.experiment_id, t.experiments.c.name).where(
        t.experiments.c.lifecycle_stage == "active").order_by(t.experiments.c.experiment_id)
    if experiment is None:
        return [str(e) for e, _ in db.execute(active)]
    found = db.execute(select(t.experiments.c.experiment_id).where(t.experiments.c.name == experiment)).first()
    if found is None:
        names = sorted(name for _, name in db.execute(active))
        raise UserError(f"MLflow experiment {experiment!r} not found in {uri}; have {names}")
    return [str(found[0])]


def _by_sql(db: Any, t: Any, experiment_ids: Sequence[str], tags_equal: Mapping[str, str]) -> list[RunRecord]:
    from sqlalchemy import and_, select

    run, tag, param, latest = t.runs.c, t.tags.c, t.params.c, t.latest_metrics.c
    # the runs wanted, as a subquery every query repeats: the database joins, not Python
    wanted = select(run.run_uuid).where(run.experiment_id.in_([int(e) for e in experiment_ids]),
                                        run.lifecycle_stage == "active")
    for i, (key, value) in enumerate(tags_equal.items()):
        a = t.tags.alias(f"t{i}")
        wanted = wanted.join(a, and_(a.c.run_uuid == run.run_uuid, a.c.key == key, a.c.value == value))
    gc_was_on = gc.isenabled()
    gc.disable()  # ~500k new tuples and dicts: the collector's passes over them cost as much as the reads
    try:
        # start_time ASC with NULLs last, then the id: the order search_runs gives
        runs = _fetch(db, select(run.run_uuid, run.experiment_id, run.status, run.start_time)
                      .where(run.run_uuid.in_(wanted))
                      .order_by(run.start_time.is_(None), run.start_time, run.run_uuid))
        tags: dict[str, dict[str, str]] = {r[0]: {} for r in runs}
        params: dict[str, dict[str, str]] = {r[0]: {} for r in runs}
        metrics: dict[str, dict[str, float]] = {r[0]: {} for r in runs}
        for run_id, key, value in _fetch(db, select(tag.run_uuid, tag.key, tag.value).where(tag.run_uuid.in_(wanted))):
            tags[run_id][key] = value
        for run_id, key, value in _fetch(db, select(param.run_uuid, param.key, param.value)
                                         .where(param.run_uuid.in_(wanted))):
            params[run_id][key] = value
        nan = math.nan
        for run_id, key, value, is_nan in _fetch(db, select(latest.run_uuid, latest.key, latest.value, latest.is_nan)
                                                 .where(latest.run_uuid.in_(wanted))):
            metrics[run_id][key] = nan if is_nan else value
        return [RunRecord(run_id, str(experiment_id), status, start_time, tags[run_id], params[run_id],
                          metrics[run_id]) for run_id, experiment_id, status, start_time in runs]
    finally:
        if gc_was_on:
            gc.enable()


def _fetch(db: Any, statement: Any) -> list[tuple[Any, ...]]:
    """All rows of a SELECT as plain tuples, straight from the database driver: SQLAlchemy's Row objects
    cost a third more per row than reading them. The statement is compiled by SQLAlchemy for the
    dialect, its values passed as bound parameters."""
    compiled = statement.compile(dialect=db.dialect, compile_kwargs={"render_postcompile": True})
    args: Any = compiled.params
    if compiled.positional:
        args = tuple(compiled.params[name] for name in compiled.positiontup)
    cursor = db.connection.dbapi_connection.cursor()
    try:
        cursor.execute(str(compiled), args)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _by_search(client: Any, experiment_ids: Sequence[str], tags_equal: Mapping[str, str]) -> Iterator[RunRecord]:
    from mlflow.entities import ViewType

    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags_equal.items())
    token = None
    while True:
        page = client.search_runs(list(experiment_ids), query, ViewType.ACTIVE_ONLY, _PAGE,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        for r in page:
            yield RunRecord.from_run(r)
        token = page.token
        if not token:
            return
