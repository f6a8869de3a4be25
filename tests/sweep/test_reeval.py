"""Re-evaluation and the fair mentorship table: paired gains and their intervals on frames built by hand,
`pick` on re-evaluated numbers, and a tiny real sweep (local Ray, sqlite MLflow) that re-evaluates its fronts."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from search.pareto import paired_gain
from search.results.fronts import arm_balance, mentorship_front
from search.results.pick import pick
from search.spaces import load_space
from search.sweep.reeval import reeval_targets
from search.sweep.run import run_sweep
from search.tracking import SweepTracker, load_member, load_runs

T_975_2 = 4.302652729911275  # Student's t, 97.5th percentile, 2 degrees of freedom (tables)
N_SEEDS = 3


def row(run_id, arm, params, val, test, *, reeval_of=None, seed=0, widths="4"):
    return {"run_id": run_id, "status": "finished", "arm": arm, "independent": arm == "independent",
            "work": "reeval" if reeval_of else "searched", "reeval_of": reeval_of, "seed": seed, "params": params,
            "val_acc": val, "test_acc": test, "widths": widths, "mapping": "none", "arch_key": widths,
            "bytes_int8": params, "macs": params}


def hand_frame() -> pd.DataFrame:
    """Two arms; m2 (200 params) and i2 (150) on their fronts, re-evaluated with seeds 1-3."""
    rows = [row("m1", "mentored", 100, 0.80, 0.78), row("i1", "independent", 100, 0.79, 0.75),
            row("m2", "mentored", 200, 0.95, 0.93), row("i2", "independent", 150, 0.90, 0.88),
            row("m3", "mentored", 300, 0.70, 0.70)]  # dominated: on no front
    for s, (m, i) in enumerate([(0.90, 0.86), (0.92, 0.87), (0.88, 0.89)], start=1):
        rows.append(row(f"m2-s{s}", "mentored", 200, m - 0.01, m, reeval_of="m2", seed=s))
        rows.append(row(f"i2-s{s}", "independent", 150, i + 0.01, i, reeval_of="i2", seed=s))
    return pd.DataFrame(rows)


def test_paired_gain_and_interval_by_hand():
    g = paired_gain([0.90, 0.92, 0.88], [0.86, 0.87, 0.89])
    d = [0.04, 0.05, -0.01]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    half = T_975_2 * sd / math.sqrt(3)
    assert g["n_pairs"] == 3
    assert g["gain"] == pytest.approx(mean) and g["gain_std"] == pytest.approx(sd)
    assert g["gain_ci_low"] == pytest.approx(mean - half) and g["gain_ci_high"] == pytest.approx(mean + half)
    one = paired_gain([0.9], [0.8])
    assert one["gain"] == pytest.approx(0.1) and math.isnan(one["gain_ci_low"]) and math.isnan(one["gain_std"])


def test_mentorship_front_on_a_hand_built_frame():
    t = mentorship_front(hand_frame()).set_index("params")
    assert list(t.index) == [100, 150, 200]  # every size on either arm's front
    assert list(t.front) == ["both", "independent", "mentored"]
    # at 150 only independent i2 is new; the best mentored at ≤ 150 is still m1
    assert (t.loc[150, "mentored_run_id"], t.loc[150, "independent_run_id"]) == ("m1", "i2")
    r = t.loc[200]
    assert (r.mentored_run_id, r.independent_run_id, r.independent_params) == ("m2", "i2", 150)
    # test accuracy over the re-evaluation seeds, not the search's own run (0.93 / 0.88)
    assert r.mentored_acc == pytest.approx(0.90) and r.mentored_std == pytest.approx(0.02)
    assert r.independent_acc == pytest.approx((0.86 + 0.87 + 0.89) / 3) and r.mentored_n == r.independent_n == 3
    want = paired_gain([0.90, 0.92, 0.88], [0.86, 0.87, 0.89])
    assert r.n_pairs == 3 and r.gain == pytest.approx(want["gain"])
    assert (r.gain_ci_low, r.gain_ci_high) == pytest.approx((want["gain_ci_low"], want["gain_ci_high"]))
    # sizes nobody re-evaluated: one run a side, the plain difference, no interval
    r = t.loc[100]
    assert r.n_pairs == 0 and r.gain == pytest.approx(0.03) and math.isnan(r.gain_ci_low)
    assert r.mentored_n == 1 and math.isnan(r.mentored_std)


def test_gains_pair_only_common_seeds():
    df = hand_frame()
    df = df[df.run_id != "i2-s3"]  # one independent seed lost
    r = mentorship_front(df).set_index("params").loc[200]
    assert r.n_pairs == 2 and r.independent_n == 2 and r.mentored_n == 3
    assert r.gain == pytest.approx(paired_gain([0.90, 0.92], [0.86, 0.87])["gain"])


def test_pick_uses_re_evaluated_numbers():
    df = hand_frame()
    # m2's search run (val 0.95) is the best one seed saw; its seeds average 0.90 - 0.01 = 0.89, i2's 0.8833 + 0.01
    best = pick(df, max_params=250)
    assert best.run_id == "m2" and best.n_seeds == 3
    assert best.val_acc == pytest.approx(0.89) and best.val_acc_search == pytest.approx(0.95)
    assert best.test_acc == pytest.approx(0.90)
    # where a re-evaluated row fits, rows measured once don't compete with it: i1 (0.79 once) vs i2's mean
    df.loc[df.run_id == "i1", "val_acc"] = 0.99
    assert pick(df, max_params=160).run_id == "i2"
    assert pick(df, max_params=120).run_id == "i1"  # nothing re-evaluated fits: the search's numbers
    # a frame without re-evaluations picks as before
    plain = df[df.reeval_of.isna()]
    assert pick(plain, max_params=250).run_id == "i1" and "n_seeds" not in pick(plain, max_params=250)


# ------------------------------------------------------------------- a real sweep

N_SAMPLES = 300


@pytest.fixture(scope="module")
def swept(ray_local, tmp_path_factory):
    """A tiny sweep with both arms and 3 re-evaluation seeds, then the same sweep resumed after it was
    marked killed (as if the driver died once everything was recorded)."""
    from search.config import ArchConfig
    from search.data import load_dataset
    from search.train.mentor import train_mentor

    tmp = tmp_path_factory.mktemp("reeval")
    mentor = tmp / "m.pt"
    train_mentor(ArchConfig("conv1d", (8, 8, 8), 5, True), load_dataset("mnist1d", n_samples=N_SAMPLES, seed=0),
                 epochs=2, out=mentor)
    space = {"name": "reeval", "dataset": {"name": "mnist1d", "n_samples": N_SAMPLES},
             "mentor": {"arch": {"family": "conv1d", "widths": [8, 8, 8]}, "epochs": 2, "path": str(mentor)},
             "mentee": {"family": "conv1d", "depth": [1, 2], "width": [4, 8], "growth": 1, "kernel": 5},
             "terms": {"hint": {"taps": {"last": ["layer3"]}}},
             "train": {"epochs": 2, "lr": {"low": 0.003, "high": 0.03, "log": True}},
             "budget": {"mentees": 8, "cohort_size": 8, "reevaluate_seeds": N_SEEDS,
                        "early_stopping": {"rungs": [1], "eta": 2}}}  # halving in the search, never in re-evaluation
    (tmp / "space.yaml").write_text(yaml.safe_dump(space))
    uri = f"sqlite:///{tmp}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        sp = load_space(tmp / "space.yaml")
        summary = run_sweep(sp, tracking_uri=uri, workdir=tmp / "runs", show_progress=False)
        runs = load_runs(uri, parent_run_id=summary.parent_run_id)
        SweepTracker(uri, "reeval").client.set_terminated(summary.parent_run_id, "KILLED")
        resumed = run_sweep(sp, tracking_uri=uri, workdir=tmp / "runs", resume=True, show_progress=False)
    return {"tmp": tmp, "uri": uri, "summary": summary, "runs": runs, "resumed": resumed,
            "after": load_runs(uri, parent_run_id=summary.parent_run_id)}


def test_every_compared_run_is_retrained_with_n_new_seeds(swept):
    runs, s = swept["runs"], swept["summary"]
    searched, again = runs[runs.reeval_of.isna()], runs[runs.reeval_of.notna()]
    assert len(searched) == 8 and (searched.work == "searched").all()
    targets = reeval_targets(searched)
    assert targets and set(again.reeval_of) == set(targets)
    assert len(again) == N_SEEDS * len(targets) and again.member_id.is_unique
    assert (again.work == "reeval").all() and (again.status == "finished").all()
    assert (again.epochs_run == 2).all()  # never halved, though the search was
    by_id = searched.set_index("run_id")
    for rid, g in again.groupby("reeval_of"):
        orig = by_id.loc[rid]
        assert sorted(g.seed) == [orig.seed + k for k in range(1, N_SEEDS + 1)]  # fresh seeds, the same everywhere
        assert (g.arm == orig.arm).all() and (g.arch_key == orig.arch_key).all() and (g.params == orig.params).all()
        assert (g.mapping == orig.mapping).all()
    cfg, _, _ = load_member(swept["uri"], again.run_id.iloc[0])
    orig_cfg, _, _ = load_member(swept["uri"], again.reeval_of.iloc[0])
    assert cfg.terms == orig_cfg.terms and cfg.train.lr == orig_cfg.train.lr and cfg.train.seed != orig_cfg.train.seed
    assert s.recorded == len(runs) and s.finished + s.pruned == len(runs) and "reeval" in s.phases
    parent = MlflowClient(swept["uri"]).get_run(s.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["finished"] == s.finished


def test_the_sweep_is_budget_matched_and_its_table_is_paired(swept):
    runs = swept["runs"]
    bal = arm_balance(runs)
    assert bal.mentored.sum() == bal.independent.sum() == 4
    assert ((bal.mentored - bal.independent).abs() <= 1).all()
    t = mentorship_front(runs)
    assert len(t) and t.front.isin(["mentored", "independent", "both"]).all()
    both = t.dropna(subset=["mentored_run_id", "independent_run_id"])
    assert len(both) and (both.n_pairs == N_SEEDS).all()
    assert (both.mentored_n == N_SEEDS).all() and (both.independent_n == N_SEEDS).all()
    assert (both.gain_ci_low <= both.gain).all() and (both.gain <= both.gain_ci_high).all()
    best = pick(runs)
    assert best.n_seeds == N_SEEDS and best.run_id in set(reeval_targets(runs[runs.reeval_of.isna()]))


def test_the_cli_reports_re_evaluated_numbers(swept):
    from search.cli import app

    res = CliRunner().invoke(app, ["pick", "--max-params", "100k", "--experiment", "reeval",
                                   "--tracking-uri", swept["uri"]])
    assert res.exit_code == 0, res.output
    assert f"mean of {N_SEEDS} re-evaluation seeds" in res.output
    res = CliRunner().invoke(app, ["pareto", "--experiment", "reeval", "--tracking-uri", swept["uri"],
                                   "--format", "markdown"])
    assert res.exit_code == 0, res.output
    front, table = res.output.strip().split("\n\n")
    assert table.splitlines()[0].startswith("| params | front | mentored_widths |") and "gain_ci_low" in table


def test_a_resumed_sweep_re_evaluates_nothing_twice(swept):
    assert swept["resumed"].trials == 0
    assert set(swept["after"].run_id) == set(swept["runs"].run_id)


def test_a_re_evaluation_run_without_its_tag_is_still_linked(swept):
    """A result replayed from the driver's journal is written without extra tags: its member id links it."""
    runs = swept["runs"]
    one = runs[runs.reeval_of.notna()].iloc[0]
    client = MlflowClient(swept["uri"])
    client.delete_tag(one.run_id, "mentee.reeval_of")
    try:
        again = load_runs(swept["uri"], parent_run_id=swept["summary"].parent_run_id).set_index("run_id")
        assert again.loc[one.run_id, "reeval_of"] == one.reeval_of
    finally:
        client.set_tag(one.run_id, "mentee.reeval_of", one.reeval_of)
