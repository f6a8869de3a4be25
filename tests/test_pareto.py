"""Fronts, budgets, hypervolume and gains on hand-made and random frames."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.errors import UserError
from search.pareto import hypervolume_2d, mentorship_pairs, pareto_front, parse_budget
from search.results.fronts import arm_balance, mentorship_summary, with_mentorship_gain, with_reevaluation
from search.results.pick import pick
from search.results.table import format_front, print_front


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


def runs() -> pd.DataFrame:
    return frame([
        {"arch_key": "A", "independent": True, "val_acc": 0.6, "test_acc": 0.50, "params": 10},
        {"arch_key": "A", "independent": True, "val_acc": 0.7, "test_acc": 0.60, "params": 10},
        {"arch_key": "A", "independent": True, "val_acc": 0.99, "test_acc": 0.99, "params": 10,
         "status": "pruned"},
        {"arch_key": "A", "independent": False, "val_acc": 0.8, "test_acc": 0.75, "params": 10},
        {"arch_key": "A", "independent": False, "val_acc": 0.75, "test_acc": 0.70, "params": 10},
        {"arch_key": "B", "independent": False, "val_acc": 0.9, "test_acc": 0.85, "params": 100},
        # a store may hand booleans back as strings
        {"arch_key": "C", "independent": "True", "val_acc": 0.5, "test_acc": 0.4, "params": 5},
    ])


def test_gain_columns():
    df = runs()
    g = with_mentorship_gain(pareto_front(df), df).set_index("run_id")
    assert list(g.index) == ["r006", "r003", "r005"]
    assert g.loc["r003", "independent_acc"] == pytest.approx(0.65)
    assert g.loc["r003", "gain"] == pytest.approx(0.15)
    assert g.loc["r003", "independent_test_acc"] == pytest.approx(0.55)
    assert g.loc["r003", "test_gain"] == pytest.approx(0.20)
    assert g.loc["r006", "gain"] == 0.0  # an independent row against its own arch
    assert math.isnan(g.loc["r005", "independent_acc"]) and math.isnan(g.loc["r005", "gain"])


def test_mentorship_summary():
    s = mentorship_summary(runs())
    assert list(s.arch_key) == ["A"]  # B has no twin, C no mentored run
    r = s.iloc[0]
    assert (r.params, r.mentored_acc, r.n_mentored, r.n_independent) == (10, 0.75, 2, 2)
    assert r.independent_acc == pytest.approx(0.55) and r.gain == pytest.approx(0.20)


def test_formats(capsys):
    df = with_mentorship_gain(pareto_front(runs()), runs())
    df["widths"] = [[8], [8, 16], (4,)]
    cols = ["run_id", "widths", "params", "val_acc", "gain", "missing"]
    md = format_front(df, "markdown", cols).splitlines()
    assert md[0] == "| run_id | widths | params | val_acc | gain |" and md[1] == "|---|---|---|---|---|"
    assert md[2] == "| r006 | [8] | 5 | 0.5000 | +0.0000 |" and len(md) == 5
    assert md[4].endswith("| 0.9000 | – |")
    recs = json.loads(format_front(df, "json", cols))
    assert recs[2]["gain"] is None and recs[1]["params"] == 10
    csv = format_front(df, "csv", cols).splitlines()
    assert csv[0] == "run_id,widths,params,val_acc,gain" and len(csv) == 4
    table = format_front(df, "table", cols).splitlines()
    assert len(table) == 4 and "r003" in table[2]
    with pytest.raises(UserError):
        format_front(df, "yaml", cols)
    print_front(df, "front", cols)
    out = capsys.readouterr().out
    assert "front" in out and "r005" in out and "+0.1500" in out


# ------------------------------------------------------- the two arms and re-evaluation rows

def arms_frame() -> pd.DataFrame:
    """Mentored and independent rows, plus re-evaluation rows of r001 that must never stand on a front."""
    rows = [
        {"arm": "independent", "independent": True, "val_acc": 0.60, "params": 10},
        {"arm": "mentored", "independent": False, "val_acc": 0.70, "params": 20},
        {"arm": "independent", "independent": True, "val_acc": 0.75, "params": 30},
        {"arm": "mentored", "independent": True, "val_acc": 0.80, "params": 40},  # mentored arm, no mentor term
        {"arm": "mentored", "independent": False, "val_acc": 0.65, "params": 50},
        {"arm": "independent", "independent": True, "val_acc": 0.99, "params": 60, "status": "pruned"},
    ]
    df = frame(rows)
    df["arm"], df["work"], df["reeval_of"] = [r["arm"] for r in rows], "searched", None
    again = frame([{"val_acc": 0.99, "params": 20}, {"val_acc": 0.98, "params": 20}])
    again["arm"], again["work"], again["reeval_of"], again["run_id"] = "mentored", "reeval", "r001", ["x1", "x2"]
    return pd.concat([df, again], ignore_index=True)


def test_mentorship_pairs_compare_the_fronts_at_every_size():
    df = arms_frame()
    p = mentorship_pairs(df).set_index("params")
    assert list(p.index) == [10, 20, 30, 40]  # both arms' front points; r004 (dominated) and pruned r005 not
    assert list(p.front) == ["independent", "mentored", "independent", "mentored"]
    assert pd.isna(p.loc[10, "mentored_run_id"]) and p.loc[10, "independent_run_id"] == "r000"
    assert list(p.mentored_run_id[1:]) == ["r001", "r001", "r003"]  # the best of the arm at ≤ that size
    assert list(p.independent_run_id) == ["r000", "r000", "r002", "r002"]
    # the arm, not the config, decides: r003 is mentored-arm though it drew no mentor term
    derived = df.drop(columns=["arm"])
    assert mentorship_pairs(derived).set_index("params").loc[40, "independent_run_id"] == "r003"


def test_re_evaluation_rows_stand_on_no_front_and_old_functions_ignore_them():
    df = arms_frame()
    assert set(pareto_front(df).run_id) == {"r000", "r001", "r002", "r003"}
    assert not {"x1", "x2"} & set(with_mentorship_gain(pareto_front(df), df).run_id)
    assert hypervolume_2d(df, ref_cost=100) == hypervolume_2d(df[df.reeval_of.isna()], ref_cost=100)
    r = with_reevaluation(df).set_index("run_id")
    assert "x1" not in r.index and r.loc["r001", "n_seeds"] == 2 and r.loc["r000", "n_seeds"] == 0
    assert r.loc["r001", "val_acc"] == pytest.approx(0.985) and r.loc["r001", "val_acc_search"] == 0.70
    assert r.loc["r001", "val_acc_std"] == pytest.approx(pd.Series([0.99, 0.98]).std())
    assert r.loc["r002", "val_acc"] == 0.75  # not re-evaluated: the search's number stays
    assert with_reevaluation(frame([{"val_acc": 0.5, "params": 1}])).equals(frame([{"val_acc": 0.5, "params": 1}]))


def test_arm_balance_counts_searched_members_per_size_band():
    b = arm_balance(arms_frame()).set_index("band")
    # bands of log2(params): 10 → 3, 20 and 30 → 4, 40, 50 and 60 → 5; pruned counts, re-evaluations don't
    assert b.to_dict("index") == {3: {"mentored": 0, "independent": 1}, 4: {"mentored": 1, "independent": 1},
                                  5: {"mentored": 2, "independent": 1}}
