"""Does mentorship pay? Independent vs mentored mentees at several sizes, over seeds.

    python bench/mentorship.py --epochs 100 --seeds 3        # every (width, setting, seed) in one cohort

For each mentee width (conv1d, 3 layers) and each mentoring setting it trains the
independent twin and the mentored mentee with the same seeds, and prints test accuracy
mean ± std and the gain. All runs are one fused cohort, so the whole table costs about as
much as one mentee. Writes JSON to bench/results/.
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

from bench.common import setup  # noqa: E402
from search.config import ArchConfig, MemberConfig, TermConfig, TrainConfig  # noqa: E402
from search.train.cohort import train_cohort  # noqa: E402


def _hint(teacher: str, metric: str, w: float) -> TermConfig:
    return TermConfig("hint", w, {"student": "layer3", "teacher": teacher, "metric": metric})


SETTINGS = {  # name → the mentor terms
    "hint last→layer4 rmse 0.1": (_hint("layer4", "rmse", 0.1),),
    "hint last→layer4 rmse 1.0": (_hint("layer4", "rmse", 1.0),),
    "hint last→layer3 cosine 0.1": (_hint("layer3", "cosine", 0.1),),
    "KD T=4 w=1": (TermConfig("kd", 1.0, {"temperature": 4.0}),),
    "KD T=4 w=0.1": (TermConfig("kd", 0.1, {"temperature": 4.0}),),
    "attention last→layer4 w=100": (TermConfig("attention", 100.0, {"student": "layer3", "teacher": "layer4"}),),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="4,8,16")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--space", default=str(ROOT / "spaces" / "mnist1d.yaml"))
    args = ap.parse_args()
    b = setup(args.space)
    card, splits, mentor, cache, shapes = b.card, b.splits, b.mentor, b.cache, b.shapes
    with torch.no_grad():
        mentor_acc = (mentor.model(splits.x_test).argmax(-1) == splits.y_test).float().mean().item()

    cfgs, keys = [], []
    for w in (int(x) for x in args.widths.split(",")):
        for s in range(args.seeds):
            train = TrainConfig(epochs=args.epochs, batch_size=128, lr=args.lr, seed=s)
            base = MemberConfig(ArchConfig("conv1d", (w, w, w), 5), train)
            cfgs.append(base)
            keys.append((w, "independent", s))
            for name, terms in SETTINGS.items():
                cfgs.append(MemberConfig(base.arch, train, (*base.terms, *terms)))
                keys.append((w, name, s))
    t0 = time.perf_counter()
    res = train_cohort(cfgs, splits, cache=cache, mentor_shapes=shapes, keep_weights=False)
    wall = time.perf_counter() - t0
    acc: dict = {}
    params: dict = {}
    for (w, name, _), r in zip(keys, res):
        acc.setdefault((w, name), []).append(r.test_acc)
        params[w] = r.cost["params"]
    print(f"\ncard: {card}; mentor test acc {mentor_acc:.4f} ({sum(p.numel() for p in mentor.model.parameters()):,}"
          f" params); {len(cfgs)} mentees × {args.epochs} epochs in one cohort: {wall:.1f} s")
    print(f"{'width':>5} {'params':>7} {'setting':<28} {'test acc mean':>13} {'± std':>7} {'gain (pts)':>10}")
    rows = []
    for w in sorted(params):
        ind = statistics.fmean(acc[(w, "independent")])
        for name in ["independent", *SETTINGS]:
            a = acc[(w, name)]
            m, sd = statistics.fmean(a), statistics.pstdev(a)
            gain = (m - ind) * 100
            rows.append({"width": w, "params": params[w], "setting": name, "test_acc": a, "mean": m, "std": sd,
                         "gain_points": gain})
            print(f"{w:>5} {params[w]:>7,} {name:<28} {m:>13.4f} {sd:>7.4f} {gain:>+10.2f}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"mentorship-{card.replace(' ', '-')}.json"
    path.write_text(json.dumps({"card": card, "epochs": args.epochs, "seeds": args.seeds, "lr": args.lr,
                                "mentor_test_acc": mentor_acc, "wall_s": wall, "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
