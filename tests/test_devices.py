"""Device profiles: the shipped file, units, fits and misses, and one clear line for every bad file."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from search.devices import Budget, get_device, load_devices
from search.errors import UserError


def write(tmp_path, text: str):
    p = tmp_path / "devices.yaml"
    p.write_text(text)
    return p


def test_shipped_profiles():
    devices = load_devices()
    assert {"stm32f746", "nrf52840", "esp32-s3", "rpi4", "phone"} <= set(devices)
    stm = devices["stm32f746"]
    # MCUNet's board: 320 KiB SRAM and 1 MiB flash, less the runtime's allowance.
    assert stm.budget("sram_int8") == Budget("sram_int8", 320 * 1024, overhead=32 * 1024)
    assert stm.budget("bytes_int8").limit == 2**20
    assert devices["nrf52840"].budget("sram_int8").limit == 256 * 1024
    assert devices["esp32-s3"].budget("sram_int8").limit == 512 * 1024
    assert devices["phone"].budget("latency_ms").scale > 1
    assert all(d.source for d in devices.values())  # every profile says where its numbers come from


def test_fits_and_misses_say_by_how_much():
    stm = load_devices()["stm32f746"]
    small = {"params": 5000, "bytes_int8": 100_000, "sram_int8": 100_000}
    assert stm.fits(small) and stm.check(small) == []
    big = pd.Series({"bytes_int8": 1_000_000, "sram_int8": 300_000})  # a pandas row works as well
    misses = {m.budget.axis: m for m in stm.check(big)}
    assert set(misses) == {"bytes_int8", "sram_int8"}
    assert misses["sram_int8"].over == 300_000 + 32 * 1024 - 320 * 1024  # 5,088 B over
    assert str(misses["sram_int8"]) == "sram_int8: 293 KiB + 32 KiB overhead = 325 KiB > 320 KiB (over by 4.969 KiB)"
    # An unknown (missing or NaN) cost never fits: it is reported as not measured.
    miss = stm.check({"bytes_int8": 10, "sram_int8": math.nan})
    assert [(m.budget.axis, m.value) for m in miss] == [("sram_int8", None)]
    assert "not measured" in str(miss[0])


def test_latency_scale_and_max_cost(tmp_path):
    devs = load_devices(write(tmp_path, "board:\n  latency: {limit: 0.2s, scale: 300}\n  sram: 256KiB\n"))
    b = devs["board"].budget("latency_ms")
    assert b.limit == 200 and b.max_cost == pytest.approx(200 / 300)  # 0.67 ms here is 200 ms there
    assert devs["board"].fits({"latency_ms": 0.6, "sram_int8": 1000})
    (miss,) = devs["board"].check({"latency_ms": 1.0, "sram_int8": 1000})
    assert miss.over == pytest.approx(100) and "× 300 = 300 ms > 200 ms" in str(miss)
    assert devs["board"].budget("sram_int8") == Budget("sram_int8", 262144)  # shorthand: int8, no overhead


def test_units(tmp_path):
    def load_devices_from(text: str):
        return load_devices(write(tmp_path, text))

    cases = {"1000": 1000, "1KB": 1000, "1kb": 1000, "1KiB": 1024, "1.5MB": 1.5e6, "2MiB": 2 * 2**20,
             "1GB": 1e9, "1GiB": 2**30, "10 B": 10}
    for text, expected in cases.items():
        assert load_devices_from(f"d:\n  flash: {text}\n")["d"].budget("bytes_int8").limit == expected, text
    assert load_devices_from("d:\n  params: 5k\n  macs: 1.5M\n")["d"].budget("macs").limit == 1.5e6
    assert load_devices_from("d:\n  params: 2G\n")["d"].budget("params").limit == 2e9
    assert load_devices_from("d:\n  latency: 1.5s\n")["d"].budget("latency_ms").limit == 1500
    assert load_devices_from("d:\n  latency: 30\n")["d"].budget("latency_ms").limit == 30  # bare: ms
    fp32 = load_devices_from("d:\n  flash: {limit: 1MB, precision: fp32, overhead: 100KB}\n")["d"]
    assert fp32.budget("bytes_fp32") == Budget("bytes_fp32", 1e6, overhead=1e5)
    assert fp32.budget("bytes_fp32").max_cost == 900_000


def test_user_file_adds_and_overrides(tmp_path):
    devs = load_devices(write(tmp_path, "stm32f746:\n  sram: 128KiB\nmy-board:\n  params: 10k\n"))
    assert devs["stm32f746"].budgets == (Budget("sram_int8", 128 * 1024),)  # replaced whole
    assert devs["my-board"].budget("params").limit == 10_000
    assert "nrf52840" in devs  # the rest stay


def test_unknown_device_names_the_closest():
    devices = load_devices()
    with pytest.raises(UserError, match=r"^unknown device 'stm32f74'; did you mean 'stm32f746'\?$"):
        get_device("stm32f74", devices)
    with pytest.raises(UserError, match="expected one of esp32-s3, nrf52840, phone, rpi4, stm32f746"):
        get_device("toaster", devices)
    assert get_device("rpi4", devices).name == "rpi4"


@pytest.mark.parametrize("text, message", [
    ("d:\n  flash: 1MX\n", "key 'd.flash.limit': unknown unit 'MX'; expected a size"),
    ("d:\n  params: 5KB\n", "key 'd.params.limit': unknown unit 'KB'; expected a count"),
    ("d:\n  latency: 5min\n", "key 'd.latency.limit': unknown unit 'min'; expected a time"),
    ("d:\n  sram: -5KB\n", "key 'd.sram.limit': a budget must be ≥ 0, got '-5KB'"),
    ("d:\n  macs: -3\n", "key 'd.macs.limit': a budget must be ≥ 0, got -3"),
    ("d:\n  sram: .nan\n", "key 'd.sram.limit': expected a finite number, got nan"),
    ("d:\n  sram: {limit: .inf}\n", "key 'd.sram.limit': expected a finite number"),
    ("d:\n  latency: {limit: 5ms, scale: 0}\n", "key 'd.latency.scale': expected a number > 0"),
    ("d:\n  latency: {limit: 5ms, scale: .nan}\n", "key 'd.latency.scale': expected a number > 0"),
    ("d:\n  ram: 5KB\n", "key 'd.ram': unknown key (did you mean 'sram'?)"),
    ("d:\n  flash: {limit: 1MB, overhed: 1KB}\n", "key 'd.flash.overhed': unknown key; expected one of limit, "),
    ("d:\n  flash: {limit: 1MB, precision: int4}\n", "key 'd.flash.precision': expected int8 or fp32, got 'int4'"),
    ("d:\n  flash: {overhead: 1KB}\n", "key 'd.flash': missing 'limit'"),
    ("d:\n  sram: {limit: 64KB, overhead: 64KB}\n", "key 'd.sram.overhead': 62.5 KiB leaves nothing"),
    ("d:\n  params: [1, 2]\n", "key 'd.params.limit': expected a count such as 500k or 2M (units k, M, G), "
                               "got a list"),
    ("d:\n  params: true\n", "key 'd.params.limit': expected a count"),
    ("d:\n  latency: {limit: 5ms, table: t.csv}\n", "key 'd.latency.table': unknown key"),
    ("d: 5\n", "key 'd': expected a mapping of budgets"),
    ("- d\n- e\n", "expected a mapping of device names to profiles, got a list"),
    ("", "expected a mapping of device names to profiles, got an empty file"),
    ("d:\n  sram: [1\n", "malformed YAML at line 3"),
    ("D!:\n  sram: 1KB\n", "device name 'D!': expected lower-case letters"),
    ("d:\n  description: [a]\n", "key 'd.description': expected text, got a list"),
    ("d:\n  train: {limit: 1MiB, optimizer: lion}\n", "key 'd.train.optimizer': expected one of sgd, "),
    ("d:\n  train: {limit: 1MiB, batch_size: 0}\n", "key 'd.train.batch_size': expected an integer ≥ 1, got 0"),
    ("d:\n  train: {limit: 1MiB, batchsize: 8}\n", "key 'd.train.batchsize': unknown key; expected one of limit, "
                                                    "batch_size, optimizer"),
    ("d:\n  train: {batch_size: 8}\n", "key 'd.train': missing 'limit'"),
    ("d: !!python/object/apply:os.system ['true']\n", "malformed YAML"),  # safe_load refuses objects
])
def test_bad_files_one_line_naming_file_and_field(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(UserError) as e:
        load_devices(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and message in msg, msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="devices.yaml: device file not found"):
        load_devices(tmp_path / "devices.yaml")


def test_a_training_budget_reads_the_memory_at_its_batch_and_optimiser(tmp_path):
    from search.devices import OPTIMIZERS
    from search.measure import _OPTIMIZER_STATE

    assert set(OPTIMIZERS) == set(_OPTIMIZER_STATE)  # the profile accepts what measure knows
    d = load_devices(write(tmp_path, "d:\n  train: {limit: 64KiB, batch_size: 16, optimizer: sgd}\n"))["d"]
    assert (d.train.limit, d.train.batch_size, d.train.optimizer) == (64 * 1024, 16, "sgd")
    assert d.train.axis == "train_bytes.b16.sgd" and d.budget(d.train.axis).limit == 64 * 1024
    assert d.fits({d.train.axis: 60_000}) and not d.fits({d.train.axis: 70_000})
    assert str(d.check({})[0]) == "train_bytes.b16.sgd: not measured (the budget is 64 KiB)"
    assert load_devices()["phone"].train.optimizer == "adamw"


def test_pick_for_a_device_respects_its_training_budget(tmp_path):
    """Only mentees whose training fits the budget are picked: the most accurate one here does not."""
    from search.config import ArchConfig
    from search.measure import training_memory_bytes
    from search.models import create_mentee
    from search.results.costs import with_training_memory
    from search.results.pick import pick_for_device

    archs = {"small": ArchConfig("conv1d", (4,), 5, False), "big": ArchConfig("conv1d", (32, 32), 5, False)}
    need = {k: training_memory_bytes(create_mentee(a, (1, 40), 10), (1, 40), 32, "sgd") for k, a in archs.items()}
    limit = (need["small"] + need["big"]) // 2
    d = load_devices(write(tmp_path, f"d:\n  train: {{limit: {limit}, batch_size: 32, optimizer: sgd}}\n"))["d"]
    runs = pd.DataFrame({"run_id": ["r-big", "r-small"], "arch_key": ["big", "small"], "status": "finished",
                         "val_acc": [0.9, 0.7], "params": [2000, 100], "bytes_int8": [2000, 100], "macs": [1, 1]})
    runs = with_training_memory(runs, d, lambda rid: (archs[rid[2:]], {"input_shape": (1, 40), "num_classes": 10}))
    assert list(runs[d.train.axis]) == [need["big"], need["small"]]
    row, _ = pick_for_device(runs, d)
    assert row["run_id"] == "r-small"
