"""Fronts, budgets, hypervolume and gains on hand-made and random frames."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from search.errors import UserError
from search.pareto import hypervolume_2d, mentorship_pairs, paired_gain, pareto_front, parse_budget
from search.results.fronts import arm_balance, as_mentees, front_view, mentee_view, mentorship_front
from search.results.pick import pick
from search.results.table import cell, format_front


def frame(rows: list[dict]) -> pd.DataFrame:
    base = {"status": "finished", "arch_key": "a", "independent": False, "test_acc": 0.5,
            "bytes_fp32": 0, "bytes_int8": 0, "macs": 0}
    cols = ["run_id", *base, "val_acc", "params"]
    return pd.DataFrame([{**base, "run_id": f"r{i:03d}", **r} for i, r in enumerate(rows)], columns=cols)


# Small integer ranges so ties in acc and cost happen often.
row_st = st.fixed_dictionaries({
    "val_acc": st.integers(0, 10).map(lambda a: a / 10),
    "params": st.integers(1, 12),
    "status": st.sampled_from(["finished", "finished", "pruned", "failed"]),
})


def dominates(p, q) -> bool:
    no_worse = p.val_acc >= q.val_acc and p.params <= q.params
    return no_worse and (p.val_acc > q.val_acc or p.params < q.params)


@settings(max_examples=200, deadline=None)
@given(st.lists(row_st, max_size=30))
def test_front_properties(rows):
    df = frame(rows)
    front = pareto_front(df, acc="val_acc", cost="params")
    fin = df[df.status == "finished"]
    assert set(front.status) <= {"finished"}
    on = set(front.run_id)
    assert front.params.is_monotonic_increasing
    fr = list(front.itertuples())
    for p in fr:  # non-dominated, and no exact duplicates
        assert not any(dominates(q, p) for q in fin.itertuples())
        assert sum((q.val_acc, q.params) == (p.val_acc, p.params) for q in fr) == 1
    for q in fin.itertuples():
        if q.run_id not in on:  # left out → dominated by, or a later duplicate of, a front row
            same = [(p.val_acc, p.params) == (q.val_acc, q.params) and p.run_id < q.run_id for p in fr]
            assert any(dominates(p, q) or s for p, s in zip(fr, same, strict=True))


def test_front_small():
    df = frame([
        {"val_acc": 0.9, "params": 100}, {"val_acc": 0.8, "params": 50}, {"val_acc": 0.85, "params": 100},
        {"val_acc": 0.99, "params": 10, "status": "pruned"}, {"val_acc": 0.8, "params": 50},
        {"val_acc": 0.95, "params": 200, "status": "failed"}, {"val_acc": 0.7, "params": 60},
    ])
    front = pareto_front(df)
    assert list(front.run_id) == ["r001", "r000"]  # the tie r004 loses to r001 by run_id


@settings(max_examples=100, deadline=None)
@given(st.lists(row_st, min_size=1, max_size=30), st.integers(0, 13), st.integers(0, 13))
def test_pick_respects_budgets(rows, max_params, max_macs):
    df = frame(rows)
    df["macs"] = [r["params"] * 3 % 13 for r in rows]
    row = pick(df, max_params=max_params, max_macs=max_macs)
    fits = df[(df.status == "finished") & (df.params <= max_params) & (df.macs <= max_macs)]
    if fits.empty:
        assert row is None
        return
    assert row.status == "finished" and row.params <= max_params and row.macs <= max_macs
    assert row.val_acc == fits.val_acc.max()
    assert row.params == fits[fits.val_acc == row.val_acc].params.min()


def test_pick_bytes_and_nothing():
    df = frame([{"val_acc": 0.9, "params": 100, "bytes_int8": 500},
                {"val_acc": 0.8, "params": 100, "bytes_int8": 90},
                {"val_acc": 0.99, "params": 1, "bytes_int8": 1, "status": "pruned"}])
    assert pick(df, max_bytes=100).run_id == "r001"
    assert pick(df, max_bytes=1000).run_id == "r000"
    assert pick(df, max_bytes=1000, bytes_col="bytes_fp32").run_id == "r000"
    assert pick(df, max_params=10) is None


@pytest.mark.parametrize("flag,text,n", [
    ("--max-params", "5000", 5000), ("--max-params", "5k", 5000), ("--max-params", "5K", 5000),
    ("--max-params", "1.5M", 1_500_000), ("--max-macs", "2G", 2_000_000_000),
    ("--max-macs", " 200k ", 200_000),
    ("--max-bytes", "64KB", 64_000), ("--max-bytes", "64KiB", 65_536), ("--max-bytes", "64kib", 65_536),
    ("--max-bytes", "1MB", 10**6), ("--max-bytes", "1MiB", 2**20), ("--max-bytes", "512B", 512),
    ("--max-bytes", "512", 512), ("--max-bytes", "1.5 GiB", 3 * 2**29), ("--max-bytes", "2k", 2000),
    ("--max-params", "0", 0),
])
def test_parse_budget(flag, text, n):
    assert parse_budget(flag, text) == n


@pytest.mark.parametrize("flag,text,msg", [
    ("--max-bytes", "12parsecs",
     "--max-bytes: '12parsecs' is not a size; expected a number with an optional unit "
     "B, KB, KiB, MB, MiB, GB, GiB"),
    ("--max-params", "5KB", "--max-params: '5KB' is not a count"),  # bytes units only for bytes
    ("--max-params", "", "--max-params: empty"),
    ("--max-macs", "-5k", "--max-macs: '-5k' is negative"),
    ("--max-params", "k", "--max-params: 'k' is not a count"),
    ("--max-params", "1e999", "--max-params: '1e999' is too large"),
])
def test_parse_budget_errors(flag, text, msg):
    with pytest.raises(UserError) as e:
        parse_budget(flag, text)
    assert str(e.value).startswith(msg)


def test_hypervolume_by_hand():
    one = frame([{"val_acc": 0.8, "params": 100}])
    assert hypervolume_2d(one, ref_cost=1000) == pytest.approx((3 - 2) * 0.8)
    assert hypervolume_2d(one, ref_cost=1000, log_cost=False) == pytest.approx(900 * 0.8)
    assert hypervolume_2d(one, ref_cost=1000, ref_acc=0.5) == pytest.approx(0.3)
    two = frame([{"val_acc": 0.5, "params": 10}, {"val_acc": 0.9, "params": 100}])
    assert hypervolume_2d(two, ref_cost=1000) == pytest.approx(1 * 0.5 + 1 * 0.9)
    assert hypervolume_2d(two, ref_cost=1000, log_cost=False) == pytest.approx(90 * 0.5 + 900 * 0.9)
    # worse than the reference on either axis, or not finished: nothing
    worse = frame([{"val_acc": 0.9, "params": 2000}, {"val_acc": 0.0, "params": 1},
                   {"val_acc": 1.0, "params": 1, "status": "pruned"}])
    assert hypervolume_2d(worse, ref_cost=1000) == 0.0
    # a dominated point adds nothing
    assert hypervolume_2d(pd.concat([two, frame([{"val_acc": 0.4, "params": 50}])]), ref_cost=1000) \
        == pytest.approx(1.4)


def mentees(rows: list[dict]) -> pd.DataFrame:
    """Mentee rows as search.tracking.load_runs returns them: seeds fused, val_acc/test_acc their means."""
    out = []
    for k, r in enumerate(rows):
        seeds = tuple(r.pop("seeds", (0, 1, 2)))
        tests = tuple(r.pop("tests"))
        vals = tuple(r.pop("vals", tests))
        out.append({"run_id": f"m{k:02d}", "status": "finished", "arch_key": f"a{k}", "work": "searched",
                    "widths": "8", "bytes_int8": 1000 * (k + 1), "macs": 10, "seeds": seeds, "n_seeds": len(seeds),
                    "val_accs": vals, "test_accs": tests, "val_acc": float(pd.Series(vals).mean()),
                    "test_acc": float(pd.Series(tests).mean()),
                    "val_acc_std": float(pd.Series(vals).std()) if len(vals) > 1 else math.nan,
                    "test_acc_std": float(pd.Series(tests).std()) if len(tests) > 1 else math.nan, **r})
    return pd.DataFrame(out)


def two_arms() -> pd.DataFrame:
    return mentees([
        {"arm": "independent", "params": 10, "tests": (0.50, 0.60, 0.55)},
        {"arm": "mentored", "params": 20, "tests": (0.60, 0.64, 0.62)},
        {"arm": "independent", "params": 30, "tests": (0.70, 0.72, 0.74)},
        {"arm": "mentored", "params": 40, "tests": (0.80, 0.78, 0.79), "seeds": (0, 1, 2)},
        {"arm": "mentored", "params": 50, "tests": (0.40, 0.41, 0.42)},  # dominated
        {"arm": "independent", "params": 5, "tests": (0.99, 0.99, 0.99), "status": "pruned"},
    ])


def test_the_front_view_shows_seed_means_intervals_and_the_paired_gain_only():
    df = two_arms()
    v = front_view(df).set_index("run_id")
    assert list(v.index) == ["m00", "m01", "m02", "m03"] and "arm" in v.columns
    assert list(v.arm) == ["independent", "mentored", "independent", "mentored"]
    assert not {"test_gain", "independent_test_acc", "n_seeds"} & set(v.columns)  # 3 seeds each: the title says so
    assert v.loc["m01", "test_acc"] == pytest.approx(0.62)
    half = stats.t.ppf(0.975, 2) * pd.Series([0.60, 0.64, 0.62]).std() / math.sqrt(3)
    assert v.loc["m01", "test_ci"] == pytest.approx(half)
    # m01 against the best independent at ≤ 20 params (m00), paired by seed: 0.10, 0.04, 0.07
    g = paired_gain([0.60, 0.64, 0.62], [0.50, 0.60, 0.55])
    assert v.loc["m01", "gain"] == pytest.approx(0.07) and v.loc["m01", "gain_ci"] == pytest.approx(
        (g["gain_ci_high"] - g["gain_ci_low"]) / 2)
    assert v.loc["m03", "gain"] == pytest.approx(0.79 - 0.72)  # against m02
    assert math.isnan(v.loc["m00", "gain"]) and math.isnan(v.loc["m02", "gain"])  # independents have none
    assert list(front_view(df, wide=True).columns)[:3] == ["run_id", "arm", "widths"]


def test_gains_pair_only_the_seeds_both_mentees_have():
    df = mentees([{"arm": "independent", "params": 10, "tests": (0.5, 0.6), "seeds": (0, 1)},
                  {"arm": "mentored", "params": 20, "tests": (0.7, 0.9, 0.8), "seeds": (1, 2, 3)}])
    v = front_view(df, wide=True).set_index("run_id")
    assert v.loc["m01", "gain"] == pytest.approx(0.7 - 0.6) and v.loc["m01", "n_pairs"] == 1  # seed 1 alone
    assert "n_seeds" in front_view(df).columns  # 2 and 3 seeds: the count goes in a column


def test_old_single_seed_rows_read_as_one_seed_mentees():
    old = frame([{"val_acc": 0.8, "params": 10}])
    m = as_mentees(old)
    assert m.loc[0, "n_seeds"] == 1 and m.loc[0, "test_accs"] == (0.5,) and m.loc[0, "seeds"] == (0,)
    assert math.isnan(front_view(old).loc[0, "test_ci"])


def test_mentorship_front_pairs_the_arms_by_seed():
    t = mentorship_front(two_arms()).set_index("params")
    assert list(t.index) == [10, 20, 30, 40]
    r = t.loc[40]
    assert r.mentored_run_id == "m03" and r.independent_run_id == "m02" and r.n_pairs == 3
    assert r.gain == pytest.approx(0.07) and r.mentored_n == 3
    assert r.mentored_ci == pytest.approx(stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3))
    assert math.isnan(t.loc[10, "gain"]) and t.loc[10, "n_pairs"] == 0  # no mentored mentee that small


def test_pick_chooses_by_the_seed_mean_and_its_view_is_the_fronts_row():
    df = two_arms()
    row = pick(df, max_params=40)
    assert row["run_id"] == "m03"
    view = mentee_view(row)
    front = front_view(df).set_index("run_id")
    for col in ("val_acc", "test_acc", "test_ci", "params", "arm"):
        assert view.loc[0, col] == front.loc["m03", col]
    assert pick(df, max_params=4) is None


def test_formats_carry_the_same_columns_and_raw_numbers():
    v = front_view(two_arms())
    table = format_front(v, "table").splitlines()
    assert table[0].split() == list(v.columns)
    assert all(len(line) <= 100 for line in table)
    assert "m01" in table[2] and "±" in table[2] and "+0.0700" in table[2]
    recs = json.loads(format_front(v, "json"))
    assert list(recs[0]) == list(v.columns) and recs[1]["test_acc"] == v.loc[1, "test_acc"]
    assert recs[0]["gain"] is None and recs[0]["params"] == 10
    csv = format_front(v, "csv").splitlines()
    assert csv[0].split(",") == list(v.columns) and len(csv) == len(v) + 1
    md = format_front(v, "markdown").splitlines()
    assert md[0].startswith("| run_id | arm |") and len(md) == len(v) + 2
    with pytest.raises(UserError, match="--format: 'yaml' is not one of table, csv, json, markdown"):
        format_front(v, "yaml")


def test_cells_integers_sizes_in_kib_and_yes_no():
    assert cell("params", 9504.0) == "9,504" and cell("sram_int8", 240.0) == "240 B"
    assert cell("bytes_int8", 9504.0) == "9.281 KiB" and cell("fits", True) == "yes"
    assert cell("test_ci", 0.0123) == "±0.0123" and cell("gain", 0.05) == "+0.0500"
    assert cell("run_id", "0123456789abcdef", short_ids=True) == "01234567"


def test_mentorship_pairs_compare_the_fronts_at_every_size():
    df = two_arms()
    p = mentorship_pairs(df).set_index("params")
    assert list(p.front) == ["independent", "mentored", "independent", "mentored"]
    assert pd.isna(p.loc[10, "mentored_run_id"]) and p.loc[10, "independent_run_id"] == "m00"
    assert list(p.mentored_run_id[1:]) == ["m01", "m01", "m03"]  # the best of the arm at ≤ that size
    assert list(p.independent_run_id) == ["m00", "m00", "m02", "m02"]


def test_arm_balance_counts_searched_members_per_size_band():
    df = two_arms()
    df.loc[0, "work"] = "twin"  # twins don't count
    b = arm_balance(df).set_index("band")
    # bands of log2(params): 5 → 2, 10 → 3, 20 and 30 → 4, 40 and 50 → 5; pruned counts
    assert b.to_dict("index") == {2: {"mentored": 0, "independent": 1}, 4: {"mentored": 1, "independent": 1},
                                  5: {"mentored": 2, "independent": 0}}


def test_the_table_keeps_to_100_columns_with_a_device_and_deep_widths():
    df = two_arms()
    df["widths"] = "16x32x64x64"
    df["fits"] = True
    v = front_view(df, extra=["fits"])
    v["run_id"] = "f" * 32
    lines = format_front(v, "table").splitlines()
    assert lines[0].split() == list(v.columns) and max(map(len, lines)) <= 100, lines
