"""Cohorts against a plain Ray Tune sweep: the same mentee configs, both ways.

    python bench/sweep_throughput.py                       # 128 mentees, both ways, on this machine
    python bench/sweep_throughput.py --mentees 16 --epochs 3 --only cohort   # a quick look

(a) *plain*: the script Ray's documentation shows — one trial per mentee, 8 trials per
    GPU (gpu=0.125), OptunaSearch over the configs (each config a point to evaluate),
    MLflowLoggerCallback, a per-epoch `tune.report`, an ordinary PyTorch training loop.
(b) *cohort*: `search.sweep.run_sweep` with the same configs: cohorts of K mentees fused
    in one process, the driver the only MLflow writer.

Prints the wall time of each, their ratio, mentee-samples per second per GPU (samples ×
epochs, summed over mentees), the hypervolume of each val-accuracy-vs-params front, and
the step throughput of 1 mentee and of K fused mentees. Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import setup  # noqa: E402
from search.config import ArchConfig, MemberConfig, TermConfig, TrainConfig  # noqa: E402
from search.train.cohort import train_cohort  # noqa: E402
from search.train.group import build_member  # noqa: E402


def make_configs(n: int, epochs: int, seed: int = 0) -> list[MemberConfig]:
    """n/2 architectures of mixed depth and width, each independent and mentored."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        depth, width, growth = rng.choice([1, 2, 3]), rng.choice([4, 8, 16, 32]), rng.choice([1, 2])
        arch = ArchConfig("conv1d", tuple(min(128, width * growth ** i) for i in range(depth)), 5)
        train = TrainConfig(epochs=epochs, batch_size=128, lr=10 ** rng.uniform(-2.5, -1.5), seed=len(out))
        hint = TermConfig("hint", 10 ** rng.uniform(-2, 0), {"student": f"layer{depth}", "metric": "rmse",
                                                             "teacher": rng.choice(["layer3", "layer4"])})
        mentored = MemberConfig(arch=arch, train=train, terms=(TermConfig("ce", 1.0), hint))
        out += [mentored.twin(), mentored]
    return out[:n]


# ------------------------------------------------------------ (a) the plain script

def plain_trainable(config, payload, configs):
    """One mentee per trial, as in Ray's tutorials: data to the device, a loop, a report per epoch."""
    from ray import tune

    from search.train.trial import on_device

    cfg = MemberConfig.from_dict(configs[config["idx"]])
    splits, cache = on_device(payload)
    dev = splits.x_train.device
    torch.manual_seed(cfg.train.seed)
    terms = cfg.active_terms()
    model = build_member(cfg.arch, terms, splits.input_shape, splits.num_classes, payload.mentor_shapes).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    n, bs = len(splits.x_train), cfg.train.batch_size
    steps = n // bs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps * cfg.train.epochs)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    w = torch.tensor([t.weight for t in terms], device=dev)
    teacher = [t.params["teacher"] for t in terms if "teacher" in t.params]
    params = sum(p.numel() for p in model.net.parameters())
    for epoch in range(cfg.train.epochs):
        model.train()
        order = torch.randperm(n, generator=gen).to(dev)
        for i in range(steps):
            ids = order[i * bs:(i + 1) * bs]
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                _, losses = model(splits.x_train[ids], splits.y_train[ids], {t: cache.feats[t][ids] for t in teacher},
                                  [{} for _ in terms])
                loss = (w * losses).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            val = (model(splits.x_val)[0].argmax(-1) == splits.y_val).float().mean().item()
        tune.report({"val_acc": val, "params": params, "epoch": epoch + 1})


def run_plain(configs, payload, gpus: int, uri: str) -> dict:
    import ray
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, logging_level="ERROR")
    search = OptunaSearch(metric=["val_acc", "params"], mode=["max", "min"],
                          points_to_evaluate=[{"idx": i} for i in range(len(configs))])
    per_trial = {"cpu": 1, "gpu": 0.125} if gpus else {"cpu": 1}
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(plain_trainable, payload=payload,
                                                 configs=[c.to_dict() for c in configs]), per_trial),
        param_space={"idx": tune.randint(0, len(configs))},
        tune_config=tune.TuneConfig(search_alg=search, num_samples=len(configs),
                                    max_concurrent_trials=8 * max(gpus, 1) if gpus else 2),
        run_config=tune.RunConfig(name=f"plain-{int(time.time())}", storage_path=str(Path("bench-work").resolve()),
                                  verbose=0, callbacks=[MLflowLoggerCallback(tracking_uri=uri,
                                                                             experiment_name="bench-plain")]))
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    ray.shutdown()
    rows = [{"idx": r.config["idx"], "val_acc": r.metrics.get("val_acc", float("nan")),
             "params": r.metrics.get("params", 0)} for r in grid if r.metrics]
    return {"wall_s": wall, "rows": rows}


# ----------------------------------------------------------- (b) the cohort sweep

def run_cohort(space, configs, uri: str) -> dict:
    import ray

    from search.sweep.run import run_sweep
    from search.tracking import load_runs

    s = run_sweep(space, tracking_uri=uri, configs=configs, workdir="bench-work", show_progress=False)
    ray.shutdown()
    df = load_runs(uri, parent_run_id=s.parent_run_id)
    # a config is its architecture, seed and arm (each pair of make_configs shares arch and seed)
    idx = {(c.arch.key(), c.train.seed, c.independent): i for i, c in enumerate(configs)}
    rows = [{"idx": idx[(r.arch_key, r.seed, bool(r.independent))], "val_acc": r.val_acc, "params": r.params}
            for r in df.itertuples() if r.status == "finished"]
    return {"wall_s": s.seconds, "rows": rows, "trials": s.trials, "phases": s.phases,
            "trial_timings": s.trial_timings}


# --------------------------------------------------------------- step throughput

def step_throughput(splits, cache, shapes, ks=(1, 8, 32, 64, 128), epochs: int = 20) -> list[dict]:
    """Samples/s of training steps alone (no Ray, no MLflow): 1 mentee vs K fused."""
    out = []
    for k in ks:
        for graph in ([False, True] if splits.x_train.is_cuda else [False]):
            hint = TermConfig("hint", 0.1, {"student": "layer2", "teacher": "layer4", "metric": "rmse"})
            cfgs = [MemberConfig(ArchConfig("conv1d", (16, 32), 5), TrainConfig(epochs=epochs, seed=i),
                                 (TermConfig("ce", 1.0), hint)) for i in range(k)]
            train_cohort(cfgs[:1], splits, cache=cache, mentor_shapes=shapes, use_graph=graph)  # warm-up
            if splits.x_train.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            train_cohort(cfgs, splits, cache=cache, mentor_shapes=shapes, use_graph=graph, keep_weights=False)
            if splits.x_train.is_cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            steps = len(splits.x_train) // 128 * 128
            out.append({"K": k, "cuda_graph": graph, "seconds": dt,
                        "mentee_samples_per_s": k * epochs * steps / dt})
    return out


def hv(rows, ref_params: float) -> float:
    import pandas as pd

    from search.pareto import hypervolume_2d, pareto_front

    df = pd.DataFrame(rows).assign(status="finished", run_id=lambda d: d["idx"].astype(str))
    return hypervolume_2d(pareto_front(df, acc="val_acc", cost="params"), acc="val_acc", cost="params",
                          ref_cost=ref_params, ref_acc=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mentees", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--only", choices=["plain", "cohort", "steps"], default=None)
    ap.add_argument("--space", default=str(ROOT / "spaces" / "mnist1d.yaml"))
    ap.add_argument("--ks", default="1,8,32,64,128", help="cohort sizes for the step-throughput table")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

    b = setup(args.space)
    space, card, splits, taps, cache, shapes = b.space, b.card, b.splits, b.taps, b.cache, b.shapes
    gpus = torch.cuda.device_count()
    configs = make_configs(args.mentees, args.epochs)
    hint = space.terms["hint"].model_copy(update={"taps": {"last": taps}})
    space = space.model_copy(update={"terms": {"ce": space.terms["ce"], "hint": hint}})
    uri = f"sqlite:///{Path('bench-work').resolve()}/mlflow.db"
    Path("bench-work").mkdir(exist_ok=True)
    res: dict = {"card": card, "gpus": gpus, "mentees": len(configs), "epochs": args.epochs,
                 "n_train": len(splits.x_train), "torch": torch.__version__, "python": platform.python_version()}
    samples = len(configs) * args.epochs * (len(splits.x_train) // 128 * 128)

    if args.only in (None, "steps"):
        res["steps"] = step_throughput(splits, cache, shapes, ks=[int(k) for k in args.ks.split(",")])
    if args.only in (None, "cohort"):
        res["cohort"] = run_cohort(space, configs, uri)
    if args.only in (None, "plain"):
        from search.sweep.plan import plan_sweep, trial_payload
        plan = plan_sweep(space, gpus=gpus)
        feats = {k: v.cpu().numpy() for k, v in cache.feats.items()}
        mentor_out = {"logits": cache.logits.cpu().numpy(), "feats": feats, "shapes": shapes}
        res["plain"] = run_plain(configs, trial_payload(plan, mentor_out), gpus, uri)

    ref = max(c["params"] for k in ("plain", "cohort") if k in res for c in res[k]["rows"]) * 1.1 \
        if any(k in res for k in ("plain", "cohort")) else 0
    print(f"\ncard: {card} ({gpus} GPU), {len(configs)} mentees × {args.epochs} epochs × "
          f"{len(splits.x_train)} samples")
    print(f"{'way':<8} {'wall s':>8} {'mentee-samples/s/GPU':>22} {'hypervolume':>12} {'finished':>9}")
    for k in ("plain", "cohort"):
        if k in res:
            r = res[k]
            r["samples_per_s_per_gpu"] = samples / r["wall_s"] / max(gpus, 1)
            r["hypervolume"] = hv(r["rows"], ref)
            print(f"{k:<8} {r['wall_s']:>8.1f} {r['samples_per_s_per_gpu']:>22,.0f} {r['hypervolume']:>12.4f} "
                  f"{len(r['rows']):>9}")
            if "phases" in r:
                print("         " + ", ".join(f"{p} {v:.1f} s" for p, v in r["phases"].items()))
                for t in r["trial_timings"]:
                    print("         trial: " + ", ".join(f"{p} {v:.1f} s" for p, v in t.items()))
    if "plain" in res and "cohort" in res:
        res["speedup"] = res["plain"]["wall_s"] / res["cohort"]["wall_s"]
        res["hv_rel_diff"] = abs(res["cohort"]["hypervolume"] / res["plain"]["hypervolume"] - 1)
        print(f"speed-up (plain / cohort): {res['speedup']:.1f}×; hypervolume difference "
              f"{100 * res['hv_rel_diff']:.2f}%")
    if "steps" in res:
        print(f"\n{'K fused':>8} {'CUDA graph':>11} {'mentee-samples/s':>18}")
        for r in res["steps"]:
            print(f"{r['K']:>8} {str(r['cuda_graph']):>11} {r['mentee_samples_per_s']:>18,.0f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = card.replace(" ", "-").replace("/", "-")
    path = out / f"sweep_throughput-{name}-{args.only or 'all'}.json"
    path.write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
