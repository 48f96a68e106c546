"""Segmentation U-Net for adversarial lesion segmentation (Luc et al., "Semantic segmentation using
adversarial networks", 2016; Xue et al., SegAN, 2018).

The segmenter is MONAI's ``BasicUNet`` (2D, four 2x down-samplings, instance norm, LeakyReLU, skip connections)
returning per-class logits; the inference engine takes their argmax. During training a PatchGAN discriminator
(MONAI ``PatchDiscriminator``, see :mod:`MedGANLogic.train.segmentation`) sees (image, mask) pairs and learns
to tell predicted lesion probabilities from true masks; the segmenter gets that adversarial signal on top of
Dice + cross-entropy, which pushes it towards masks with the shape statistics of real ones. The discriminator
is not needed at inference and is not part of the exported model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from . import register_architecture


@register_architecture("seg_unet2d")
class SegmentationUNet(nn.Module):
    """2D U-Net returning class logits.

    Shapes: ``(N, in_channels, H, W)`` normalised image (H, W multiples of ``size_multiple = 16``; the engine
    pads) -> ``(N, num_classes, H, W)`` logits; class 0 is background.

    Args:
        features: six channel numbers of MONAI ``BasicUNet`` (four encoder levels, bottleneck, last decoder).
        num_classes: output classes including background (2 for lesion vs background).

    Example:
        >>> net = SegmentationUNet(features=[8, 8, 16, 32, 64, 8])
        >>> net(torch.zeros(2, 1, 48, 32)).shape
        torch.Size([2, 2, 48, 32])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2,
                 features: Sequence[int] = (16, 16, 32, 64, 128, 16), dropout: float = 0.0):
        super().__init__()
        from monai.networks.nets import BasicUNet

        if len(features) != 6:
            raise ValueError(f"features must be six channel numbers (BasicUNet); got {list(features)}")
        if num_classes < 2:
            raise ValueError("num_classes must be at least 2 (background and one structure)")
        self.unet = BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes,
                              features=tuple(int(f) for f in features), dropout=dropout, upsample="nontrainable")
        self.size_multiple = 16
        self.out_channels = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)
