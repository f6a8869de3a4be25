"""Exported files reload and match the torch model, with a dynamic batch dimension."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from search.errors import UserError
from search.export import export_model, verify_export


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
