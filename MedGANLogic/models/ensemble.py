"""Geometric self-ensemble: a 2D network's output averaged over flips and transpositions of its input.

Lim et al. (EDSR, 2017): run the network on the eight flips and transpositions of each slice (the dihedral group
of the square), undo each on its output, average. The network's errors that depend on orientation average out;
the cost is one pass per variant. Flips (2 or 4 variants) suit any 2D network whose output lies on the input's
grid or on a zoomed one (a super-resolution network flipped along the axis it zooms gives the flipped output);
transpositions (8) need the same zoom along both in-plane axes (a transposition must commute with the network).

    y = dihedral_mean(net, x, count=8)        # x: (N, C, H, W)
    net = SelfEnsemble(net, 4)                # a module the inference engine runs like the network itself
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
import torch.nn as nn

from .card import ENSEMBLE_COUNTS as COUNTS

#: (transposed, flipped dims) of each variant, in the order a ``count`` takes them: 2 = the slice and its
#: left-right mirror, 4 = the four flips, 8 = the four flips of the slice and of its transpose.
VARIANTS: tuple[tuple[bool, tuple[int, ...]], ...] = tuple(
    (transposed, dims) for transposed in (False, True) for dims in ((), (-1,), (-2,), (-2, -1)))


def ensemble_count(value: bool | int | None) -> int:
    """A self-ensemble's variant count from a count (1, 2, 4 or 8) or a flag (``True``: all eight; ``False`` or
    None: one pass)."""
    if value is None or isinstance(value, bool):
        return 8 if value else 1
    if not isinstance(value, numbers.Integral) or int(value) not in COUNTS:
        raise ValueError(f"self_ensemble must be one of {COUNTS} (or true / false); got {value!r}")
    return int(value)


def dihedral_mean(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, count: int = 8) -> torch.Tensor:
    """The mean of ``fn`` over the first ``count`` of :data:`VARIANTS` of ``x`` (each undone on its output)."""
    if count not in COUNTS:
        raise ValueError(f"count must be one of {COUNTS}; got {count!r}")
    total = None
    for transposed, dims in VARIANTS[:count]:
        view = x.transpose(-1, -2) if transposed else x
        y = fn(torch.flip(view, dims) if dims else view)
        y = torch.flip(y, dims) if dims else y
        y = y.transpose(-1, -2) if transposed else y
        total = y if total is None else total + y
    return total if count == 1 else total / count


class SelfEnsemble(nn.Module):
    """``net`` run as :func:`dihedral_mean` over ``count`` variants; keeps the attributes the engine reads
    (``size_multiple``, ``out_channels``)."""

    def __init__(self, net: nn.Module, count: int):
        super().__init__()
        if count not in COUNTS:
            raise ValueError(f"count must be one of {COUNTS}; got {count!r}")
        self.net, self.count = net, int(count)
        self.size_multiple = int(getattr(net, "size_multiple", 1))
        if hasattr(net, "out_channels"):
            self.out_channels = net.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dihedral_mean(self.net, x, self.count)
