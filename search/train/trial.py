"""What runs inside a Ray Tune trial: train one cohort and report it.

Kept apart from `search.sweep` so that a trial process imports torch and the training
code only (no Optuna, no MLflow): trial processes start faster, and the driver-only
rule (only the driver writes MLflow and Optuna) holds by construction.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from search.config import MemberConfig, MemberResult
from search.data import Splits
from search.train.cache import MentorCache
from search.train.cohort import train_cohort
from search.train.device import pick_device

__all__ = ["cohort_trainable", "result_to_dict", "on_device"]

_PROCESS_START = time.time()

_DEVICE_DATA: dict[str, tuple[Splits, MentorCache | None]] = {}  # per trial process, kept across trials


def on_device(payload: dict) -> tuple[Splits, MentorCache | None]:
    """Splits and mentor cache on this process's device, built once per process."""
    key = payload["key"]
    if key not in _DEVICE_DATA:
        _DEVICE_DATA.clear()  # a new sweep in a reused process: free the old one
        dev = pick_device(payload.get("device"))
        s = payload["splits"]
        t = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dev) for k, v in s["tensors"].items()}
        splits = Splits(s["name"], t["x_train"], t["y_train"], t["x_val"], t["y_val"], t["x_test"], t["y_test"],
                        s["num_classes"], tuple(s["input_shape"]))
        cache = None
        if payload["cache"] is not None:
            c = payload["cache"]
            cache = MentorCache(torch.from_numpy(c["logits"]).to(dev),
                                {k: torch.from_numpy(v).to(dev) for k, v in c["feats"].items()})
        _DEVICE_DATA[key] = (splits, cache)
    return _DEVICE_DATA[key]


def cohort_trainable(config: dict, payload: dict) -> None:
    """One Ray Tune trial: train the cohort, report every member, weights in the checkpoint."""
    from ray import tune

    t0 = time.time()
    splits, cache = on_device(payload)
    t1 = time.time()
    cfgs = [MemberConfig.from_dict(d) for d in config["members"]]
    inner: dict[str, float] = {}
    results = train_cohort(cfgs, splits, cache=cache, mentor_shapes=payload["mentor_shapes"],
                           rungs=payload["rungs"], eta=payload["eta"], timing=inner)
    t2 = time.time()
    with tempfile.TemporaryDirectory() as d:
        # one file for the cohort: a file per member costs more than the tensors in it
        torch.save({mid: r.state_dict for mid, r in zip(config["member_ids"], results) if r.state_dict is not None},
                   Path(d) / "weights.pt")
        members = [result_to_dict(r) for r in results]
        timing = {"since_process_start": t0 - _PROCESS_START, "data_to_device": t1 - t0, "train": t2 - t1,
                  **{f"train.{k}": v for k, v in inner.items()}, "save": time.time() - t2}
        tune.report({"members": members, "finished": sum(r.status == "finished" for r in results),
                     "timing": timing}, checkpoint=tune.Checkpoint.from_directory(d))


def result_to_dict(r: MemberResult) -> dict:
    return {"status": r.status, "val_acc": r.val_acc, "test_acc": r.test_acc, "epochs_run": r.epochs_run,
            "curves": r.curves, "cost": r.cost, "train_seconds": r.train_seconds, "error": r.error}
