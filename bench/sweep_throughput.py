"""Cohorts against a plain Ray Tune sweep and against unfused training: the same mentee configs.

    ray start --head --include-dashboard false        # once: sweeps then join it (search.sweep.run.connect_ray)
    python bench/sweep_throughput.py --mentees 1024 --epochs 40 --only sweep   # the issue's sweep targets
    python bench/sweep_throughput.py --only steps                               # fused-step throughput
    python bench/sweep_throughput.py --smoke                                    # everything, tiny, on a CPU

`--only sweep` runs, in this order:
(a) *cohort*: `search.sweep.run_sweep` with the configs, in a child process, timed from that
    process's start (psutil) to the return of `run_sweep`, i.e. after the last MLflow write.
    A Ray already running on the machine (`ray start --head`) is reused, as `mentee sweep` does;
    the JSON says whether it was.
(b) *plain*: the script Ray's documentation shows — one trial per mentee, 8 trials per GPU,
    OptunaSearch over the configs, MLflowLoggerCallback, a per-epoch `tune.report`, an ordinary
    PyTorch loop — on the first `--plain-subset` configs. Its cost is linear in trials, so its
    wall time past `ray.init` is scaled to all configs (the JSON says from how many).
(c) *unfused*: `train_cohort(..., fuse=False)` (every member its own group: the reference the
    fused step must match) on the first `--unfused-subset` configs, each with the seeds the cohort
    sweep gave it (a mentee's accuracy is its seeds' mean in both), in-process.
Then the speed-up at equal work, mentee-samples/s/GPU (samples × epochs summed over mentees,
over the whole sweep) and each front's hypervolume (val acc × log10 params), each compared on
the same configs. `--only steps` times training steps alone: K fused members of one structure,
and `--mixed` members of mixed depth, width and kernel (end to end, and the marginal rate of
extra epochs, which leaves out building and CUDA-graph capture). Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

try:  # the sweep's clock starts when its process did (psutil), else at this import
    import psutil

    PROCESS_START = psutil.Process().create_time()
except ImportError:
    PROCESS_START = time.time()

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search.config import ArchConfig, MemberConfig, TermConfig, TrainConfig  # noqa: E402


def make_configs(n: int, epochs: int, seed: int = 0, teachers=("layer3", "layer4")) -> list[MemberConfig]:
    """n/2 architectures of mixed depth, width and kernel, each independent and mentored."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        depth, width, growth = rng.choice([1, 2, 3]), rng.choice([4, 8, 16, 32]), rng.choice([1, 2])
        arch = ArchConfig("conv1d", tuple(min(128, width * growth ** i) for i in range(depth)), rng.choice([3, 5]))
        train = TrainConfig(epochs=epochs, batch_size=128, lr=10 ** rng.uniform(-2.5, -1.5), seed=len(out))
        hint = TermConfig("hint", 10 ** rng.uniform(-2, 0), {"student": f"layer{depth}", "metric": "rmse",
                                                             "teacher": rng.choice(list(teachers))})
        mentored = MemberConfig(arch=arch, train=train, terms=(TermConfig("ce", 1.0), hint))
        out += [mentored.twin(), mentored]
    return out[:n]


def bench_space(path: str, teachers: list[str], mentees: int = 0, in_flight: int = 1):
    """The space with its hint section pointed at `teachers` (the configs' hint targets);
    `in_flight` cohorts train at once on each GPU (each books 1/in_flight of it; on a CPU-only
    Ray, of a CPU), so one trains while the next is handed over and built."""
    from search.spaces import load_space

    space = load_space(path)
    hint = space.terms["hint"].model_copy(update={"taps": {"last": teachers}})
    # cohorts are sized from the budget's mentee count: make it the configs' count
    budget = space.budget.model_copy(update={"mentees": mentees}) if mentees else space.budget
    if in_flight > 1:
        share = 1.0 / in_flight
        budget = budget.model_copy(update={"gpus_per_trial": share} if torch.cuda.is_available() else
                                   {"cpus_per_trial": budget.cpus_per_trial * share})
    return space.model_copy(update={"terms": {"ce": space.terms["ce"], "hint": hint}, "budget": budget})


def smoke_space(path: str) -> str:
    """`path` with 1,000 samples instead of its dataset's size, written under bench-work/."""
    import yaml

    d = yaml.safe_load(Path(path).read_text())
    d.setdefault("dataset", {})["n_samples"] = 1000
    d["name"] = f"{d.get('name') or Path(path).stem}-smoke"
    out = Path("bench-work/smoke-space.yaml").resolve()
    out.write_text(yaml.safe_dump(d))
    return str(out)


def mentor_teachers(path: str) -> list[str]:
    """The mentor's last two conv taps (no CUDA: read from the space's mentor spec)."""
    from search.spaces import load_space

    arch = load_space(path).mentor.arch
    depth = len(arch.widths) if arch else 4
    return [f"layer{i}" for i in range(max(1, depth - 1), depth + 1)]


# ------------------------------------------------------------ (a) the cohort sweep

def sweep_child(args) -> None:
    """Runs in its own process: the timed sweep. Writes what it measured to `args.sweep_child`."""
    import ray
    from ray._private.utils import read_ray_address

    from search.sweep.run import run_sweep
    from search.tracking import load_runs

    teachers = mentor_teachers(args.space)
    configs = make_configs(args.mentees, args.epochs, teachers=teachers)
    last = read_ray_address()  # a `ray start` cluster that answers is joined (search.sweep.run.connect_ray)
    reused = bool(os.environ.get("RAY_ADDRESS")) or (last is not None and _answers(last))
    s = run_sweep(bench_space(args.space, teachers, len(configs), args.in_flight_one), tracking_uri=args.uri,
                  configs=configs, workdir="bench-work", show_progress=False)
    wall = time.time() - PROCESS_START  # the last MLflow write is done when run_sweep returns
    ray.shutdown()
    df = load_runs(args.uri, parent_run_id=s.parent_run_id)
    rows = [{"idx": int(r.member_id.split("-")[1]), "val_acc": r.val_acc, "params": r.params,
             "n_seeds": int(r.n_seeds)} for r in df.itertuples() if r.status == "finished"]
    Path(args.sweep_child).write_text(json.dumps({
        "wall_s": wall, "run_sweep_s": s.seconds, "ray_reused": reused, "mentee_samples": s.mentee_samples,
        "rows": rows, "trials": s.trials, "phases": s.phases, "trial_timings": s.trial_timings}, default=float))


def _answers(address: str) -> bool:
    import socket

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except (OSError, ValueError):
        return False


def run_cohort(args, in_flight: int = 1) -> dict:
    out = Path("bench-work") / f"cohort-{os.getpid()}-{in_flight}.json"
    cmd = [sys.executable, __file__, "--sweep-child", str(out), "--mentees", str(args.mentees), "--epochs",
           str(args.epochs), "--space", args.space, "--uri", args.uri, "--in-flight-one", str(in_flight)]
    subprocess.run(cmd, check=True)
    return {**json.loads(out.read_text()), "in_flight": in_flight}


def gaps(timings: list[dict]) -> dict:
    """The GPU's idle time between cohorts: per worker process, from one cohort's end of training to
    the next one's start there (`gap` in the trial's timings), and its share of the sweep's `fit`."""
    g = sorted(t["gap"] for t in timings if "gap" in t)
    build = sum(t.get("train.build", 0.0) for t in timings)  # groups built on the CPU: the GPU waits then too
    if not g:
        return {"n": 0, "build_sum_s": build}
    return {"n": len(g), "median_s": g[len(g) // 2], "max_s": g[-1], "sum_s": sum(g), "build_sum_s": build}


# ------------------------------------------------------------ (b) the plain script

def plain_trainable(config, payload, configs):
    """One mentee per trial, as in Ray's tutorials: data to the device, a loop, a report per epoch."""
    from ray import tune

    from search.train.group import build_member
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
    t_init = time.perf_counter() - t0
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
    return {"wall_s_measured": wall, "ray_init_s": t_init, "rows": rows}


# --------------------------------------------------------------- (c) unfused

def run_unfused(configs, b, seeds: int = 1) -> dict:
    """Each config trained alone with the seeds the sweep gave it (`search.mentees.search_seeds`),
    its validation accuracy their mean, as the sweep records a mentee: the fronts compare alike."""
    import dataclasses

    from search.mentees import search_seeds
    from search.train.cohort import train_cohort

    members = [(i, dataclasses.replace(c, train=dataclasses.replace(c.train, seed=s)))
               for i, c in enumerate(configs) for s in search_seeds(c, seeds)]
    t0 = time.perf_counter()
    res = train_cohort([m for _, m in members], b.splits, cache=b.cache, mentor_shapes=b.shapes, fuse=False,
                       keep_weights=False)
    wall = time.perf_counter() - t0
    done: dict[int, list] = {}
    for (i, _), r in zip(members, res):
        done.setdefault(i, []).append(r)
    rows = [{"idx": i, "val_acc": sum(r.val_acc for r in rs) / len(rs), "params": rs[0].cost["params"],
             "n_seeds": len(rs)} for i, rs in done.items() if all(r.status == "finished" for r in rs)]
    return {"wall_s": wall, "rows": rows, "seeds": seeds}


# --------------------------------------------------------------- step throughput

def _timed(cfgs, b, graph: bool) -> float:
    from search.train.cohort import train_cohort

    if b.splits.x_train.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train_cohort(cfgs, b.splits, cache=b.cache, mentor_shapes=b.shapes, use_graph=graph, keep_weights=False)
    if b.splits.x_train.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def step_throughput(b, ks, mixed: int, epochs: int) -> list[dict]:
    """Samples/s of training alone (no Ray, no MLflow): train_cohort end to end after a warm-up
    call (one-time CUDA set-up is not counted), and for the mixed cohort also the marginal rate
    of `epochs` more epochs (no building, no capture: the replayed steps and evaluations)."""
    from search.terms import TERMS
    from search.train.group import plan_groups

    per_epoch = len(b.splits.x_train) // 128 * 128
    out = []
    hint = TermConfig("hint", 0.1, {"student": "layer2", "teacher": b.taps[-1], "metric": "rmse"})
    same = lambda k, e: [MemberConfig(ArchConfig("conv1d", (16, 32), 5), TrainConfig(epochs=e, seed=i),  # noqa: E731
                                      (TermConfig("ce", 1.0), hint)) for i in range(k)]
    for k in ks:
        for graph in ([False, True] if b.splits.x_train.is_cuda else [False]):
            _timed(same(1, 1), b, graph)  # warm-up
            dt = _timed(same(k, epochs), b, graph)
            out.append({"members": f"{k} same (16-32)", "K": k, "cuda_graph": graph, "groups": 1, "seconds": dt,
                        "mentee_samples_per_s": k * epochs * per_epoch / dt})
    if mixed:
        graph = b.splits.x_train.is_cuda
        cfgs = lambda e: make_configs(mixed, e, seed=1, teachers=b.taps)  # noqa: E731
        groups = len(plan_groups(cfgs(1), b.splits.input_shape, b.splits.num_classes))
        _timed(cfgs(1), b, graph)  # warm-up: cuDNN picks its kernels for these shapes
        dt = _timed(cfgs(epochs), b, graph)
        out.append({"members": f"{mixed} mixed depth/width/kernel", "K": mixed, "cuda_graph": graph,
                    "groups": groups, "seconds": dt, "mentee_samples_per_s": mixed * epochs * per_epoch / dt})
        # the same architectures, every member independent: what the loss slots (hints) cost
        dt = _timed([c.twin() for c in cfgs(epochs)], b, graph)
        out.append({"members": f"{mixed} mixed, all independent (ce only)", "K": mixed, "cuda_graph": graph,
                    "groups": groups, "seconds": dt, "mentee_samples_per_s": mixed * epochs * per_epoch / dt})
        # hints as before they merged across depths: a slot per (student tap, mentor tap), for comparison
        hint_term = TERMS["hint"]
        hint_term.merges_students = False  # type: ignore[attr-defined]
        try:
            dt = _timed(cfgs(epochs), b, graph)
        finally:
            hint_term.merges_students = True  # type: ignore[attr-defined]
        out.append({"members": f"{mixed} mixed, hint slots per depth", "K": mixed, "cuda_graph": graph,
                    "groups": groups, "seconds": dt, "mentee_samples_per_s": mixed * epochs * per_epoch / dt})
        if not graph:  # the marginal rate needs steady timings: a GPU's, not a shared CPU's
            return out
        d1, d2 = _timed(cfgs(epochs), b, graph), _timed(cfgs(2 * epochs), b, graph)
        out.append({"members": f"{mixed} mixed, marginal epochs", "K": mixed, "cuda_graph": graph, "groups": groups,
                    "seconds": d2 - d1, "mentee_samples_per_s": mixed * epochs * per_epoch / max(d2 - d1, 1e-9)})
    return out


def hv(rows, ref_params: float, only=None) -> float:
    import pandas as pd

    from search.pareto import hypervolume_2d, pareto_front

    rows = [r for r in rows if only is None or r["idx"] in only]
    if not rows:
        return float("nan")
    df = pd.DataFrame(rows).assign(status="finished", run_id=lambda d: d["idx"].astype(str))
    return hypervolume_2d(pareto_front(df, acc="val_acc", cost="params"), acc="val_acc", cost="params",
                          ref_cost=ref_params, ref_acc=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mentees", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--only", choices=["sweep", "cohort", "plain", "unfused", "steps"], default=None,
                    help="sweep = cohort + plain + unfused; default: everything")
    ap.add_argument("--plain-subset", type=int, default=8, help="configs the plain script trains (then scaled)")
    ap.add_argument("--unfused-subset", type=int, default=64, help="configs trained unfused for the front check")
    ap.add_argument("--space", default=None, help="default spaces/mnist1d.yaml (--smoke: spaces/quickstart.yaml)")
    ap.add_argument("--ks", default="1,64", help="sizes of one-structure cohorts in the step table")
    ap.add_argument("--mixed", type=int, default=256, help="members of the mixed cohort in the step table")
    ap.add_argument("--step-epochs", type=int, default=20)
    ap.add_argument("--in-flight", default="1",
                    help="cohorts training at once per GPU in the cohort sweep, e.g. 1,2: one sweep each, side by side")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: a CPU check that everything runs (< 2 min)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--uri", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sweep-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--in-flight-one", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    args.space = args.space or str(ROOT / "spaces" / ("quickstart.yaml" if args.smoke else "mnist1d.yaml"))
    Path("bench-work").mkdir(exist_ok=True)
    args.uri = args.uri or f"sqlite:///{Path('bench-work').resolve()}/mlflow.db"
    if args.sweep_child:
        return sweep_child(args)
    if args.smoke:  # a CPU check that every part runs: few mentees, one epoch, 1,000 samples
        args.mentees, args.epochs, args.plain_subset, args.unfused_subset = 4, 1, 2, 4
        args.ks, args.mixed, args.step_epochs = "2", 4, 1
        args.space = smoke_space(args.space)
    parts = {"sweep": {"cohort", "plain", "unfused"}}.get(args.only, {args.only} if args.only else
                                                          {"cohort", "plain", "unfused", "steps"})
    teachers = mentor_teachers(args.space)
    if not Path(bench_space(args.space, teachers).mentor.path).exists():  # train it first, untimed
        subprocess.run([sys.executable, "-c", f"from bench.common import setup; setup({args.space!r}, {teachers!r})"],
                       check=True, cwd=ROOT)
    configs = make_configs(args.mentees, args.epochs, teachers=teachers)
    res: dict = {"mentees": len(configs), "epochs": args.epochs, "torch": torch.__version__,
                 "python": platform.python_version(), "smoke": args.smoke}
    if "cohort" in parts:  # first, in a child process: nothing here has touched CUDA or Ray yet
        for i, n in enumerate(int(v) for v in args.in_flight.split(",")):
            res["cohort" if i == 0 else f"cohort-x{n}"] = run_cohort(args, n)

    from bench.common import setup

    b = setup(args.space, taps=teachers)
    gpus = torch.cuda.device_count()
    res.update(card=b.card, gpus=gpus, n_train=len(b.splits.x_train))
    samples = len(configs) * args.epochs * (len(b.splits.x_train) // 128 * 128)
    if "plain" in parts:
        from search.sweep.plan import plan_sweep, trial_payload

        sub = configs[:args.plain_subset]
        plan = plan_sweep(bench_space(args.space, teachers), gpus=gpus)
        feats = {k: v.cpu().numpy() for k, v in b.cache.feats.items()}
        p = run_plain(sub, trial_payload(plan, {"logits": b.cache.logits.cpu().numpy(), "feats": feats,
                                                 "shapes": b.shapes}), gpus, args.uri)
        # linear in trials: ray.init once, the rest scaled from the subset to every config
        p.update(scaled_from=len(sub), scaled_to=len(configs),
                 wall_s=p["ray_init_s"] + (p["wall_s_measured"] - p["ray_init_s"]) * len(configs) / len(sub))
        res["plain"] = p
    if "unfused" in parts:
        # as many seeds a config as the cohort sweep gave its mentees (the fronts compare means alike)
        seeds = max((r.get("n_seeds", 1) for r in res.get("cohort", {}).get("rows", [])), default=1)
        res["unfused"] = run_unfused(configs[:args.unfused_subset], b, seeds)
    if "steps" in parts:
        res["steps"] = step_throughput(b, [int(k) for k in args.ks.split(",") if k], args.mixed, args.step_epochs)
    report(res, samples, gpus, configs, b.splits)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = b.card.replace(" ", "-").replace("/", "-")
    path = out / f"sweep_throughput-{name}-{args.only or 'all'}{'-smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {path}")


def report(res: dict, samples: float, gpus: int, configs, splits) -> None:
    from search.models import create_mentee

    params = [sum(p.numel() for p in create_mentee(c.arch, splits.input_shape, splits.num_classes).parameters())
              for c in configs]
    ref = max(params) * 1.1
    print(f"\ncard: {res['card']} ({gpus} GPU), {res['mentees']} mentees × {res['epochs']} epochs × "
          f"{res['n_train']} samples")
    print(f"{'way':<8} {'wall s':>8} {'mentee-samples/s/GPU':>22} {'hypervolume':>12} {'finished':>9}  note")
    for k in ("cohort", *(k for k in res if k.startswith("cohort-x")), "plain", "unfused"):
        if k not in res:
            continue
        r = res[k]
        r["hypervolume"] = hv(r["rows"], ref)
        note = {"plain": f"scaled from {r.get('scaled_from')} of {r.get('scaled_to')} mentees "
                         f"(measured {r.get('wall_s_measured', 0):.1f} s)",
                "unfused": f"first {len(r['rows'])} mentees × {r.get('seeds', 1)} seeds, in-process, no Ray"}.get(
            k, f"from process start; Ray {'reused' if r.get('ray_reused') else 'started'}; "
               f"{r.get('in_flight', 1)} cohort(s) in flight per GPU")
        if k != "unfused":
            # every seed counted: a cohort sweep trains each config with the sweep's seeds (its
            # `mentee_samples`), the plain script each config once
            r["samples_per_s_per_gpu"] = r.get("mentee_samples", samples) / r["wall_s"] / max(gpus, 1)
        rate = f"{r['samples_per_s_per_gpu']:>22,.0f}" if k != "unfused" else f"{'':>22}"
        print(f"{k:<8} {r['wall_s']:>8.1f} {rate} {r['hypervolume']:>12.4f} {len(r['rows']):>9}  {note}")
        if "phases" in r:
            print("         " + ", ".join(f"{p} {v:.1f} s" for p, v in r["phases"].items()))
            for t in r["trial_timings"]:
                print("         trial: " + ", ".join(f"{p} {v:.1f}" for p, v in t.items()
                                                     if isinstance(v, float) and not p.endswith("_at")))
            r["gaps"] = g = gaps(r["trial_timings"])
            if g["n"]:
                fit = r["phases"].get("fit", float("nan"))
                print(f"         GPU idle between cohorts (one worker's end of training to its next start): {g['n']} "
                      f"gaps, median {g['median_s']:.2f} s, max {g['max_s']:.2f} s, in all {g['sum_s']:.1f} s "
                      f"= {100 * g['sum_s'] / fit:.0f}% of fit ({fit:.1f} s) over all workers; building groups "
                      f"{g['build_sum_s']:.1f} s in all")
    if "cohort" in res:
        c = res["cohort"]
        for k in ("plain", "unfused"):
            if k in res:
                only = {r["idx"] for r in res[k]["rows"]}
                mine, theirs = hv(c["rows"], ref, only), hv(res[k]["rows"], ref)
                res[f"hv_vs_{k}"] = {"configs": len(only), "cohort": mine, k: theirs, "rel_diff": mine / theirs - 1}
                print(f"front vs {k} on the same {len(only)} configs: hypervolume {mine:.4f} vs {theirs:.4f} "
                      f"({100 * (mine / theirs - 1):+.2f}%)")
        if "plain" in res:
            res["speedup"] = c["samples_per_s_per_gpu"] / res["plain"]["samples_per_s_per_gpu"]
            print(f"speed-up at equal work (mentee-samples/s/GPU, every seed counted: cohort / plain): "
                  f"{res['speedup']:.1f}×")
    if "steps" in res:
        print(f"\n{'members':<36} {'graph':>6} {'groups':>7} {'seconds':>8} {'mentee-samples/s':>18}")
        for r in res["steps"]:
            print(f"{r['members']:<36} {str(r['cuda_graph']):>6} {r['groups']:>7} {r['seconds']:>8.2f} "
                  f"{r['mentee_samples_per_s']:>18,.0f}")


if __name__ == "__main__":
    main()
