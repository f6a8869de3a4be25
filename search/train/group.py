"""A fused group: K members of mixed depth, width and kernel trained as one stacked model.

    parts = plan_groups(cfgs, splits.input_shape, splits.num_classes)    # 1–3 groups per cohort
    g = FusedGroup(parts[0], [cfgs[i] for i in parts[0]], splits, mentor_shapes, device)
    g.train_epoch(splits, cache, epoch=0); g.loss_hist[0], g.val_hist[0]  # device tensors

Members are padded into one template (`search.train.layout`: why the padding is exact, so
that a member ends with the weights it gets alone) and one `vmap`-ed step trains all of them,
each with its own data order, initialisation, learning rate and schedule, weight decay, loss
weights and loss-weight schedules. The step: the net for every member, then each loss slot
for the members whose slot it is (never computed to be weighted by 0), one AdamW over the
flat [K, P] parameters (`optim.adamw_flat_`).

On a GPU the step runs in bf16 autocast and is replayed as a CUDA graph, and so is the
evaluation on the validation split; every number stays on the device until the cohort reads
them all at the end (or at a halving rung), so there is no host sync per step or per epoch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from search.config import MemberConfig
from search.data import Splits
from search.taps import forward_with_taps
from search.terms import NORMALISE, TERMS
from search.train.cache import MentorCache
from search.train.device import autocast
from search.train.layout import (
    MAX_GROUPS,
    Layout,
    MenteeWithTerms,
    build_member,
    fit_projected,
    plan_groups,
    plan_slots,
    template_of,
)
from search.train.optim import adamw_flat_, lr_factor, schedule_table, weight_factor

__all__ = ["FusedGroup", "MenteeWithTerms", "build_member", "plan_groups", "sample_order", "MAX_GROUPS"]


class MatmulConv1d(nn.Conv1d):
    """Conv1d as unfold + one matmul. Under vmap a convolution with per-member weights becomes
    a grouped convolution, which cuDNN runs as hundreds of small kernels a step (layout
    transposes, per-group launches; ~1,100 a step for 124 fused 3-layer mentees on an H100);
    a matmul becomes one batched GEMM: ~2.5× fewer kernels and ~20% faster steps there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a tuple: only convs with numeric padding are given this class (`FusedGroup.__init__`)
        k, s, p = self.kernel_size[0], self.stride[0], cast(tuple[int, ...], self.padding)[0]
        if k == s == 1 and not p:  # a 1×1 map (a hint's projection): no unfold, whose backward is a kernel
            y = torch.einsum("bcl,oc->bol", x, self.weight[:, :, 0])
            return y if self.bias is None else y + self.bias[:, None]
        cols = (F.pad(x, (p, p)) if p else x).unfold(-1, k, s)  # [B, C, L', k]
        y = torch.einsum("bclk,ock->bol", cols, self.weight)
        return y if self.bias is None else y + self.bias[:, None]


class _Tapped(nn.Module):
    """The template's net returning (logits, [tapped outputs]): what every slot's loss reads."""

    def __init__(self, net: nn.Module, taps: Sequence[str]):
        super().__init__()
        self.net, self.taps = net, tuple(taps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return forward_with_taps(self.net, x, self.taps)


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

    slot_streams_on = True  # CUDA: each loss slot on a stream of its own (off: to measure what it buys)
    val_acc: torch.Tensor  # [K] the last validation accuracies, set by `_eval_val` (updated in place after)

    def __init__(self, idx: Sequence[int], cfgs: Sequence[MemberConfig], splits: Splits,
                 mentor_shapes: dict[str, tuple[int, ...]], device: torch.device, use_graph: bool = True):
        self.idx, self.cfgs = list(idx), list(cfgs)
        self.template_arch, self.exits = template_of([c.arch for c in self.cfgs])
        self.multi = self.exits != (self.template_arch.depth,)
        shape, nc = splits.input_shape, splits.num_classes
        # the members' loss slots: hints on different depths' last layers share one (`plan_slots`)
        slots = plan_slots(self.cfgs, self.template_arch, self.exits, shape, nc, mentor_shapes)
        self.merged, self.students = slots.merged, slots.student
        with torch.random.fork_rng(devices=[]):
            template = build_member(self.template_arch, slots.terms, shape, nc, mentor_shapes,
                                    self.exits if self.multi else None, slots.merged)
        self.layout = Layout(template, self.multi)
        members = []
        for c, mine in zip(self.cfgs, slots.of_member):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(c.train.seed)  # the member as it is initialised alone
                real = build_member(c.arch, c.active_terms(), shape, nc, mentor_shapes)
            members.append((real, c.arch.depth, mine))
        flat, mask, buffers = self.layout.pack(members)
        self.flat = flat.to(device).requires_grad_(True)
        self.mask = mask.to(device)
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        self.decay = self.layout.decay.to(device).view(1, -1)
        self.m, self.v = torch.zeros_like(self.flat), torch.zeros_like(self.flat)
        self.base = template.to("meta")
        for mod in self.base.modules():  # K=1 groups too: a member computes the same alone and fused
            if type(mod) is nn.Conv1d and mod.groups == 1 and mod.dilation == (1,) and mod.padding_mode == "zeros" \
                    and isinstance(mod.padding, tuple):
                mod.__class__ = MatmulConv1d
        self.tapped = _Tapped(self.base.net, slots.taps)
        # per slot: the mentee taps and the mentor outputs (its teacher's taps, logits) its loss reads
        self.terms = [(TERMS[t.kind].student_taps(t.params), TERMS[t.kind].mentor_outputs(t.params))
                      for t in slots.terms]
        K, S = len(self.cfgs), len(slots.terms)

        def f32(rows: list) -> torch.Tensor:
            return torch.tensor(rows, device=device, dtype=torch.float32)
        # per member: the weight and weight schedule of every slot (weight 0 where the slot is not
        # the member's own) and every slot's member parameters (the term's default where it is not)
        own = [dict(zip(mine, c.active_terms())) for c, mine in zip(self.cfgs, slots.of_member)]
        self.w = f32([[o[k].weight if k in o else 0.0 for k in range(S)] for o in own]).view(K, S)
        wnames = [[o[k].params.get("schedule", "constant") if k in o else "constant" for k in range(S)] for o in own]
        self.w_schedules = sorted({s for row in wnames for s in row} | {"constant"})
        self.w_sid = torch.tensor([[self.w_schedules.index(s) for s in row] for row in wnames],
                                  dtype=torch.long, device=device).view(K, S)
        vals = [{name: [float(o[k].params.get(name, d)) if k in o else d for o in own]
                 for name, d in TERMS[t.kind].member_params.items()} for k, t in enumerate(slots.terms)]
        # where no member weighs a slot relative to the label loss, the slot skips that ratio (× 1
        # exactly in `label_scaled`): a cross-entropy less per slot and step
        self.p = [{name: f32(v) for name, v in d.items() if name != NORMALISE or any(v)} for d in vals]
        self.lr = f32([[c.train.lr] for c in self.cfgs])
        self.wd = f32([[c.train.weight_decay] for c in self.cfgs])
        self.lr_schedules = sorted({c.train.schedule for c in self.cfgs})
        self.lr_sid = torch.tensor([self.lr_schedules.index(c.train.schedule) for c in self.cfgs],
                                   dtype=torch.long, device=device)
        self.seeds = torch.tensor([c.train.seed for c in self.cfgs], dtype=torch.long, device=device)
        self._owners()
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
        self.slot_streams: list[torch.cuda.Stream] = []  # one per loss slot (see `_losses`)

    def crop(self, j: int, real: nn.Module) -> dict[str, torch.Tensor]:
        """Member j's mentee weights, cut from the template back to `real`'s (the bare net's) shapes."""
        buffers = {k: v[j].detach().cpu() for k, v in self.buffers.items()}
        return self.layout.crop(self.flat[j].detach().cpu(), buffers, real, self.cfgs[j].arch.depth)

    def keep(self, rows: list[int]) -> None:
        """Drop every member not in `rows` (positions within the group)."""
        sel = torch.tensor(rows, device=self.flat.device)
        self.flat = self.flat.detach().index_select(0, sel).requires_grad_(True)
        for name in ("mask", "m", "v", "w", "w_sid", "lr", "wd", "lr_sid", "seeds", "loss_sum"):
            setattr(self, name, getattr(self, name).index_select(0, sel))
        self.loss_hist, self.val_hist = self.loss_hist.index_select(1, sel), self.val_hist.index_select(1, sel)
        self.buffers = {k: v.index_select(0, sel) for k, v in self.buffers.items()}
        self.p = [{k: v.index_select(0, sel) for k, v in d.items()} for d in self.p]
        self.idx = [self.idx[r] for r in rows]
        self.students = [[row[r] for r in rows] for row in self.students]
        self.cfgs = [self.cfgs[r] for r in rows]
        self.order = None
        self._owners()
        self.graphs, self.warm = {}, {}  # shapes changed: warm up and capture anew

    def _owners(self) -> None:
        """Per slot, the rows whose own slot it is (None: every row): a slot's loss is computed
        for its owners only, never for members that would weight it by 0. A merged slot's owners
        come grouped by the tap each reads (`reads`: per tap, its rows), so their inputs are
        gathered by one concatenation in that order."""
        w = self.w.detach().cpu()
        self.owners, self.reads = [], []
        for s in range(w.shape[1]):
            rows = [r for r in range(w.shape[0]) if w[r, s] != 0]
            by_tap: dict[str, list[int]] = {}
            if self.merged[s] is not None:
                for r in rows:
                    by_tap.setdefault(cast(str, self.students[s][r]), []).append(r)
                rows = [r for tap in sorted(by_tap) for r in by_tap[tap]]
            every = rows == list(range(w.shape[0]))
            self.owners.append(None if every else torch.tensor(rows, dtype=torch.long, device=self.w.device))
            self.reads.append([(tap, None if every and len(by_tap) == 1 else
                                torch.tensor(by_tap[tap], dtype=torch.long, device=self.w.device))
                               for tap in sorted(by_tap)])

    # -- one epoch ------------------------------------------------------------
    def _net(self, flat, buffers, x):
        params = {f"net.{k}": v for k, v in self.layout.unflat(flat, self.layout.net).items()}
        return functional_call(self.tapped, (params, buffers), (x,))

    def _term(self, i: int, flat, logits, feats, y, mentor, p):
        params = self.layout.unflat(flat, self.layout.slots[i])
        return functional_call(self.base.terms[i], params, (logits, feats, y, mentor, p))

    def _losses(self, eff: torch.Tensor, ids: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """[K] each member's weighted loss on its batch `ids` [K, B]: the net for every member
        (one vmap), then each slot for its owners only (one vmap per slot). On CUDA each slot runs
        on a stream of its own (forward, and so backward too: autograd keeps a node's stream): a
        slot is a few dozen tiny kernels, and side by side they hide each other's latency."""
        s = self.splits
        # one split, not a slice per part: its backward writes the [K, P] gradient once, where each
        # slice's would zero-fill a [K, P] tensor of its own and autograd would add them up
        cols = eff.split(self.layout.part_sizes, dim=1)
        logits, feats = torch.func.vmap(self._net, randomness="different")(cols[0], self.buffers, s.x_train[ids])
        feats = dict(zip(self.tapped.taps, feats))
        live = [i for i, rows in enumerate(self.owners) if rows is None or len(rows)]  # halving may empty a slot
        side = self.slot_streams_on and eff.is_cuda and len(live) > 1
        if side and len(self.slot_streams) < len(self.terms):
            self.slot_streams = [torch.cuda.Stream(eff.device) for _ in self.terms]
        main = torch.cuda.current_stream(eff.device) if side else None
        parts = []
        for i in live:
            if main is not None:  # side streams
                self.slot_streams[i].wait_stream(main)
                with torch.cuda.stream(self.slot_streams[i]):
                    parts.append(self._slot_loss(i, cols[1 + i], ids, w, logits, feats))
            else:
                parts.append(self._slot_loss(i, cols[1 + i], ids, w, logits, feats))
        if main is not None:
            for i in live:
                main.wait_stream(self.slot_streams[i])
        total = parts[0] if parts else torch.zeros(len(self.cfgs), device=eff.device)
        for p in parts[1:]:
            total = total + p
        return total

    def _slot_loss(self, i, flat_i, ids, w, logits, feats) -> torch.Tensor:
        """[K] slot i's weighted loss, 0 for members whose slot it is not (`flat_i`: its columns)."""
        taps, outputs = self.terms[i]
        rows = self.owners[i]
        sub = (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))  # noqa: E731
        ids_i = sub(ids)
        mentor: dict[str, torch.Tensor] = {}
        if outputs:
            c = self._mentor_cache()
            mentor = {m: c[m][ids_i] for m in outputs}  # each member its own batch's targets
        into = self.merged[i]
        if into is None:
            mine = {t: sub(feats[t]) for t in taps}
        else:  # each owner's own tap, resized and padded alike; owners come grouped by tap (`_owners`)
            parts = [fit_projected(feats[tap] if r is None else feats[tap].index_select(0, r), into)
                     for tap, r in self.reads[i]]
            mine = {taps[0]: parts[0] if len(parts) == 1 else torch.cat(parts)}
        loss = torch.func.vmap(functools.partial(self._term, i))(
            sub(flat_i), sub(logits), mine, self.splits.y_train[ids_i], mentor,
            {k: sub(v) for k, v in self.p[i].items()})
        loss = sub(w[:, i]) * loss
        return loss if rows is None else torch.zeros(len(self.cfgs), device=loss.device).index_add(0, rows, loss)

    def _mentor_cache(self) -> MentorCache:
        if self.cache is None:
            raise ValueError("a mentor term needs the mentor's cache; train_epoch was given none")
        return self.cache

    def _step(self) -> None:
        """One fused step. Everything that changes from step to step (the batch's sample ids,
        the schedules, Adam's bias correction) is read from device tensors and advanced on the
        device, so the step can be captured once as a CUDA graph and replayed."""
        bs, t = self.bs, self.t.view(1)
        assert self.lr_table is not None and self.order is not None  # set by train_epoch before its steps
        ids = self.order.index_select(1, self.pos + self.arange)  # [K, B] sample ids, each member its own
        # not table[:, t]: that would read t on the host
        lr = self.lr * self.lr_table.index_select(1, t).view(-1).index_select(0, self.lr_sid).view(-1, 1)
        w = self.w * self.w_table.index_select(1, t).view(-1).index_select(0, self.w_sid.view(-1)).view_as(self.w)
        with autocast(ids.device):
            loss = self._losses(self.flat * self.mask, ids, w)
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
        net = lambda w, b, xx: functional_call(self.base.net, (self.layout.unflat(w, self.layout.net), b), (xx,))  # noqa: E731
        f = torch.func.vmap(net, in_dims=(0, 0, None))
        a, b = self.layout.net[:2]
        w = (self.flat[:, a:b] * self.mask[:, a:b])
        buffers = {k[4:]: v for k, v in self.buffers.items()}
        chunk = max(64, 65536 // len(self.cfgs))
        correct = torch.zeros(len(self.cfgs), device=x.device)
        for i in range(0, len(x), chunk):
            with autocast(x.device):
                logits = f(w, buffers, x[i:i + chunk])
            correct += (logits.argmax(-1) == y[i:i + chunk]).sum(1)
        self.base.train(was)
        return correct / len(x)

