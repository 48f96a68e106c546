"""Blind-spot U-Net: a denoiser whose output at each pixel never sees a block of pixels around it.

After Laine et al., "High-quality self-supervised deep image denoising" (NeurIPS 2019): one U-Net branch whose
receptive field extends only upwards (every 3x3 convolution is shifted down so it sees its own row and the two
above; every 2x2 max-pooling is preceded by a one-row shift), run on the image rotated by 0, 90, 180 and 270
degrees. Each branch's output is shifted down by ``blind_radius + 1`` rows before being rotated back, so it has
seen only pixels at least ``blind_radius + 1`` rows away on its side; 1x1 convolutions then combine the four
branches, whose union sees everything except the (2 ``blind_radius`` + 1)^2 block around the pixel.

With ``out_channels = 2`` the network predicts each pixel's mean (channel 0) and log-variance (channel 1) as
corrections to a fixed blind baseline: the Gaussian-weighted mean and variance of the pixels just outside the
blind block (normalised convolutions). Combined with the pixel itself (see
:mod:`MedGANLogic.models.adapted`), the untrained network is Lee's local linear minimum-mean-square-error filter
(IEEE PAMI 1980) with a blind neighbourhood, and fitting only has to improve on it.

Trained to reproduce a noisy image (squared error on every pixel: dense supervision), such a network learns
the clean signal when the noise of a pixel is independent of the noise beyond its blind block (Noise2Self's
J-invariance, Batson and Royer 2019): ``blind_radius = 0`` for white noise, larger for noise correlated over a
few pixels (CT after filtered back-projection, ultrasound speckle, post-filtered PET).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_architecture


def blind_mean_kernel(radius: int) -> torch.Tensor:
    """(1, 1, k, k) weights of the blind baseline: Gaussian (sigma = radius + 1) over the pixels outside the
    (2 radius + 1)^2 block, up to two pixels beyond it, summing to one."""
    reach = radius + 2
    d = torch.arange(-reach, reach + 1, dtype=torch.float32)
    yy, xx = torch.meshgrid(d, d, indexing="ij")
    w = torch.exp(-0.5 * (yy ** 2 + xx ** 2) / float(radius + 1) ** 2)
    w[(yy.abs() <= radius) & (xx.abs() <= radius)] = 0.0
    return (w / w.sum())[None, None]


def shift_down(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` moved down by ``rows`` (zeros enter at the top, the bottom rows leave)."""
    if rows <= 0:
        return x
    return F.pad(x, (0, 0, rows, 0))[:, :, : x.shape[2]]


class _UpwardConv(nn.Module):
    """3x3 convolution whose output row i sees input rows i-2..i (all columns within reach)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(F.pad(x, (1, 1, 2, 0))))


class _UpwardUNet(nn.Module):
    """A U-Net (no normalisation) whose receptive field at row i covers rows <= i only."""

    def __init__(self, cin: int, features: int, levels: int):
        super().__init__()
        self.inp = nn.Sequential(_UpwardConv(cin, features), _UpwardConv(features, features))
        self.down = nn.ModuleList(nn.Sequential(_UpwardConv(features, features), _UpwardConv(features, features))
                                  for _ in range(levels))
        self.up = nn.ModuleList(nn.Sequential(_UpwardConv(2 * features, 2 * features),
                                              _UpwardConv(2 * features, features)) for _ in range(levels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        skips = []
        for block in self.down:
            skips.append(x)
            x = block(F.max_pool2d(shift_down(x, 1), 2))  # the shift keeps row 2j+1 out of coarse row j
        for block in self.up:
            x = block(torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), skips.pop()], dim=1))
        return x


@register_architecture("blindspot_unet2d")
class BlindSpotUNet(nn.Module):
    """Blind-spot denoiser.

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, H, W)``; H and W multiples of
    ``size_multiple = 2 ** levels`` (the inference engine pads). Any intensity range (no output activation).

    Args:
        features: channels of every level of the branch U-Net.
        levels: number of 2x down-samplings in the branch.
        blind_radius: the blind block around each output pixel is (2 r + 1) x (2 r + 1) input pixels.

    Example:
        >>> net = BlindSpotUNet(features=8, levels=2, blind_radius=1)
        >>> x = torch.zeros(1, 1, 16, 16, requires_grad=True)
        >>> net(x)[0, 0, 8, 8].backward()
        >>> bool(x.grad[0, 0, 7:10, 7:10].abs().sum() == 0)
        True
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: int = 32, levels: int = 2,
                 blind_radius: int = 0):
        super().__init__()
        if blind_radius < 0:
            raise ValueError(f"blind_radius must be >= 0; got {blind_radius}")
        self.branch = _UpwardUNet(in_channels, features, levels)
        self.fuse = nn.Sequential(nn.Conv2d(4 * features, 2 * features, 1), nn.LeakyReLU(0.1),
                                  nn.Conv2d(2 * features, features, 1), nn.LeakyReLU(0.1),
                                  nn.Conv2d(features, out_channels, 1))
        self.blind_radius = int(blind_radius)
        self.size_multiple = 2 ** levels
        self.out_channels = out_channels
        self.register_buffer("baseline", blind_mean_kernel(self.blind_radius), persistent=False)
        if out_channels == 2:  # start as the baseline: the fit learns corrections to it
            nn.init.zeros_(self.fuse[-1].weight)
            nn.init.zeros_(self.fuse[-1].bias)

    def blind_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The baseline: (mean, log-variance) of the pixels around the blind block, normalised at the borders."""
        k = self.baseline.shape[-1] // 2
        c = x[:, :1]
        stack = torch.cat([c, c * c, torch.ones_like(c)], dim=0)  # one convolution for all three
        moments = F.conv2d(F.pad(stack, (k, k, k, k)), self.baseline)
        n = c.shape[0]
        weight = moments[2 * n:]
        mean = moments[:n] / weight
        var = (moments[n:2 * n] / weight - mean * mean).clamp_min(1e-8)
        return mean, torch.log(var)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if x.shape[2] == x.shape[3]:  # square: the four rotations run as one batch
            views = self.branch(torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)]))
            views = shift_down(views, self.blind_radius + 1)
            parts = [torch.rot90(views[k * n:(k + 1) * n], -k, dims=(2, 3)) for k in range(4)]
        else:
            parts = [torch.rot90(shift_down(self.branch(torch.rot90(x, k, dims=(2, 3))), self.blind_radius + 1),
                                 -k, dims=(2, 3)) for k in range(4)]
        out = self.fuse(torch.cat(parts, dim=1))
        if self.out_channels == 2:
            mean, log_var = self.blind_moments(x)
            out = torch.cat([out[:, :1] + mean, out[:, 1:] + log_var], dim=1)
        return out
