"""Named taps and the projections between them.

Taps are read through forward hooks on dotted module names (torchdistill-style), so any
`nn.Module` can be a mentor without editing its `forward`::

    logits, feats = forward_with_taps(net, x, ["layer2", "head"])
    shapes = tap_shapes(net, ["layer2"], input_shape=(1, 40))        # per sample: [(16, 20)]
    proj = Projection(src=(8, 40), dst=(128, 10))                      # a mentee tap → a mentor tap's shape
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from search.errors import UserError, did_you_mean

__all__ = ["forward_with_taps", "check_taps", "tap_shapes", "Projection"]


def _modules_by_name(model: nn.Module, names: Sequence[str], who: str) -> list[nn.Module]:
    mods = dict(model.named_modules())
    out = []
    for n in names:
        if n not in mods or n == "":
            options = list(getattr(model, "taps", ())) or [k for k in mods if k]
            raise UserError(f"{who}: no layer named '{n}'{did_you_mean(n, options)}; "
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

