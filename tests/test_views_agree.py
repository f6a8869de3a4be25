"""One mentee, one number: after one small real sweep (MNIST-1D, CPU, 2 seeds a mentee), every view shows the
same accuracy for every mentee on the front, to the last digit it prints:

- `mentee pareto --format json` (the front's rows, raw numbers),
- `mentee pick --max-params P --format json` (the row pick shows; P = the mentee's own size picks it),
- the dashboard's embedded data (its dots and hover: val_acc the seed mean, test ± 95% CI),
- `mentee export`'s report (the mentee's numbers; the exported seed's own, labelled apart),
- the MLflow run the UI shows (its val_acc / test_acc metrics).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from search.spaces import load_space
from search.sweep.run import run_sweep
from search.tracking import load_runs


class Result:
    def __init__(self, code, captured):
        self.returncode, self.stdout, self.stderr = code, captured.out, captured.err


@pytest.fixture
def cli(capsys, monkeypatch):
    """`mentee ARGS` in this process (a subprocess per call would cost seconds of imports each)."""
    from search.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def run(*args, cwd):
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main([str(a) for a in args])
        out = Result(code, capsys.readouterr())
        assert code == 0, out.stderr[-3000:]
        return out
    return run


@pytest.fixture(scope="module")
def swept(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agree")
    space = {
        "name": "agree", "dataset": {"name": "mnist1d", "n_samples": 300},
        "mentor": {"arch": {"family": "conv1d", "widths": [8, 8, 8], "kernel": 5, "batch_norm": True}, "epochs": 2,
                   "path": str(tmp / "m.pt")},
        "mentee": {"family": "conv1d", "depth": [1, 2], "width": [4, 8], "growth": 1, "kernel": 5},
        "train": {"epochs": 2}, "budget": {"mentees": 8, "cohort_size": 4, "seeds": 2},
    }
    (tmp / "space.yaml").write_text(yaml.safe_dump(space))
    uri = f"sqlite:///{tmp}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        run_sweep(load_space(tmp / "space.yaml"), tracking_uri=uri, workdir=tmp / "runs", show_progress=False)
    return tmp, uri


def dashboard_points(html: str) -> dict[str, tuple[float, float, str]]:
    data = json.loads(re.search(r'<script id="dashboard-data" type="application/json">(.*?)</script>', html,
                                re.S).group(1))
    return {i: (y, t, text) for s in data["series"] for i, y, t, text in zip(s["ids"], s["y"], s["test"], s["text"])}


def test_every_view_shows_the_same_numbers_for_every_front_mentee(swept, cli):
    from mlflow.tracking import MlflowClient

    tmp, uri = swept
    runs = load_runs(uri, "agree").set_index("run_id")
    assert (runs.n_seeds == 2).all()  # seeds fused: one row a mentee
    front = json.loads(cli("pareto", "--experiment", "agree", "--tracking-uri", uri, "--format", "json",
                           "--wide", cwd=tmp).stdout)
    assert front
    cli("dashboard", "--experiment", "agree", "--tracking-uri", uri, "--no-log", "--device", "stm32f746",
        "--out", "d.html", cwd=tmp)
    dots = dashboard_points((tmp / "d.html").read_text())
    client = MlflowClient(uri)
    for f in front:
        rid = f["run_id"]
        # the store as load_runs reads it, and the metrics the MLflow UI shows
        assert f["val_acc"] == runs.loc[rid, "val_acc"] == client.get_run(rid).data.metrics["val_acc"]
        assert f["test_acc"] == runs.loc[rid, "test_acc"] == client.get_run(rid).data.metrics["test_acc"]
        # pick at the mentee's own size picks it, with the same row
        (p,) = json.loads(cli("pick", "--max-params", int(f["params"]), "--experiment", "agree", "--tracking-uri",
                              uri, "--format", "json", cwd=tmp).stdout)
        assert p["run_id"] == rid
        assert all(p[k] == f[k] for k in p if k not in ("gain", "gain_ci")), (p, f)
        # the dashboard's dot and hover
        y, t, text = dots[rid]
        assert (y, t) == (f["val_acc"], f["test_acc"])
        assert f"val {f['val_acc']:.4f} (mean of 2 seeds)" in text and f"test {f['test_acc']:.4f}" in text
        if f["test_ci"] is not None:
            assert f"± {f['test_ci']:.4f}" in text
        # export's report: the mentee's numbers, then the exported seed's own, apart
        out = cli("export", rid, "--out", f"{rid[:8]}.onnx", "--tracking-uri", uri, cwd=tmp).stdout
        ci = f" ± {f['test_ci']:.4f} (95% CI)" if f["test_ci"] is not None else ""
        assert (f"mentee {rid}: test_acc {f['test_acc']:.4f}{ci} (mean of 2 seeds); "
                f"val_acc {f['val_acc']:.4f} (mean of 2 seeds)") in out, out
        vals, tests, seeds = runs.loc[rid, "val_accs"], runs.loc[rid, "test_accs"], runs.loc[rid, "seeds"]
        best = max(range(len(seeds)), key=lambda i: vals[i])
        assert (f"exported weights: seed {seeds[best]}, the mentee's best seed on validation (its own val_acc "
                f"{vals[best]:.4f}; test_acc {tests[best]:.4f})") in out, out
    # the dashboard's star is pick's choice within the first device
    (p,) = json.loads(cli("pick", "--device", "stm32f746", "--experiment", "agree", "--tracking-uri", uri,
                          "--format", "json", cwd=tmp).stdout)
    data = json.loads(re.search(r'<script id="dashboard-data" type="application/json">(.*?)</script>',
                                Path(tmp / "d.html").read_text(), re.S).group(1))
    assert data["picked"]["run_id"] == p["run_id"] and data["picked"]["y"] == p["val_acc"]
