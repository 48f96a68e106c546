"""ResNet generator of CycleGAN (unpaired image-to-image translation).

A 7x7 stem, ``n_down`` stride-2 convolutions, ``n_blocks`` residual blocks at the coarsest scale, ``n_down``
up-samplings back to full size and a 7x7 head with tanh. Reflection padding keeps the image border free of
zero-padding artefacts.

Up-sampling is ``resize`` (nearest neighbour + 3x3 convolution) by default: transposed convolutions leave
checkerboard artefacts (Odena et al., Distill 2016). ``upsample="transpose"`` reproduces the 3x3
transposed convolutions of pytorch-CycleGAN-and-pix2pix's ``resnet_9blocks``/``resnet_6blocks``, whose
parameter order this module follows so that :mod:`MedGANLogic.models.importer` can convert their checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import register_architecture
from .unet import NORMS, UPSAMPLING, norm_layer


class ResidualBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x), 3x3 convolutions with reflection padding; shape preserved."""

    def __init__(self, channels: int, norm: str, bias: bool, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, bias=bias)
        self.norm1 = norm_layer(norm, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, bias=bias)
        self.norm2 = norm_layer(norm, channels)
        self.pad = nn.ReflectionPad2d(1)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(self.act(self.norm1(self.conv1(self.pad(x)))))
        return x + self.norm2(self.conv2(self.pad(y)))


class _ConvNormAct(nn.Module):
    def __init__(self, conv: nn.Module, norm: nn.Module):
        super().__init__()
        self.conv, self.norm, self.act = conv, norm, nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


@register_architecture("resnet2d")
class ResNetGenerator(nn.Module):
    """CycleGAN ResNet generator.

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, H, W)``, H and W multiples of
    ``size_multiple = 2 ** n_down``; output in (-1, 1) (tanh).

    Args:
        features: channels after the stem (CycleGAN ``ngf``); ``features * 2**n_down`` in the residual blocks.
        n_blocks: residual blocks (9 for ``resnet_9blocks``).
        n_down: stride-2 down-samplings (2 in CycleGAN).
        norm: ``instance`` (CycleGAN default), ``batch`` or ``none``.
        upsample: ``resize`` (default: nearest + conv, no checkerboard), ``bilinear`` (bilinear + conv) or
            ``transpose`` (CycleGAN-compatible).

    Example:
        >>> net = ResNetGenerator(features=8, n_blocks=2)
        >>> net(torch.zeros(1, 1, 96, 112)).shape
        torch.Size([1, 1, 96, 112])
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: int = 64, n_blocks: int = 9,
                 n_down: int = 2, norm: str = "instance", upsample: str = "resize", dropout: float = 0.0):
        super().__init__()
        if upsample not in UPSAMPLING:
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLING)}; got {upsample!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
        bias = norm != "batch"
        self.stem = nn.Sequential(nn.ReflectionPad2d(3),
                                  _ConvNormAct(nn.Conv2d(in_channels, features, 7, bias=bias),
                                               norm_layer(norm, features)))
        self.down = nn.ModuleList()
        ch = features
        for _ in range(n_down):
            self.down.append(_ConvNormAct(nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=bias),
                                          norm_layer(norm, ch * 2)))
            ch *= 2
        self.blocks = nn.Sequential(*[ResidualBlock(ch, norm, bias, dropout) for _ in range(n_blocks)])
        self.up = nn.ModuleList()
        for _ in range(n_down):
            if upsample == "transpose":
                conv: nn.Module = nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=bias)
            else:
                mode = "nearest" if upsample == "resize" else "bilinear"
                conv = nn.Sequential(nn.Upsample(scale_factor=2, mode=mode), nn.ReflectionPad2d(1),
                                     nn.Conv2d(ch, ch // 2, 3, bias=bias))
            self.up.append(_ConvNormAct(conv, norm_layer(norm, ch // 2)))
            ch //= 2
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7), nn.Tanh())
        self.size_multiple = 2 ** n_down
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.down:
            x = layer(x)
        x = self.blocks(x)
        for layer in self.up:
            x = layer(x)
        return self.head(x)
