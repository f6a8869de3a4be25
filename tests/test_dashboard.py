"""The dashboard's content: what the page carries, read back from its embedded data (the browser test
draws it for real in tests/test_browser.py)."""

from __future__ import annotations

import json
import math
import os
import re
import stat

import pandas as pd
import pytest

from search.devices import AXES, Budget, DeviceProfile, load_devices
from search.pareto import pareto_front
from search.results.dashboard import build_dashboard, write_dashboard


def runs_frame() -> pd.DataFrame:
    """Three widths × mentored/independent, one pruned and one failed run that must not show."""
    rows = []
    for w, acc in ((4, 0.60), (8, 0.75), (16, 0.85)):
        p = 400 * w
        for ind, bonus in ((True, 0.0), (False, 0.02)):
            rows.append(dict(run_id=f"w{w}{'i' if ind else 'm'}", status="finished", independent=ind,
                             family="conv1d", widths=[w, 2 * w], kernel=5, mapping="" if ind else "layer2→layer3",
                             seed=0, val_acc=acc + bonus, test_acc=acc + bonus - 0.01, params=p, bytes_fp32=4 * p,
                             bytes_int8=p + 100, macs=30 * p, sram_int8=160 * w, sram_fp32=640 * w))
    rows.append(dict(run_id="pruned-run", status="pruned", independent=False, val_acc=0.99, params=10,
                     bytes_fp32=40, bytes_int8=10, macs=300))
    rows.append(dict(run_id="failed-run", status="failed", independent=True, params=20))
    return pd.DataFrame(rows)


def page_data(html: str) -> dict:
    m = re.search(r'<script id="dashboard-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


BOARD = DeviceProfile("board", "a test board", "made up", (Budget("sram_int8", 2048, overhead=512),
                                                           Budget("params", 5000)))


def test_series_hover_and_finished_only():
    html = build_dashboard(runs_frame(), title="sweep A")
    d = page_data(html)
    assert [s["name"] for s in d["series"]] == ["mentored", "independent"]
    assert sorted(d["series"][0]["ids"]) == ["w16m", "w4m", "w8m"]
    assert sorted(d["series"][1]["ids"]) == ["w16i", "w4i", "w8i"]
    texts = [t for s in d["series"] for t in s["text"]]
    for rid in ("w4m", "w8i", "w16m"):
        (hover,) = [t for t in texts if f"<b>{rid}</b>" in t]
        assert "family conv1d" in hover and re.search(r"widths \d+,\d+ ", hover) and "kernel 5 " in hover
        assert "val 0." in hover and "(mean of 1 seed)" in hover and "test 0." in hover
    assert "pruned-run" not in html and "failed-run" not in html  # only finished rows are drawn
    assert "2 runs not finished" in html


def test_axes_present_absent_and_all_nan():
    df = runs_frame()
    d = page_data(build_dashboard(df, title="t"))
    assert [a["key"] for a in d["axes"]] == ["params", "bytes_int8", "bytes_fp32", "sram_int8", "sram_fp32", "macs"]
    df["latency_ms"] = math.nan  # a column with no value is no axis
    df = df.drop(columns=["sram_fp32"])
    keys = [a["key"] for a in page_data(build_dashboard(df, title="t"))["axes"]]
    assert "latency_ms" not in keys and "sram_fp32" not in keys and "sram_int8" in keys
    df.loc[df["run_id"] == "w4m", "latency_ms"] = 0.02  # one measured value is enough
    ax = {a["key"]: a for a in page_data(build_dashboard(df, title="t"))["axes"]}["latency_ms"]
    assert ax["x"]["mentored"].count(None) == 2 and 0.02 in ax["x"]["mentored"]  # unmeasured points: null
    assert {a: AXES[a][0] for a in keys}["params"] == "parameters"


def test_front_is_the_pareto_staircase():
    df = runs_frame()
    d = page_data(build_dashboard(df, title="t"))
    for ax in d["axes"]:
        front = pareto_front(df, acc="val_acc", cost=ax["key"])
        assert ax["front"]["ids"] == list(front["run_id"]) and ax["front"]["x"] == [float(v) for v in front[ax["key"]]]
    # The mentored runs beat their independent twins here: they alone make the front.
    assert d["axes"][0]["front"]["ids"] == ["w4m", "w8m", "w16m"]
    assert d["axes"][0]["independent_front"]["y"] == [0.60, 0.75, 0.85]


def test_budget_lines_per_axis():
    stm = load_devices()["stm32f746"]
    d = page_data(build_dashboard(runs_frame(), title="t", devices=[BOARD, stm]))
    by_axis = {a["key"]: a["budgets"] for a in d["axes"]}
    assert [(b["device"], b["value"]) for b in by_axis["sram_int8"]] == [("board", 1536), ("stm32f746", 288 * 1024)]
    assert [(b["device"], b["value"]) for b in by_axis["params"]] == [("board", 5000)]
    assert [b["device"] for b in by_axis["bytes_int8"]] == ["stm32f746"]
    assert by_axis["macs"] == [] and by_axis["sram_fp32"] == []
    assert "512 B runtime" in by_axis["sram_int8"][0]["note"]


def test_device_table_counts_what_fits():
    html = build_dashboard(runs_frame(), title="t", devices=[BOARD])
    (row,) = re.findall(r'<tr data-device="board">.*?</tr>', html, re.S)
    # board: params ≤ 5000 (w4: 1600, w8: 3200; w16: 6400 no) and SRAM 160·w + 512 ≤ 2048 (w4: 640, w8: 1280): 4 fit
    assert "<td class=num>4</td>" in row and "w8m (val 0.7700 (mean of 1 seed) · test 0.7600)" in row
    assert 'id="devices-section" hidden' in build_dashboard(runs_frame(), title="t")  # no devices, no table


def test_picked_curves_and_marker():
    picked = {"run_id": "w8m", "curves": {"val_acc": [0.5, 0.7, math.nan], "train_loss": [1.0, 0.6, 0.4]}}
    d = page_data(build_dashboard(runs_frame(), title="t", picked=picked))
    assert d["picked"] == {"run_id": "w8m", "y": 0.77, "curves": {"val_acc": [0.5, 0.7, None],
                                                                   "train_loss": [1.0, 0.6, 0.4]}}
    assert {a["key"]: a["picked"] for a in d["axes"]}["params"] == 3200
    assert page_data(build_dashboard(runs_frame(), title="t"))["picked"] is None


def test_self_contained_and_escaped():
    df = runs_frame()
    df.loc[0, "run_id"] = "</script><script>alert(1)</script>"
    html = build_dashboard(df, title="<b>my</b> sweep", picked={"run_id": "x", "curves": {}})
    assert "<title>&lt;b&gt;my&lt;/b&gt; sweep</title>" in html
    assert "</script><script>alert(1)" not in html  # the id stays inside the JSON, escaped
    assert "</script><script>alert(1)</script>" in page_data(html)["series"][1]["ids"]
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", html)  # nothing loaded from outside
    assert "Plotly" in html and len(html) > 1_000_000  # plotly.js itself is inline
    assert "{{" not in html[-20000:]  # every slot filled


def test_empty_sweep_still_renders():
    df = runs_frame()
    df["status"] = "running"
    d = page_data(build_dashboard(df, title="t"))
    assert d["axes"] == [] and all(s["n"] == 0 for s in d["series"])


def test_write_dashboard_atomic(tmp_path):
    path = tmp_path / "out" / "dash.html"
    write_dashboard("<html>one</html>", path)
    write_dashboard("<html>two</html>", path)
    assert path.read_text() == "<html>two</html>"
    assert os.listdir(path.parent) == ["dash.html"]  # no temp file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    with pytest.raises(TypeError):
        write_dashboard(None, path)  # a failed write leaves the old file and no temp file
    assert path.read_text() == "<html>two</html>" and os.listdir(path.parent) == ["dash.html"]


def test_latency_is_measured_once_per_architecture():
    """`with_latency` times each finished architecture once (ONNX Runtime) and adds the axis."""
    import pandas as pd

    from search.config import ArchConfig
    from search.results.dashboard import with_latency

    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "arch_key": ["k1", "k1", "k2"],
                         "status": ["finished", "finished", "failed"]})
    calls = []

    def load(rid):
        calls.append(rid)
        return ArchConfig("conv1d", (4, 4)), {"input_shape": (1, 40), "num_classes": 10}

    out = with_latency(runs, load)
    assert calls == ["a"]  # k1 once; k2 never finished
    assert out.latency_ms[0] == out.latency_ms[1] > 0 and pd.isna(out.latency_ms[2])


def test_a_mentee_is_one_dot_with_its_seed_means_and_the_device_row_is_the_pick():
    """Seeds fused: one dot a mentee at its val_acc mean; the hover gives test mean ± 95% CI; the device row
    names the mentee `pick` picks within the device (results.pick.pick), the star of `mentee dashboard`."""
    from search.results.pick import pick

    df = runs_frame()
    df["n_seeds"] = 3
    df["seeds"] = [(0, 1, 2)] * len(df)
    df["test_acc_std"] = 0.01
    d = page_data(build_dashboard(df, title="t", devices=[BOARD]))
    assert sum(s["n"] for s in d["series"]) == 6  # 6 mentees, not 18 seeds
    ys = {i: y for s in d["series"] for i, y in zip(s["ids"], s["y"])}
    assert ys == dict(zip(df.run_id[:6], df.val_acc[:6]))
    texts = [t for s in d["series"] for t in s["text"]]
    assert all("(mean of 3 seeds)" in t and " ± 0.0248" in t for t in texts)  # t(.975, 2) · 0.01 / √3
    html = build_dashboard(df, title="t", devices=[BOARD])
    (row,) = re.findall(r'<tr data-device="board">.*?</tr>', html, re.S)
    best = pick(df[[BOARD.fits(r) for _, r in df.iterrows()]])
    assert f"{best['run_id']} (val {best['val_acc']:.4f}" in row


def test_the_device_table_respects_a_training_budget():
    """A device that budgets training: a mentee fits only if its training memory (the column the budget
    reads, as `mentee dashboard` computes it) fits too; without the column nothing is said to fit."""
    from search.devices import TrainSpec

    train = TrainSpec(limit=5000, batch_size=8, optimizer="sgd")
    dev = DeviceProfile("trainer", "trains on board", "made up", (Budget(train.axis, train.limit),), train)
    df = runs_frame()
    html = build_dashboard(df, title="t", devices=[dev])
    assert "<td class=num>0</td>" in re.findall(r'<tr data-device="trainer">.*?</tr>', html, re.S)[0]
    df[train.axis] = [1000.0 * (i + 1) for i in range(len(df))]  # w4i, w4m, w8i, w8m, w16i fit (≤ 5000)
    (row,) = re.findall(r'<tr data-device="trainer">.*?</tr>', build_dashboard(df, title="t", devices=[dev]), re.S)
    assert "<td class=num>5</td>" in row and "w16i (val 0.8500" in row and "w16m" not in row
