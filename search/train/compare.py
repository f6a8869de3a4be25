"""`mentee compare`: one architecture trained independently and mentored over N seeds, fused.

    row = compare_mentorship(mentor_path, splits, arch, terms, seeds=3, epochs=60, lr=1e-2)
    row["gain"]          # mean mentored − mean independent test accuracy

Every seed trains both arms side by side in one cohort (same initialisation, data order
and optimiser), so the difference is the mentor's doing.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from search.config import ArchConfig, MemberConfig, TermConfig, TrainConfig
from search.data import Splits
from search.errors import TrainingDiverged, UserError
from search.models import create_mentee
from search.taps import check_taps
from search.terms import TERMS, describe_terms
from search.train.cache import MentorCache
from search.train.cohort import train_cohort
from search.train.device import pick_device
from search.train.mentor import mentor_from_spec

__all__ = ["compare_mentorship"]


def compare_mentorship(mentor_path: Path, splits: Splits, arch: ArchConfig, terms: Sequence[TermConfig], *,
                       seeds: int = 3, epochs: int = 60, lr: float = 1e-2, batch_size: int = 128,
                       device: str = "auto", on_epoch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train `arch` with and without the mentor terms `terms` over `seeds` seeds; test accuracies
    of both arms, their means and spreads, and the gain."""
    from search.spaces import MentorSpec

    net = create_mentee(arch, splits.input_shape, splits.num_classes)
    for t in terms:
        check_taps(net, TERMS[t.kind].student_taps(t.params), "--hint (mentee side)")
    mentor = mentor_from_spec(MentorSpec(path=str(mentor_path)), splits)
    if mentor is None:
        raise UserError(f"{mentor_path}: mentor file not found; train one with "
                        f"`mentee mentor train --out {mentor_path}`")
    taps = sorted({m for t in terms for m in TERMS[t.kind].mentor_taps(t.params)})
    for tap in taps:
        if tap not in mentor.taps:
            raise UserError(f"--hint: the mentor has no tap '{tap}'; its taps are {', '.join(mentor.taps)}")
    dev = pick_device(device)
    splits = splits.to(dev)
    mentor.model.to(dev)
    cache = MentorCache.build(mentor, splits.x_train, taps)
    cfgs = []
    for s in range(seeds):
        mentored = MemberConfig(arch=arch, train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=s),
                                terms=(TermConfig("ce", 1.0), *terms))
        cfgs += [mentored.twin(), mentored]
    results = train_cohort(cfgs, splits, cache=cache, mentor_shapes=dict(zip(taps, mentor.tap_shapes(taps))),
                           keep_weights=False, on_epoch=on_epoch)
    bad = [r for r in results if r.status != "finished"]
    if bad:
        raise TrainingDiverged(f"{len(bad)} run(s) failed: {bad[0].error}")
    ind, men = [r.test_acc for r in results[0::2]], [r.test_acc for r in results[1::2]]
    return {"arch": f"{arch.family} {list(arch.widths)}", "params": results[0].cost["params"],
            "mapping": describe_terms(cfgs[1].terms), "seeds": seeds, "independent": ind, "mentored": men,
            "independent_mean": statistics.fmean(ind), "mentored_mean": statistics.fmean(men),
            "independent_std": statistics.pstdev(ind), "mentored_std": statistics.pstdev(men),
            "gain": statistics.fmean(men) - statistics.fmean(ind),
            "mentor_test_acc": mentor.spec.get("metrics", {}).get("test_acc")}
