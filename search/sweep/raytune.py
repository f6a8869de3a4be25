"""Ray Tune glue: a searcher that hands out whole cohorts, and a callback that records them.

One Ray Tune trial = one cohort (`CohortSpec.to_dict()` is its config). The searcher asks the
driver for the next cohort; the callback hands each finished trial's report and checkpointed
weights back to the driver, and a trial that died for good (Tune's `FailureConfig` retries
exhausted: its process or its node lost) to `Driver.lost`, which queues its members again.
"""

from __future__ import annotations

from typing import Any

from search.config import CohortSpec
from search.sweep.driver import Driver

__all__ = ["cohort_searcher", "recorder_callback"]


def recorder_callback(driver: Driver):
    from ray import tune

    class Recorder(tune.Callback):
        """Hands each finished cohort (metrics and checkpointed weights) to the driver."""

        def __init__(self, driver: Driver):
            self.driver = driver

        def __getstate__(self) -> dict:  # Ray pickles callbacks into its experiment state;
            return {}  # ours live in Optuna and MLflow, and the lock and thread can't be pickled

        def on_trial_complete(self, iteration, trials, trial, **info):
            spec = CohortSpec.from_dict(trial.config)
            if not trial.last_result or "members" not in trial.last_result:
                self.driver.lost(spec, "trial ended without reporting its cohort")
                return
            ckpt = trial.checkpoint
            if ckpt is None:
                self.driver.record(spec, trial.last_result, None)
                return
            with ckpt.as_directory() as d:
                self.driver.record(spec, trial.last_result, d)

        def on_trial_error(self, iteration, trials, trial, **info):
            error = str(getattr(trial, "error_msg", None) or "trial raised an error")
            self.driver.lost(CohortSpec.from_dict(trial.config), error)

    return Recorder(driver)


def cohort_searcher(driver: Driver, concurrency: int):
    """The search algorithm for Tune: cohorts from the driver, at most `concurrency` at once."""
    from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator

    class CohortSearcher(Searcher):
        """Each Ray trial's config is a whole cohort, asked from Optuna in one batch."""

        def __init__(self, driver: Driver):
            super().__init__()
            self.driver = driver

        def __getstate__(self) -> dict:
            return {k: v for k, v in self.__dict__.items() if k != "driver"}

        # str: Searcher.FINISHED, as Ray's docs say to return; its annotation (dict | None) leaves that out
        def suggest(self, trial_id: str) -> dict | str | None:  # type: ignore[override]
            cohort = self.driver.next_cohort()
            if cohort is not None:
                return cohort.to_dict()
            # nothing to hand out now; a lost trial may still put members back in the queue
            return Searcher.FINISHED if self.driver.done else None

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            pass  # the Recorder callback tells Optuna: it also has the checkpoint with the weights

    class Unsnapshotted(SearchGenerator):
        """Writes no searcher snapshot: resume replays the driver's journal and Optuna's, never
        Tune's files. Tune's own snapshot would be a temporary file renamed into place while Tune's
        background copy of the same folder may be listing it: a logged FileNotFoundError traceback
        when a tuner starts and ends within moments (a resumed or re-evaluation sweep)."""

        def save_to_dir(self, dirpath: str, session_str: str = "", **kwargs: Any) -> None:
            pass

    return Unsnapshotted(ConcurrencyLimiter(CohortSearcher(driver), max_concurrent=concurrency))
