"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium): the page runs its scripts, draws
the traces, tags the budget lines, switches axes by URL, and a screenshot shows something.

Chromium's own command line does the work (--dump-dom gives the DOM once scripts ran for the virtual
time budget; --screenshot a PNG), so no driver package is needed. In CI a missing browser fails."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib

import pandas as pd
import pytest

from search.devices import load_devices
from search.results.dashboard import build_dashboard, write_dashboard

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
if CHROMIUM is None:
    # named at the end of the run with how to install it; where the browser is required (CI, .ci/run) the
    # skip fails the run (tests/conftest.py)
    pytest.skip("no Chromium here: apt-get install -y chromium", allow_module_level=True)


def chromium(tmp_path, url: str, *extra: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *extra, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A sweep of 12 finished mentees (and one pruned), three devices, a picked run with curves."""
    rows = []
    for i, w in enumerate((2, 4, 8, 16, 32, 64)):
        p = 600 * w
        for ind in (True, False):
            acc = 0.5 + 0.06 * i + (0.0 if ind else 0.02)
            rows.append(dict(run_id=f"run-{w}-{'ind' if ind else 'men'}", status="finished", independent=ind,
                             family="conv1d", widths=[w, w], kernel=5, mapping="" if ind else "l2→l3", seed=0,
                             val_acc=acc, test_acc=acc - 0.01, params=p, bytes_fp32=4 * p, bytes_int8=p + 120,
                             macs=40 * p, sram_int8=2400 * w, sram_fp32=9600 * w, latency_ms=0.004 * w))
    rows.append(dict(run_id="run-pruned", status="pruned", independent=False, val_acc=0.2, params=50))
    devices = load_devices()
    html = build_dashboard(pd.DataFrame(rows), title="browser test sweep",
                           devices=[devices[n] for n in ("stm32f746", "nrf52840", "rpi4")],
                           picked={"run_id": "run-16-men", "curves": {"val_acc": [0.3, 0.5, 0.6, 0.7],
                                                                      "train_loss": [2.0, 1.2, 0.9, 0.7]}})
    path = write_dashboard(html, tmp_path_factory.mktemp("dash") / "dashboard.html")
    return path.as_uri()


def test_traces_and_budget_lines_in_the_dom(page, tmp_path):
    dom = chromium(tmp_path, page + "#axis=sram_int8", "--dump-dom")
    assert re.search(r'<body[^>]*data-ready="true"', dom), "the page's script did not finish drawing"
    assert re.search(r'<body[^>]*data-axis="sram_int8"', dom)
    legend = re.findall(r'class="legendtext"[^>]*>([^<]*)<', dom)
    assert legend[:5] == ["mentored", "independent", "independent front", "Pareto front", "picked"]
    assert {"val_acc", "train_loss"} <= set(legend)  # the picked mentee's panel
    assert len(re.findall(r'<path class="point plotly-customdata"', dom)) == 12  # finished runs only
    # stm32f746 and nrf52840 budget SRAM at int8 (rpi4 at fp32: not on this axis): a dashed line and a label each.
    lines = re.findall(r'<path [^>]*data-device="([\w.-]+)"', dom)
    labels = re.findall(r'<g class="annotation"[^>]*data-device="([\w.-]+)"', dom)
    assert sorted(lines) == sorted(labels) == ["nrf52840", "stm32f746"]
    assert re.search(r'<tr data-device="rpi4">', dom)
    assert re.search(r'<a class="axis-button active" data-axis="sram_int8"', dom)


def test_axis_from_url(page, tmp_path):
    dom = chromium(tmp_path, page + "#axis=latency_ms", "--dump-dom")
    assert re.search(r'<body[^>]*data-axis="latency_ms"', dom)
    assert re.findall(r'<path [^>]*data-device="([\w.-]+)"', dom) == ["rpi4"]  # only rpi4 budgets latency
    assert "(ms, log scale)" in re.search(r'class="xtitle"[^>]*>([^<]*)<', dom).group(1)
    dom = chromium(tmp_path, page, "--dump-dom")  # no axis asked: the first, parameters
    assert re.search(r'<body[^>]*data-axis="params"', dom)


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG (stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def test_screenshot(page, tmp_path):
    shot = tmp_path / "dashboard.png"
    chromium(tmp_path, page + "#axis=sram_int8", f"--screenshot={shot}", "--window-size=1280,1400",
             "--hide-scrollbars")
    width, height, raw = png_pixels(shot.read_bytes())
    assert (width, height) == (1280, 1400)
    # A blank page compresses to almost nothing and has a handful of byte values; a drawn plot does not.
    assert shot.stat().st_size > 40_000 and len(set(raw)) > 200, (shot.stat().st_size, len(set(raw)))
    if os.environ.get("DASHBOARD_SCREENSHOT"):  # keep one to look at: DASHBOARD_SCREENSHOT=/tmp/x.png
        shutil.copy(shot, os.environ["DASHBOARD_SCREENSHOT"])
