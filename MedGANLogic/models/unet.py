"""U-Net generator of pix2pix (conditional GAN for paired image-to-image translation).

The encoder halves the image ``depth`` times with 4x4 stride-2 convolutions; the decoder doubles it back and
concatenates the encoder feature map of the same size (skip connections), so fine anatomy passes straight
through while the bottleneck sees the whole slice. Channels double per level up to ``8 * features``.

With ``depth=8, features=64`` this is pix2pix's ``unet_256`` (inputs must be multiples of 256 px; its innermost
level is 1x1 for a 256 px slice), and ``depth=7`` is ``unet_128``. MedGAN's shipped models use ``depth=4``
because a 2 mm brain slice is about 91 x 109 voxels: 4 halvings give a 6 x 7 bottleneck, which already
spans the head, and the input only needs padding to a multiple of 16.

Parameters are registered in the nesting order of pytorch-CycleGAN-and-pix2pix's ``UnetGenerator``
(encoders outermost to innermost, then decoders innermost to outermost, each convolution before its norm),
which is what :mod:`MedGANLogic.models.importer` relies on to convert their checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from . import register_architecture

NORMS = ("batch", "instance", "none")
UPSAMPLING = ("transpose", "resize", "bilinear")


def norm_layer(norm: str, channels: int) -> nn.Module:
    """``batch`` (affine, running statistics), ``instance`` (no affine, no running statistics) or ``none``."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str, bias: bool, outermost: bool, innermost: bool):
        super().__init__()
        self.act = nn.Identity() if outermost else nn.LeakyReLU(0.2)
        self.conv = nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1, bias=bias)
        self.norm = nn.Identity() if (outermost or innermost) else norm_layer(norm, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(self.act(x)))


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str, bias: bool, outermost: bool, upsample: str, dropout: float):
        super().__init__()
        self.act = nn.ReLU()
        if upsample == "transpose":
            self.conv: nn.Module = nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1, bias=bias)
        else:  # up-sampling + 3x3 convolution: no checkerboard artefacts
            mode = "nearest" if upsample == "resize" else "bilinear"
            self.conv = nn.Sequential(nn.Upsample(scale_factor=2, mode=mode),
                                      nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=bias))
        self.norm = nn.Identity() if outermost else norm_layer(norm, cout)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(self.conv(self.act(x))))


@register_architecture("unet2d")
class UNetGenerator(nn.Module):
    """pix2pix U-Net generator.

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, H, W)``; H and W must be multiples of
    ``size_multiple = 2 ** depth`` (the inference engine pads). Output range (-1, 1) (tanh) unless
    ``final_activation="none"``.

    Args:
        features: channels of the first level (pix2pix ``ngf``); level i has ``features * min(2**i, 8)``.
        depth: number of 2x down-samplings (pix2pix ``num_downs``).
        norm: ``instance`` (default: with pix2pix's batch size 1 batch norm acts as instance norm), ``batch``
            or ``none``. Convolutions carry a bias unless followed by batch norm, as in pix2pix.
        dropout: dropout probability in the decoder levels at full width (pix2pix uses 0.5 there).
        upsample: ``transpose`` (4x4 transposed convolution, pix2pix-compatible), ``resize`` (nearest + 3x3) or
            ``bilinear`` (bilinear + 3x3, the smoothest).

    Example:
        >>> net = UNetGenerator(features=8, depth=4)
        >>> net(torch.zeros(2, 1, 96, 112)).shape
        torch.Size([2, 1, 96, 112])
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: int = 64, depth: int = 8,
                 norm: str = "instance", dropout: float = 0.0, upsample: str = "transpose",
                 final_activation: str = "tanh"):
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be at least 2; got {depth}")
        if upsample not in UPSAMPLING:
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLING)}; got {upsample!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
        bias = norm != "batch"
        widths = [features * min(2 ** i, 8) for i in range(depth)]
        self.down = nn.ModuleList()
        for i in range(depth):
            cin = in_channels if i == 0 else widths[i - 1]
            self.down.append(_Down(cin, widths[i], norm, bias, outermost=i == 0, innermost=i == depth - 1))
        self.up = nn.ModuleList()  # innermost first, as the decoder runs
        for i in reversed(range(depth)):
            cin = widths[i] if i == depth - 1 else 2 * widths[i]
            cout = out_channels if i == 0 else widths[i - 1]
            drop = dropout if (0 < i < depth - 1 and widths[i] == 8 * features) else 0.0
            self.up.append(_Up(cin, cout, norm, bias or i == 0, outermost=i == 0, upsample=upsample, dropout=drop))
        self.final = nn.Tanh() if final_activation == "tanh" else nn.Identity()
        self.size_multiple = 2 ** depth
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        skips.pop()  # the innermost output feeds the decoder directly
        for up in self.up:
            x = up(x)
            if skips:
                x = torch.cat([skips.pop(), x], dim=1)
        return self.final(x)


@register_architecture("residual_unet2d")
class ResidualUNet(nn.Module):
    """A denoiser that predicts the noise: ``x - unet(x)`` with a :class:`UNetGenerator` (no normalisation, bilinear
    up-sampling, no output activation): any intensity range passes. With ``zero_init`` its last convolution starts
    at zero, so the untrained network is the identity (on the real tuning CT of the scan-fitted denoiser it then
    ended 0.4 dB lower after 6000 steps: 28.6 against 29.0 dB, so the fit does not use it). Used by the
    scan-fitted recorrupted-to-recorrupted denoiser (:mod:`MedGANLogic.adapt.denoise`).

    Shapes: ``(N, 1, H, W)`` -> ``(N, 1, H, W)``; H and W multiples of ``size_multiple = 2 ** depth``.

    Example:
        >>> net = ResidualUNet(features=8, depth=3)
        >>> net(torch.zeros(1, 1, 16, 24)).shape
        torch.Size([1, 1, 16, 24])
    """

    def __init__(self, features: int = 32, depth: int = 3, zero_init: bool = False):
        super().__init__()
        self.unet = UNetGenerator(1, 1, features=features, depth=depth, norm="none", upsample="bilinear",
                                  final_activation="none")
        if zero_init:
            last = self.unet.up[-1].conv[-1]  # the outermost 3x3 convolution: zero, so the network starts as x
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.size_multiple = self.unet.size_multiple
        self.out_channels = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.unet(x)


def mirrored(x: torch.Tensor, background: float = -1.0, margin: float = 0.05) -> torch.Tensor:
    """Each slice of ``x`` (N, C, H, W) mirrored left-right (along W) about its head's midline: the column
    centroid of the first channel's pixels above ``background + margin``, rounded to half a pixel (a slice
    without head: about the slice's centre). Where the mirror falls outside the slice it wraps around (background
    on a head inside its field of view)."""
    n, c, h, w = x.shape
    head = (x[:, 0] > background + margin).to(x.dtype)  # (N, H, W)
    cols = head.sum(dim=1)  # (N, W)
    total = cols.sum(dim=1)
    j = torch.arange(w, device=x.device)
    twice = torch.where(total > 0, 2 * (cols * j.to(x.dtype)).sum(dim=1) / total.clamp(min=1),
                        torch.full_like(total, float(w - 1)))  # twice the midline's column
    src = (torch.round(twice).long()[:, None] - j[None]) % w  # column j shows column 2 c - j
    return torch.gather(x, 3, src[:, None, None, :].expand(n, c, h, w))


@register_architecture("mirror_unet2d")
class MirrorUNet(nn.Module):
    """A :class:`UNetGenerator` that sees each slice beside its left-right mirror about the head's midline
    (:func:`mirrored`), as channels: the brain is nearly symmetric and most lesions are not, so what the other
    hemisphere shows at the same place is evidence of what healthy tissue looks like here. Every other parameter
    is :class:`UNetGenerator`'s; ``in_channels`` counts the input's own channels (the U-Net gets twice as many).

    Example:
        >>> net = MirrorUNet(features=8, depth=4)
        >>> net(torch.zeros(2, 1, 96, 112)).shape
        torch.Size([2, 1, 96, 112])
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, **unet: Any):
        super().__init__()
        self.unet = UNetGenerator(2 * in_channels, out_channels, **unet)
        self.size_multiple = self.unet.size_multiple
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat([x, mirrored(x)], dim=1))
