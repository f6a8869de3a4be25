"""Scaling benchmarks: mentor training data-parallel (DDP), and the sweep on 1, 2 and 4 GPUs.

    python bench/scaling.py --only ddp               # 1, 2, 4 GPUs (those present), NCCL, bf16 autocast
    python bench/scaling.py --only ddp --smoke       # tiny net, 1-2 workers, a few steps: checks the script
    python bench/scaling.py --only sweep             # 1024 mentees × 10 epochs on 1, 2, 4 GPUs (those present)

ddp: samples/s of the training step `mentee mentor train --workers N` runs (`search.train.ddp`:
the net wrapped by Ray Train's `prepare_model` in DDP, AdamW, bf16 autocast on GPUs), on 1, 2 and
4 Ray Train workers, for a compute-bound VGG-style mentor (conv2d 64,128,256,256,512, kernel 3,
batch norm) on SYNTHETIC 3×32×32 inputs kept on each device (no data loading is measured).
Weak scaling: a fixed batch per worker, so the global batch grows with the workers. Each run
warms up (cuDNN picks its kernels, NCCL connects), then times `--steps` steps `--repeats` times;
the slowest worker's time counts, the median window is reported. With 1 worker Ray Train does
not wrap the net in DDP, so that row is plain single-device training: the speed-up includes
DDP's cost. Prints a table, writes bench/results/scaling-ddp-<card>.json (-smoke added for --smoke).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Ray's workers are fresh processes: they find `search` through PYTHONPATH (set before Ray starts)
os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
# NVLink multicast stays off on shared GPU hosts (it can take every GPU of the host down); Ray's
# workers inherit these from this process. A value already set is kept.
for var in ("NCCL_NVLS_ENABLE", "NVSHMEM_DISABLE_NVLS", "TORCH_SYMM_MEM_DISABLE_MULTICAST"):
    os.environ.setdefault(var, "0" if var == "NCCL_NVLS_ENABLE" else "1")

from search.config import ArchConfig  # noqa: E402
from search.measure import count_macs, count_params  # noqa: E402
from search.models import create_mentee  # noqa: E402

INPUT_SHAPE, NUM_CLASSES = (3, 32, 32), 10
INPUTS = "synthetic inputs: torch.randn 3x32x32, random labels of 10 classes, held on the device"


# ------------------------------------------------------------------ mentor DDP

def ddp_throughput_loop(cfg: dict) -> None:
    """One Ray Train worker: warm up, then time fixed windows of steps on synthetic data."""
    import ray.train
    import torch.distributed as dist
    from ray.train.torch import get_device

    from search.train.ddp import prepare_mentor, report_final, train_step

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    dev = get_device()
    model, opt = prepare_mentor(cfg["arch"], INPUT_SHAPE, NUM_CLASSES, lr=1e-3, seed=0)
    bs = cfg["batch"]
    gen = torch.Generator(device=dev).manual_seed(rank)
    pool = 4 * bs  # a pool of random samples; each step gathers a random batch of it, as the mentor loop does
    x = torch.randn(pool, *INPUT_SHAPE, device=dev, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (pool,), device=dev, generator=gen)

    def window(steps: int) -> float:
        """Seconds the slowest worker took for `steps` steps, all starting together."""
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if dist.is_initialized():  # NCCL's barrier wants the device, or it guesses one (and warns)
            dist.barrier(device_ids=[torch.cuda.current_device()]) if dev.type == "cuda" else dist.barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            ids = torch.randint(0, pool, (bs,), device=dev, generator=gen)
            train_step(model, opt, x[ids], y[ids], 1e-3)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = torch.tensor([time.perf_counter() - t0], dtype=torch.float64, device=dev)
        if dist.is_initialized():
            dist.all_reduce(dt, op=dist.ReduceOp.MAX)
        return float(dt)

    window(cfg["warmup"])
    secs = [window(cfg["steps"]) for _ in range(cfg["repeats"])]
    rates = [world * bs * cfg["steps"] / s for s in secs]
    report_final({"world_size": world, "samples_per_s": statistics.median(rates), "windows": rates,
                  "step_ms": 1000 * statistics.median(secs) / cfg["steps"],
                  "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"},
                 {} if rank == 0 else None)  # rank 0's checkpoint carries the metrics to the driver


def bench_ddp(args) -> dict:
    from search.train.ddp import fit_workers, local_ray

    gpus = torch.cuda.device_count()
    use_gpu = gpus > 0
    have = gpus if use_gpu else (os.cpu_count() or 1)
    wanted = [int(w) for w in args.workers.split(",")]
    counts = [w for w in wanted if w <= have]
    if skipped := [w for w in wanted if w > have]:
        print(f"skipping {skipped} workers: this machine has {have} {'GPUs' if use_gpu else 'CPUs'}")
    widths = (8, 16) if args.smoke else tuple(int(w) for w in args.widths.split(","))
    arch = ArchConfig("conv2d", widths, 3, True)
    net = create_mentee(arch, INPUT_SHAPE, NUM_CLASSES)
    card = torch.cuda.get_device_name(0) if use_gpu else "cpu"
    res = {"bench": "scaling-ddp", "inputs": INPUTS, "card": card, "gpus": gpus, "smoke": args.smoke,
           "backend": "nccl" if use_gpu else "gloo", "precision": "bf16 autocast" if use_gpu else "fp32",
           "net": {"family": arch.family, "widths": list(widths), "kernel": 3, "batch_norm": True,
                   "params": count_params(net), "macs_per_sample": count_macs(net, INPUT_SHAPE)},
           "batch_per_worker": args.batch, "warmup": args.warmup, "steps": args.steps, "repeats": args.repeats,
           "scaling": "weak (fixed batch per worker)", "torch": torch.__version__,
           "python": platform.python_version(), "rows": []}
    import ray
    res["ray"] = ray.__version__
    cfg = {"arch": arch, "batch": args.batch, "warmup": args.warmup, "steps": args.steps, "repeats": args.repeats}
    t0 = time.perf_counter()
    with local_ray(), tempfile.TemporaryDirectory(prefix=".scaling-ddp-", dir=ROOT / "bench") as storage:
        for w in counts:
            t1 = time.perf_counter()
            m = fit_workers(ddp_throughput_loop, cfg, workers=w, use_gpu=use_gpu, storage=storage,
                            name=f"ddp-{w}").metrics
            assert m["world_size"] == w, m
            res["rows"].append({"workers": w, "global_batch": w * args.batch, "samples_per_s": m["samples_per_s"],
                                "step_ms": m["step_ms"], "windows_samples_per_s": m["windows"],
                                "worker_device": m["device"], "fit_wall_s": time.perf_counter() - t1})
    res["wall_s"] = time.perf_counter() - t0
    base = res["rows"][0]["samples_per_s"] if res["rows"] and res["rows"][0]["workers"] == 1 else None
    for r in res["rows"]:
        r["speedup"] = r["samples_per_s"] / base if base else None
        r["efficiency"] = r["speedup"] / r["workers"] if base else None

    n = res["net"]
    print(f"\nmentor DDP throughput on {card}: {arch.family} {list(widths)} k3 BN, {n['params']:,} params, "
          f"{n['macs_per_sample'] / 1e6:.1f} M MACs/sample; {INPUTS}")
    print(f"{res['backend']}, {res['precision']}, batch {args.batch} per worker, {args.steps} steps × "
          f"{args.repeats} after {args.warmup} warm-up (median); whole run {res['wall_s']:.0f} s")
    print(f"{'workers':>7} {'global batch':>12} {'samples/s':>12} {'step ms':>8} {'speed-up':>9} {'efficiency':>10}")
    for r in res["rows"]:
        sp = f"{r['speedup']:.2f}×" if r["speedup"] else "-"
        ef = f"{100 * r['efficiency']:.0f}%" if r["efficiency"] else "-"
        print(f"{r['workers']:>7} {r['global_batch']:>12} {r['samples_per_s']:>12,.0f} {r['step_ms']:>8.2f} "
              f"{sp:>9} {ef:>10}")
    name = card.replace(" ", "-").replace("/", "-") + ("-smoke" if args.smoke else "")
    path = Path(args.out) / f"scaling-ddp-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")
    return res


# ------------------------------------------------------------------- the sweep

def bench_sweep(args) -> dict:
    """Sweep throughput on 1, 2 and 4 GPUs (those present): the same space, budget and seed each
    time, in a new local Ray that has exactly n GPUs; `concurrency: auto` runs n cohorts at once
    and `cohort_size: auto` evens the cohorts into whole waves. Mentee-samples/s counts every
    member's epochs × training samples over the whole sweep (ray.init to the last MLflow write).
    The warm fixed cost is measured with Ray already running: from `run_sweep`'s call to its first
    cohort's training."""
    import ray

    from search.spaces import load_space
    from search.sweep.run import run_sweep
    from search.tracking import load_runs

    gpus = torch.cuda.device_count()
    use_gpu = gpus > 0
    counts = [g for g in (int(w) for w in args.workers.split(",")) if g <= max(gpus, 1)] if use_gpu else [0]
    space = load_space(args.space)
    budget = space.budget.model_copy(update={"mentees": args.mentees, "cohort_size": "auto", "concurrency": "auto"})
    space = space.model_copy(update={"budget": budget,
                                     "train": space.train.model_copy(update={"epochs": args.epochs})})
    card = torch.cuda.get_device_name(0) if use_gpu else "cpu"
    work = Path(tempfile.mkdtemp(prefix=".scaling-sweep-", dir=ROOT / "bench"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    res = {"bench": "scaling-sweep", "card": card, "gpus": gpus, "smoke": args.smoke, "space": args.space,
           "mentees": args.mentees, "epochs": args.epochs, "torch": torch.__version__,
           "python": platform.python_version(), "ray": ray.__version__, "rows": []}
    for n in counts:
        ray.shutdown()
        ray.init(address="local", num_gpus=n, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        sp = space.model_copy(update={"name": f"scaling-{n}gpu"})
        s = run_sweep(sp, tracking_uri=uri, workdir=work / "runs", show_progress=False)
        runs = load_runs(uri, parent_run_id=s.parent_run_id)
        # Ray is running now: a second, tiny sweep measures the warm fixed cost
        tiny = sp.model_copy(update={"name": f"warm-{n}gpu", "budget": budget.model_copy(update={"mentees": 8}),
                                     "train": sp.train.model_copy(update={"epochs": 1})})
        w = run_sweep(tiny, tracking_uri=uri, workdir=work / "runs", show_progress=False)
        res["rows"].append({"gpus": n, "wall_s": s.seconds, "phases": s.phases, "trials": s.trials,
                            "finished": s.finished, "nodes": len(s.nodes), "mentee_samples": s.mentee_samples,
                            "mentee_samples_per_s": s.mentee_samples / s.seconds,
                            "best_val_acc": float(runs.val_acc.max()),
                            "warm_fixed_cost_s": w.phases.get("to_first_cohort")})
    ray.shutdown()
    base = res["rows"][0]
    for r in res["rows"]:
        r["speedup"] = base["wall_s"] / r["wall_s"]
    print(f"\nsweep scaling on {card}: {args.space}, {args.mentees} mentees × {args.epochs} epochs")
    print(f"{'GPUs':>5} {'wall s':>8} {'fit s':>7} {'cohorts':>8} {'mentee-samples/s':>17} {'speed-up':>9} "
          f"{'warm fixed cost s':>18}")
    for r in res["rows"]:
        warm = "-" if r["warm_fixed_cost_s"] is None else f"{r['warm_fixed_cost_s']:.2f}"
        print(f"{r['gpus']:>5} {r['wall_s']:>8.1f} {r['phases']['fit']:>7.1f} {r['trials']:>8} "
              f"{r['mentee_samples_per_s']:>17,.0f} {r['speedup']:>8.2f}× {warm:>18}")
    name = card.replace(" ", "-").replace("/", "-") + ("-smoke" if args.smoke else "")
    path = Path(args.out) / f"scaling-sweep-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {path}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["ddp", "sweep", "all"], default="all")
    ap.add_argument("--smoke", action="store_true", help="tiny net, 1-2 workers, a few steps (checks the script)")
    ap.add_argument("--workers", default=None, help="worker counts, default 1,2,4 (1,2 with --smoke)")
    ap.add_argument("--widths", default="64,128,256,256,512", help="conv2d mentor widths (ddp)")
    ap.add_argument("--batch", type=int, default=None, help="batch per worker (default 512; 16 with --smoke)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 30; 2 with --smoke)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per window (default 150; 5 with --smoke)")
    ap.add_argument("--repeats", type=int, default=3, help="timed windows; the median is reported")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--space", default="spaces/mnist1d.yaml", help="sweep: the space searched")
    ap.add_argument("--mentees", type=int, default=None, help="sweep: mentees (default 1024; 16 with --smoke)")
    ap.add_argument("--epochs", type=int, default=None, help="sweep: epochs per mentee (default 10; 1 with --smoke)")
    args = ap.parse_args()
    smoke = {"workers": "1,2", "batch": 16, "warmup": 2, "steps": 5, "mentees": 16, "epochs": 1}
    full = {"workers": "1,2,4", "batch": 512, "warmup": 30, "steps": 150, "mentees": 1024, "epochs": 10}
    for k, v in (smoke if args.smoke else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.only in ("ddp", "all"):
        bench_ddp(args)
    if args.only in ("sweep", "all"):
        bench_sweep(args)


if __name__ == "__main__":
    main()
