"""Which mentor methods pay at which size: the searcher's memory of paired comparisons.

    ledger = MethodLedger.from_runs(load_runs(uri, experiment=space.name))  # earlier sweeps of the space
    ledger.observe(config, {0: 0.81, 1: 0.79, 2: 0.80})    # the driver, after each mentee is recorded
    ledger.withheld(arch)    # {"kd": "kd loses -3.1 pts [-5.0, -1.2] to the independent over 9 seed pairs ..."}

A mentored mentee's *methods* are the choices its config made: each mentor term (`kd`, `dkd`,
`dist`, `attention`, `hint:rmse`, `hint:cosine`, ...), its teacher (`teacher:epoch20`) and
`two-stage`. Its gain is paired by seed with the independent mentees of the same architecture
(searched or twin: the arms pair by architecture), in points of validation accuracy — the search
never sees test accuracy. A method *loses* in a size band when, over every mentee of that band
that used it, the paired gains have a mean below `-margin` points and a 95% t-interval below 0,
from at least `min_pairs` seed pairs. `search.sweep.suggest.ArmBalance` then stops offering it to
mentored asks of that band, and the trial records why (user attr `WITHHELD`).

A method is credited with the whole gain of every mentee that used it (as TPE's marginals are):
a method that only ever came with a losing one shares its verdict until it is tried without it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from search.config import ArchConfig, MemberConfig
from search.teachers import FINAL

__all__ = ["MethodLedger", "Verdict", "methods_of", "size_band", "WITHHELD"]

# the Optuna user attr (and, copied by the driver's writer, the MLflow tag `mentee.withheld`) that says
# which methods a mentored ask was not offered, and why: JSON {method: reason}
WITHHELD = "withheld"


def methods_of(config: MemberConfig) -> frozenset[str]:
    """The mentor methods a config uses; empty for an independent one."""
    active = [t for t in config.terms if t.uses_mentor and t.weight > 0]
    out = {f"hint:{t.params.get('metric', 'rmse')}" if t.kind == "hint" else t.kind for t in active}
    out |= {f"teacher:{t.params.get('source', FINAL)}" for t in active}
    if any(t.params.get("schedule") == "early" for t in active):
        out.add("two-stage")
    return frozenset(out)


def size_band(arch: ArchConfig) -> int:
    """A mentee's size class, from its shape alone (so an ask's band is known before training):
    log2 of its layers' weight count with one input channel and no head, rounded down. Sizes
    within a factor of ~2 share a band."""
    widths = (1, *arch.widths)
    k = 1 if arch.family == "mlp" else arch.kernel
    weights = sum(a * b * k + b for a, b in zip(widths, widths[1:]))
    return int(math.log2(max(weights, 1)))


@dataclass(frozen=True)
class Verdict:
    method: str
    band: int
    n_pairs: int
    gain: float  # points of validation accuracy, mean over seed pairs
    ci_low: float
    ci_high: float

    def why(self) -> str:
        return (f"{self.method} loses {self.gain:+.1f} pts [{self.ci_low:+.1f}, {self.ci_high:+.1f}] (val acc, 95% CI) "
                f"to the independent over {self.n_pairs} seed pairs at ~2^{self.band} weights")


@dataclass
class MethodLedger:
    margin: float = 2.0  # points: a loss smaller than this is not "clear", whatever its interval
    min_pairs: int = 6  # seed pairs a verdict needs (two mentees of three seeds)
    # arch key → seed → the validation accuracies of its independent mentees with that seed
    _independent: dict[str, dict[int, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    _mentored: list[tuple[int, frozenset[str], str, dict[int, float]]] = field(default_factory=list)

    def observe(self, config: MemberConfig, val_accs: Mapping[int, float]) -> None:
        """A recorded mentee: its config and each seed's validation accuracy (seed → accuracy;
        NaN for a seed that did not finish, left out)."""
        accs = {int(s): float(v) for s, v in val_accs.items() if v is not None and math.isfinite(float(v))}
        if not accs:
            return
        methods = methods_of(config)
        if not methods:
            for s, v in accs.items():
                self._independent[config.arch.key()][s].append(v)
        else:
            self._mentored.append((size_band(config.arch), methods, config.arch.key(), accs))

    def gains(self, band: int) -> dict[str, list[float]]:
        """Method → the paired gains (points) of every seed of every mentee of `band` that used it."""
        out: dict[str, list[float]] = defaultdict(list)
        for b, methods, key, accs in self._mentored:
            ind = self._independent.get(key, {})
            pairs = [100 * (v - sum(ind[s]) / len(ind[s])) for s, v in accs.items() if ind.get(s)]
            if b == band:
                for m in methods:
                    out[m].extend(pairs)
        return out

    def verdicts(self, band: int) -> list[Verdict]:
        """Every method seen in `band` with enough pairs, with its mean gain and 95% interval."""
        from scipy import stats

        out = []
        for m, d in sorted(self.gains(band).items()):
            n = len(d)
            if n < max(self.min_pairs, 2):
                continue
            mean = sum(d) / n
            sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
            half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
            out.append(Verdict(m, band, n, mean, mean - half, mean + half))
        return out

    def withheld(self, arch: ArchConfig) -> dict[str, str]:
        """Method → why, for the methods that lose by a clear margin at `arch`'s size."""
        return {v.method: v.why() for v in self.verdicts(size_band(arch))
                if v.gain < -self.margin and v.ci_high < 0}

    @classmethod
    def from_runs(cls, frame: Any, **kw: Any) -> MethodLedger:
        """A ledger of recorded mentees: a `search.tracking.load_runs` frame (one row per mentee,
        its config JSON, seeds and per-seed validation accuracies); unfinished ones are left out."""
        ledger = cls(**kw)
        for row in _rows(frame):
            if row.get("status") != "finished" or not row.get("config"):
                continue
            cfg = MemberConfig.from_dict(json.loads(row["config"]))
            ledger.observe(cfg, dict(zip(row.get("seeds") or (), row.get("val_accs") or ())))
        return ledger


def _rows(frame: Any) -> Iterable[dict[str, Any]]:
    return frame.to_dict("records") if hasattr(frame, "to_dict") else frame
