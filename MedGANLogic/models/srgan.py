"""SRGAN generator for MR super-resolution (Ledig et al., CVPR 2017; EDSR/ESRGAN refinements).

A 3x3 stem, ``n_blocks`` residual blocks without batch norm (EDSR, Lim et al. 2017: batch norm removes the
intensity range information SR needs), a long skip over the blocks, then learned up-sampling: for each factor
of two (or a remaining odd factor) a nearest-neighbour resize along the scaled axes followed by a 3x3
convolution (ESRGAN's choice; unlike pixel shuffle it allows a different factor per axis, which through-plane
super-resolution of thick slices needs: x2 along one in-plane axis of a coronal slice, x1 along the other).

The network adds its output to a bilinear interpolation of the centre input channel (``global_skip``), so it
only learns what interpolation misses, and an untrained network already interpolates. Interpolation uses
``align_corners=False``: input and output pixels share their outer edges, exactly the grid that
:meth:`MedGANLogic.volume.Volume.resampled_grid` gives the output volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_architecture


class _ResidualBlock(nn.Module):
    """x + scale * conv(relu(conv(x))): EDSR's block (no batch norm, residual scaling for stable training)."""

    def __init__(self, channels: int, res_scale: float):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.conv2(self.act(self.conv1(x)))


def upsampling_stages(scale: Sequence[int]) -> list[tuple[int, int]]:
    """Per-stage (h, w) factors whose products are ``scale``: factors of two first, then what remains (3, 5, ...)."""
    remaining = [int(s) for s in scale]
    stages: list[tuple[int, int]] = []
    while any(r > 1 for r in remaining):
        step = [2 if r % 2 == 0 else r for r in remaining]
        stages.append((step[0], step[1]))
        remaining = [r // s for r, s in zip(remaining, step)]
    return stages


@register_architecture("srresnet2d")
class SRResNet(nn.Module):
    """Super-resolution generator.

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, H * scale[0], W * scale[1])``, any H and W
    (``size_multiple = 1``). Input and output in the same normalised intensity range (model cards use the
    ``same_as_input`` output normalisation); for 2.5d inputs (``in_channels = 1 + 2k``) the centre channel is
    the slice being super-resolved.

    Args:
        scale: integer up-sampling factor along (H, W) of the slice, e.g. ``[2, 1]`` for a coronal slice of
            thick axial data (x2 along z only) or ``[2, 2]`` for in-plane x2.
        features: channels of the residual blocks.
        n_blocks: number of residual blocks (SRGAN uses 16 with 64 features).
        res_scale: residual scaling inside the blocks (EDSR: 0.1 for wide networks).
        global_skip: ``bilinear`` (default) or ``nearest`` interpolation of the centre channel added to the
            output, or ``none``.

    Example:
        >>> net = SRResNet(scale=[2, 1], features=8, n_blocks=2)
        >>> net(torch.zeros(3, 1, 20, 30)).shape
        torch.Size([3, 1, 40, 30])
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, scale: Sequence[int] = (2, 2),
                 features: int = 32, n_blocks: int = 8, res_scale: float = 0.2, global_skip: str = "bilinear"):
        super().__init__()
        scale = [int(s) for s in scale]
        if len(scale) != 2 or any(s < 1 for s in scale) or all(s == 1 for s in scale):
            raise ValueError(f"scale must be two integers >= 1 along (H, W), at least one > 1; got {scale}")
        if global_skip not in ("bilinear", "nearest", "none"):
            raise ValueError(f"global_skip must be bilinear, nearest or none; got {global_skip!r}")
        if global_skip != "none" and in_channels < out_channels:
            raise ValueError("global_skip needs at least as many input channels as output channels")
        self.scale = tuple(scale)
        self.global_skip = global_skip
        self.in_channels, self.out_channels = in_channels, out_channels
        self.size_multiple = 1
        self.stem = nn.Conv2d(in_channels, features, 3, padding=1)
        self.blocks = nn.Sequential(*[_ResidualBlock(features, res_scale) for _ in range(n_blocks)])
        self.fuse = nn.Conv2d(features, features, 3, padding=1)
        self.stages = [tuple(s) for s in upsampling_stages(scale)]
        self.up = nn.ModuleList(nn.Conv2d(features, features, 3, padding=1) for _ in self.stages)
        self.head = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(features, out_channels, 3, padding=1))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        feat = self.stem(x)
        feat = feat + self.fuse(self.blocks(feat))
        for (sh, sw), conv in zip(self.stages, self.up):
            feat = self.act(conv(F.interpolate(feat, scale_factor=(sh, sw), mode="nearest")))
        out = self.head(feat)
        if self.global_skip != "none":
            c = x.shape[1] // 2 - (self.out_channels - 1) // 2
            centre = x[:, c:c + self.out_channels]
            size = (h * self.scale[0], w * self.scale[1])
            if self.global_skip == "bilinear":
                base = F.interpolate(centre, size=size, mode="bilinear", align_corners=False)
            else:
                base = F.interpolate(centre, size=size, mode="nearest")
            out = out + base
        return out

    def grow_from(self, state: dict[str, torch.Tensor]) -> int:
        """Start as the shallower network whose ``state`` (a state dict of this architecture with fewer residual
        blocks, the rest alike) is given: its blocks are the first ones here, and each added block is the identity
        (its last convolution zero, so ``x + 0``; "Net2DeeperNet", Chen et al. 2016), so the output is exactly the
        shallower network's until training moves them. The added blocks' first convolutions keep this network's own
        initialisation. Returns the number of blocks ``state`` had."""
        mine = self.state_dict()
        have = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
        extra = sorted(set(state) - set(mine))
        missing = sorted(k for k in set(mine) - set(state) if not k.startswith("blocks."))
        if extra or missing or have > len(self.blocks):
            raise ValueError(f"cannot grow a {len(self.blocks)}-block network from this state (its blocks: {have}; "
                             f"keys not here: {extra[:3]}; keys it lacks: {missing[:3]})")
        merged = {k: state.get(k, v) for k, v in mine.items()}
        for i in range(have, len(self.blocks)):
            for key in (f"blocks.{i}.conv2.weight", f"blocks.{i}.conv2.bias"):
                merged[key] = torch.zeros_like(mine[key])
        self.load_state_dict(merged)
        return have
