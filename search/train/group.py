"""A fused group: K members of one structure trained as one stacked model.

Members that share a structure (family, depth, kernel, epochs, batch size, width
bucket) are stacked with `torch.func` and one `vmap`-ed step serves all of them, each
with its own data order, initialisation, learning rate, weight decay and loss weights.
Narrower members are zero-padded to the group's widths; padded weights get exactly
zero gradient, so every member follows the same trajectory as if trained alone
(`tests/train/test_cohort.py` checks this). On a GPU the step runs in bf16 autocast and
is replayed as a CUDA graph: tiny models are all launch overhead otherwise.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from search.config import ArchConfig, MemberConfig, TermConfig
from search.data import Splits
from search.models import create_mentee, forward_with_taps, logical_shapes, tap_shapes
from search.train.cache import MentorCache
from search.train.device import autocast
from search.train.losses import TERMS, LossTerm
from search.train.optim import adamw_, lr_factor

__all__ = ["FusedGroup", "MenteeWithTerms", "build_member", "group_key"]


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
                 mentor_shapes: dict[str, tuple[int, ...]]) -> MenteeWithTerms:
    """Build `arch` (the member's own or a wider template) with one module per term in `slots`.
    Initialised from the global RNG: seed it first (the net first, then the terms in order)."""
    net = create_mentee(arch, input_shape, num_classes)
    wanted = tuple(dict.fromkeys(s for t in slots for s in TERMS[t.kind].student_taps(t.params)))
    shapes = dict(zip(wanted, _tap_shapes(net, arch, wanted, tuple(input_shape))))
    return MenteeWithTerms(net, [TERMS[t.kind](t.params, shapes, mentor_shapes) for t in slots])


_SHAPES: dict[tuple, list[tuple[int, ...]]] = {}


def _tap_shapes(net: nn.Module, arch: ArchConfig, taps: tuple[str, ...], shape: tuple[int, ...]):
    key = (arch, taps, shape)
    if key not in _SHAPES:  # a forward pass per member adds up in cohorts of hundreds
        _SHAPES[key] = tap_shapes(net, taps, shape)
    return _SHAPES[key]


def group_key(cfg: MemberConfig) -> tuple:
    """Members with equal keys train fused. Width is bucketed by powers of two so that
    padding never more than doubles a member's width (and its compute). Mappings do not
    split groups: a group computes the union of its members' loss-term slots, each member
    weighting the ones that are not its own by exactly 0."""
    a, t = cfg.arch, cfg.train
    bucket = math.ceil(math.log2(max(a.widths)))
    return (a.family, a.depth, a.kernel, a.batch_norm, bucket, t.epochs, t.batch_size, t.schedule)


# -------------------------------------------------------------------- fused group

class FusedGroup:
    """K members of one structure, stacked: params[name] has shape [K, ...]."""

    def __init__(self, idx: list[int], cfgs: list[MemberConfig], splits: Splits,
                 mentor_shapes: dict[str, tuple[int, ...]], device: torch.device, use_graph: bool = True):
        self.idx, self.cfgs = idx, cfgs
        c0 = cfgs[0]
        widths = tuple(max(ws) for ws in zip(*(c.arch.widths for c in cfgs)))
        self.template_arch = ArchConfig(c0.arch.family, widths, c0.arch.kernel, c0.arch.batch_norm)
        # the union of the members' term slots, in first-seen order
        union: dict[tuple, TermConfig] = {}
        for c in cfgs:
            for t in c.active_terms():
                union.setdefault(TERMS[t.kind].slot(t), t)
        keys = list(union)
        shape, nc = splits.input_shape, splits.num_classes
        with torch.random.fork_rng(devices=[]):
            template = build_member(self.template_arch, list(union.values()), shape, nc, mentor_shapes)
        self.logical = logical_shapes(template)
        members = []
        for c in cfgs:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(c.train.seed)
                real = build_member(c.arch, c.active_terms(), shape, nc, mentor_shapes)
            members.append(self._pad(real, template, [keys.index(TERMS[t.kind].slot(t)) for t in c.active_terms()]))
        self.params, self.buffers = stack_module_state(members)
        self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in self.params.items()}
        self.buffers = {k: v.to(device) for k, v in self.buffers.items()}
        self.base = copy.deepcopy(template).to("meta")
        kinds = [TERMS[t.kind] for t in union.values()]
        self.needs_logits = any(k.needs_logits for k in kinds)
        self.mentor_taps = list(
            dict.fromkeys(m for t in union.values() for m in TERMS[t.kind].mentor_taps(t.params)))
        f32 = dict(device=device, dtype=torch.float32)
        # per member: the weight of every slot (0 where the slot is not the member's own) and
        # every slot's member parameters (the term's default where it is not)
        own = [{TERMS[t.kind].slot(t): t for t in c.active_terms()} for c in cfgs]
        self.w = torch.tensor([[o[k].weight if k in o else 0.0 for k in keys] for o in own], **f32)
        self.p = [{name: torch.tensor([float(o[k].params.get(name, d)) if k in o else d for o in own], **f32)
                   for name, d in kind.member_params.items()} for k, kind in zip(keys, kinds)]
        self.lr = torch.tensor([c.train.lr for c in cfgs], **f32)
        self.wd = torch.tensor([c.train.weight_decay for c in cfgs], **f32)
        self.m = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.gens = [torch.Generator().manual_seed(c.train.seed) for c in cfgs]
        # step state that lives on the device (see `_step`)
        self.t = torch.zeros((), dtype=torch.long, device=device)  # optimiser steps taken
        self.pos = torch.zeros((), dtype=torch.long, device=device)  # first sample of the batch in `order`
        self.sched: torch.Tensor | None = None  # lr factor per step
        self.order: torch.Tensor | None = None  # [K, N] this epoch's sample order per member
        self.loss_sum = torch.zeros(len(cfgs), device=device)
        self.bs = cfgs[0].train.batch_size
        self.use_graph = use_graph and device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_steps = 0
        self.stream: torch.cuda.Stream | None = None  # set by `_on_stream` on first use

    def _pad(self, real: nn.Module, template: nn.Module, slots: list[int]) -> nn.Module:
        """`template`-shaped copy of `real`: real values in the leading slice, zeros elsewhere.
        The member's i-th term goes to union slot `slots[i]`; other slots stay zero (weighted
        by 0, they get exactly zero gradient and never move)."""
        out = copy.deepcopy(template)
        real_state, real_logical = real.state_dict(), logical_shapes(real)
        rename = {}
        for k in real_state:
            if k.startswith("terms."):
                i, rest = k[6:].split(".", 1)
                rename[f"terms.{slots[int(i)]}.{rest}"] = k
        state = {}
        for k, t in template.state_dict().items():
            src = rename.get(k, k)
            if src not in real_state:  # a term slot that is not this member's
                state[k] = torch.zeros_like(t)
                continue
            r = real_state[src]
            if r.dim() == 0:
                state[k] = r.clone()
                continue
            z = torch.zeros(self.logical[k], dtype=t.dtype)
            z[tuple(slice(0, s) for s in real_logical[src])] = r.reshape(real_logical[src])
            state[k] = z.reshape(t.shape)
        out.load_state_dict(state)
        return out

    def crop(self, j: int, real: nn.Module) -> dict[str, torch.Tensor]:
        """Member j's mentee weights (`net.*`), cut back from the padded stack to `real`'s shapes."""
        state = {}
        real_logical = logical_shapes(real)
        for k, r in real.state_dict().items():
            k = f"net.{k}"
            src = (self.params.get(k) if k in self.params else self.buffers[k])[j].detach().cpu()
            if r.dim() == 0:
                state[k[4:]] = src.clone()
                continue
            v = src.reshape(self.logical[k])[tuple(slice(0, s) for s in real_logical[k[4:]])]
            state[k[4:]] = v.reshape(r.shape).clone().to(r.dtype)
        return state

    def keep(self, rows: list[int]) -> None:
        """Drop every member not in `rows` (positions within the group)."""
        sel = torch.tensor(rows, device=self.lr.device)
        pick = lambda d: {k: v.detach().index_select(0, sel) for k, v in d.items()}  # noqa: E731
        self.params = {k: v.requires_grad_(True) for k, v in pick(self.params).items()}
        self.buffers, self.m, self.v = pick(self.buffers), pick(self.m), pick(self.v)
        self.w = self.w.index_select(0, sel)
        self.p = [{k: v.index_select(0, sel) for k, v in d.items()} for d in self.p]
        self.lr, self.wd = self.lr.index_select(0, sel), self.wd.index_select(0, sel)
        self.idx = [self.idx[r] for r in rows]
        self.cfgs = [self.cfgs[r] for r in rows]
        self.gens = [self.gens[r] for r in rows]
        self.order, self.loss_sum = None, self.loss_sum.index_select(0, sel)
        self.graph, self.eager_steps = None, 0  # shapes changed: warm up and capture anew

    # -- one epoch ------------------------------------------------------------
    def _loss(self, params, buffers, x, y, mentor, w, p):
        _, losses = functional_call(self.base, (params, buffers), (x, y, mentor, p))
        return (w * losses).sum()  # a slot that is not this member's has weight exactly 0

    def _step(self) -> None:
        """One fused step. Everything that changes from step to step (the batch's sample
        ids, the schedule, Adam's bias correction) is read from device tensors and advanced
        on the device, so the step can be captured once as a CUDA graph and replayed."""
        s, c, bs = self.splits, self.cache, self.bs
        ids = self.order.index_select(1, self.pos + self.arange)  # [K, B] sample ids, each member its own
        x, y = s.x_train[ids], s.y_train[ids]
        mentor = {t: c.feats[t][ids] for t in self.mentor_taps}  # each member its own batch's targets
        if self.needs_logits:
            mentor["logits"] = c.logits[ids]
        vloss = torch.func.vmap(self._loss, in_dims=0, randomness="different")
        with autocast(ids.device):
            loss = vloss(self.params, self.buffers, x, y, mentor, self.w, self.p)
        loss.sum().backward()  # members are independent: d(sum)/dθ_k = dL_k/dθ_k
        adamw_(self.params, self.m, self.v, self.t, self.sched, self.lr, self.wd)
        with torch.no_grad():
            self.loss_sum += loss.detach()
            self.t += 1
            self.pos += bs

    def train_epoch(self, splits: Splits, cache: MentorCache | None, total_steps: int) -> torch.Tensor:
        cfg = self.cfgs[0].train
        n = len(splits.x_train)
        self.bs = bs = min(cfg.batch_size, n)
        dev = splits.x_train.device
        self.splits, self.cache = splits, cache
        if self.sched is None:  # the whole schedule, so the step reads its factor on the device
            self.sched = torch.tensor([lr_factor(cfg.schedule, i, total_steps) for i in range(total_steps)],
                                      device=dev)
            self.arange = torch.arange(bs, device=dev)
        # each member its own order, drawn from its own generator: the same as alone
        order = torch.stack([torch.randperm(n, generator=g) for g in self.gens]).to(dev)
        if self.order is None or self.order.shape != order.shape:
            self.order, self.loss_sum = order, torch.zeros(len(self.cfgs), device=dev)
        else:
            self.order.copy_(order)
        self.loss_sum.zero_()
        self.pos.zero_()
        self.base.train()
        steps = n // bs  # drop the last partial batch: every step has the same shape
        self._run_epoch(steps)
        return self.loss_sum / steps

    def _run_epoch(self, steps: int) -> None:
        """Eager on the CPU. On CUDA, two eager warm-up steps (on a side stream, as capture
        requires), then one step captured as a CUDA graph and replayed for every later step:
        a tiny mentee's step is otherwise all launch overhead. The step reads its batch and
        schedule from device counters, so a replay needs no work from Python."""
        if not (self.use_graph and self.order.is_cuda):
            for _ in range(steps):
                self._zero_grad()
                self._step()
            return
        for _ in range(steps):
            if self.graph is not None:
                self.graph.replay()
                continue
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            self._zero_grad()  # the captured backward then writes fresh grads, never accumulates
            if self.eager_steps < 2:
                with torch.cuda.stream(side):
                    self._step()
                self.eager_steps += 1
            else:
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.stream(side), torch.cuda.graph(self.graph, stream=side):
                    self._step()
                torch.cuda.current_stream().wait_stream(side)
                self.graph.replay()  # capture records the step; this runs it
            torch.cuda.current_stream().wait_stream(side)

    def _zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        self.base.eval()
        f = torch.func.vmap(lambda p, b, xx: functional_call(self.base, (p, b), (xx,))[0], in_dims=(0, 0, None))
        correct = torch.zeros(len(self.cfgs), device=x.device)
        for i in range(0, len(x), chunk):
            with autocast(x.device):
                logits = f(self.params, self.buffers, x[i:i + chunk])
            correct += (logits.argmax(-1) == y[i:i + chunk]).sum(1)
        return correct / len(x)
