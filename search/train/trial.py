"""What runs in Ray's worker processes: the cohort trial, and the mentor's preparation.

    cohort_trainable(CohortSpec.to_dict(), payload=TrialPayload)   # one Ray Tune trial
    prepare_mentor(spec, data, taps, mentor_file)                   # a Ray task on a GPU node
    prepare_mentor(spec, data, ["layer3", "epoch20/layer3", "assistant/logits"], mentor_file, "cuda",
                   assistant_file)                                  # other teachers too

Kept apart from `search.sweep` so that a trial process imports torch and the training
code only (no Optuna, no MLflow): trial processes start faster, and the rule that only the
driver writes MLflow and Optuna holds by construction. The driver never trains: even the
mentor is trained (on first use of a space) and cached inside `prepare_mentor`, which the
driver runs as a Ray task on a node with a GPU.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search.config import CohortReport, CohortSpec, MemberResult, TrialPayload
from search.data import Splits
from search.mentors import Mentor, load_mentor
from search.teachers import ASSISTANT, FINAL, unqualify
from search.train.cache import MentorCache
from search.train.cohort import train_cohort
from search.train.device import pick_device

__all__ = ["cohort_trainable", "prepare_mentor", "on_device", "splits_to_arrays"]

_IMPORTED = time.time()  # the trial side's imports are done
_LAST_TRAIN_END: float | None = None  # wall clock: this process's last cohort finished training

_DEVICE_DATA: dict[str, tuple[Splits, MentorCache | None]] = {}  # per trial process, kept across trials


def splits_to_arrays(s: Splits) -> dict[str, np.ndarray]:
    return {k: getattr(s, k).cpu().numpy() for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}


def _splits(name: str, tensors: dict[str, np.ndarray], num_classes: int, input_shape, dev) -> Splits:
    # arrays from Ray's object store are read-only: copy those (torch wants writable memory)
    t = {k: torch.from_numpy(v if v.flags.writeable and v.flags.c_contiguous else np.array(v)).to(dev)
         for k, v in tensors.items()}
    return Splits(name, t["x_train"], t["y_train"], t["x_val"], t["y_val"], t["x_test"], t["y_test"],
                  num_classes, tuple(input_shape))


def on_device(p: TrialPayload) -> tuple[Splits, MentorCache | None]:
    """Splits and mentor cache on this process's device, built once per process and sweep."""
    if p.key not in _DEVICE_DATA:
        _DEVICE_DATA.clear()  # a new sweep in a reused process: free the old one
        dev = pick_device(p.device)
        cache = None
        if p.mentor_logits is not None:
            cache = MentorCache(torch.from_numpy(np.array(p.mentor_logits)).to(dev),
                                {k: torch.from_numpy(np.array(v)).to(dev) for k, v in p.mentor_feats.items()})
        _DEVICE_DATA[p.key] = (_splits(p.dataset, p.tensors, p.num_classes, p.input_shape, dev), cache)
    return _DEVICE_DATA[p.key]


def _train_splitting(cfgs, splits, cache, p: TrialPayload, inner: dict) -> list[MemberResult]:
    """Train the cohort; if it does not fit the GPU, train it in halves (recursively): a cohort
    that is too big for a card costs time, never mentees."""
    try:
        return train_cohort(cfgs, splits, cache=cache, mentor_shapes=p.mentor_shapes, rungs=p.rungs, eta=p.eta,
                            timing=inner)
    except torch.OutOfMemoryError:
        if len(cfgs) == 1:
            raise
        torch.cuda.empty_cache()
        inner["oom_splits"] = inner.get("oom_splits", 0) + 1
        half = len(cfgs) // 2
        return (_train_splitting(cfgs[:half], splits, cache, p, inner)
                + _train_splitting(cfgs[half:], splits, cache, p, inner))


def _process_started() -> float:
    """Wall clock when this worker process started (where psutil, a Ray dependency, can tell)."""
    try:
        import psutil  # type: ignore[import-untyped]

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - a timing, never worth failing a trial for
        return _IMPORTED


def cohort_gap(start: float, end: float) -> dict[str, float]:
    """A cohort trained in this process from wall clock `start` to `end`: {"gap": seconds since the
    process's last cohort ended} (none for its first), the GPU's idle time between the two."""
    global _LAST_TRAIN_END
    gap = {} if _LAST_TRAIN_END is None else {"gap": start - _LAST_TRAIN_END}
    _LAST_TRAIN_END = end
    return gap


def cohort_trainable(config: dict, payload: TrialPayload) -> None:
    """One Ray Tune trial: train the cohort, report every member, weights in the checkpoint.

    Its timings say where a cohort's seconds went, in wall-clock instants too (`*_at`), so a
    benchmark can line them up with the driver's: the worker process's start, the trial side's
    imports done, this call, training's start; and `gap`, the seconds from this process's last
    cohort's end of training to this one's start (Tune's hand-over, the next config, the data):
    the GPU is idle then unless another cohort trains beside it."""
    import ray
    from ray import tune

    t0 = time.time()
    splits, cache = on_device(payload)
    t1 = time.time()
    spec = CohortSpec.from_dict(config)
    inner: dict[str, float] = {}
    results = _train_splitting([w.config for w in spec.items], splits, cache, payload, inner)
    t2 = time.time()
    gap = cohort_gap(t1, t2)
    with tempfile.TemporaryDirectory() as d:
        # one file for the cohort: a file per member costs more than the tensors in it
        torch.save({w.member_id: r.state_dict for w, r in zip(spec.items, results) if r.state_dict is not None},
                   Path(d) / "weights.pt")
        timing = {"process_started_at": _process_started(), "imported_at": _IMPORTED, "called_at": t0,
                  "data_to_device": t1 - t0, "train": t2 - t1, **gap,
                  "train_started_at": t1,  # wall clock: the sweep's fixed cost ends at its first cohort's
                  **{f"train.{k}": v for k, v in inner.items()}, "save": time.time() - t2}
        report = CohortReport(results, ray.get_runtime_context().get_node_id(), timing)
        tune.report(report.to_dict(), checkpoint=tune.Checkpoint.from_directory(d))


def prepare_mentor(spec: Any, data: dict[str, Any], taps: list[str], mentor_file: bytes | None,
                   device: str | None = None, assistant_file: bytes | None = None) -> dict[str, Any]:
    """Load the mentor (from `mentor_file`'s bytes) or train it (first use of a space), then
    compute its cache over the training set. Runs as a Ray task on a GPU node (or in-process
    without a cluster); returns numpy arrays and, if it trained, the new mentor file's bytes
    for the driver to save where the space says. Also reports the device's free memory, so
    the driver can size cohorts without touching CUDA itself.

    `taps` may name other teachers' outputs (`epoch20/layer3`, `assistant/logits`): a checkpoint
    comes from the mentor file; the teacher assistant from `assistant_file`'s bytes, or, on its
    first use, is distilled from the mentor here and its file's bytes come back too
    (`trained_assistant`) for the driver to save beside the mentor."""
    from search.train.mentor import ensure_mentor, mentor_from_spec, train_assistant

    dev = pick_device(device)
    splits = _splits(data["name"], data["tensors"], data["num_classes"], data["input_shape"], dev)
    wanted = sorted({unqualify(n)[0] for n in taps} - {FINAL})
    trained = trained_assistant = None
    versions: dict[str, Mentor] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mentor.pt"
        if mentor_file is not None:
            path.write_bytes(mentor_file)
        local = spec.model_copy(update={"path": str(path)})
        mentor = mentor_from_spec(local, splits) if mentor_file is not None else None
        if mentor is None:
            mentor = ensure_mentor(local, splits)
            trained = path.read_bytes()
        mentor.model.to(dev)
        for v in wanted:
            if v != ASSISTANT:  # an early-stopped checkpoint, in the mentor's own file
                early = mentor_from_spec(local, splits, version=v)
                assert early is not None  # the mentor's file is there: it was just loaded or written
                versions[v] = early
                continue
            a_path = Path(tmp) / "assistant.pt"
            if assistant_file is not None:  # trained by an earlier sweep: never again
                a_path.write_bytes(assistant_file)
                versions[v] = load_mentor(a_path, taps=spec.taps, input_shape=splits.input_shape,
                                          num_classes=splits.num_classes)
            else:
                versions[v], _ = train_assistant(spec, mentor, splits, out=a_path)
                trained_assistant = a_path.read_bytes()
    for m in versions.values():
        m.model.to(dev)
    cache = MentorCache.build(mentor, splits.x_train, taps, versions=versions)
    shapes = {}
    for name in taps:
        v, tap = unqualify(name)
        if tap != "logits":
            shapes[name] = (mentor if v == FINAL else versions[v]).tap_shapes([tap])[0]
    free = torch.cuda.mem_get_info()[0] if dev.type == "cuda" else 0
    import ray  # the node that ran this: never the driver's on a cluster (tests/sweep/test_multinode.py)
    return {"node_id": ray.get_runtime_context().get_node_id() if ray.is_initialized() else None,
            "logits": cache.logits.cpu().numpy(), "feats": {k: v.cpu().numpy() for k, v in cache.feats.items()},
            "shapes": shapes, "trained_file": trained, "trained_assistant": trained_assistant,
            "metrics": mentor.spec.get("metrics", {}), "device_free_bytes": int(free),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
