"""Mentee families and fused templates.

A *family* turns an `ArchConfig` into a `Mentee` (timm-style: one registry, one factory; add a
family by writing one decorated function)::

    net = create_mentee(ArchConfig("conv1d", (8, 16)), input_shape=(1, 40), num_classes=10)
    logits, feats = forward_with_taps(net, x, ["layer1", "layer2"])   # search.taps

Every family module lists its tap names in `net.taps` (layer outputs after the non-linearity,
then `head`). A fused group's template (`create_template`) is a family's model with a head at
several depths (`Exits`), so members of mixed depth pad into one model. Taps and projections
live in `search.taps`, a mentor and its file in `search.mentors`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from search.config import ArchConfig
from search.errors import UserError, did_you_mean

__all__ = [
    "register_family", "family_names", "create_mentee", "Mentee", "logical_shapes",
    "create_template", "Exits", "exit_key", "centred_dims", "fuse_class", "step_cost", "layer_shapes",
]

_FAMILIES: dict[str, Callable[..., Mentee]] = {}
_WITH_EXITS: set[str] = set()  # families whose factory takes `exits` (fused groups pad their depth)


def register_family(name: str, exits: bool = False):
    """Register a mentee family. `exits=True`: the factory also takes `exits=(depths...)` and builds a
    head at each of those depths (an `Exits` module named `head`), so fused groups can mix depths."""
    def deco(fn):
        _FAMILIES[name] = fn
        if exits:
            _WITH_EXITS.add(name)
        return fn
    return deco


def family_names() -> list[str]:
    return sorted(_FAMILIES)


def create_mentee(arch: ArchConfig, input_shape: Sequence[int], num_classes: int) -> Mentee:
    if arch.family not in _FAMILIES:
        raise UserError(f"unknown mentee family '{arch.family}'{did_you_mean(arch.family, _FAMILIES)}; "
                        f"expected one of {', '.join(family_names())}")
    if not arch.widths or any(w < 1 for w in arch.widths):
        raise UserError(f"family '{arch.family}': widths must be a non-empty list of integers ≥ 1, "
                        f"got {list(arch.widths)}")
    return _FAMILIES[arch.family](arch, tuple(input_shape), num_classes)


class FlatHead(nn.Linear):
    """Flatten + Linear that remembers the (channels, *spatial) layout of its input.

    Fused cohorts pad narrower members with zero channels; padding a flat weight would
    interleave wrongly, so `logical_shapes` exposes the weight as (out, C, *spatial)."""

    def __init__(self, channels: int, spatial: tuple[int, ...], out: int):
        super().__init__(channels * math.prod(spatial), out)
        self.layout = (channels, *spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


class BatchNorm1d(nn.BatchNorm1d):
    """Batch norm computed in fp32 under bf16 autocast (stats in fp32 are the usual recipe;
    and vmap's batch-norm rule fails in backward on bf16 inputs with fp32 running stats)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float())


class BatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float())


class Exits(nn.Module):
    """Heads at several depths of one network, their logits summed: the head of a fused group's
    template when its members differ in depth (`at2` reads layer 2's output, and so on).

    Why exits and not identity layers: the conv families stride by 2 after the first layer, so
    a layer that "passes its input through" cannot keep the shape the next layer and the flat
    head expect. With exits, a member of depth d has real weights in layers 1..d and in `at{d}`
    and exact zeros (masked, see `search.train.group`) everywhere else: the deeper layers output
    0 and the other exits add 0, so its logits are bit-for-bit those of its own head."""

    def __init__(self, heads: dict[int, nn.Module]):
        super().__init__()
        self.depths = tuple(sorted(heads))
        for d in self.depths:
            setattr(self, f"at{d}", heads[d])

    def forward(self, outs: Sequence[torch.Tensor]) -> torch.Tensor:
        logits = getattr(self, f"at{self.depths[0]}")(outs[self.depths[0] - 1])
        for d in self.depths[1:]:
            logits = logits + getattr(self, f"at{d}")(outs[d - 1])
        return logits


def exit_key(key: str, depth: int) -> str:
    """A plain model's state key as named in a template with exits: `head.weight` → `head.at2.weight`."""
    return f"head.at{depth}.{key[5:]}" if key.startswith("head.") else key


class Mentee(nn.Module):
    """What every family builds: `layer1` … `layer{depth}`, then `head` (an `Exits` in a fused
    group's template), and the tap names in `taps` (the layers' outputs, then `head`)."""

    taps: tuple[str, ...]
    depth: int
    head: nn.Module

    def _forward_layers(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i in range(self.depth):
            x = getattr(self, f"layer{i + 1}")(x)
            outs.append(x)
        return self.head(outs) if isinstance(self.head, Exits) else self.head(x)


class ConvNet(Mentee):
    """`depth` conv blocks (conv → [BN] → ReLU, stride 2 after the first), a flat head.

    Stride 2 halves the length each block, as in the MNIST-1D reference CNN, so the
    head stays small; the flat head keeps position, which MNIST-1D needs. With `exits`
    the head is an `Exits` (a fused group's template; see there)."""

    def __init__(self, dims: int, in_ch: int, spatial: tuple[int, ...], widths: Sequence[int],
                 kernel: int, batch_norm: bool, num_classes: int, exits: Sequence[int] | None = None):
        super().__init__()
        conv, bn = (nn.Conv1d, BatchNorm1d) if dims == 1 else (nn.Conv2d, BatchNorm2d)
        self.taps: tuple[str, ...] = ()
        ch = in_ch
        heads: dict[int, nn.Module] = {}
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers: list[nn.Module] = [conv(ch, w, kernel, stride=stride, padding=kernel // 2, bias=not batch_norm)]
            if batch_norm:
                layers.append(bn(w))
            layers.append(nn.ReLU())
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            self.taps += (f"layer{i + 1}",)
            spatial = tuple((s + 2 * (kernel // 2) - kernel) // stride + 1 for s in spatial)
            ch = w
            if exits and i + 1 in exits and min(spatial) >= 1:
                heads[i + 1] = FlatHead(ch, spatial, num_classes)
        if min(spatial) < 1:
            raise UserError(f"conv{dims}d with {len(widths)} layers and kernel {kernel} shrinks the "
                            f"input to nothing; use fewer layers")
        self.depth = len(widths)
        self.head = Exits(heads) if exits else FlatHead(ch, spatial, num_classes)
        self.taps += ("head",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_layers(x)


class MLP(Mentee):
    """Spark ML's multilayer perceptron shape: Linear → ReLU per hidden size, then a head."""

    def __init__(self, in_features: int, widths: Sequence[int], num_classes: int, exits: Sequence[int] | None = None):
        super().__init__()
        self.taps: tuple[str, ...] = ()
        f = in_features
        for i, w in enumerate(widths):
            setattr(self, f"layer{i + 1}", nn.Sequential(nn.Linear(f, w), nn.ReLU()))
            self.taps += (f"layer{i + 1}",)
            f = w
        self.depth = len(widths)
        self.head = Exits({d: nn.Linear(widths[d - 1], num_classes) for d in exits}) if exits \
            else nn.Linear(f, num_classes)
        self.taps += ("head",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_layers(x.flatten(1))


def _need_rank(arch: ArchConfig, input_shape: tuple[int, ...], rank: int) -> None:
    if len(input_shape) != rank:
        raise UserError(f"family '{arch.family}' needs inputs of shape {'(C, L)' if rank == 2 else '(C, H, W)'}, "
                        f"but the dataset gives {input_shape}; use "
                        f"{'conv2d' if len(input_shape) == 3 else 'mlp'} for this dataset")


@register_family("conv1d", exits=True)
def conv1d(arch: ArchConfig, input_shape: tuple[int, ...], num_classes: int, exits=None) -> Mentee:
    _need_rank(arch, input_shape, 2)
    return ConvNet(1, input_shape[0], input_shape[1:], arch.widths, arch.kernel, arch.batch_norm, num_classes,
                   exits)


@register_family("conv2d", exits=True)
def conv2d(arch: ArchConfig, input_shape: tuple[int, ...], num_classes: int, exits=None) -> Mentee:
    _need_rank(arch, input_shape, 3)
    return ConvNet(2, input_shape[0], input_shape[1:], arch.widths, arch.kernel, arch.batch_norm, num_classes,
                   exits)


@register_family("mlp", exits=True)
def mlp(arch: ArchConfig, input_shape: tuple[int, ...], num_classes: int, exits=None) -> Mentee:
    return MLP(math.prod(input_shape), arch.widths, num_classes, exits)


# ------------------------------------------------------------------ fused templates

def create_template(arch: ArchConfig, input_shape: Sequence[int], num_classes: int,
                    exits: Sequence[int]) -> Mentee:
    """A fused group's template: `arch` (its members' widest layers, largest kernel) with a head at
    every depth in `exits` (its members' depths). One exit at full depth is the plain model."""
    exits = tuple(sorted(set(exits)))
    if exits == (arch.depth,):
        return create_mentee(arch, input_shape, num_classes)
    if arch.family not in _WITH_EXITS:
        raise ValueError(f"family '{arch.family}' has no exits: its members fuse only at one depth")
    create_mentee(arch, input_shape, num_classes)  # the same checks and errors as a plain mentee
    return _FAMILIES[arch.family](arch, tuple(input_shape), num_classes, exits=exits)


def fuse_class(arch: ArchConfig) -> tuple:
    """Architectures with equal classes pad into one template exactly (`search.train.group`).

    Conv families: same family and batch norm, kernels of one parity. A kernel k centred in a
    larger kernel K with zero taps outside computes the same outputs, with the same output
    length, when K − k is even (both pad by k//2 resp. K//2, so the centres line up); an odd
    difference would shift every output by half a tap. Depths mix (see `Exits`). Families
    without exits fuse only at one depth and kernel (widths still pad)."""
    if arch.family not in _WITH_EXITS:
        return (arch.family, arch.depth, arch.kernel, arch.batch_norm)
    if arch.family == "mlp":  # kernel and batch norm mean nothing to it
        return ("mlp",)
    return (arch.family, arch.batch_norm, arch.kernel % 2)


def centred_dims(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """State keys whose dims are padded around the centre, not at the end: conv kernels."""
    return {f"{name}.weight": tuple(range(2, 2 + len(mod.kernel_size)))
            for name, mod in model.named_modules() if isinstance(mod, nn.modules.conv._ConvNd)}


def step_cost(arch: ArchConfig, input_shape: Sequence[int], num_classes: int,
              exits: Sequence[int] | None = None) -> float:
    """Relative cost of one training sample through `arch` (with `exits`, a template): activation
    elements + MACs / 1000. Fitted to vmapped fused steps on an H100, where tiny convolutions are
    bound by moving activations, not by arithmetic (256 members of 8-8-8, 16-32 and 32-64-128:
    1.3, 2.7 and 8.3 ms a step). Fused groups are sized by it; only ratios matter."""
    exits = tuple(exits or (arch.depth,))
    if arch.family in ("conv1d", "conv2d"):
        ch, spatial, acts, macs = input_shape[0], tuple(input_shape[1:]), 0, 0
        for i, w in enumerate(arch.widths):
            stride = 1 if i == 0 else 2
            spatial = tuple(max(1, (s + 2 * (arch.kernel // 2) - arch.kernel) // stride + 1) for s in spatial)
            acts += w * math.prod(spatial)
            macs += ch * w * arch.kernel ** len(spatial) * math.prod(spatial)
            if i + 1 in exits:
                macs += w * math.prod(spatial) * num_classes
            ch = w
        return acts + macs / 1000
    if arch.family == "mlp":
        f = math.prod(input_shape)
        dims = (f, *arch.widths)
        macs = sum(a * b for a, b in zip(dims, dims[1:])) + sum(arch.widths[d - 1] * num_classes for d in exits)
        return sum(arch.widths) + macs / 1000
    return float(sum(p.numel() for p in create_mentee(arch, input_shape, num_classes).parameters()))


def layer_shapes(arch: ArchConfig, input_shape: Sequence[int], num_classes: int) -> dict[str, tuple[int, ...]] | None:
    """Per-sample output shape of every tap of a built-in family's `arch` (`layerN`, `head`), by
    arithmetic: what a forward pass would give, without building or running the net (a fused
    group needs the taps of hundreds of members). None for other families: run one then."""
    if arch.family in ("conv1d", "conv2d"):
        spatial, out = tuple(input_shape[1:]), {}
        for i, w in enumerate(arch.widths):
            stride = 1 if i == 0 else 2
            spatial = tuple((s + 2 * (arch.kernel // 2) - arch.kernel) // stride + 1 for s in spatial)
            out[f"layer{i + 1}"] = (w, *spatial)
        return {**out, "head": (num_classes,)}
    if arch.family == "mlp":
        return {**{f"layer{i + 1}": (w,) for i, w in enumerate(arch.widths)}, "head": (num_classes,)}
    return None


def logical_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shape of each state tensor as padding must see it (a FlatHead's weight unflattened)."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, mod in model.named_modules():
        if isinstance(mod, FlatHead):
            shapes[f"{name}.weight" if name else "weight"] = (mod.out_features, *mod.layout)
    return shapes

