"""Residual encoder-decoder generator for low-dose CT denoising (after RED-CNN, Chen et al., IEEE TMI 2017).

RED-CNN stacks convolutions and deconvolutions with shortcut additions and learns the noise as a residual.
This version keeps that design but halves the resolution at each encoder level (stride-2 convolutions, nearest
up-sampling + convolution back), which widens the receptive field over the correlated streaks of filtered
back-projection noise at a fraction of the cost of full-resolution 5x5 layers, and uses padding so the output
has the input's size. No normalisation layers: denoising must keep absolute HU levels.

The network predicts a correction that is added to the centre input channel, so an untrained network is
the identity and the output stays in the input's normalised range (cards use ``same_as_input`` output).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import register_architecture


@register_architecture("red_cnn2d")
class ResidualEncoderDecoder(nn.Module):
    """Residual encoder-decoder denoiser.

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, H, W)``; H, W multiples of
    ``size_multiple = 2 ** levels``. Input and output in the same normalised intensity range (e.g. a CT
    window mapped to [-1, 1]); for 2.5d inputs (``in_channels = 1 + 2k``) the centre channel is the slice
    being denoised.

    Args:
        features: channels at full resolution; level l has ``features * 2**l``.
        levels: number of stride-2 down-samplings.
        convs_per_level: 3x3 convolutions per level on each side.

    Example:
        >>> net = ResidualEncoderDecoder(features=8, levels=2)
        >>> x = torch.zeros(1, 1, 64, 48)
        >>> bool(torch.equal(net(x), x + net.correction(x)))
        True
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: int = 32, levels: int = 2,
                 convs_per_level: int = 2):
        super().__init__()
        act = nn.LeakyReLU(0.1)
        self.head = nn.Sequential(nn.Conv2d(in_channels, features, 3, padding=1), act)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        widths = [features * 2 ** level for level in range(levels + 1)]
        for level in range(1, levels + 1):
            layers: list[nn.Module] = [nn.Conv2d(widths[level - 1], widths[level], 3, stride=2, padding=1), act]
            for _ in range(convs_per_level - 1):
                layers += [nn.Conv2d(widths[level], widths[level], 3, padding=1), act]
            self.encoders.append(nn.Sequential(*layers))
        for level in reversed(range(1, levels + 1)):
            self.decoders.append(nn.ModuleDict({
                "up": nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                    nn.Conv2d(widths[level], widths[level - 1], 3, padding=1)),
                "refine": nn.Sequential(*[m for _ in range(convs_per_level - 1)
                                          for m in (nn.Conv2d(widths[level - 1], widths[level - 1], 3, padding=1),
                                                    act)]),
            }))
        self.act = act
        self.tail = nn.Conv2d(features, out_channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # start as the identity: training only learns the noise
        nn.init.zeros_(self.tail.bias)
        self.size_multiple = 2 ** levels
        self.out_channels = out_channels

    def correction(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted residual (minus the noise), same shape as the output."""
        feats = [self.head(x)]
        for enc in self.encoders:
            feats.append(enc(feats[-1]))
        y = feats.pop()
        for dec in self.decoders:
            y = self.act(dec["up"](y) + feats.pop())  # shortcut addition, as in RED-CNN
            y = dec["refine"](y)
        return self.tail(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1] // 2 - (self.out_channels - 1) // 2
        return x[:, c:c + self.out_channels] + self.correction(x)
