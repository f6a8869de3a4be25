"""A fused group: K members of mixed depth, width and kernel trained as one stacked model.

    parts = plan_groups(cfgs, splits.input_shape, splits.num_classes)    # 1–3 groups per cohort
    g = FusedGroup(parts[0], [cfgs[i] for i in parts[0]], splits, mentor_shapes, device)
    g.train_epoch(splits, cache, epoch=0); g.loss_hist[0], g.val_hist[0]  # device tensors

Members are padded into one *template* (the widest layer at each depth, the largest kernel,
a head at every member depth: `search.models.Exits`) and one `vmap`-ed step trains all of
them, each with its own data order, initialisation, learning rate and schedule, weight decay,
loss weights and loss-weight schedules. The padding is exact, so a member ends with the same
weights as trained alone (`tests/train/test_group.py`):

- every member's parameters are one row of a flat [K, P] tensor, with a 0/1 mask of where its
  real values live; the step uses `flat * mask`, so a padded entry contributes exactly 0 and
  gets exactly 0 gradient (mask · ∂L), Adam never moves it (m = v = 0 → update 0/(0+eps) = 0)
  and decay keeps it 0. Narrower layers live in the leading channels; a smaller kernel sits in
  the centre of the larger one (same parity: `models.fuse_class`), where it computes the same
  outputs; a shallower member's deeper layers and other exits are all zeros, so they add 0.
- one optimiser step over the flat tensor: a dozen kernels whatever the model.

On a GPU the step runs in bf16 autocast and is replayed as a CUDA graph, and so is the
evaluation on the validation split; every number stays on the device until the cohort reads
them all at the end (or at a halving rung), so there is no host sync per step or per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from search.config import ArchConfig, MemberConfig, TermConfig
from search.data import Splits
from search.models import (
    centred_dims,
    create_mentee,
    create_template,
    exit_key,
    forward_with_taps,
    fuse_class,
    logical_shapes,
    step_cost,
    tap_shapes,
)
from search.train.cache import MentorCache
from search.train.device import autocast
from search.train.losses import TERMS, LossTerm
from search.train.optim import adamw_flat_, lr_factor, schedule_table, weight_factor

__all__ = ["FusedGroup", "MenteeWithTerms", "build_member", "plan_groups", "MAX_GROUPS"]

MAX_GROUPS = 3  # fused groups per class of a cohort (see `plan_groups`)
GROUP_COST = 40_000  # one more group's fixed cost, in `step_cost` units × members (~0.3 ms a step on an H100)


class MenteeWithTerms(nn.Module):
    """A mentee plus one module per loss-term slot. `forward(x)` gives logits; with labels and
    the mentor's batch it gives the vector of every slot's loss (weighted outside, per member)."""

    def __init__(self, net: nn.Module, terms: Sequence[LossTerm]):
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
                 mentor_shapes: dict[str, tuple[int, ...]], exits: Sequence[int] | None = None) -> MenteeWithTerms:
    """Build `arch` (with `exits`: a template) with one module per term in `slots`.
    Initialised from the global RNG: seed it first (the net first, then the terms in order)."""
    ex = tuple(exits or (arch.depth,))
    net = create_template(arch, input_shape, num_classes, ex) if exits else create_mentee(arch, input_shape,
                                                                                         num_classes)
    wanted = tuple(dict.fromkeys(s for t in slots for s in TERMS[t.kind].student_taps(t.params)))
    key = (arch, ex, wanted, tuple(input_shape))
    if key not in _SHAPES:  # a forward pass per member adds up in cohorts of hundreds
        _SHAPES[key] = tap_shapes(net, wanted, tuple(input_shape))
    shapes = dict(zip(wanted, _SHAPES[key]))
    return MenteeWithTerms(net, [TERMS[t.kind](t.params, shapes, mentor_shapes) for t in slots])


_SHAPES: dict[tuple, list[tuple[int, ...]]] = {}


# ------------------------------------------------------------------- grouping

def _template(archs: Sequence[ArchConfig]) -> tuple[ArchConfig, tuple[int, ...]]:
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
                t, ex = _template(units[i:j])
                seg[i][j] = sum(counts[i:j]) * cost(t, ex) + GROUP_COST
        best = [[math.inf] * (n + 1) for _ in range(max_groups + 1)]
        cut = [[0] * (n + 1) for _ in range(max_groups + 1)]
        best[0][0] = 0.0
        for g in range(1, max_groups + 1):
            for j in range(1, n + 1):
                for i in range(j):
                    c = best[g - 1][i] + seg[i][j]
                    if c < best[g][j]:
                        best[g][j], cut[g][j] = c, i
        g = min(range(1, max_groups + 1), key=lambda k: best[k][n])
        j = n
        while j > 0:
            i = cut[g][j]
            out.append(sorted(m for a in units[i:j] for m in by_arch[a]))
            j, g = i, g - 1
    return sorted(out)


# -------------------------------------------------------------------- fused group

def _region(real: Sequence[int], tmpl: Sequence[int], centred: Sequence[int]) -> tuple[slice, ...]:
    """Where a real tensor sits in its template: leading slices, centred along kernel dims."""
    out = []
    for d, (r, t) in enumerate(zip(real, tmpl)):
        o = (t - r) // 2 if d in centred else 0
        out.append(slice(o, o + r))
    return tuple(out)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (int64 tensors; products stay below 2^59, so nothing overflows)."""
    m = 0xFFFFFFFF
    x = ((x >> 16) ^ x) * 0x45D9F3B & m
    x = ((x >> 16) ^ x) * 0x45D9F3B & m
    return (x >> 16) ^ x


def sample_order(seeds: torch.Tensor, epoch: int, n: int) -> torch.Tensor:
    """[K, n] this epoch's sample order per member: a function of (seed, epoch) alone, so a
    member sees the same batches in any cohort; computed on the device (no host work, no copy)."""
    b = _mix(_mix(seeds & 0xFFFFFFFF) ^ (epoch + 1))
    keys = _mix(b[:, None] ^ torch.arange(n, device=seeds.device))
    return keys.argsort(dim=1, stable=True)


class FusedGroup:
    """K members padded into one template. Params: one flat [K, P] tensor; buffers: [K, ...]."""

    def __init__(self, idx: Sequence[int], cfgs: Sequence[MemberConfig], splits: Splits,
                 mentor_shapes: dict[str, tuple[int, ...]], device: torch.device, use_graph: bool = True):
        self.idx, self.cfgs = list(idx), list(cfgs)
        self.template_arch, self.exits = _template([c.arch for c in self.cfgs])
        # the union of the members' term slots, in first-seen order
        union: dict[tuple, TermConfig] = {}
        for c in self.cfgs:
            for t in c.active_terms():
                union.setdefault(TERMS[t.kind].slot(t), t)
        keys = list(union)
        shape, nc = splits.input_shape, splits.num_classes
        multi = self.exits != (self.template_arch.depth,)
        with torch.random.fork_rng(devices=[]):
            template = build_member(self.template_arch, list(union.values()), shape, nc, mentor_shapes,
                                    self.exits if multi else None)
        self.logical, self.centred = logical_shapes(template), centred_dims(template)
        self.names = [n for n, _ in template.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in template.named_parameters()]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.offsets = dict(zip(self.names, [sum(self.sizes[:i]) for i in range(len(self.sizes))]))
        self.numel = dict(zip(self.names, self.sizes))
        K, P = len(self.cfgs), sum(self.sizes)
        flat, mask = torch.zeros(K, P), torch.zeros(K, P)
        buffers = {n: torch.zeros(K, *b.shape, dtype=b.dtype) for n, b in template.named_buffers()}
        for j, c in enumerate(self.cfgs):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(c.train.seed)
                real = build_member(c.arch, c.active_terms(), shape, nc, mentor_shapes)
            slots = [keys.index(TERMS[t.kind].slot(t)) for t in c.active_terms()]
            state, rlog = real.state_dict(), logical_shapes(real)
            for rk, tk, region in self._placement(rlog, c.arch.depth, slots, multi):
                r = state[rk].reshape(rlog[rk])
                if tk in buffers:
                    buffers[tk][j].view(self.logical[tk])[region] = r
                    continue
                o, n = self.offsets[tk], self.numel[tk]
                flat[j, o:o + n].view(self.logical[tk])[region] = r
                mask[j, o:o + n].view(self.logical[tk])[region] = 1.0
        self.multi, self.slot_keys = multi, keys
        self.flat = flat.to(device).requires_grad_(True)
        self.mask = mask.to(device)
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        # weight decay on weights only (the rule every optimiser here uses): not biases or norms
        self.decay = torch.cat([torch.full((n,), float(len(s) > 1)) for n, s in zip(self.sizes, self.shapes)]
                               ).to(device).view(1, -1)
        self.m, self.v = torch.zeros_like(self.flat), torch.zeros_like(self.flat)
        self.base = template.to("meta")
        kinds = [TERMS[t.kind] for t in union.values()]
        self.needs_logits = any(k.needs_logits for k in kinds)
        self.mentor_taps = list(
            dict.fromkeys(m for t in union.values() for m in TERMS[t.kind].mentor_taps(t.params)))
        f32 = dict(device=device, dtype=torch.float32)
        # per member: the weight and weight schedule of every slot (weight 0 where the slot is not
        # the member's own) and every slot's member parameters (the term's default where it is not)
        own = [{TERMS[t.kind].slot(t): t for t in c.active_terms()} for c in self.cfgs]
        self.w = torch.tensor([[o[k].weight if k in o else 0.0 for k in keys] for o in own], **f32)
        wnames = [[o[k].params.get("schedule", "constant") if k in o else "constant" for k in keys] for o in own]
        self.w_schedules = sorted({s for row in wnames for s in row} | {"constant"})
        self.w_sid = torch.tensor([[self.w_schedules.index(s) for s in row] for row in wnames],
                                  dtype=torch.long, device=device).view(K, len(keys))
        self.p = [{name: torch.tensor([float(o[k].params.get(name, d)) if k in o else d for o in own], **f32)
                   for name, d in kind.member_params.items()} for k, kind in zip(keys, kinds)]
        self.lr = torch.tensor([[c.train.lr] for c in self.cfgs], **f32)
        self.wd = torch.tensor([[c.train.weight_decay] for c in self.cfgs], **f32)
        self.lr_schedules = sorted({c.train.schedule for c in self.cfgs})
        self.lr_sid = torch.tensor([self.lr_schedules.index(c.train.schedule) for c in self.cfgs],
                                   dtype=torch.long, device=device)
        self.seeds = torch.tensor([c.train.seed for c in self.cfgs], dtype=torch.long, device=device)
        self.epochs, self.bs = self.cfgs[0].train.epochs, self.cfgs[0].train.batch_size
        # step state that lives on the device (see `_step`)
        self.t = torch.zeros((), dtype=torch.long, device=device)  # optimiser steps taken
        self.pos = torch.zeros((), dtype=torch.long, device=device)  # first sample of the batch in `order`
        self.loss_sum = torch.zeros(K, device=device)
        self.loss_hist = torch.full((self.epochs, K), math.nan, device=device)  # mean train loss per epoch
        self.val_hist = torch.full((self.epochs, K), math.nan, device=device)  # val accuracy per epoch
        self.test_acc: torch.Tensor | None = None  # after the last epoch
        self.order: torch.Tensor | None = None  # [K, N] this epoch's sample order per member
        self.lr_table: torch.Tensor | None = None  # [schedules, total steps], set by the first epoch
        self.use_graph = use_graph and device.type == "cuda"
        self.graphs: dict[str, torch.cuda.CUDAGraph] = {}
        self.warm: dict[str, int] = {}
        self.stream: torch.cuda.Stream | None = None  # set by `device.on_stream` on first use

    def _placement(self, rlog: dict[str, tuple[int, ...]], depth: int, slots: list[int], multi: bool):
        """(real key, template key, region) for every state tensor of a real member, given the
        member's logical shapes (`models.logical_shapes`); `slots`: its terms' union slots."""
        out = []
        for rk in rlog:
            if rk.startswith("terms."):
                i, rest = rk[6:].split(".", 1)
                tk = f"terms.{slots[int(i)]}.{rest}"
            else:
                tk = "net." + exit_key(rk[4:], depth) if multi else rk
            out.append((rk, tk, _region(rlog[rk], self.logical[tk], self.centred.get(tk, ()))))
        return out

    def crop(self, j: int, real: nn.Module) -> dict[str, torch.Tensor]:
        """Member j's mentee weights, cut from the template back to `real`'s (the bare net's) shapes."""
        flat = self.flat[j].detach().cpu()
        rlog = logical_shapes(real)
        state = {}
        for rk, r in real.state_dict().items():
            tk = "net." + (exit_key(rk, self.cfgs[j].arch.depth) if self.multi else rk)
            if tk in self.buffers:
                src = self.buffers[tk][j].detach().cpu()
            else:
                src = flat[self.offsets[tk]:self.offsets[tk] + self.numel[tk]]
            if r.dim() == 0:
                state[rk] = src.reshape(()).clone()
                continue
            region = _region(rlog[rk], self.logical[tk], self.centred.get(tk, ()))
            state[rk] = src.reshape(self.logical[tk])[region].reshape(r.shape).clone().to(r.dtype)
        return state

    def keep(self, rows: list[int]) -> None:
        """Drop every member not in `rows` (positions within the group)."""
        sel = torch.tensor(rows, device=self.flat.device)
        pick = lambda d: {k: v.detach().index_select(0, sel) for k, v in d.items()}  # noqa: E731
        self.flat = self.flat.detach().index_select(0, sel).requires_grad_(True)
        for name in ("mask", "m", "v", "w", "w_sid", "lr", "wd", "lr_sid", "seeds", "loss_sum"):
            setattr(self, name, getattr(self, name).index_select(0, sel))
        self.loss_hist, self.val_hist = self.loss_hist.index_select(1, sel), self.val_hist.index_select(1, sel)
        self.buffers = pick(self.buffers)
        self.p = [{k: v.index_select(0, sel) for k, v in d.items()} for d in self.p]
        self.idx = [self.idx[r] for r in rows]
        self.cfgs = [self.cfgs[r] for r in rows]
        self.order = None
        self.graphs, self.warm = {}, {}  # shapes changed: warm up and capture anew

    # -- one epoch ------------------------------------------------------------
    def _params(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.sizes), self.shapes)}

    def _loss(self, flat, buffers, x, y, mentor, w, p):
        _, losses = functional_call(self.base, (self._params(flat), buffers), (x, y, mentor, p))
        return (w * losses).sum()  # a slot that is not this member's has weight exactly 0

    def _step(self) -> None:
        """One fused step. Everything that changes from step to step (the batch's sample ids,
        the schedules, Adam's bias correction) is read from device tensors and advanced on the
        device, so the step can be captured once as a CUDA graph and replayed."""
        s, c, bs, t = self.splits, self.cache, self.bs, self.t.view(1)
        ids = self.order.index_select(1, self.pos + self.arange)  # [K, B] sample ids, each member its own
        x, y = s.x_train[ids], s.y_train[ids]
        mentor = {m: c.feats[m][ids] for m in self.mentor_taps}  # each member its own batch's targets
        if self.needs_logits:
            mentor["logits"] = c.logits[ids]
        # not table[:, t]: that would read t on the host
        lr = self.lr * self.lr_table.index_select(1, t).view(-1).index_select(0, self.lr_sid).view(-1, 1)
        w = self.w * self.w_table.index_select(1, t).view(-1).index_select(0, self.w_sid.view(-1)).view_as(self.w)
        vloss = torch.func.vmap(self._loss, in_dims=0, randomness="different")
        with autocast(ids.device):
            loss = vloss(self.flat * self.mask, self.buffers, x, y, mentor, w, self.p)
        # members are independent: d(sum)/dθ_k = dL_k/dθ_k
        (grad,) = torch.autograd.grad(loss.sum(), self.flat)
        adamw_flat_(self.flat, grad, self.m, self.v, self.t, lr, self.wd, self.decay)
        with torch.no_grad():
            self.loss_sum += loss.detach()
            self.t += 1
            self.pos += bs

    def train_epoch(self, splits: Splits, cache: MentorCache | None, epoch: int) -> None:
        """Train one epoch and evaluate on the validation split (the test split after the last);
        results land in `loss_hist[epoch]`, `val_hist[epoch]` and `test_acc`, on the device."""
        n = len(splits.x_train)
        self.bs = bs = min(self.bs, n)
        steps = n // bs  # drop the last partial batch: every step has the same shape
        dev = splits.x_train.device
        self.splits, self.cache = splits, cache
        if self.lr_table is None:  # whole schedules, so the step reads its factors on the device
            total = steps * self.epochs
            self.lr_table = schedule_table(self.lr_schedules, total, lr_factor, dev)
            self.w_table = schedule_table(self.w_schedules, total, weight_factor, dev)
            self.arange = torch.arange(bs, device=dev)
        order = sample_order(self.seeds, epoch, n)
        if self.order is None:
            self.order = order
        else:
            self.order.copy_(order)  # in place: a captured step reads this very tensor
        self.loss_sum.zero_()
        self.pos.zero_()
        self.base.train()
        for _ in range(steps):
            self._run("step", self._step)
        self.loss_hist[epoch].copy_(self.loss_sum / steps)
        self._run("val", self._eval_val)
        self.val_hist[epoch].copy_(self.val_acc)
        if epoch + 1 == self.epochs:
            self.test_acc = self.accuracy(splits.x_test, splits.y_test)

    def _eval_val(self) -> None:
        acc = self.accuracy(self.splits.x_val, self.splits.y_val)
        if not hasattr(self, "val_acc") or self.val_acc.shape != acc.shape:
            self.val_acc = acc
        else:
            self.val_acc.copy_(acc)

    def _run(self, name: str, fn: Callable[[], None]) -> None:
        """Run `fn`, which reads and writes only tensors that stay put. Eager on the CPU. On
        CUDA: twice eagerly (on a side stream, as capture requires), then captured once as a
        CUDA graph and replayed: a tiny mentee's step is otherwise all launch overhead."""
        if not self.use_graph:
            fn()
            return
        graph = self.graphs.get(name)
        if graph is not None:
            graph.replay()
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        if self.warm.get(name, 0) < 2:
            with torch.cuda.stream(side):
                fn()
            self.warm[name] = self.warm.get(name, 0) + 1
        else:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.stream(side), torch.cuda.graph(graph, stream=side):
                fn()
            torch.cuda.current_stream().wait_stream(side)
            graph.replay()  # capture records; this runs it
            self.graphs[name] = graph
        torch.cuda.current_stream().wait_stream(side)

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[K] accuracy on (x, y), on the device (no sync). Chunks keep K × chunk samples bounded."""
        was = self.base.training
        self.base.eval()
        f = torch.func.vmap(lambda w, b, xx: functional_call(self.base, (self._params(w), b), (xx,))[0],
                            in_dims=(0, 0, None))
        w = self.flat * self.mask
        chunk = max(64, 65536 // len(self.cfgs))
        correct = torch.zeros(len(self.cfgs), device=x.device)
        for i in range(0, len(x), chunk):
            with autocast(x.device):
                logits = f(w, self.buffers, x[i:i + chunk])
            correct += (logits.argmax(-1) == y[i:i + chunk]).sum(1)
        self.base.train(was)
        return correct / len(x)

