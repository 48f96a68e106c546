"""Small fully convolutional networks: the engine's test models and a template for new families."""

from __future__ import annotations

import torch
import torch.nn as nn

from . import register_architecture


@register_architecture("conv2d")
class SmallConvNet(nn.Module):
    """A stack of 3x3(x3) convolutions with a residual connection to the input.

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, H, W)`` (``spatial_dims=2``) or the 3D
    equivalent. Fully convolutional, so any input size works; the receptive field is ``2 * depth + 1``.

    Example:
        >>> net = SmallConvNet(spatial_dims=2, in_channels=1, out_channels=1, features=8, depth=2)
        >>> net(torch.zeros(2, 1, 32, 40)).shape
        torch.Size([2, 1, 32, 40])
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1, features: int = 16,
                 depth: int = 3, residual: bool = True):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        layers: list[nn.Module] = []
        ch = in_channels
        for _ in range(depth - 1):
            layers += [conv(ch, features, 3, padding=1), nn.LeakyReLU(0.2)]
            ch = features
        layers.append(conv(ch, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.residual = residual and in_channels >= out_channels
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.residual:
            # Centre channel of the input: for 2.5d models that is the slice being predicted.
            c = x.shape[1] // 2 - (self.out_channels - 1) // 2
            y = y + x[:, c:c + self.out_channels]
        return y


@register_architecture("conv3d")
def small_conv_net_3d(**params) -> SmallConvNet:
    return SmallConvNet(spatial_dims=3, **params)
