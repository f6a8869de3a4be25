"""The mentor, seen from the driver: its cache arrives from a Ray task, or from a file beside it.

    out = mentor_outputs(space, plan, gpus)   # {"logits", "feats", "shapes", "device_free_bytes", ...}

The driver never trains and never touches CUDA: on a space's first use a Ray task on a GPU
node trains the mentor and computes its cache (`search.train.trial.prepare_mentor`); the driver
saves what comes back — the mentor file where the space says, and the cache beside it as
`<mentor>.cache-<key>.npz`, keyed by the mentor's bytes, the dataset and the taps. A later sweep
of the same space reads that file and starts training at once: no task, no process, no GPU.

Other teachers (`mentor.teacher`): the cache holds the outputs of every version the space offers
(`search.terms.cache_names`). A checkpoint lives in the mentor file; a teacher assistant
is distilled by the same task on its first use, and the driver saves it beside the mentor as
`<mentor>.assistant-<key>.pt`, keyed by the mentor's bytes, the assistant spec and the dataset:
later sweeps send it to the task, which loads it and never trains it again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from search.spaces import SearchSpace
from search.teachers import ASSISTANT
from search.terms import cache_names
from search.train.trial import prepare_mentor, splits_to_arrays

__all__ = ["mentor_outputs"]


def mentor_outputs(space: SearchSpace, plan: Any, gpus: float) -> dict[str, Any]:
    taps = cache_names(space.terms, space.mentor.teachers())
    path = Path(space.mentor.path)
    mentor_file = path.read_bytes() if path.exists() else None
    cached = _cache_path(path, mentor_file, space, taps)
    if cached is not None and cached.exists():
        return _read(cached)
    assistant = _assistant_path(path, mentor_file, space)
    assistant_file = assistant.read_bytes() if assistant is not None and assistant.exists() else None
    out = _run_task(space, plan, taps, mentor_file, gpus, assistant_file)
    if out["trained_file"] is not None:
        _write_atomic(path, out["trained_file"])
        cached = _cache_path(path, out["trained_file"], space, taps)
    if out.get("trained_assistant") is not None:
        assistant = _assistant_path(path, out["trained_file"] or mentor_file, space)
        assert assistant is not None  # the task had, or trained, the mentor it distilled
        _write_atomic(assistant, out["trained_assistant"])
    if cached is not None:
        _save(cached, out)
    return out


def _run_task(space: SearchSpace, plan: Any, taps: list[str], mentor_file: bytes | None, gpus: float,
              assistant_file: bytes | None = None) -> dict:
    import ray

    s = plan.splits
    data = {"name": s.name, "tensors": splits_to_arrays(s), "num_classes": s.num_classes,
            "input_shape": tuple(s.input_shape)}
    # max_calls=1: the task's process exits afterwards, giving its GPU memory back to the trials
    task = ray.remote(num_cpus=1, num_gpus=1 if gpus > 0 else 0, max_calls=1)(prepare_mentor)
    return ray.get(task.remote(space.mentor, data, taps, mentor_file, "cuda" if gpus > 0 else "cpu",
                               assistant_file))


def _assistant_recipe(space: SearchSpace) -> dict[str, Any] | None:
    """What makes the teacher assistant, beside the mentor's bytes and the dataset: its spec and the
    mentor recipe's keys it reuses (batch size, seed). None if no mentee learns from one."""
    a, m = space.mentor.assistant, space.mentor
    if a is None or ASSISTANT not in m.teachers():
        return None
    return {**a.model_dump(), "batch_size": m.batch_size, "seed": m.seed}


def _cache_path(path: Path, mentor_file: bytes | None, space: SearchSpace, taps: list[str]) -> Path | None:
    if mentor_file is None:
        return None
    # the assistant's recipe only where it is a teacher: other spaces keep the keys they had
    recipe = _assistant_recipe(space)
    what = [space.dataset.model_dump(), taps] + ([recipe] if recipe is not None else [])
    key = hashlib.sha1(mentor_file + json.dumps(what).encode()).hexdigest()[:12]
    return path.with_name(f"{path.name}.cache-{key}.npz")


def _assistant_path(path: Path, mentor_file: bytes | None, space: SearchSpace) -> Path | None:
    """Where the teacher assistant distilled from this mentor file, for this dataset, is kept."""
    recipe = _assistant_recipe(space)
    if mentor_file is None or recipe is None:
        return None
    what = json.dumps([space.dataset.model_dump(), recipe])
    key = hashlib.sha1(mentor_file + what.encode()).hexdigest()[:12]
    return path.with_name(f"{path.name}.assistant-{key}.pt")


def _save(cached: Path, out: dict) -> None:
    arrays = {"logits": out["logits"], **{f"feat.{k}": v for k, v in out["feats"].items()}}
    meta = {"shapes": out["shapes"], "device_free_bytes": out["device_free_bytes"],
            "device_name": out["device_name"], "metrics": out["metrics"]}
    tmp = cached.with_name(cached.name + ".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    tmp.replace(cached)


def _read(cached: Path) -> dict:
    with np.load(cached, allow_pickle=False) as z:  # plain arrays only: nothing in it is ever unpickled
        meta = json.loads(str(z["meta"]))
        feats = {k[len("feat."):]: z[k] for k in z.files if k.startswith("feat.")}
        return {"logits": z["logits"], "feats": feats, "shapes": {k: tuple(v) for k, v in meta["shapes"].items()},
                "trained_file": None, "metrics": meta["metrics"], "device_free_bytes": meta["device_free_bytes"],
                "device_name": meta["device_name"], "from_cache_file": str(cached)}


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # a crash never leaves half a mentor file
