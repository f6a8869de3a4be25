"""How members of mixed depth, width and kernel pad into one template, exactly.

    parts = plan_groups(cfgs, splits.input_shape, splits.num_classes)   # 1–3 groups per cohort
    arch, exits = template_of([cfgs[i].arch for i in parts[0]])        # the group's template
    slots = plan_slots(group_cfgs, arch, exits, shape, nc, mentor_shapes)  # its loss slots (hints merged)
    layout = Layout(build_member(arch, slots.terms, shape, nc, mentor_shapes, exits, slots.merged), multi=True)
    flat, mask, buffers = layout.pack([(member, depth, slots.of_member[j]), ...])   # [K, P], [K, P], {name: [K, ...]}

A template has the widest layer at each depth, the largest kernel, and a head at every
member depth (`search.models.Exits`). Every member's parameters are one row of a flat [K, P]
tensor (the net's columns first, then each loss slot's), with a 0/1 mask of where its real
values live. Why this padding is exact (a member ends with the weights it gets alone):

- narrower layers live in the leading channels; zero channels add 0 to every sum;
- a smaller kernel sits in the centre of the larger one: with padding k//2 both compute the
  same outputs at the same positions when the kernels' difference is even (`models.fuse_class`
  keeps one parity per group), through stride 2 and into the flat head alike;
- a shallower member's deeper layers and other exits are all zeros: its logits are its own
  head's plus exact zeros. Identity layers would not do: the conv families stride by 2, so a
  layer cannot pass its input through and keep the shape the flat head expects;
- the step uses `flat * mask`, so padding gets exactly 0 gradient (mask · ∂L): Adam's moments
  stay 0 there, its update is 0 / (0 + eps) = 0 and decay keeps a zero at zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from search.config import ArchConfig, MemberConfig, TermConfig
from search.models import (
    centred_dims,
    create_mentee,
    create_template,
    exit_key,
    fuse_class,
    layer_shapes,
    logical_shapes,
    step_cost,
)
from search.taps import forward_with_taps, tap_shapes
from search.terms import TERMS, LossTerm

__all__ = ["MenteeWithTerms", "build_member", "template_of", "plan_groups", "plan_slots", "Slots", "fit_projected",
           "Layout", "MAX_GROUPS"]

MAX_GROUPS = 3  # fused groups per class of a cohort (see `plan_groups`)
GROUP_COST = 40_000  # one more group's fixed cost, in `step_cost` units × members (~0.3 ms a step on an H100)


class MenteeWithTerms(nn.Module):
    """A mentee plus one module per loss-term slot. `forward(x)` gives logits; with labels and
    the mentor's batch it gives the vector of every slot's loss (weighted outside, per member)."""

    def __init__(self, net: nn.Module, terms: Sequence[LossTerm[Any]]):
        super().__init__()
        self.net = net
        self.terms = nn.ModuleList(terms)
        taps: list[str] = []
        for t in terms:
            taps += [s for s in type(t).student_taps(t.params) if s not in taps]
        self.student_taps = tuple(taps)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, mentor: dict[str, torch.Tensor] | None = None,
                p: Sequence[dict[str, torch.Tensor]] = ()) -> tuple[torch.Tensor, torch.Tensor | None]:
        if y is None:
            return self.net(x), None
        logits, feats = forward_with_taps(self.net, x, self.student_taps)
        named = dict(zip(self.student_taps, feats))
        return logits, torch.stack([t(logits, named, y, mentor, pt) for t, pt in zip(self.terms, p)])


def build_member(arch: ArchConfig, slots: Sequence[TermConfig], input_shape: Sequence[int], num_classes: int,
                 mentor_shapes: dict[str, tuple[int, ...]], exits: Sequence[int] | None = None,
                 merged: Sequence[tuple[int, ...] | None] = ()) -> MenteeWithTerms:
    """Build `arch` (with `exits`: a template) with one module per term in `slots`; `merged` (a
    template's, from `plan_slots`): per slot, the shape of its merged student input, or None.
    Initialised from the global RNG: seed it first (the net first, then the terms in order)."""
    ex = tuple(exits or (arch.depth,))
    net = create_template(arch, input_shape, num_classes, ex) if exits else create_mentee(arch, input_shape,
                                                                                         num_classes)
    wanted = tuple(dict.fromkeys(s for t in slots for s in TERMS[t.kind].student_taps(t.params)))
    shapes = dict(zip(wanted, _tap_shapes(arch, ex, wanted, input_shape, num_classes, net)))
    terms = []
    for i, t in enumerate(slots):
        into = merged[i] if i < len(merged) else None
        own = shapes if into is None else {**shapes, t.params["student"]: into}
        terms.append(TERMS[t.kind](t.params, own, mentor_shapes))
    return MenteeWithTerms(net, terms)


def _tap_shapes(arch: ArchConfig, exits: tuple[int, ...], taps: tuple[str, ...], input_shape: Sequence[int],
                num_classes: int, net: nn.Module | None = None) -> list[tuple[int, ...]]:
    """Per-sample shapes of the taps of `arch` with `exits` (`net`, if built), cached: by
    arithmetic for the built-in families (`models.layer_shapes`), else one forward of one sample
    (on a busy CPU ~10 ms a net: cohorts build hundreds)."""
    key = (arch, exits, taps, tuple(input_shape))
    if key not in _SHAPES:
        known = layer_shapes(arch, input_shape, num_classes)
        if known is not None and all(t in known for t in taps):
            _SHAPES[key] = [known[t] for t in taps]
            return _SHAPES[key]
        if net is None:
            with torch.random.fork_rng(devices=[]):  # built to be measured: draws no one's numbers
                net = create_template(arch, input_shape, num_classes, exits)
        _SHAPES[key] = tap_shapes(net, taps, tuple(input_shape))
    return _SHAPES[key]


_SHAPES: dict[tuple, list[tuple[int, ...]]] = {}


# ------------------------------------------------------------------- grouping

def template_of(archs: Sequence[ArchConfig]) -> tuple[ArchConfig, tuple[int, ...]]:
    """The template of `archs` (one fuse class): widest layer per depth, largest kernel; and its exits."""
    depth = max(a.depth for a in archs)
    widths = tuple(max(a.widths[i] for a in archs if a.depth > i) for i in range(depth))
    a0 = archs[0]
    return ArchConfig(a0.family, widths, max(a.kernel for a in archs), a0.batch_norm), \
        tuple(sorted({a.depth for a in archs}))


def plan_groups(cfgs: Sequence[MemberConfig], input_shape: Sequence[int], num_classes: int,
                max_groups: int = MAX_GROUPS) -> list[list[int]]:
    """Split a cohort into fused groups: lists of indices into `cfgs`.

    Members fuse when family, batch norm, kernel parity (`models.fuse_class`), epochs and batch
    size agree. Each such class is cut into at most `max_groups` groups: its architectures sorted
    by `step_cost`, then the cut (dynamic programming over the sorted list) that minimises the
    padded work, Σ members × cost of the group's template, plus GROUP_COST per group. So small
    members do not pay for the largest one's width, and a cohort stays a few fused steps."""
    classes: dict[tuple, list[int]] = {}
    for i, c in enumerate(cfgs):
        classes.setdefault((fuse_class(c.arch), c.train.epochs, c.train.batch_size), []).append(i)
    cost = lambda a, ex=None: step_cost(a, input_shape, num_classes, ex)  # noqa: E731
    out: list[list[int]] = []
    for members in classes.values():
        by_arch: dict[ArchConfig, list[int]] = {}
        for i in members:
            by_arch.setdefault(cfgs[i].arch, []).append(i)
        units = sorted(by_arch, key=lambda a: (cost(a), a.depth, a.widths, a.kernel))
        n = len(units)
        counts = [len(by_arch[a]) for a in units]
        seg = [[0.0] * (n + 1) for _ in range(n)]  # seg[i][j]: units i..j-1 as one group
        for i in range(n):
            for j in range(i + 1, n + 1):
                t, ex = template_of(units[i:j])
                seg[i][j] = sum(counts[i:j]) * cost(t, ex) + GROUP_COST
        best = [[math.inf] * (n + 1) for _ in range(max_groups + 1)]
        cut = [[0] * (n + 1) for _ in range(max_groups + 1)]
        best[0][0] = 0.0
        for g in range(1, max_groups + 1):
            for j in range(1, n + 1):
                for i in range(j):
                    total = best[g - 1][i] + seg[i][j]
                    if total < best[g][j]:
                        best[g][j], cut[g][j] = total, i
        g = min(range(1, max_groups + 1), key=lambda k: best[k][n])
        j = n
        while j > 0:
            i = cut[g][j]
            out.append(sorted(m for a in units[i:j] for m in by_arch[a]))
            j, g = i, g - 1
    return sorted(out)


# ---------------------------------------------------------------------- slots

@dataclass
class Slots:
    """A group's loss slots (`plan_slots`): one module each in the template, computed for its owners."""

    terms: list[TermConfig]  # per slot, the first member's term that has it (its params build the module)
    merged: list[tuple[int, ...] | None]  # per slot: the shape of its merged student input (None: not merged)
    of_member: list[list[int]]  # per member: the slot of each of its active terms, in order
    student: list[list[str | None]]  # per slot, per member: the template tap it reads there (merged slots)
    taps: tuple[str, ...]  # every template tap a slot reads


def projected_input(src: tuple[int, ...], dst: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape `search.taps.Projection(src, dst)` applies its map to: the tap averaged over space
    (a vector mentor tap), or pooled to the mentor's size (a larger map), or as it is. None when
    it maps first and resizes after (a mentee map smaller than the mentor's)."""
    if len(src) > 1 and len(dst) == 1:
        return (src[0],)
    if len(src) == 1:
        return src
    if len(src) != len(dst):
        return None
    return (src[0], *dst[1:]) if all(a >= b for a, b in zip(src[1:], dst[1:])) else None


def fit_projected(f: torch.Tensor, into: tuple[int, ...]) -> torch.Tensor:
    """A tap's outputs [K, B, C, *spatial] resized as `Projection` resizes before its map (the same
    ops: so a member computes the same merged or alone), then zero-padded to `into`'s channels."""
    K, B = f.shape[:2]
    x = f.flatten(0, 1)
    if x.dim() > 2 and len(into) == 1:
        x = x.flatten(2).mean(2)
    elif x.dim() > 2 and tuple(x.shape[2:]) != tuple(into[1:]):
        x = F.adaptive_avg_pool1d(x, into[1]) if x.dim() == 3 else F.adaptive_avg_pool2d(x, (into[1], into[2]))
    x = x.unflatten(0, (K, B))
    pad = into[0] - x.shape[2]
    return F.pad(x, (0, 0) * (x.dim() - 3) + (0, pad)) if pad else x


def plan_slots(cfgs: Sequence[MemberConfig], arch: ArchConfig, exits: tuple[int, ...], input_shape: Sequence[int],
               num_classes: int, mentor_shapes: dict[str, tuple[int, ...]]) -> Slots:
    """The loss slots of the members `cfgs` padded into template (`arch`, `exits`).

    Members whose terms have equal slots (`LossTerm.slot`) share one. A term that declares
    `merges_students` (a hint: its `student` tap reaches its loss only through a `Projection`)
    shares one slot across student taps too: a mixed-depth group's hints on each member's last
    layer (layer1, layer2, layer3) are one computation, not one per depth. Each member's own tap
    is resized as its projection would resize it, zero-padded to the widest such tap's channels
    (`fit_projected`), and the slot's projection is padded like any layer: exact, as the
    template's layers are. A member's second such term to the same mentor tap gets a slot of
    its own (the ordinal is in the key)."""
    keys: dict[tuple, int] = {}
    terms: list[TermConfig] = []
    widest: list[int] = []  # merged slots: the widest student tap's channels, else -1
    into_of: list[tuple[int, ...] | None] = []
    of_member: list[list[int]] = []
    picks: list[dict[int, str]] = []  # per member: slot → its own student tap (merged slots)
    taps: dict[str, None] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for c in cfgs:
        seen: dict[tuple, int] = {}
        mine, pick = [], {}
        for t in c.active_terms():
            cls = TERMS[t.kind]
            for s in cls.student_taps(t.params):
                taps.setdefault(s)
            key, into = cls.slot(t), None
            if getattr(cls, "merges_students", False):
                (student,), (teacher,) = cls.student_taps(t.params), cls.mentor_taps(t.params)
                if student not in shapes:
                    shapes[student] = _tap_shapes(arch, exits, (student,), input_shape, num_classes)[0]
                into = projected_input(shapes[student], mentor_shapes[teacher])
                if into is not None:
                    base = ("merged", cls.slot(TermConfig(t.kind, t.weight, {**t.params, "student": None})),
                            into[1:])
                    seen[base] = seen.get(base, -1) + 1
                    key = (*base, seen[base])
            if key not in keys:
                keys[key] = len(terms)
                terms.append(t)
                widest.append(-1)
                into_of.append(into)
            i = keys[key]
            mine.append(i)
            if into is not None:
                pick[i] = t.params["student"]
                widest[i] = max(widest[i], into[0])
        of_member.append(mine)
        picks.append(pick)
    merged = [None if into is None else (widest[i], *into[1:]) for i, into in enumerate(into_of)]
    return Slots(terms, merged, of_member, [[p.get(i) for p in picks] for i in range(len(terms))], tuple(taps))


# --------------------------------------------------------------------- layout

def region(real: Sequence[int], tmpl: Sequence[int], centred: Sequence[int]) -> tuple[slice, ...]:
    """Where a real tensor sits in its template: leading slices, centred along kernel dims."""
    out = []
    for d, (r, t) in enumerate(zip(real, tmpl)):
        o = (t - r) // 2 if d in centred else 0
        out.append(slice(o, o + r))
    return tuple(out)


class Layout:
    """Where every tensor of a group's members sits: the template's flat parameter columns (the
    net's first, then each slot's, each a range) and its buffers, and each real tensor's region."""

    def __init__(self, template: MenteeWithTerms, multi: bool):
        self.multi = multi  # several depths: the net's head is an `Exits`
        self.logical, self.centred = logical_shapes(template), centred_dims(template)
        self.names = [n for n, _ in template.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in template.named_parameters()]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.offsets = dict(zip(self.names, [sum(self.sizes[:i]) for i in range(len(self.sizes))]))
        self.numel = dict(zip(self.names, self.sizes))
        self.buffer_shapes = {n: (tuple(b.shape), b.dtype) for n, b in template.named_buffers()}
        assert all(n.startswith("net.") for n in self.buffer_shapes), "loss terms hold no buffers"
        self.net = self.part("net.")
        self.slots = [self.part(f"terms.{i}.") for i in range(len(template.terms))]
        # the parts' widths in column order (the net's, then each slot's): `flat.split(part_sizes, 1)`
        self.part_sizes = [p[1] - p[0] for p in (self.net, *self.slots)]
        assert sum(self.part_sizes) == self.width, "the net's columns, then each slot's, in order"
        # weight decay on weights only (the rule every optimiser here uses): not biases or norms
        self.decay = torch.cat([torch.full((n,), float(len(s) > 1)) for n, s in zip(self.sizes, self.shapes)])

    @property
    def width(self) -> int:
        return sum(self.sizes)

    def part(self, prefix: str) -> tuple[int, int, list[str], list[tuple[int, ...]]]:
        """(first column, end column, names within the module, shapes) of the parameters under
        `prefix`: consecutive in `named_parameters`, so one range of flat columns."""
        names = [n for n in self.names if n.startswith(prefix)]
        if not names:
            return 0, 0, [], []
        a = self.offsets[names[0]]
        return a, a + sum(self.numel[n] for n in names), [n[len(prefix):] for n in names], \
            [self.shapes[self.names.index(n)] for n in names]

    @staticmethod
    def unflat(flat: torch.Tensor, part) -> dict[str, torch.Tensor]:
        """A part's columns of one member's row as named tensors (views)."""
        _, _, names, shapes = part
        return {n: t.view(s) for n, t, s in zip(names, flat.split([math.prod(s) for s in shapes]), shapes)}

    def template_key(self, key: str, depth: int, slots: Sequence[int] = ()) -> str:
        """A member's state key (`net.…` or `terms.<its i>.…`) as named in the template."""
        if key.startswith("terms."):
            i, rest = key[6:].split(".", 1)
            return f"terms.{slots[int(i)]}.{rest}"
        return "net." + exit_key(key[4:], depth) if self.multi else key

    def pack(self, members: Sequence[tuple[MenteeWithTerms, int, Sequence[int]]]
             ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Flat parameters [K, P], their 0/1 mask and the buffers {name: [K, ...]} of `members`:
        (module, depth, union slot of each of its terms), zeros wherever a member has nothing."""
        K = len(members)
        flat, mask = torch.zeros(K, self.width), torch.zeros(K, self.width)
        buffers = {n: torch.zeros(K, *s, dtype=dt) for n, (s, dt) in self.buffer_shapes.items()}
        for j, (real, depth, slots) in enumerate(members):
            state, rlog = real.state_dict(), logical_shapes(real)
            for rk, r in state.items():
                tk = self.template_key(rk, depth, slots)
                where = region(rlog[rk], self.logical[tk], self.centred.get(tk, ()))
                r = r.reshape(rlog[rk])
                if tk in buffers:
                    buffers[tk][j].view(self.logical[tk])[where] = r
                    continue
                o, n = self.offsets[tk], self.numel[tk]
                flat[j, o:o + n].view(self.logical[tk])[where] = r
                mask[j, o:o + n].view(self.logical[tk])[where] = 1.0
        return flat, mask, buffers

    def crop(self, flat: torch.Tensor, buffers: dict[str, torch.Tensor], real: nn.Module,
             depth: int) -> dict[str, torch.Tensor]:
        """One member's mentee weights from its flat row and buffers, cut back to `real`'s (the
        bare net's) shapes."""
        rlog, state = logical_shapes(real), {}
        for rk, r in real.state_dict().items():
            tk = self.template_key("net." + rk, depth)
            if tk in buffers:
                src = buffers[tk]
            else:
                src = flat[self.offsets[tk]:self.offsets[tk] + self.numel[tk]]
            if r.dim() == 0:
                state[rk] = src.reshape(()).clone()
                continue
            where = region(rlog[rk], self.logical[tk], self.centred.get(tk, ()))
            state[rk] = src.reshape(self.logical[tk])[where].reshape(r.shape).clone().to(r.dtype)
        return state
