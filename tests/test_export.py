"""Exported files reload and match the torch model, with a dynamic batch dimension; int8 files (ONNX Runtime's
quantizer) are compared by argmax agreement and checked against the device's flash again; `mentee pick --device`
registers its pick under the device's alias and `mentee export models:/NAME@DEVICE --int8 --device` exports it."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from search.errors import UserError
from search.results.export import export_model, verify_export
from search.tracking import load_runs


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, kernel_size=5, padding=2), nn.BatchNorm1d(4), nn.ReLU(),
                         nn.MaxPool1d(2), nn.Flatten(), nn.Linear(4 * 20, 10))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))


def reload(path, fmt, x: torch.Tensor) -> torch.Tensor:
    if fmt == "onnx":
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    return torch.jit.load(str(path))(x)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("make,shape", [(conv_net, (1, 40)), (mlp, (4,))])
def test_export_roundtrip(tmp_path, fmt, make, shape):
    net = make().train()
    with torch.no_grad():  # non-trivial BN statistics, so eval vs train mode would differ
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    path = tmp_path / f"m.{fmt}"
    assert export_model(net, shape, path, fmt) == path
    assert net.training  # the caller's model is not switched to eval
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left
    net.eval()
    for batch in (3, 1):  # neither the export example's batch (2) nor verification's (8)
        x = torch.randn(batch, *shape)
        got = reload(path, fmt, x)
        np.testing.assert_allclose(got.detach().numpy(), net(x).detach().numpy(), atol=1e-5)
    assert verify_export(path, net, shape, fmt) < 1e-5


def test_failed_verification_writes_nothing(tmp_path):
    path = tmp_path / "m.pt"
    with pytest.raises(RuntimeError, match="differs from the torch model"):
        export_model(mlp(), (4,), path, "torchscript", atol=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_bad_format(tmp_path):
    with pytest.raises(UserError, match="'tflite' is not onnx or torchscript"):
        export_model(mlp(), (4,), tmp_path / "m.tflite", "tflite")
    with pytest.raises(UserError):
        verify_export(tmp_path / "m.tflite", mlp(), (4,), "tflite")
    with pytest.raises(UserError, match="does not exist"):
        export_model(mlp(), (4,), tmp_path / "nope" / "m.onnx", "onnx")


def test_legacy_onnx_fallback(tmp_path, monkeypatch):
    real = torch.onnx.export

    def no_dynamo(*a, **k):  # as if torch.export could not capture the model
        if k.get("dynamo"):
            raise RuntimeError("cannot capture")
        return real(*a, **k)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    path = export_model(mlp(), (4,), tmp_path / "m.onnx", "onnx")
    x = torch.randn(5, 4)
    np.testing.assert_allclose(reload(path, "onnx", x).numpy(), mlp()(x).detach().numpy(), atol=1e-5)


# ---- int8 through ONNX Runtime, the device's flash checked again ------------------------------------------------

def trained_conv(splits, steps: int = 60, batch_norm: bool = True) -> nn.Module:
    """A conv1d mentee fitted a little on MNIST-1D, so int8-vs-float agreement is measured on real decisions."""
    from search.config import ArchConfig
    from search.models import create_mentee

    torch.manual_seed(0)
    net = create_mentee(ArchConfig("conv1d", (8, 16), 5, batch_norm), splits.input_shape, splits.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(splits.x_train), splits.y_train).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def data():
    from search.data import load_dataset

    return load_dataset("mnist1d", n_samples=600, seed=0)


def test_int8_static_agrees_with_torch_on_test_data(tmp_path, data):
    from search.results.export import export_int8, onnx_weight_bytes

    net = trained_conv(data)
    path = tmp_path / "m-int8.onnx"
    rep = export_int8(net, data.input_shape, path, calibration=data.x_train[:128], check=(data.x_test, data.y_test))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the float model and temp files are gone
    assert rep.method == "static, 128 calibration samples" and rep.on_data and rep.samples == len(data.x_test)
    assert rep.agreement >= 0.9, rep  # int8 flips few decisions of a trained mentee
    assert abs(rep.acc_int8 - rep.acc_torch) <= 0.05 and rep.acc_torch > 0.3
    assert rep.weight_bytes == onnx_weight_bytes(path) and rep.weight_bytes * 2.5 < rep.fp32_weight_bytes
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ: really quantised
    got = sess.run(None, {sess.get_inputs()[0].name: data.x_test[:5].numpy()})[0]  # any batch size
    assert got.shape == (5, data.num_classes)


def test_int8_dynamic_without_data_says_so(tmp_path, data):
    from search.results.export import export_int8

    rep = export_int8(trained_conv(data, steps=5), data.input_shape, tmp_path / "d.onnx")
    assert rep.method == "dynamic" and not rep.on_data and rep.acc_int8 is None and 0 <= rep.agreement <= 1


def test_flash_checked_again_after_quantisation(tmp_path, data):
    """A device whose flash the sweep's estimate fills exactly (int8 weights, an fp32 scale per channel, fp32
    biases): the real int8 file also stores a zero point per channel and the activations' scales, so it no
    longer fits, and says so."""
    from search.devices import load_devices
    from search.measure import weight_bytes
    from search.results.export import export_int8, flash_check

    net = trained_conv(data, steps=5, batch_norm=False)
    estimate = weight_bytes(net, "int8")
    (tmp_path / "dev.yaml").write_text(f"tight:\n  flash: {{limit: {estimate + 1024}, overhead: 1KiB}}\n")
    tight = load_devices(tmp_path / "dev.yaml")["tight"]
    assert tight.fits({"bytes_int8": estimate})  # what the sweep saw
    rep = export_int8(net, data.input_shape, tmp_path / "m.onnx", calibration=data.x_train[:64])
    assert rep.weight_bytes > estimate
    fits, line = flash_check(tight, rep.weight_bytes, "int8")
    assert not fits and line.startswith("tight flash: ") and "no longer fits (over by" in line
    fits, line = flash_check(load_devices()["stm32f746"], rep.weight_bytes, "int8")
    assert fits and line.endswith("≤ 1 MiB: fits")
    fits, line = flash_check(load_devices()["stm32f746"], 4 * 10**6, "fp32")
    assert not fits and "export with --int8" in line
    assert flash_check(load_devices()["rpi4"], 10**9, "fp32") == (True, "rpi4 has no flash budget")


# ---- the CLI: pick --device registers, export by alias, --int8 --device ------------------------------------------

class Result:
    def __init__(self, code, captured):
        self.returncode, self.stdout, self.stderr = code, captured.out, captured.err


@pytest.fixture
def cli(capsys, monkeypatch):
    """`mentee ARGS` in this process (the CLI's own entry point, exit code returned): a subprocess per call
    would cost seconds of imports each."""
    from search.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def run(*args, cwd):
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main([str(a) for a in args])
        return Result(code, capsys.readouterr())
    return run


@pytest.fixture(scope="module")
def store(tmp_path_factory, data):
    """A sweep of three trained mentees logged the way the driver logs them (parent params name the dataset)."""
    from search.config import ArchConfig, MemberConfig, MemberResult, Status
    from search.measure import architecture_cost
    from search.models import create_mentee
    from search.tracking import SweepTracker

    tmp = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp}/mlflow.db"
    tracker = SweepTracker(uri, "exp1")
    parent = tracker.start_sweep("exp1", {"dataset.name": "mnist1d", "dataset.n_samples": 600, "dataset.seed": 0,
                                          "dataset.root": None}, {})
    tags = {"mentee.input_shape": "[1, 40]", "mentee.num_classes": "10"}
    for i, widths in enumerate([(4,), (8, 16), (32, 32)]):
        torch.manual_seed(i)
        net = create_mentee(ArchConfig("conv1d", widths, 5, False), data.input_shape, data.num_classes)
        res = MemberResult(MemberConfig(ArchConfig("conv1d", widths, 5, False)), Status.FINISHED,
                           val_acc=0.5 + 0.1 * i, test_acc=0.5, epochs_run=1,
                           cost=architecture_cost(net, data.input_shape), state_dict=net.state_dict())
        tracker.log_member(parent, res, tags=tags, member_id=str(i))
    tracker.finish_sweep(parent)
    return tmp, uri


def test_pick_device_registers_only_when_asked_and_export_by_alias(store, cli):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    tmp, uri = store
    best = load_runs(uri, "exp1").sort_values("val_acc").run_id.iloc[-1]  # 32x32: fits stm32f746 easily
    client = MlflowClient(uri)
    r = cli("pick", "--device", "stm32f746", "--experiment", "exp1", "--tracking-uri", uri, cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert f"run {best}" in r.stdout and "not registered (the alias 'stm32f746' is unchanged)" in r.stdout
    with pytest.raises(MlflowException):  # nothing moved: no model, no alias
        client.get_model_version_by_alias("exp1", "stm32f746")
    assert f"mentee export {best} --format onnx --int8 --device stm32f746 --tracking-uri {uri}" in r.stdout

    r = cli("pick", "--device", "stm32f746", "--register", "--experiment", "exp1", "--tracking-uri", uri, cwd=tmp)
    assert "registered: model 'exp1' version 1; alias 'stm32f746' now points to it" in r.stdout
    assert f"mentee export models:/exp1@stm32f746 --format onnx --int8 --device stm32f746 --tracking-uri {uri}" \
        in r.stdout
    assert client.get_model_version_by_alias("exp1", "stm32f746").run_id == best
    int8 = re.search(r"params, (.+) int8 weights", r.stdout).group(1)
    r = cli("pick", "--device", "stm32f746", "--alias", "lab-board", "--experiment", "exp1", "--tracking-uri", uri,
            cwd=tmp)
    assert "version 1; alias 'lab-board' now points to it" in r.stdout  # the same pick: the same version

    r = cli("export", "models:/exp1@stm32f746", "--int8", "--device", "stm32f746", "--calibration", "64",
            "--out", "m.onnx", "--tracking-uri", uri, cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert "int8, static, 64 calibration samples" in r.stdout and (tmp / "m.onnx").is_file()
    assert f"int8 weights {int8} (as pareto and pick count them" in r.stdout  # one int8 size everywhere
    assert f"mentee {best}: test_acc 0.5000 (mean of 1 seed); val_acc 0.7000 (mean of 1 seed)" in r.stdout
    assert "int8 vs torch on 120 test samples: argmax agrees on" in r.stdout
    assert f"stm32f746 flash: {int8} of int8 weights + 64 KiB overhead" in r.stdout and ": fits" in r.stdout


def test_export_takes_the_short_run_id_tables_show(store, cli):
    tmp, uri = store
    run_id = load_runs(uri, "exp1").run_id.iloc[0]
    r = cli("export", run_id[:8], "--out", "s.onnx", "--tracking-uri", uri, cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert f"mentee {run_id}:" in r.stdout and (tmp / "s.onnx").is_file()
    r = cli("export", "zzzzzzzz", "--tracking-uri", uri, cwd=tmp)
    assert r.returncode == 2 and f"run 'zzzzzzzz' not found in {uri}" in r.stderr


def test_export_int8_no_longer_fits_exit_1(store, cli):
    tmp, uri = store
    (tmp / "dev.yaml").write_text("tight:\n  flash: {limit: 1.1KB, overhead: 1KB}\n")
    run_id = load_runs(uri, "exp1").run_id.iloc[0]
    r = cli("export", run_id, "--int8", "--device", "tight", "--devices", "dev.yaml", "--out", "t.onnx",
            "--tracking-uri", uri, cwd=tmp)
    assert r.returncode == 1 and (tmp / "t.onnx").is_file()  # the file is kept; the check failed
    assert "tight flash:" in r.stderr and "no longer fits" in r.stderr


@pytest.mark.parametrize("args,expect", [
    (["pick", "--device", "stm32f764"], "unknown device 'stm32f764'; did you mean 'stm32f746'?"),
    (["export", "RUN", "--int8", "--device", "esp32s3"], "unknown device 'esp32s3'; did you mean 'esp32-s3'?"),
    (["export", "RUN", "--int8", "--format", "torchscript"], "--int8: only with --format onnx"),
    (["export", "models:/nope@stm32f746"], "models:/nope@stm32f746: no such registered model version"),
])
def test_bad_input_one_line(store, cli, args, expect):
    tmp, uri = store
    r = cli(*args, "--tracking-uri", uri, cwd=tmp)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and expect in r.stderr, r.stderr


def test_pick_device_nothing_fits_shows_the_nearest(store, cli):
    tmp, uri = store
    (tmp / "dev2.yaml").write_text("speck:\n  params: 500\n")
    r = cli("pick", "--device", "speck", "--devices", "dev2.yaml", "--experiment", "exp1", "--tracking-uri", uri,
            cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("no finished mentee fits speck; the nearest:")
    assert r.stdout.count("  run ") == 3 and "misses: params:" in r.stdout and "registered:" not in r.stdout


def test_export_from_a_store_without_its_artifacts_says_where_it_looked(tmp_path, data, cli):
    """A store copied without its artifact folder: one line naming the store and the folder looked in."""
    import shutil
    from urllib.parse import unquote, urlparse

    from mlflow.tracking import MlflowClient

    from search.config import ArchConfig, MemberConfig, MemberResult, Status
    from search.measure import architecture_cost
    from search.models import create_mentee
    from search.tracking import SweepTracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = SweepTracker(uri, "copied")
    parent = tracker.start_sweep("copied", {"dataset.name": "mnist1d"}, {})
    arch = ArchConfig("conv1d", (4,), 5, False)
    net = create_mentee(arch, data.input_shape, data.num_classes)
    res = MemberResult(MemberConfig(arch), Status.FINISHED, val_acc=0.5, test_acc=0.5, epochs_run=1,
                       cost=architecture_cost(net, data.input_shape), state_dict=net.state_dict())
    run_id = tracker.log_member(parent, res, tags={"mentee.input_shape": "[1, 40]", "mentee.num_classes": "10"},
                                member_id="0")
    tracker.finish_sweep(parent)
    root = unquote(urlparse(MlflowClient(uri).get_run(parent).info.artifact_uri).path).split("/copied/")[0]
    shutil.rmtree(root)  # the artifact folder that did not come along
    r = cli("export", run_id, "--out", "x.onnx", "--tracking-uri", uri, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"store {uri}; artifacts looked for under file://{root}/copied/" in r.stderr, r.stderr
    assert not (tmp_path / "x.onnx").exists()
