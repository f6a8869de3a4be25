"""Does mentorship pay, measured fairly? Both arms searched at equal budget, every mentee over seeds.

    python bench/mentorship_front.py                      # one GPU: spaces/mnist1d.yaml, then 1,000 training samples
    python bench/mentorship_front.py --setting default    # one setting only
    python bench/mentorship_front.py --smoke              # CPU, minutes: tiny budgets, a tiny mentor, few epochs

Each setting is one `run_sweep` of the space: the driver alternates independent and mentored asks
paired by architecture (the same trials at every size, the same optimiser ranges), every mentee
trained with `--seeds` seeds fused (one run holds each seed's numbers); then racing gives the
mentees not clearly dominated in their arm up to `--race` more seeds (search/sweep/racing.py).
For each size on either front it prints the best mentored and the best independent mentee at ≤
that size (picked by validation), test accuracy mean ± std over the seeds, the gain paired by
seed and its 95% t-interval, and whether the target holds there: mentored ≥ independent + 1.5
points (mean over the seeds). JSON to bench/results/, a markdown table for README.

The small-data setting (`dataset.n_samples` such that 1,000 samples train) trains its own mentor on
those same samples: a mentor that saw more data of the same generator could have seen the test set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search.data import load_dataset  # noqa: E402
from search.mentors import load_mentor  # noqa: E402
from search.results.fronts import arm_balance, mentorship_front  # noqa: E402
from search.spaces import SearchSpace, load_space  # noqa: E402
from search.sweep.run import run_sweep  # noqa: E402
from search.tracking import load_runs  # noqa: E402

TARGET_POINTS = 1.5  # mentored beats the budget-matched independent mentee by this much, at every size
SMALL_TRAIN = 1000


def n_samples_for(space: SearchSpace, n_train: int) -> int:
    """`dataset.n_samples` that leaves `n_train` samples to train on after the space's split."""
    d = space.dataset
    n = round(n_train / 0.7)
    while len(load_dataset(d.name, n_samples=n, seed=d.seed).x_train) < n_train:
        n += 1
    return n


def settings(space: SearchSpace, args) -> dict[str, SearchSpace]:
    """The spaces to sweep, by setting name (the default space, and the same with 1,000 training samples)."""
    def edit(sp: SearchSpace, name: str, dataset=None, mentor=None, budget=None, train=None) -> SearchSpace:
        upd = {"name": f"{name}-{int(time.time())}"}
        for key, changes in (("dataset", dataset), ("mentor", mentor), ("budget", budget), ("train", train)):
            if changes:
                upd[key] = getattr(sp, key).model_copy(update=changes)
        return sp.model_copy(update=upd)

    budget = {"seeds": args.seeds, "reevaluate_seeds": args.race, "mentees": 12 if args.smoke else args.mentees}
    train = {"epochs": args.epochs} if args.epochs else None
    work = ROOT / "bench-work" / "mentorship-front"
    if args.smoke:  # a small mentor and tiny data: every step of the real thing, in CPU minutes
        m = space.mentor
        arch = m.arch.model_copy(update={"widths": [16, 32, 32, 32]})  # the space's taps: layer3, layer4
        # the same teachers, shrunk to fit 3 mentor epochs: any checkpoint becomes epoch 1
        teacher = [t if not t.startswith("epoch") else "epoch1" for t in m.teachers()]
        small = {"arch": arch, "epochs": 3, "path": str(work / "smoke-mentor.pt"),
                 "checkpoints": [1] if m.checkpoints else [], "teacher": sorted(set(teacher), key=teacher.index),
                 "assistant": m.assistant.model_copy(update={"epochs": 2, "widths": [8, 16, 16, 16]})
                 if m.assistant else None}
        space = edit(space, "smoke", dataset={"n_samples": 800}, mentor=small,
                     budget={"mentees": 12, "cohort_size": 12}, train={"epochs": 3})
    out = {"default": edit(space, "mentorship-front", budget=budget, train=train)}
    small = n_samples_for(space, SMALL_TRAIN if not args.smoke else 300)
    mentor = Path(space.mentor.path)
    out["1k-train"] = edit(space, "mentorship-front-1k", dataset={"n_samples": small}, budget=budget, train=train,
                           mentor={"path": str(mentor.with_name(f"{mentor.stem}-n{small}{mentor.suffix}"))})
    return {k: v for k, v in out.items() if args.setting in ("all", k)}


def sweep(name: str, space: SearchSpace, uri: str) -> dict:
    t0 = time.perf_counter()
    s = run_sweep(space, tracking_uri=uri, workdir=ROOT / "bench-work" / "mentorship-front", show_progress=False)
    wall = time.perf_counter() - t0
    runs = load_runs(uri, parent_run_id=s.parent_run_id)
    table = mentorship_front(runs)
    both = table.dropna(subset=["mentored_acc", "independent_acc"])
    met = both["gain"] * 100 >= TARGET_POINTS
    on_mentored = both["front"].isin(["mentored", "both"])
    mentor = load_mentor(space.mentor.path).spec.get("metrics", {})
    d = space.dataset
    n_train = len(load_dataset(d.name, n_samples=d.n_samples, seed=d.seed).x_train)
    balance = arm_balance(runs)
    return {"setting": name, "experiment": space.name, "n_samples": d.n_samples, "n_train": n_train,
            "mentees": space.budget.mentees, "epochs": space.train.epochs, "seeds": space.budget.seeds,
            "race_seeds": space.budget.reevaluate_seeds,
            "wall_s": wall, "phases": s.phases, "mentor_test_acc": mentor.get("test_acc"),
            "arms": {a: int(balance[a].sum()) for a in ("mentored", "independent")},
            "balance": balance.to_dict("records"), "rows": json.loads(table.to_json(orient="records")),
            "target": {"points": TARGET_POINTS, "met_at": int(met.sum()), "sizes": len(both),
                       "met_everywhere": bool(len(both) and met.all()),
                       "met_on_mentored_front": bool(on_mentored.any() and met[on_mentored].all())}}


def pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def markdown(res: dict) -> str:
    lines = [f"**{res['setting']}** ({res['n_train']:,} training samples; {res['arms']['mentored']} mentored + "
             f"{res['arms']['independent']} independent mentees × {res['epochs']} epochs; test accuracy, mean ± std "
             f"over {res['seeds']} seeds, up to {res['seeds'] + res['race_seeds']} where raced; mentor "
             f"{pct(res['mentor_test_acc'])}%)", "",
             "| params | front | mentored (widths, terms) | test acc | independent at ≤ size (widths, params) "
             "| test acc | gain (pts) | 95% CI | ≥ +1.5 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        ci = "–" if r["gain_ci_low"] is None else f"[{100 * r['gain_ci_low']:+.1f}, {100 * r['gain_ci_high']:+.1f}]"
        gain = "–" if r["gain"] is None else f"{100 * r['gain']:+.1f}"
        ok = "–" if r["gain"] is None else ("yes" if 100 * r["gain"] >= TARGET_POINTS else "no")
        men = "–" if r["mentored_run_id"] is None else f"{r['mentored_widths']} {r['mentored_mapping']}"
        ind = "–" if r["independent_run_id"] is None else \
            f"{r['independent_widths']} ({int(r['independent_params']):,})"
        sd = {a: "" if r[f"{a}_std"] is None else f" ± {pct(r[f'{a}_std'])}" for a in ("mentored", "independent")}
        lines.append(f"| {int(r['params']):,} | {r['front']} | {men} | {pct(r['mentored_acc'])}{sd['mentored']} | "
                     f"{ind} | {pct(r['independent_acc'])}{sd['independent']} | {gain} | {ci} | {ok} |")
    t = res["target"]
    lines += ["", f"Target (+{TARGET_POINTS} points at every size): met at {t['met_at']} of {t['sizes']} sizes; "
                  f"everywhere: {'yes' if t['met_everywhere'] else 'no'}; at every size of the mentored front: "
                  f"{'yes' if t['met_on_mentored_front'] else 'no'}. Wall {res['wall_s']:.0f} s."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default=str(ROOT / "spaces" / "mnist1d.yaml"))
    ap.add_argument("--setting", choices=["all", "default", "1k-train"], default="all")
    ap.add_argument("--mentees", type=int, default=128, help="mentees per setting, both arms (the space's "
                    "`auto` would fill its minutes per setting: too long for one GPU call)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per mentee (default: the space's)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds every mentee is trained with, fused")
    ap.add_argument("--race", type=int, default=2, help="more seeds for the mentees racing gives them to")
    ap.add_argument("--smoke", action="store_true", help="CPU: a tiny mentor, 12 mentees, 3 epochs")
    args = ap.parse_args()
    os.chdir(ROOT)  # the space's mentor paths are relative to the repository
    import torch

    card = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu-{os.cpu_count()}cores"
    work = ROOT / "bench-work" / "mentorship-front"
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    t0 = time.perf_counter()
    results = []
    for name, space in settings(load_space(args.space), args).items():
        results.append(sweep(name, space, uri))
        print("\n" + markdown(results[-1]), flush=True)
    wall = time.perf_counter() - t0
    print(f"\ncard: {card}; total wall {wall:.0f} s")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"mentorship_front-{card.replace(' ', '-')}{'-smoke' if args.smoke else ''}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"card": card, "space": args.space, "wall_s": wall, "settings": results}, indent=1))
    tmp.replace(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
