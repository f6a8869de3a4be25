"""Mentee families, mentors and named taps.

A *family* turns an `ArchConfig` into an `nn.Module` (timm-style: one registry, one
factory; add a family by writing one decorated function)::

    net = create_mentee(ArchConfig("conv1d", (8, 16)), input_shape=(1, 40), num_classes=10)
    logits, feats = forward_with_taps(net, x, ["layer1", "layer2"])

Every family module lists its tap names in `net.taps` (layer outputs after the
non-linearity, then `head`). Taps are read through forward hooks on dotted module
names (torchdistill-style), so any `nn.Module` can be a mentor without editing its
`forward`: a mentor is either one of our families trained by `mentee mentor train`
(saved as spec + state dict) or `package.module:factory` plus a weights file.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from search.config import ArchConfig
from search.errors import UserError

__all__ = [
    "register_family", "family_names", "create_mentee", "Mentee", "forward_with_taps", "tap_shapes",
    "check_taps", "Mentor", "save_mentor", "load_mentor", "Projection", "logical_shapes",
    "create_template", "Exits", "exit_key", "centred_dims", "fuse_class", "step_cost",
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
        raise UserError(f"unknown mentee family '{arch.family}'{_closest(arch.family, _FAMILIES)}; "
                        f"expected one of {', '.join(family_names())}")
    if not arch.widths or any(w < 1 for w in arch.widths):
        raise UserError(f"family '{arch.family}': widths must be a non-empty list of integers ≥ 1, "
                        f"got {list(arch.widths)}")
    return _FAMILIES[arch.family](arch, tuple(input_shape), num_classes)


def _closest(name: str, options) -> str:
    near = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{near[0]}'?)" if near else ""


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


def logical_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shape of each state tensor as padding must see it (a FlatHead's weight unflattened)."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, mod in model.named_modules():
        if isinstance(mod, FlatHead):
            shapes[f"{name}.weight" if name else "weight"] = (mod.out_features, *mod.layout)
    return shapes


# ---------------------------------------------------------------------------- taps

def _modules_by_name(model: nn.Module, names: Sequence[str], who: str) -> list[nn.Module]:
    mods = dict(model.named_modules())
    out = []
    for n in names:
        if n not in mods or n == "":
            options = list(getattr(model, "taps", ())) or [k for k in mods if k]
            raise UserError(f"{who}: no layer named '{n}'{_closest(n, options)}; "
                            f"taps are {', '.join(options[:12])}")
        out.append(mods[n])
    return out


def forward_with_taps(model: nn.Module, x: torch.Tensor, names: Sequence[str]
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run `model(x)` and return its output plus the outputs of the named modules."""
    if not names:
        return model(x), []
    store: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, k=k: store.__setitem__(k, out))
             for k, m in enumerate(_modules_by_name(model, names, "tap"))]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return out, [store[k] for k in range(len(names))]


def check_taps(model: nn.Module, names: Sequence[str], who: str) -> None:
    _modules_by_name(model, names, who)


@torch.no_grad()
def tap_shapes(model: nn.Module, names: Sequence[str], input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Per-sample shape of each named tap (one forward pass on a zero sample, eval mode)."""
    was = model.training
    model.eval()
    p = next(model.parameters(), None)
    x = torch.zeros(1, *input_shape, device=p.device if p is not None else "cpu")
    _, feats = forward_with_taps(model, x, names)
    model.train(was)
    return [tuple(f.shape[1:]) for f in feats]


class Projection(nn.Module):
    """Learned map from a mentee tap's shape to a mentor tap's shape (FitNets' regressor).

    Channels meet through a 1×1 conv (or a Linear for vectors); spatial sizes meet by
    adaptive average pooling (mentee larger) or interpolation (mentee smaller). When one
    side is a vector and the other a map, the map is averaged over space first."""

    def __init__(self, src: tuple[int, ...], dst: tuple[int, ...]):
        super().__init__()
        self.src, self.dst = src, dst
        self.pool_src = len(src) > 1 and len(dst) == 1
        self.pool_dst = len(dst) > 1 and len(src) == 1  # target averaged in `target()`
        if len(src) == 1 or len(dst) == 1:
            self.map: nn.Module = nn.Linear(src[0], dst[0])
        else:
            self.map = (nn.Conv1d if len(src) == 2 else nn.Conv2d)(src[0], dst[0], 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.pool_src:
            f = f.flatten(2).mean(2)
        size = tuple(self.dst[1:])
        if f.dim() > 2 and tuple(f.shape[2:]) != size and all(a >= b for a, b in zip(f.shape[2:], size)):
            # pool before the 1×1 map: both are linear and pooling weights sum to 1 (the bias passes
            # through), so they commute, and the map then runs at the mentor's smaller size. A mentee
            # tap of 40 positions mapped to 128 mentor channels was most of a tiny mentee's step.
            f = F.adaptive_avg_pool1d(f, size[0]) if f.dim() == 3 else F.adaptive_avg_pool2d(f, (size[0], size[1]))
        f = self.map(f)
        if f.dim() > 2 and tuple(f.shape[2:]) != size:  # mentee smaller: map first, then interpolate
            f = F.interpolate(f, size=size, mode="linear" if f.dim() == 3 else "bilinear", align_corners=False)
        return f

    def target(self, t: torch.Tensor) -> torch.Tensor:
        """Mentor feature reduced to what this projection produces."""
        return t.flatten(2).mean(2) if self.pool_dst else t


# --------------------------------------------------------------------------- mentors

MENTOR_FORMAT = "mentee-search/mentor-v1"


@dataclass
class Mentor:
    """A trained network plus the names of its taps. `spec` says how to rebuild it."""

    model: nn.Module
    taps: tuple[str, ...]
    input_shape: tuple[int, ...]
    num_classes: int
    spec: dict[str, Any]

    def tap_shapes(self, names: Sequence[str]) -> list[tuple[int, ...]]:
        return tap_shapes(self.model, names, self.input_shape)


def save_mentor(path: str | Path, model: nn.Module, arch: ArchConfig, *, dataset: str,
                input_shape: Sequence[int], num_classes: int, metrics: dict[str, float]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": MENTOR_FORMAT, "arch": dataclasses.asdict(arch), "dataset": dataset,
            "input_shape": list(input_shape), "num_classes": num_classes, "metrics": dict(metrics),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)  # never leave a half-written mentor behind
    return path


def _load_weights(path: Path) -> Any:
    if path.is_dir():
        raise UserError(f"{path}: is a directory; expected a mentor weights file (.pt)")
    if not path.is_file():
        raise UserError(f"{path}: mentor weights file not found")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing: noise
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and unpickling-policy errors all mean "not weights"
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a PyTorch weights file ({first})") from None


def _load_state(model: nn.Module, state: Any, path: Path) -> None:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: expected a state dict (name → tensor)")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        raise UserError(f"{path}: weights do not match the mentor: missing {missing[:3]}, unexpected {extra[:3]}")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise UserError(f"{path}: weight '{k}' has shape {tuple(state[k].shape)}, "
                            f"the mentor expects {tuple(v.shape)}")
        # A NaN weight makes every mentor feature NaN: each mentored mentee would diverge mid-sweep.
        if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all()):
            raise UserError(f"{path}: weight '{k}' holds NaN or inf; expected a trained mentor's finite weights")
    model.load_state_dict(state)


def load_mentor(path: str | Path, *, factory: str | None = None, taps: Sequence[str] | None = None,
                input_shape: Sequence[int] | None = None, num_classes: int | None = None) -> Mentor:
    """Load a mentor saved by `save_mentor`, or build `package.module:factory` and load
    plain weights into it (then `taps`, `input_shape` and `num_classes` are required)."""
    path = Path(path)
    blob = _load_weights(path)
    if factory is None:
        if not isinstance(blob, dict) or blob.get("format") != MENTOR_FORMAT:
            raise UserError(f"{path}: not a mentor saved by `mentee mentor train` "
                            f"(for your own network pass --factory package.module:function)")
        try:  # a damaged or hand-made file: a missing key or a wrong type is the file's fault, not a bug
            arch = ArchConfig(**{**blob["arch"], "widths": tuple(int(w) for w in blob["arch"]["widths"])})
            shape, nc = tuple(int(d) for d in blob["input_shape"]), int(blob["num_classes"])
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: mentor file has a missing or malformed 'arch', 'input_shape' or "
                            f"'num_classes' ({type(e).__name__}: {e}); save it again with `mentee mentor train`"
                            ) from None
        model = create_mentee(arch, shape, nc)
        _load_state(model, blob.get("state_dict"), path)
        names = tuple(taps) if taps else tuple(model.taps)
        check_taps(model, names, f"{path}")
        spec = {"kind": "family", "arch": blob["arch"], "dataset": blob.get("dataset"),
                "metrics": blob.get("metrics", {})}
        return Mentor(model.eval(), names, shape, nc, spec)
    if not taps or input_shape is None or num_classes is None:
        raise UserError("--factory needs taps, the input shape and the number of classes")
    net = _build_factory(factory)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    _load_state(net, state, path)
    check_taps(net, taps, f"mentor {factory}")
    spec = {"kind": "factory", "factory": factory}
    return Mentor(net.eval(), tuple(taps), tuple(input_shape), int(num_classes), spec)


def _build_factory(factory: str) -> nn.Module:
    mod_name, _, fn_name = factory.partition(":")
    if not mod_name or not fn_name:
        raise UserError(f"mentor factory '{factory}': expected 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"mentor factory '{factory}': {e}") from None
    if not callable(fn):  # e.g. `os:sep`: calling it would be a TypeError traceback
        raise UserError(f"mentor factory '{factory}': '{fn_name}' is a {type(fn).__name__}, not callable; "
                        "expected a function that returns an nn.Module")
    model = fn()
    if not isinstance(model, nn.Module):
        raise UserError(f"mentor factory '{factory}' returned {type(model).__name__}, expected an nn.Module")
    return model
