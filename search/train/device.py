"""Where training runs: the device, its autocast and one CUDA stream per fused group."""

from __future__ import annotations

import contextlib
from typing import Protocol

import torch

__all__ = ["pick_device", "autocast", "on_stream"]


class HasStream(Protocol):
    stream: torch.cuda.Stream | None  # None until its first `on_stream`


def pick_device(device: str | None = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def on_stream(group: HasStream, device: torch.device):
    """Run `group`'s work on its own CUDA stream, ordered after everything issued so far on
    the default stream (its tensors were made or re-stacked there). A no-op on the CPU."""
    if device.type != "cuda":
        yield
        return
    if group.stream is None:
        group.stream = torch.cuda.Stream()
    group.stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(group.stream):
        yield


def autocast(device: torch.device):
    """bf16 on CUDA (no weight cache: it would break graph replay); plain fp32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()

