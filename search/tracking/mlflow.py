"""MLflow's stores and the driver's writer: a parent run per sweep, one child run per mentee.

Only the sweep driver writes:
trials hand their `MemberResult`s back through Ray and the driver logs them, so a
sqlite store never sees two writers (mlflow #4123: "database is locked" and
schema-migration races). Every call goes through an explicit `MlflowClient(uri)`;
nothing here sets the global tracking URI or reads `MLFLOW_RUN_ID`.

Usage::

    tracker = SweepTracker("sqlite:///mlflow.db", "mnist1d")   # creates the experiment now
    parent = tracker.find_sweep() if resume else None
    parent = tracker.start_sweep("mnist1d-0412", {"budget": 64}, {"mentee.space_hash": h},
                                 resume_run_id=parent)
    done = tracker.existing_member_ids(parent)                 # skip these on resume
    tracker.log_member(parent, result, tags={"mentee.space_hash": h}, member_id="t3-m1")
    tracker.finish_sweep(parent, metrics={"members": 64})

Reading back is `search.tracking.runs`; the model registry `search.tracking.registry`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from search.config import MemberResult, WorkItem, WorkKind, seed_member_id
from search.errors import UserError
from search.mentees import MenteeRecord
from search.tracking import bulk
from search.tracking.record import added_seeds, ints, mapping_string, mentee_run
from search.tracking.retry import first_touch, retrying
from search.tracking.stores import check_store

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bars in CLI output
for _name in ("mlflow", "alembic"):  # "Creating initial MLflow database tables..." is not for our users
    logging.getLogger(_name).setLevel(logging.WARNING)

__all__ = ["DEFAULT_TRACKING_URI", "SweepTracker", "mapping_string", "resolve_uri"]

# MLflow 3's own default; the old ./mlruns file store is refused from 3.13.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

_PAGE = 1000


# Stores MLflow can track to. Anything else fails deep inside MLflow with a model-registry traceback
# (`foo://x`), or, for a plain directory, as MLflow 3.13+ refusing its old file store.
_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql")
_EXPECTED = "expected sqlite:///PATH.db, a path ending in .db, or http(s)://HOST:PORT of an MLflow server"


def resolve_uri(uri: str | None) -> str:
    """None → $MLFLOW_TRACKING_URI or the default; a plain `x.db` path → an absolute sqlite URI.
    Raises UserError for what no MLflow store answers to (checked before anything is opened)."""
    source = "--tracking-uri"
    if uri is None:
        uri, source = os.environ.get("MLFLOW_TRACKING_URI"), "$MLFLOW_TRACKING_URI"
        if not uri:
            return DEFAULT_TRACKING_URI
    uri = uri.strip()
    if "://" not in uri and uri.endswith(".db"):
        # A path is relative to the cwd *now*; pin it so a later chdir cannot move the store.
        return "sqlite:///" + str(Path(uri).expanduser().resolve())
    scheme = uri.partition(":")[0].split("+")[0].lower() if ":" in uri else uri  # postgresql+psycopg2
    if scheme in ("databricks", "databricks-uc", "uc"):  # a workspace's login flow and a different run model
        raise UserError(f"{source} {uri!r}: Databricks tracking is not supported; {_EXPECTED}")
    if scheme in _SCHEMES or (scheme == "file" and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() == "true"):
        return uri
    if not uri:
        raise UserError(f"{source}: empty; {_EXPECTED}")
    if scheme == "file" or ":" not in uri:
        raise UserError(f"{source} {uri!r}: a directory means MLflow's file store, which MLflow refuses since "
                        f"3.13; {_EXPECTED}")
    raise UserError(f"{source} {uri!r}: unknown scheme '{scheme}:'; {_EXPECTED} ({', '.join(_SCHEMES)})")


def _client(uri: str | None, *, must_exist: bool = False) -> MlflowClient:
    uri = resolve_uri(uri)
    # a reader never creates a store (a missing or empty sqlite file says where it looked); a directory, a
    # file that is not sqlite, a missing driver or a server that does not answer: one line, at once
    check_store(uri, reader=must_exist)
    return MlflowClient(uri)


def _search(client: MlflowClient, experiment_ids: list[str], filter_string: str, **kw: Any) -> Iterator[Any]:
    """All runs matching, page by page (one search_runs call returns at most max_results)."""
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string, ViewType.ACTIVE_ONLY, _PAGE, page_token=token, **kw
        )
        yield from page
        token = page.token
        if not token:
            return


def _get_run(client: MlflowClient, run_id: str) -> Any:
    try:
        return client.get_run(run_id)
    except MlflowException as e:
        # Only "no such run" is the user's doing; a dead server or a broken store is not.
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise UserError(f"MLflow run {run_id!r} not found in {client.tracking_uri}") from e


class SweepTracker:
    """Writes one sweep to MLflow. Create it in the driver, before any trial starts."""

    def __init__(self, uri: str | None, experiment: str) -> None:
        self.uri = resolve_uri(uri)
        check_store(self.uri)  # one line now, not a traceback or ~100 s of retries (search/tracking/stores.py)
        with first_touch(self.uri):  # a new sqlite file's tables: created by one process at a time
            self._raw = MlflowClient(self.uri)
        # every write waits out sqlite's "database is locked" (another sweep on the file) and a server
        # that does not answer for a while (search/tracking/retry.py)
        self.client = retrying(self._raw, self.uri)
        self.experiment = experiment
        # The first touch of a sqlite file runs its schema migrations; doing it here, once,
        # keeps that away from anything concurrent.
        found = self.client.get_experiment_by_name(experiment)
        if found is not None and found.lifecycle_stage == "deleted":
            raise UserError(
                f"MLflow experiment {experiment!r} is deleted in {self.uri}: restore it in the UI, "
                "purge it with `mlflow gc`, or pick another name"
            )
        if found is not None:
            self.experiment_id = found.experiment_id
            self._training_view()
            return
        try:
            self.experiment_id = self.client.create_experiment(experiment, self._artifact_location())
        except MlflowException:
            # Another driver created it between our lookup and create: use theirs.
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                raise
            self.experiment_id = found.experiment_id
        self._training_view()

    def _training_view(self) -> None:
        # MLflow 3's UI opens an experiment on its GenAI overview unless the experiment says
        # it holds model training (the value the 3.17 UI itself writes when a user switches)
        self.client.set_experiment_tag(self.experiment_id, "mlflow.experimentKind", "custom_model_development")

    def _artifact_location(self) -> str | None:
        # With a sqlite store MLflow would put artifacts in ./mlruns of whatever the cwd is;
        # keep them beside the database instead. A server chooses its own (None).
        if not self.uri.startswith("sqlite:///"):
            return None
        db = Path(unquote(self.uri[len("sqlite:///") :])).resolve()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.experiment)
        return (db.parent / "mlartifacts" / safe).as_uri()

    def _log(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        # As few log_batch calls as MLflow's limits allow (1000 entities, of which at most
        # 100 params and 100 tags): each call is a database transaction.
        ps = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in (params or {}).items()]
        ts = [RunTag(k, str(v)[:MAX_TAG_VAL_LENGTH]) for k, v in (tags or {}).items()]
        ms = list(metrics)
        while ps or ts or ms:
            p, ps = ps[:MAX_PARAMS_TAGS_PER_BATCH], ps[MAX_PARAMS_TAGS_PER_BATCH:]
            t, ts = ts[:MAX_PARAMS_TAGS_PER_BATCH], ts[MAX_PARAMS_TAGS_PER_BATCH:]
            room = MAX_METRICS_PER_BATCH - len(p) - len(t)
            m, ms = ms[:room], ms[room:]
            self.client.log_batch(run_id, metrics=m, params=p, tags=t)

    def start_sweep(
        self,
        name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, Any],
        *,
        resume_run_id: str | None = None,
    ) -> str:
        """Create the parent run (or reopen `resume_run_id`) and return its id."""
        if resume_run_id is not None:
            run = _get_run(self.client, resume_run_id)
            if run.info.experiment_id != self.experiment_id:
                raise UserError(f"run {resume_run_id!r} is not in experiment {self.experiment!r}")
            # Params are immutable in MLflow: a resumed sweep keeps the ones it started with.
            self.client.update_run(resume_run_id, status="RUNNING")
            self._log(resume_run_id, tags={str(k): str(v) for k, v in tags.items()})
            return resume_run_id
        run = self.client.create_run(
            self.experiment_id,
            tags={**{str(k): str(v) for k, v in tags.items()}, "mentee.kind": "sweep"},
            run_name=name,
        )
        self._log(run.info.run_id, params={str(k): str(v) for k, v in params.items()})
        return run.info.run_id

    def log_member(
        self,
        parent_run_id: str,
        result: MemberResult,
        *,
        tags: Mapping[str, Any],
        member_id: str,
        artifact_dir: Path | None = None,
    ) -> str:
        """One member as a mentee of one seed (tools and tests; sweeps write whole mentees with
        `log_mentees`); `artifact_dir`'s files are attached to its run too."""
        kind = WorkKind(str(tags.get("mentee.work", WorkKind.FIXED.value)))
        rec = MenteeRecord.of([(WorkItem(member_id, kind, result.config), result, str(tags.get("mentee.node_id", "")))])
        run_id = self.log_mentees(parent_run_id, [(rec, {str(k): str(v) for k, v in tags.items()})])[0]
        if artifact_dir is not None:
            self.client.log_artifacts(run_id, str(artifact_dir))
        return run_id

    def log_mentees(self, parent_run_id: str, records: Sequence[tuple[MenteeRecord, Mapping[str, str]]]) -> list[str]:
        """One finished child run per mentee (the mean, the std and each seed's value of every
        accuracy), all written in one bulk call (`search.tracking.bulk`: one transaction on a SQL
        store); their weights, every seed's, in ONE artifact of the parent run that each child's
        `mentee.weights` tag points to (a file per child run was most of a run's write cost)."""
        if not records:
            return []
        refs = self._save_weights(parent_run_id, [rec for rec, _ in records])
        now = int(time.time() * 1000)
        runs = [mentee_run(parent_run_id, rec, tags, refs.get(rec.mentee_id, {}), now) for rec, tags in records]
        return bulk.create_runs(self.uri, self.experiment_id, runs)  # retried inside, whole

    def add_seeds(self, parent_run_id: str, updates: Sequence[tuple[str, MenteeRecord]]) -> None:
        """Re-evaluation: more seeds of recorded mentees, added to their runs (run id, the new seeds'
        record). The mean and the std are logged again at step = seeds so far, so the latest value
        (what every view reads) is over all of them; each new seed's value is logged under its name."""
        if not updates:
            return
        refs = self._save_weights(parent_run_id, [rec for _, rec in updates])
        batch = []
        for run_id, rec in updates:
            run = _get_run(self.client, run_id)
            metrics, tags = added_seeds(run.data.tags, run.data.metrics, rec, refs.get(rec.mentee_id, {}))
            batch.append((run_id, metrics, tags))
        bulk.update_runs(self.uri, batch)

    def _save_weights(self, parent_run_id: str, records: Sequence[MenteeRecord]) -> dict[str, dict[str, str]]:
        """Every seed's weights of these mentees in one file under the parent run's `weights/`;
        mentee id → {seed: "weights/<file>.pt"} (the entry's key in the file: `<mentee>@s<seed>`)."""
        import torch  # here, not at import: the driver's start-up and reading back need none

        states = {seed_member_id(r.mentee_id, s): {k: v.detach().cpu() if torch.is_tensor(v) else v
                                                    for k, v in w.items()}
                  for r in records for s, w in r.weights.items()}
        if not states:
            return {}
        name = f"{uuid.uuid4().hex[:16]}.pt"
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(states, Path(tmp) / name)
            self.client.log_artifact(parent_run_id, str(Path(tmp) / name), "weights")
        return {r.mentee_id: {str(s): f"weights/{name}" for s in r.weights} for r in records}

    def finish_sweep(
        self, parent_run_id: str, status: str = "FINISHED", metrics: Mapping[str, float] | None = None
    ) -> None:
        now = int(time.time() * 1000)
        self.existing_member_ids(parent_run_id)  # deletes children a failed write left RUNNING
        self._log(parent_run_id, [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()])
        self.client.set_terminated(parent_run_id, RunStatus.to_string(RunStatus.from_string(status)))

    def existing_member_ids(self, parent_run_id: str) -> set[str]:
        """`mentee.member_id` of every child logged completely under the parent, and the member id of
        each of its seeds (`17@s2`): resume skips them. A child still RUNNING was cut off mid-log (the
        driver died): it is deleted here, so its mentee is trained and logged again and ends with exactly
        one run."""
        done = set()
        for mid, (_, seeds) in self.recorded_mentees(parent_run_id).items():
            done.add(mid)
            done.update(seed_member_id(mid, s) for s in seeds)
        return done

    def has_mentees(self) -> bool:
        """Whether the experiment holds any mentee run yet (one cheap query: a new sweep skips reading back)."""
        found = self.client.search_runs([self.experiment_id], "tags.`mentee.kind` = 'mentee'", ViewType.ACTIVE_ONLY, 1)
        return bool(found)

    def recorded_mentees(self, parent_run_id: str) -> dict[str, tuple[str, set[int]]]:
        """Mentee id → (its run id, every seed it holds, failed ones too: they were trained) for the
        children logged completely under the parent; children still RUNNING are deleted (see above)."""
        found = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
        out: dict[str, tuple[str, set[int]]] = {}
        for r in _search(self.client, [self.experiment_id], found):
            if r.info.status == "RUNNING":
                self.client.delete_run(r.info.run_id)
            elif "mentee.member_id" in r.data.tags:
                tags = r.data.tags
                seeds = {*ints(tags.get("mentee.seeds")), *ints(tags.get("mentee.failed_seeds"))}
                out[tags["mentee.member_id"]] = (r.info.run_id, seeds)
        return out

    def find_sweep(self, experiment: str | None = None) -> str | None:
        """Latest sweep of the experiment that did not finish (RUNNING, FAILED or KILLED), if any."""
        exp = self.client.get_experiment_by_name(experiment or self.experiment)
        if exp is None:
            return None
        runs = _search(
            self.client,
            [exp.experiment_id],
            "tags.`mentee.kind` = 'sweep'",
            order_by=["attributes.start_time DESC"],
        )
        # A status filter in the query would be neater, but IN on attributes is not in every store.
        return next((r.info.run_id for r in runs if r.info.status in ("RUNNING", "FAILED", "KILLED")), None)
