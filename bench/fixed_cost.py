"""A sweep's fixed cost with Ray already running, as a user meets it: `ray start --head` once,
then `mentee sweep` again and again. Each repeat is a fresh process running a tiny sweep (8
mentees, 1 epoch), timed from that process's start to its first cohort's training and split
into phases. Side by side in one run, alternating:

  first sweep  the dataset cache is empty (a new machine, a new $MENTEE_CACHE_DIR): mnist1d is made
  later sweep  the dataset is read from the cache that an earlier sweep wrote

    ray start --head --include-dashboard false          # once (or: python -m ray.scripts.scripts start --head)
    python bench/fixed_cost.py --repeats 3               # table + bench/results/fixed_cost-<card>.json

An unmeasured sweep goes first: it trains the space's mentor if there is none yet and writes
the mentor cache beside it, as any first sweep of a space does. The issue's target (issue 8):
with Ray running, start to the first cohort training in ≤ 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:  # the clock starts when this process did
    import psutil

    PROCESS_START = psutil.Process().create_time()
except ImportError:
    PROCESS_START = time.time()

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# what `total` is made of: the driver's phases, then `to_train` (Tune's start to the first cohort training)
# split by the first trial's own clock: Tune's start and the worker's start, the trial side's imports in
# it, Ray handing the call its payload, the data to the device
PHASES = ("imports", "ray_init", "mentor", "setup", "to_train")
TRIAL_PHASES = ("tune_to_worker", "worker_imports", "to_call", "data_to_device")


def child(args) -> None:
    """One timed sweep, in its own process; writes its phases to `args.child`."""
    t_imports = time.time()
    from search.spaces import load_space
    from search.sweep.run import run_sweep

    space = load_space(args.space)
    space = space.model_copy(update={
        "name": f"fixed-cost-{os.getpid()}",
        "budget": space.budget.model_copy(update={"mentees": 8, "reevaluate_seeds": 0}),
        "train": space.train.model_copy(update={"epochs": 1})})
    t_call = time.time()
    s = run_sweep(space, tracking_uri=args.uri, workdir=args.work, show_progress=False)
    p = s.phases
    first = min((t for t in s.trial_timings if "train_started_at" in t), key=lambda t: t["train_started_at"])
    fit_at = t_call + p["ray_init"] + p["mentor"] + p["setup"]  # wall clock of tuner.fit()
    row = {"imports": t_call - PROCESS_START, "ray_init": p["ray_init"], "mentor": p["mentor"], "setup": p["setup"],
           "to_train": p["to_first_cohort"] - p["ray_init"] - p["mentor"] - p["setup"],
           "total": t_call - PROCESS_START + p["to_first_cohort"],
           "before_imports": t_imports - PROCESS_START}  # interpreter start and this file's own imports
    if "process_started_at" in first:  # the trial's own clock (search/train/trial.py)
        row.update(tune_to_worker=first["process_started_at"] - fit_at,
                   worker_imports=first["imported_at"] - first["process_started_at"],
                   to_call=first["called_at"] - first["imported_at"], data_to_device=first["data_to_device"])
    # after `total`: the first cohort's groups built, then its first epoch (warm-up steps, graph capture)
    row.update(build=first.get("train.build", float("nan")), first_epoch=first.get("train.first_epoch", float("nan")))
    Path(args.child).write_text(json.dumps(row))


def _ray_answers() -> bool:
    import socket

    from ray._private.utils import read_ray_address

    host, _, port = (os.environ.get("RAY_ADDRESS") or read_ray_address() or "").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except (OSError, ValueError):
        return False


def _sweep(args, work: Path, cache_dir: Path) -> dict:
    out = work / f"row-{time.time_ns()}.json"
    cmd = [sys.executable, __file__, "--child", str(out), "--space", args.space,
           "--uri", f"sqlite:///{work / 'mlflow.db'}", "--work", str(work / "runs")]
    subprocess.run(cmd, check=True, env={**os.environ, "MENTEE_CACHE_DIR": str(cache_dir)})
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="spaces/mnist1d.yaml", help="the space whose sweeps are timed")
    ap.add_argument("--repeats", type=int, default=3, help="timed sweeps of each kind (default 3)")
    ap.add_argument("--smoke", action="store_true",
                    help="a CPU check that it runs: spaces/quickstart.yaml (a small mentor), one repeat")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for the JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--uri", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.smoke:
        args.space, args.repeats = str(ROOT / "spaces" / "quickstart.yaml"), 1
    if args.repeats < 1:
        ap.exit(2, f"{ap.prog}: --repeats: expected an integer ≥ 1, got {args.repeats}\n")
    if not _ray_answers():
        ap.exit(2, f"{ap.prog}: no running Ray on this machine: start one first with `ray start --head` "
                   "(this measures a sweep against a warm cluster)\n")
    import torch

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu-{os.cpu_count()}cores"
    work = Path(tempfile.mkdtemp(prefix=".fixed-cost-", dir=ROOT / "bench"))
    shared = work / "cache"
    _sweep(args, work, shared)  # unmeasured: the mentor and its cache, and the dataset in `shared`
    rows: dict[str, list[dict]] = {"first sweep": [], "later sweep": []}
    for i in range(args.repeats):
        rows["first sweep"].append(_sweep(args, work, work / f"empty-{i}"))
        rows["later sweep"].append(_sweep(args, work, shared))
    cols = (*PHASES, "total", *TRIAL_PHASES, "build", "first_epoch")
    med = {k: {ph: statistics.median(r.get(ph, float("nan")) for r in rs) for ph in cols} for k, rs in rows.items()}
    print(f"\na sweep's fixed cost with Ray running, {card}, {args.space} (median of {args.repeats}; seconds)")
    print(f"{'':<12}" + "".join(f"{ph:>10}" for ph in (*PHASES, "total")) + "   | to_train: " +
          "".join(f"{ph:>16}" for ph in TRIAL_PHASES))
    for k, m in med.items():
        print(f"{k:<12}" + "".join(f"{m[ph]:>10.2f}" for ph in (*PHASES, "total")) + "   |           " +
              "".join(f"{m[ph]:>16.2f}" for ph in TRIAL_PHASES))
    print("imports: process start to run_sweep's call; ray_init: the space's plan (dataset), MLflow, joining Ray;\n"
          "to_train = tune_to_worker (tuner.fit() to the trial's process start) + worker_imports (that process's\n"
          "start to the trial side imported) + to_call (to the trainable's call: Ray, Tune, the payload) +\n"
          "data_to_device")
    for k, m in med.items():
        print(f"{k}: then the first cohort's groups built in {m['build']:.2f} s, its first epoch (warm-up steps, "
              f"graph capture) {m['first_epoch']:.2f} s")
    res = {"bench": "fixed_cost", "card": card, "space": args.space, "repeats": args.repeats, "median": med,
           "rows": rows, "python": platform.python_version(), "torch": torch.__version__, "target_s": 5.0}
    path = Path(args.out) / f"fixed_cost-{card.replace(' ', '-')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
