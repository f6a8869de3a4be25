"""Mentor–mentee training: the loss, the mentor cache and the fused cohort loop.

One loss per mentee (Venkatesan & Li 2016; FitNets; Hinton et al.)::

    L = w_ce·CE(logits, y) + Σ_k w_k·metric_k(proj_k(mentee tap), mentor tap) + w_kd·T²·KL(mentor ‖ mentee at T)

The mentor never runs in a mentee's step: its logits and tapped features over the
training set are computed once (`MentorCache`) and indexed by the batch's sample ids.

A *cohort* is a list of `MemberConfig`s trained in one process. Members that share a
structure (family, depth, kernel, mapping, epochs, batch size) form a *group* that
trains as one fused model: their weights are stacked with `torch.func` and one
`vmap`-ed step serves all of them, each with its own data order, initialisation,
learning rate, weight decay and loss weights. Narrower members are zero-padded to the
group's widths; padded weights get exactly zero gradient, so every member follows the
same trajectory as if trained alone (`tests/test_distill.py` checks this)::

    results = train_cohort(configs, splits, cache=MentorCache.build(mentor, splits.x_train, taps))
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, stack_module_state
from torch.nn import functional as F

from search.config import ArchConfig, HintConfig, MemberConfig, MemberResult
from search.data import Splits
from search.errors import UserError
from search.measure import cost as model_cost
from search.models import Mentor, Projection, create_mentee, forward_with_taps, logical_shapes, tap_shapes

__all__ = ["METRICS", "register_metric", "MentorCache", "MenteeWithHints", "member_loss", "build_member",
           "train_cohort", "group_key", "pick_device"]

# ------------------------------------------------------------------------- metrics

METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {}


def register_metric(name: str):
    def deco(fn):
        METRICS[name] = fn
        return fn
    return deco


@register_metric("mse")
def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).mean()


@register_metric("rmse")
def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # eps keeps the gradient finite when the projection matches exactly
    return torch.sqrt((a - b).pow(2).mean() + 1e-12)


@register_metric("cosine")
def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-8).mean()


# --------------------------------------------------------------------- mentor cache

@dataclass
class MentorCache:
    """The mentor's logits and tapped features for every training sample, computed once.

    Features are stored in fp16 (half the memory; a hint is a regression target, far
    coarser than fp16's 3 significant digits) unless their range overflows fp16."""

    logits: torch.Tensor  # [N, classes] fp32
    feats: dict[str, torch.Tensor]  # tap name → [N, ...]

    @classmethod
    @torch.no_grad()
    def build(cls, mentor: Mentor, x: torch.Tensor, taps: Sequence[str], batch: int = 2048) -> "MentorCache":
        model = mentor.model.eval()
        dev = next(model.parameters()).device
        logits, feats = [], {t: [] for t in taps}
        for i in range(0, len(x), batch):
            out, fs = forward_with_taps(model, x[i:i + batch].to(dev), list(taps))
            logits.append(out.float())
            for t, f in zip(taps, fs):
                feats[t].append(f.float())
        cat = {t: torch.cat(v) for t, v in feats.items()}
        return cls(torch.cat(logits), {t: v.half() if v.abs().max() < 6e4 else v for t, v in cat.items()})

    def to(self, device: torch.device | str) -> "MentorCache":
        return MentorCache(self.logits.to(device), {k: v.to(device) for k, v in self.feats.items()})

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [self.logits, *self.feats.values()])


# ------------------------------------------------------------------------- members

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
    src = tap_shapes(net, [h.student for h in hints], input_shape)
    proj = [Projection(s, mentor_shapes[h.teacher]) for s, h in zip(src, hints)]
    return MenteeWithHints(net, [h.student for h in hints], proj)


def member_loss(logits: torch.Tensor, preds: Sequence[torch.Tensor], y: torch.Tensor,
                t_logits: torch.Tensor | None, t_feats: Sequence[torch.Tensor],
                metrics: Sequence[str], w: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mentee loss for one member. With no hints and w_kd = 0 this is exactly w_ce·CE."""
    loss = w["ce"] * F.cross_entropy(logits.float(), y)
    for k, (p, t) in enumerate(zip(preds, t_feats)):
        loss = loss + w["hint"][k] * METRICS[metrics[k]](p.float(), t.float())
    if t_logits is not None:
        T = w["T"]
        # KL(mentor ‖ mentee), written out: F.kl_div has no vmap batching rule (slow fallback)
        log_t, log_s = F.log_softmax(t_logits / T, -1), F.log_softmax(logits.float() / T, -1)
        kl = (log_t.exp() * (log_t - log_s)).sum(-1).mean()
        loss = loss + w["kd"] * T * T * kl
    return loss


def group_key(cfg: MemberConfig) -> tuple:
    """Members with equal keys train fused. Width is bucketed by powers of two so that
    padding never more than doubles a member's width (and its compute). Mappings do not
    split groups: a group computes the union of its members' hint terms, each member
    weighting the ones that are not its own by exactly 0."""
    a, t = cfg.arch, cfg.train
    bucket = math.ceil(math.log2(max(a.widths)))
    return (a.family, a.depth, a.kernel, a.batch_norm, bucket, t.epochs, t.batch_size, t.schedule)


def pick_device(device: str | None = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rate at `step` of `total` (shared by a group)."""
    p = step / max(total, 1)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if schedule == "onecycle":  # 30% linear warm-up from lr/25, then cosine to ~0
        if p < 0.3:
            return 1 / 25 + (1 - 1 / 25) * p / 0.3
        return 0.5 * (1 + math.cos(math.pi * (p - 0.3) / 0.7))
    raise UserError(f"unknown schedule '{schedule}'; expected cosine, onecycle or constant")


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
        self.step_count = 0
        self.seconds = 0.0
        self.factor, self.bc1, self.bc2 = (torch.ones((), **f32) for _ in range(3))
        self.ids: torch.Tensor | None = None
        self.loss_sum: torch.Tensor | None = None
        self.use_graph = use_graph and device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_steps = 0

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
        self.graph, self.eager_steps, self.ids, self.loss_sum = None, 0, None, None  # shapes changed: capture anew

    # -- one epoch ------------------------------------------------------------
    def _loss(self, params, buffers, x, y, t_logits, t_feats, w):
        logits, preds = functional_call(self.base, (params, buffers), (x,))
        targets = [p.target(t) for p, t in zip(self.base.proj, t_feats)]
        return member_loss(logits, preds, y, t_logits if self.kd else None, targets, self.metrics, w)

    def _step(self) -> None:
        """One fused step on the batch whose sample ids are in `self.ids` ([K, B]).
        Reads and writes only tensors that live across steps, so it can be a CUDA graph."""
        ids, s, c = self.ids, self.splits, self.cache
        x, y = s.x_train[ids], s.y_train[ids]
        t_logits = c.logits[ids] if self.kd else torch.zeros(ids.shape, device=ids.device)
        t_feats = [c.feats[t][ids] for t in self.teacher_taps]
        vloss = torch.func.vmap(self._loss, in_dims=(0, 0, 0, 0, 0, 0, 0), randomness="different")
        with _autocast(ids.device):
            loss = vloss(self.params, self.buffers, x, y, t_logits, t_feats, self.w)
        loss.sum().backward()  # members are independent: d(sum)/dθ_k = dL_k/dθ_k
        self._adamw()
        self.loss_sum += loss.detach()

    def train_epoch(self, splits: Splits, cache: MentorCache | None, total_steps: int) -> torch.Tensor:
        t0 = time.perf_counter()
        cfg = self.cfgs[0].train
        n = len(splits.x_train)
        bs = min(cfg.batch_size, n)
        dev = splits.x_train.device
        self.splits, self.cache = splits, cache
        # each member its own order, drawn from its own generator: the same as alone
        order = torch.stack([torch.randperm(n, generator=g) for g in self.gens]).to(dev)
        self.base.train()
        if self.loss_sum is None or len(self.loss_sum) != len(self.cfgs):
            self.loss_sum = torch.zeros(len(self.cfgs), device=dev)
        self.loss_sum.zero_()
        steps = n // bs  # drop the last partial batch: every step has the same shape
        for i in range(steps):
            self.factor.fill_(lr_factor(cfg.schedule, self.step_count, total_steps))
            t = self.step_count + 1
            self.bc1.fill_(1 - 0.9 ** t)
            self.bc2.fill_(1 - 0.999 ** t)
            batch = order[:, i * bs:(i + 1) * bs]
            if self.ids is None or self.ids.shape != batch.shape:
                self.ids = batch.clone()
            else:
                self.ids.copy_(batch)
            self._run_step()
            self.step_count += 1
        self.seconds += time.perf_counter() - t0
        return self.loss_sum / steps

    def _run_step(self) -> None:
        """Eager on the CPU; on CUDA, a few eager steps, then the step captured once as a
        CUDA graph and replayed: a tiny mentee's step is all launch overhead otherwise."""
        if not (self.use_graph and self.ids.is_cuda):
            self._zero_grad()
            return self._step()
        if self.graph is None and self.eager_steps >= 3:
            self._zero_grad()  # backward inside the capture then writes grads, never accumulates
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.stream(side), torch.cuda.graph(self.graph, stream=side):
                self._step()
            torch.cuda.current_stream().wait_stream(side)
        if self.graph is not None:
            self.graph.replay()
            return
        side = torch.cuda.Stream()  # warm-up steps run on a side stream, as capture requires
        side.wait_stream(torch.cuda.current_stream())
        self._zero_grad()
        with torch.cuda.stream(side):
            self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.eager_steps += 1

    @torch.no_grad()
    def _adamw(self, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
        """AdamW with per-member learning rate and weight decay (decay on weights only).
        Step-dependent scalars are device tensors so that a captured graph stays valid."""
        for k, p in self.params.items():
            g = p.grad
            view = (-1,) + (1,) * (p.dim() - 1)
            lr = (self.lr * self.factor).view(view)
            if p.dim() > 2:  # stacked matrices and kernels; biases, BN and scalars are not decayed
                p.mul_(1 - lr * self.wd.view(view))
            m, v = self.m[k], self.v[k]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.sub_(lr / self.bc1 * m / (v / self.bc2).sqrt_().add_(eps))

    def _zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        self.base.eval()
        f = torch.func.vmap(lambda p, b, xx: functional_call(self.base, (p, b), (xx,))[0], in_dims=(0, 0, None))
        correct = torch.zeros(len(self.cfgs), device=x.device)
        for i in range(0, len(x), chunk):
            with _autocast(x.device):
                logits = f(self.params, self.buffers, x[i:i + chunk])
            correct += (logits.argmax(-1) == y[i:i + chunk]).sum(1)
        return correct / len(x)


def _union_weights(cfg: MemberConfig, union: list[tuple[str, str, str]]) -> list[float]:
    w = [0.0] * max(len(union), 1)
    for h in cfg.active_hints():
        w[union.index((h.student, h.teacher, h.metric))] = h.weight
    return w


def _autocast(device: torch.device):
    """bf16 on CUDA (no weight cache: it would break graph replay); plain fp32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


# ------------------------------------------------------------------- cohort loop

def _pareto_rank(acc: list[float], params: list[int]) -> list[int]:
    """Non-dominated sorting rank (0 = on the front) on (acc max, params min)."""
    n, rank, left = len(acc), [0] * len(acc), set(range(len(acc)))
    r = 0
    while left:
        front = {i for i in left if not any(
            acc[j] >= acc[i] and params[j] <= params[i] and (acc[j] > acc[i] or params[j] < params[i])
            for j in left)}
        for i in front:
            rank[i] = r
        left -= front
        r += 1
    assert len(rank) == n
    return rank


def train_cohort(cfgs: Sequence[MemberConfig], splits: Splits, *, cache: MentorCache | None = None,
                 mentor_shapes: dict[str, tuple[int, ...]] | None = None,
                 rungs: Sequence[int] = (), eta: int = 3, keep_weights: bool = True, use_graph: bool = True,
                 fuse: bool = True,
                 on_epoch: Callable[[int, int], None] | None = None) -> list[MemberResult]:
    """Train every member of a cohort; return one `MemberResult` per config, in order.

    `splits` and `cache` must already be on the training device. `rungs` are epochs at
    which successive halving drops all but the best 1/eta of the still-running members,
    ranked by Pareto rank on (val acc, params) so that small mentees are not dropped
    just for being small; a dropped member ends with status "pruned"."""
    cfgs = list(cfgs)
    mentor_shapes = mentor_shapes or {}
    need = {h.teacher for c in cfgs for h in c.active_hints()}
    if (need or any(c.w_kd > 0 for c in cfgs)) and cache is None:
        raise ValueError("mentored members need a MentorCache")
    missing = need - set(cache.feats if cache else ())
    if missing:
        raise ValueError(f"mentor cache lacks taps {sorted(missing)}")
    dev = splits.x_train.device
    if dev.type == "cpu":
        # Adam's second moments of tiny gradients go denormal; the CPU then runs them ~100× slower
        torch.set_flush_denormal(True)
    by_key: dict[tuple, list[int]] = {}
    for i, c in enumerate(cfgs):
        by_key.setdefault(group_key(c) if fuse else (i,), []).append(i)
    groups = [FusedGroup(ix, [cfgs[i] for i in ix], splits, mentor_shapes, dev, use_graph) for ix in by_key.values()]
    curves: list[dict[str, list[float]]] = [{"train_loss": [], "val_acc": [], "test_acc": []} for _ in cfgs]
    status = ["finished"] * len(cfgs)
    errors: list[str | None] = [None] * len(cfgs)
    real_params = [_real_params(c, splits) for c in cfgs]
    epochs = max(c.train.epochs for c in cfgs)
    steps_per_epoch = {id(g): math.ceil(len(splits.x_train) / g.cfgs[0].train.batch_size) for g in groups}
    for e in range(epochs):
        for g in list(groups):
            if e >= g.cfgs[0].train.epochs:
                continue
            loss = g.train_epoch(splits, cache, steps_per_epoch[id(g)] * g.cfgs[0].train.epochs).cpu()
            val = g.accuracy(splits.x_val, splits.y_val).cpu()
            test = g.accuracy(splits.x_test, splits.y_test).cpu()
            alive = []
            for r, i in enumerate(g.idx):
                curves[i]["train_loss"].append(float(loss[r]))
                curves[i]["val_acc"].append(float(val[r]))
                curves[i]["test_acc"].append(float(test[r]))
                if not math.isfinite(float(loss[r])):
                    status[i], errors[i] = "failed", f"loss became {float(loss[r])} in epoch {e + 1}"
                else:
                    alive.append(r)
            if len(alive) < len(g.idx):
                g.keep(alive) if alive else groups.remove(g)
        if e + 1 in rungs:
            running = [(g, r, i) for g in groups for r, i in enumerate(g.idx) if e + 1 < g.cfgs[r].train.epochs]
            if len(running) > 1:
                ranks = _pareto_rank([curves[i]["val_acc"][-1] for _, _, i in running],
                                     [real_params[i] for _, _, i in running])
                order = sorted(range(len(running)), key=lambda j: (ranks[j], -curves[running[j][2]]["val_acc"][-1]))
                stop = {running[j][2] for j in order[max(1, math.ceil(len(running) / eta)):]}
                for g in list(groups):
                    rows = [r for r, i in enumerate(g.idx) if i not in stop]
                    for i in g.idx:
                        if i in stop:
                            status[i] = "pruned"
                    if len(rows) < len(g.idx):
                        g.keep(rows) if rows else groups.remove(g)
        if on_epoch is not None:
            on_epoch(e + 1, epochs)
    return _results(cfgs, groups, splits, curves, status, errors, mentor_shapes, keep_weights)


def _real_params(cfg: MemberConfig, splits: Splits) -> int:
    net = create_mentee(cfg.arch, splits.input_shape, splits.num_classes)
    return sum(p.numel() for p in net.parameters())


def _results(cfgs, groups, splits, curves, status, errors, mentor_shapes, keep_weights) -> list[MemberResult]:
    where = {i: (g, r) for g in groups for r, i in enumerate(g.idx)}
    seconds = {i: g.seconds for g in groups for i in g.idx}
    out = []
    for i, c in enumerate(cfgs):
        real = create_mentee(c.arch, splits.input_shape, splits.num_classes)
        state = None
        if i in where:
            g, r = where[i]
            state = g.crop(r, real)
            real.load_state_dict(state)
        cv = curves[i]
        out.append(MemberResult(
            config=c, status=status[i],
            val_acc=cv["val_acc"][-1] if cv["val_acc"] else float("nan"),
            test_acc=cv["test_acc"][-1] if cv["test_acc"] else float("nan"),
            epochs_run=len(cv["val_acc"]), curves=cv,
            cost=model_cost(real, splits.input_shape), train_seconds=seconds.get(i, 0.0),
            state_dict=state if keep_weights else None, error=errors[i]))
    return out
