"""Which mentor settings hurt a small mentee? Fixed shapes, each arm's learning rate tuned, over seeds.

    python bench/mentorship.py                                  # widths 4,8 (530, 1,242 params), 3 lrs × 3 seeds
    python bench/mentorship.py --widths 4 --epochs 20 --seeds 3 --lrs 0.01,0.03 --only kd,dist   # a quick look

Every mentee is conv1d, 3 layers of one width, kernel 3. Each *setting* (the independent label loss,
one mentor term, a teacher, two-stage training) is trained at every learning rate of `--lrs` with
every seed; its learning rate is the one with the best validation accuracy over seeds, chosen per
setting, so no arm is judged at another's learning rate. The table gives the test accuracy there
(mean ± std) and the gain over the independent mentee paired by seed, with its 95% t-interval:
`hurts` where the interval lies below 0. All runs are one fused cohort. Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search.config import ArchConfig, MemberConfig, TermConfig, TrainConfig  # noqa: E402
from search.data import load_dataset  # noqa: E402
from search.mentors import load_mentor  # noqa: E402
from search.pareto import paired_gain  # noqa: E402
from search.spaces import load_space  # noqa: E402
from search.terms import two_stage, with_source  # noqa: E402
from search.train.cache import MentorCache  # noqa: E402
from search.train.cohort import train_cohort  # noqa: E402
from search.train.device import pick_device  # noqa: E402
from search.train.mentor import ensure_mentor, train_assistant  # noqa: E402

N = {"normalise": 1.0}  # weight relative to the label loss


def _hint(metric: str, w: float, norm: bool = True) -> TermConfig:
    return TermConfig("hint", w, {"student": "layer3", "teacher": "layer4", "metric": metric, **(N if norm else {})})


def _at(w: float, norm: bool = True) -> TermConfig:
    return TermConfig("attention", w, {"student": "layer3", "teacher": "layer4", **(N if norm else {})})


def _kd(w: float, norm: bool = True, T: float = 4.0) -> TermConfig:
    return TermConfig("kd", w, {"temperature": T, **(N if norm else {})})


# name → (teacher, the mentor terms, two-stage); "xce": the weight relative to the label loss
SETTINGS: dict[str, tuple[str, tuple[TermConfig, ...], bool]] = {
    "hint rmse 0.3xce": ("final", (_hint("rmse", 0.3),), False),
    "hint cosine 0.3xce": ("final", (_hint("cosine", 0.3),), False),
    "hint rmse 0.1 raw": ("final", (_hint("rmse", 0.1, False),), False),
    "kd T4 0.3xce": ("final", (_kd(0.3),), False),
    "kd T4 1xce": ("final", (_kd(1.0),), False),
    "kd T4 0.5 raw": ("final", (_kd(0.5, False),), False),
    "dkd T4 a1 b8 0.3xce": ("final", (TermConfig("dkd", 0.3, {"temperature": 4.0, "alpha": 1.0, "beta": 8.0, **N}),),
                            False),
    "dist T1 0.3xce": ("final", (TermConfig("dist", 0.3, {"temperature": 1.0, "beta": 1.0, "gamma": 1.0, **N}),),
                       False),
    "dist T1 1xce": ("final", (TermConfig("dist", 1.0, {"temperature": 1.0, "beta": 1.0, "gamma": 1.0, **N}),), False),
    "attention 0.3xce": ("final", (_at(0.3),), False),
    "attention 13.4 raw": ("final", (_at(13.4, False),), False),
    "kd T4 0.3xce, two-stage": ("final", (_kd(0.3),), True),
    "kd T4 0.3xce <early": ("early", (_kd(0.3),), False),  # the space's (first) checkpoint
    "kd T4 0.3xce <assistant": ("assistant", (_kd(0.3),), False),
}


def teachers(space, splits) -> tuple[str, MentorCache, dict[str, tuple[int, ...]], dict[str, float]]:
    """The space's mentor (trained on first use), its epoch-20 checkpoint and a teacher assistant beside it."""
    mentor = ensure_mentor(space.mentor, splits)
    dev = splits.x_train.device
    mentor.model.to(dev)
    versions = {}
    for v in space.mentor.teachers():
        if v.startswith("epoch"):
            versions[v] = load_mentor(space.mentor.path, version=v)
    if space.mentor.assistant is not None:
        path = Path(f"{space.mentor.path}.bench-assistant.pt")
        versions["assistant"] = (load_mentor(path) if path.exists() else
                                 train_assistant(space.mentor, mentor, splits, out=path)[0])
    for m in versions.values():
        m.model.to(dev)
    names = ["layer4", *[f"{v}/{n}" for v in versions for n in ("layer4", "logits")]]
    cache = MentorCache.build(mentor, splits.x_train, names, versions=versions)
    shapes = {n: (versions[n.split("/")[0]] if "/" in n else mentor).tap_shapes([n.split("/")[-1]])[0]
              for n in names if not n.endswith("logits")}
    acc = {}
    with torch.no_grad():
        for v, m in {"final": mentor, **versions}.items():
            acc[v] = (m.model.eval()(splits.x_test).argmax(-1) == splits.y_test).float().mean().item()
    card = torch.cuda.get_device_name() if dev.type == "cuda" else f"cpu-{torch.get_num_threads()}threads"
    return card, cache, shapes, acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="4,8")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lrs", default="0.005,0.015,0.04")
    ap.add_argument("--only", default="", help="comma-separated words: keep the settings whose name has one")
    ap.add_argument("--n-samples", type=int, default=0, help="the dataset's size (0: the space's)")
    ap.add_argument("--space", default=str(ROOT / "spaces" / "mnist1d.yaml"))
    ap.add_argument("--mentor-widths", default="", help="a smaller mentor for a CPU (e.g. 32,64,64,64): "
                    "its checkpoint at a third of its epochs, the space's assistant at half its widths")
    ap.add_argument("--mentor-epochs", type=int, default=24)
    args = ap.parse_args()
    space = load_space(args.space)
    if args.mentor_widths:  # trained once into bench-work/, beside nothing of the space's
        m, widths = space.mentor, [int(x) for x in args.mentor_widths.split(",")]
        e = args.mentor_epochs
        small = {"arch": m.arch.model_copy(update={"widths": widths}), "epochs": e, "checkpoints": [e // 3],
                 "teacher": ["final", f"epoch{e // 3}", "assistant"],
                 "path": str(ROOT / "bench-work" / f"mentor-{'x'.join(map(str, widths))}-e{e}.pt"),
                 "assistant": m.assistant.model_copy(update={"widths": [max(1, w // 4) for w in widths],
                                                             "epochs": max(1, 2 * e // 3)})}
        space = space.model_copy(update={"mentor": m.model_copy(update=small)})
    d = space.dataset
    splits = load_dataset(d.name, n_samples=args.n_samples or d.n_samples, seed=d.seed).to(pick_device(None))
    card, cache, shapes, mentor_acc = teachers(space, splits)
    lrs = [float(x) for x in args.lrs.split(",")]
    words = [w for w in args.only.split(",") if w]
    settings = {k: v for k, v in SETTINGS.items() if not words or any(w in k for w in words)}

    early = next(v for v in space.mentor.teachers() if v.startswith("epoch"))
    cfgs, keys = [], []
    for w in (int(x) for x in args.widths.split(",")):
        arch = ArchConfig("conv1d", (w, w, w), 3)
        for lr in lrs:
            for s in range(args.seeds):
                train = TrainConfig(epochs=args.epochs, batch_size=128, lr=lr, seed=s)
                cfgs.append(MemberConfig(arch, train))
                keys.append((w, "independent", lr, s))
                for name, (teacher, terms, staged) in settings.items():
                    teacher = early if teacher == "early" else teacher
                    ts = with_source((TermConfig("ce", 1.0), *terms), teacher)
                    cfgs.append(MemberConfig(arch, train, two_stage(ts) if staged else ts))
                    keys.append((w, name, lr, s))
    t0 = time.perf_counter()
    res = train_cohort(cfgs, splits, cache=cache, mentor_shapes=shapes, keep_weights=False)
    wall = time.perf_counter() - t0
    val: dict = {}
    test: dict = {}
    params: dict = {}
    for (w, name, lr, _), r in zip(keys, res):
        ok = r.status == "finished"
        val.setdefault((w, name, lr), []).append(r.val_acc if ok else 0.0)
        test.setdefault((w, name, lr), []).append(r.test_acc if ok else 0.0)
        params[w] = r.cost["params"]
    print(f"\ncard: {card}; teachers' test acc " + ", ".join(f"{k} {v:.3f}" for k, v in mentor_acc.items())
          + f"; {len(cfgs)} mentees × {args.epochs} epochs in one cohort: {wall:.1f} s")
    print(f"{'width':>5} {'params':>6} {'setting':<26} {'lr':>6} {'test acc':>14} {'gain (pts)':>10} {'95% CI':>16}")
    rows = []
    for w in sorted(params):
        best = {name: max(lrs, key=lambda lr: statistics.fmean(val[(w, name, lr)]))
                for name in ["independent", *settings]}
        ind = test[(w, "independent", best["independent"])]
        for name in ["independent", *settings]:
            a = test[(w, name, best[name])]
            g = paired_gain([100 * x for x in a], [100 * x for x in ind])
            verdict = "hurts" if g["gain_ci_high"] < 0 else ("pays" if g["gain_ci_low"] > 0 else "")
            rows.append({"width": w, "params": params[w], "setting": name, "lr": best[name], "test_acc": a,
                         "mean": statistics.fmean(a), "std": statistics.stdev(a) if len(a) > 1 else 0.0,
                         **g, "verdict": verdict})
            ci = "" if name == "independent" else f"[{g['gain_ci_low']:+.1f}, {g['gain_ci_high']:+.1f}]"
            print(f"{w:>5} {params[w]:>6,} {name:<26} {best[name]:>6g} {100 * rows[-1]['mean']:>7.1f} ± "
                  f"{100 * rows[-1]['std']:>4.1f} {g['gain'] if name != 'independent' else 0:>+10.1f} {ci:>16} "
                  f"{verdict}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    widths = args.widths.replace(",", "-")
    path = out / f"mentorship-{card.replace(' ', '-')}-n{len(splits.y_train)}-w{widths}-e{args.epochs}.json"
    path.write_text(json.dumps({"card": card, "epochs": args.epochs, "seeds": args.seeds, "lrs": lrs,
                                "train_samples": len(splits.y_train), "teacher_test_acc": mentor_acc,
                                "wall_s": wall, "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
