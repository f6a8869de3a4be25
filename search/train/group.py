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
import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from search.config import ArchConfig, HintConfig, MemberConfig
from search.data import Splits
from search.models import Projection, create_mentee, forward_with_taps, logical_shapes, tap_shapes
from search.train.cache import MentorCache
from search.train.device import autocast
from search.train.losses import member_loss
from search.train.optim import lr_factor

__all__ = ["FusedGroup", "MenteeWithHints", "build_member", "group_key"]


class MenteeWithHints(nn.Module):
    """A mentee plus one projection per hint; `forward` returns logits and projected taps."""

    def __init__(self, net: nn.Module, student_taps: Sequence[str], projections: Sequence[Projection]):
        super().__init__()
        self.net = net
        self.student_taps = tuple(student_taps)
        self.proj = nn.ModuleList(projections)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits, feats = forward_with_taps(self.net, x, self.student_taps)
        return logits, [p(f) for p, f in zip(self.proj, feats)]


def build_member(arch: ArchConfig, cfg: MemberConfig, input_shape: Sequence[int], num_classes: int,
                 mentor_shapes: dict[str, tuple[int, ...]]) -> MenteeWithHints:
    """Build `arch` (the member's own or a wider template) with the member's projections.
    Initialised from the global RNG: seed it first."""
    net = create_mentee(arch, input_shape, num_classes)
    hints = cfg.active_hints()
    src = _tap_shapes(net, arch, tuple(h.student for h in hints), tuple(input_shape))
    proj = [Projection(s, mentor_shapes[h.teacher]) for s, h in zip(src, hints)]
    return MenteeWithHints(net, [h.student for h in hints], proj)


_SHAPES: dict[tuple, list[tuple[int, ...]]] = {}


def _tap_shapes(net: nn.Module, arch: ArchConfig, taps: tuple[str, ...], shape: tuple[int, ...]):
    key = (arch, taps, shape)
    if key not in _SHAPES:  # a forward pass per member adds up in cohorts of hundreds
        _SHAPES[key] = tap_shapes(net, taps, shape)
    return _SHAPES[key]


def group_key(cfg: MemberConfig) -> tuple:
    """Members with equal keys train fused. Width is bucketed by powers of two so that
    padding never more than doubles a member's width (and its compute). Mappings do not
    split groups: a group computes the union of its members' hint terms, each member
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
        # the union of the members' hint terms, in first-seen order
        union: list[tuple[str, str, str]] = []
        for c in cfgs:
            union += [k for k in ((h.student, h.teacher, h.metric) for h in c.active_hints()) if k not in union]
        shape, nc = splits.input_shape, splits.num_classes
        union_cfg = dataclasses.replace(c0, hints=tuple(HintConfig(a, b, m, 1.0) for a, b, m in union))
        with torch.random.fork_rng(devices=[]):
            template = build_member(self.template_arch, union_cfg, shape, nc, mentor_shapes)
        self.logical = logical_shapes(template)
        members = []
        for c in cfgs:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(c.train.seed)
                real = build_member(c.arch, c, shape, nc, mentor_shapes)
            slots = [union.index((h.student, h.teacher, h.metric)) for h in c.active_hints()]
            members.append(self._pad(real, template, slots))
        self.params, self.buffers = stack_module_state(members)
        self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in self.params.items()}
        self.buffers = {k: v.to(device) for k, v in self.buffers.items()}
        self.base = copy.deepcopy(template).to("meta")
        self.teacher_taps = [t for _, t, _ in union]
        self.metrics = [m for _, _, m in union]
        self.kd = any(c.w_kd > 0 for c in cfgs)
        f32 = dict(device=device, dtype=torch.float32)
        self.w = {"ce": torch.tensor([c.w_ce for c in cfgs], **f32),
                  "kd": torch.tensor([c.w_kd for c in cfgs], **f32),
                  "T": torch.tensor([c.temperature for c in cfgs], **f32),
                  "hint": torch.tensor([_union_weights(c, union) for c in cfgs], **f32)}
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
        The member's i-th projection goes to union slot `slots[i]`; other slots stay zero
        (weighted by 0, they get exactly zero gradient and never move)."""
        out = copy.deepcopy(template)
        real_state, real_logical = real.state_dict(), logical_shapes(real)
        rename = {}
        for k in real_state:
            if k.startswith("proj."):
                i, rest = k[5:].split(".", 1)
                rename[f"proj.{slots[int(i)]}.{rest}"] = k
        state = {}
        for k, t in template.state_dict().items():
            src = rename.get(k, k)
            if src not in real_state:  # a hint slot that is not this member's
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
        self.w = {k: v.index_select(0, sel) for k, v in self.w.items()}
        self.lr, self.wd = self.lr.index_select(0, sel), self.wd.index_select(0, sel)
        self.idx = [self.idx[r] for r in rows]
        self.cfgs = [self.cfgs[r] for r in rows]
        self.gens = [self.gens[r] for r in rows]
        self.order, self.loss_sum = None, self.loss_sum.index_select(0, sel)
        self.graph, self.eager_steps = None, 0  # shapes changed: warm up and capture anew

    # -- one epoch ------------------------------------------------------------
    def _loss(self, params, buffers, x, y, t_logits, t_feats, w):
        logits, preds = functional_call(self.base, (params, buffers), (x,))
        targets = [p.target(t) for p, t in zip(self.base.proj, t_feats)]
        return member_loss(logits, preds, y, t_logits if self.kd else None, targets, self.metrics, w)

    def _step(self) -> None:
        """One fused step. Everything that changes from step to step (the batch's sample
        ids, the schedule, Adam's bias correction) is read from device tensors and advanced
        on the device, so the step can be captured once as a CUDA graph and replayed."""
        s, c, bs = self.splits, self.cache, self.bs
        ids = self.order.index_select(1, self.pos + self.arange)  # [K, B] sample ids, each member its own
        x, y = s.x_train[ids], s.y_train[ids]
        t_logits = c.logits[ids] if self.kd else torch.zeros(ids.shape, device=ids.device)
        t_feats = [c.feats[t][ids] for t in self.teacher_taps]
        vloss = torch.func.vmap(self._loss, in_dims=(0, 0, 0, 0, 0, 0, 0), randomness="different")
        with autocast(ids.device):
            loss = vloss(self.params, self.buffers, x, y, t_logits, t_feats, self.w)
        loss.sum().backward()  # members are independent: d(sum)/dθ_k = dL_k/dθ_k
        self._adamw()
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

    @torch.no_grad()
    def _adamw(self, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
        """AdamW with per-member learning rate and weight decay (decay on weights only)."""
        tf = (self.t + 1).float()
        bc1, bc2 = 1 - b1 ** tf, 1 - b2 ** tf
        factor = self.sched.index_select(0, self.t.view(1))  # not sched[t]: that would read t on the host
        for k, p in self.params.items():
            g = p.grad
            view = (-1,) + (1,) * (p.dim() - 1)
            lr = (self.lr * factor).view(view)
            if p.dim() > 2:  # stacked matrices and kernels; biases, BN and scalars are not decayed
                p.mul_(1 - lr * self.wd.view(view))
            m, v = self.m[k], self.v[k]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.sub_(lr / bc1 * m / (v / bc2).sqrt_().add_(eps))

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


def _union_weights(cfg: MemberConfig, union: list[tuple[str, str, str]]) -> list[float]:
    w = [0.0] * max(len(union), 1)
    for h in cfg.active_hints():
        w[union.index((h.student, h.teacher, h.metric))] = h.weight
    return w

