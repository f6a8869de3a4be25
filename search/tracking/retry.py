"""Retries around MLflow writes: what another writer or a blip causes, waiting cures.

    client = retrying(MlflowClient(uri), uri)   # every method retried on transient errors
    with first_touch(uri):                       # one process at a time opens (creates) a sqlite store
        client = MlflowClient(uri)

Transient: sqlite's "database is locked" (two sweeps on one file: a transaction that must upgrade
its read lock fails at once, busy_timeout or not), and a server that does not answer (restarting,
overloaded, gone). They are retried with jittered exponential backoff for up to RETRY_SECONDS;
then `TrackingUnavailable` is raised, and the sweep driver keeps results in its journal
(`search/tracking/journal.py`), waits up to OUTAGE_SECONDS for the store, then stops cleanly.
Anything else (a bad value, a missing run) is raised at once. Both bounds are settable in the
environment: MENTEE_TRACKING_RETRY_S, MENTEE_TRACKING_OUTAGE_S.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from mlflow.exceptions import MlflowException

from search.errors import SweepInterrupted

__all__ = ["OUTAGE_SECONDS", "RETRY_SECONDS", "TrackingUnavailable", "first_touch", "retrying", "transient"]

RETRY_SECONDS = float(os.environ.get("MENTEE_TRACKING_RETRY_S", "30"))
OUTAGE_SECONDS = float(os.environ.get("MENTEE_TRACKING_OUTAGE_S", "600"))

# MLflow retries a failed HTTP request 7 times with backoff factor 2 and waits 120 s for an answer:
# minutes per call before a dead server shows. Ours wrap every call, so MLflow's are cut to seconds.
for _var, _value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                     ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
    os.environ.setdefault(_var, _value)


class _QuietLocks(logging.Filter):
    """MLflow logs a traceback for every sqlite OperationalError before raising it; a lock we retry
    is not an error (if the retries run out, TrackingUnavailable says so in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database is locked" not in record.getMessage()


logging.getLogger("mlflow.store.db.utils").addFilter(_QuietLocks())


class TrackingUnavailable(SweepInterrupted):
    """The tracking store did not answer within the bound; nothing is lost, `--resume` continues."""

    exit_code = 75  # EX_TEMPFAIL: try again later


def transient(e: BaseException) -> bool:
    """Would the same call, made again a little later, likely succeed?"""
    text = str(e)
    if isinstance(e, MlflowException):
        return (e.error_code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")
                or "database is locked" in text
                or "failed with exception" in text  # rest_utils: the request never got an answer
                or "Max retries exceeded" in text)
    try:
        import requests
    except ImportError:  # pragma: no cover - mlflow depends on requests
        return False
    return isinstance(e, (requests.ConnectionError, requests.Timeout)) or "database is locked" in text


def call(fn, *args: Any, what: str, uri: str, seconds: float | None = None, **kwargs: Any) -> Any:
    """fn(*args, **kwargs), retried on transient errors for up to `seconds` (RETRY_SECONDS)."""
    seconds = RETRY_SECONDS if seconds is None else seconds
    deadline, delay = time.monotonic() + seconds, 0.05
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not transient(e):
                raise
            if time.monotonic() + delay > deadline:
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                raise TrackingUnavailable(f"MLflow at {uri} did not answer for {seconds:g} s ({what}: {first})"
                                          ) from e
            time.sleep(delay * random.uniform(0.5, 1.5))  # jitter: two writers do not retry in step
            delay = min(delay * 2, 2.0)


class _Retrying:
    """An MlflowClient whose methods are retried on transient errors (attributes pass through)."""

    def __init__(self, client: Any, uri: str) -> None:
        self._client, self._uri = client, uri

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        return lambda *a, **kw: call(attr, *a, what=name, uri=self._uri, **kw)


def retrying(client: Any, uri: str) -> Any:
    return _Retrying(client, uri)


@contextmanager
def first_touch(uri: str) -> Iterator[None]:
    """Hold an flock beside a sqlite store while it is opened, and create a new one aside. MLflow
    creates and migrates its tables on first open, some 40 steps: two processes doing that at once,
    or one killed half-way, leave the file unreadable for good (mlflow #4123). Other stores need nothing."""
    if not uri.startswith("sqlite:///") or ":memory:" in uri:
        yield
        return
    db = Path(unquote(uri[len("sqlite:///"):]))
    if not db.parent.is_dir():  # MLflow says what is wrong with the path
        yield
        return
    with open(db.parent / f"{db.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if not db.exists() or db.stat().st_size == 0:
            _create_store(db)
        yield


def _create_store(db: Path) -> None:
    """A new store's tables, made in `<db>.new` and renamed into place: whole or absent."""
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    new = db.with_name(db.name + ".new")
    new.unlink(missing_ok=True)  # what a creator killed half-way left
    SqlAlchemyStore(f"sqlite:///{new}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH).engine.dispose()
    os.replace(new, db)
