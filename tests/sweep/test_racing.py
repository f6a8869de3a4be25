"""Racing: the rule on frames built by hand, and a tiny real sweep (local Ray, sqlite MLflow) whose
mentees near the fronts get more seeds in their own runs — never a second run for one mentee."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from search.spaces import load_space
from search.sweep.racing import PRIOR_SEED_STD, contenders, pooled_seed_std
from search.sweep.run import run_sweep
from search.tracking import SweepTracker, load_runs

SEEDS, EXTRA = 2, 2  # the CPU's default seeds a mentee, then up to 2 more for contenders


def mentee(run_id, arm, params, vals, status="finished"):
    vals = tuple(vals)
    return {"run_id": run_id, "member_id": run_id, "arm": arm, "params": params, "status": status,
            "seeds": tuple(range(len(vals))), "n_seeds": len(vals), "val_accs": vals, "val_acc": float(np.mean(vals)),
            "val_acc_std": float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan}


def test_pooled_seed_std_weights_each_mentee_by_its_degrees_of_freedom():
    df = pd.DataFrame([mentee("a", "mentored", 1, [0.5, 0.7]), mentee("b", "mentored", 2, [0.6, 0.6, 0.9]),
                       mentee("c", "mentored", 3, [0.9])])
    want = math.sqrt((1 * 0.02 + 2 * 0.03) / 3)  # variances 0.02 (1 dof) and 0.03 (2 dof); c has one seed
    assert pooled_seed_std(df) == pytest.approx(want)
    assert pooled_seed_std(df.iloc[[2]]) == PRIOR_SEED_STD  # nothing measured yet: the stated prior


def test_a_clearly_dominated_mentee_gets_no_more_seeds():
    # seed spread 0.01 everywhere: half-width 2·0.01/√2 = 0.0141
    rows = [mentee("small-good", "mentored", 100, [0.90, 0.91]),
            mentee("big-bad", "mentored", 200, [0.60, 0.61]),      # larger and far worse: dominated
            mentee("big-close", "mentored", 300, [0.905, 0.915]),  # within the noise of small-good: races
            mentee("big-better", "mentored", 400, [0.95, 0.96]),
            mentee("ind-small", "independent", 50, [0.50, 0.51]),  # other arm: raced against its own arm only
            mentee("ind-big", "independent", 500, [0.70, 0.71]),
            mentee("pruned", "mentored", 10, [0.99, 0.99], status="pruned")]  # never on a front: never raced
    df = pd.DataFrame(rows)
    assert contenders(df, max_seeds=4) == ["ind-small", "small-good", "big-close", "big-better", "ind-big"]
    # a mentee at the maximum is done, whatever its standing
    df.loc[df.run_id == "big-better", ["n_seeds"]] = 4
    assert "big-better" not in contenders(df, max_seeds=4)
    # with a precision, a mentee whose own interval over ≥ 3 seeds is that tight gets no more
    df = pd.DataFrame(rows[:1] + [mentee("tight", "mentored", 300, [0.90, 0.901, 0.902]),
                                  mentee("loose", "mentored", 400, [0.85, 0.95, 0.99])])
    assert contenders(df, max_seeds=10, precision=0.015) == ["small-good", "loose"]  # small-good: 2 seeds
    assert contenders(df, max_seeds=10) == ["small-good", "tight", "loose"]
    # with wide noise nothing is clearly dominated: everyone races
    noisy = pd.DataFrame([mentee("a", "mentored", 1, [0.2, 0.9]), mentee("b", "mentored", 2, [0.1, 0.5])])
    assert contenders(noisy, max_seeds=4) == ["a", "b"]


# ------------------------------------------------------------------- a real sweep

N_SAMPLES = 300


@pytest.fixture(scope="module")
def raced(ray_local, tmp_path_factory):
    """A tiny sweep of both arms (2 seeds a mentee), racing up to 4 seeds, then resumed after it was
    marked killed (as if the driver died once everything was recorded)."""
    from search.config import ArchConfig
    from search.data import load_dataset
    from search.train.mentor import train_mentor

    tmp = tmp_path_factory.mktemp("racing")
    mentor = tmp / "m.pt"
    train_mentor(ArchConfig("conv1d", (8, 8, 8), 5, True), load_dataset("mnist1d", n_samples=N_SAMPLES, seed=0),
                 epochs=2, out=mentor)
    space = {"name": "racing", "dataset": {"name": "mnist1d", "n_samples": N_SAMPLES},
             "mentor": {"arch": {"family": "conv1d", "widths": [8, 8, 8]}, "epochs": 2, "path": str(mentor)},
             "mentee": {"family": "conv1d", "depth": [1, 2], "width": [4, 8], "growth": 1, "kernel": 5},
             "terms": {"hint": {"taps": {"last": ["layer3"]}}},
             "train": {"epochs": 2, "lr": {"low": 0.003, "high": 0.03, "log": True}},
             "budget": {"mentees": 8, "cohort_size": 8, "seeds": SEEDS, "reevaluate_seeds": EXTRA,
                        "early_stopping": {"rungs": [1], "eta": 2}}}  # halving in the search, never in racing
    (tmp / "space.yaml").write_text(yaml.safe_dump(space))
    uri = f"sqlite:///{tmp}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        sp = load_space(tmp / "space.yaml")
        summary = run_sweep(sp, tracking_uri=uri, workdir=tmp / "runs", show_progress=False)
        runs = load_runs(uri, parent_run_id=summary.parent_run_id)
        SweepTracker(uri, "racing").client.set_terminated(summary.parent_run_id, "KILLED")
        resumed = run_sweep(sp, tracking_uri=uri, workdir=tmp / "runs", resume=True, show_progress=False)
    return {"uri": uri, "summary": summary, "runs": runs, "resumed": resumed,
            "after": load_runs(uri, parent_run_id=summary.parent_run_id)}


def _as_searched(runs: pd.DataFrame) -> pd.DataFrame:
    """The frame as it stood before racing: each mentee's first SEEDS seeds only."""
    out = runs.copy()
    out["val_accs"] = out.val_accs.map(lambda v: tuple(v)[:SEEDS])
    out["seeds"] = out.seeds.map(lambda s: tuple(s)[:SEEDS])
    out["n_seeds"] = out.seeds.map(len)
    out["val_acc"] = out.val_accs.map(lambda v: float(np.mean(v)) if v else math.nan)
    out["val_acc_std"] = out.val_accs.map(lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan)
    return out


def test_racing_adds_seeds_to_the_contenders_own_runs(raced):
    runs, s = raced["runs"], raced["summary"]
    # one run a mentee, whatever its seeds: 8 planned mentees (twins included) and no more
    assert len(runs) == s.planned == s.recorded and runs.member_id.is_unique and (runs.work != "reeval").all()
    finished = runs[runs.status == "finished"]
    raced_ids = set(contenders(_as_searched(runs), SEEDS + EXTRA))
    assert raced_ids, "nothing raced: the tiny sweep's noise should leave contenders"
    for r in finished.itertuples():
        if r.run_id in raced_ids:  # the rule on the searched frame picked exactly these
            assert r.seeds == (0, 1, 2, 3) and r.epochs_run == 2  # never halved in racing
        else:
            assert r.seeds == (0, 1)
        assert r.val_acc == pytest.approx(np.mean(r.val_accs)) and r.test_acc == pytest.approx(np.mean(r.test_accs))
    assert s.seeds_trained == SEEDS * len(runs) + EXTRA * len(raced_ids) and "reeval" in s.phases
    # the runs' MLflow history: the mean logged once per round, the latest over every seed
    client = MlflowClient(raced["uri"])
    rid = sorted(raced_ids)[0]
    hist = sorted((m.step, m.value) for m in client.get_metric_history(rid, "val_acc"))
    assert [step for step, _ in hist] == [2, 4]
    assert hist[-1][1] == pytest.approx(runs.set_index("run_id").loc[rid, "val_acc"])
    parent = client.get_run(s.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["finished"] == s.finished


def test_a_resumed_race_trains_nothing_twice(raced):
    assert raced["resumed"].trials == 0
    after, before = raced["after"].set_index("run_id"), raced["runs"].set_index("run_id")
    assert set(after.index) == set(before.index)
    assert (after.seeds == before.seeds).all()
