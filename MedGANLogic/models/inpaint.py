"""Mask-conditioned lesion inpainting generator: fills a hidden region with a lesion of a chosen type.

The engine's one inference path (:func:`MedGANLogic.inference.infer`) carries one image channel, so the hidden
region and the lesion type travel inside it: the task (:mod:`MedGANLogic.tasks.lesion`) writes
:func:`hide` ``(image, hidden, type)``, which sets every hidden voxel to ``-(HIDDEN_BASE + type index)``, a value
no normalised image takes (images are clipped to [-1, 1]). :class:`LesionInpaintNet` decodes it back into
a U-Net's channels: [image with the region zeroed, the hidden mask, one channel per lesion type (the one-hot type,
constant over the slice)], and returns the image with the hidden region replaced by the U-Net's output (tanh,
[-1, 1]); outside the region the input passes through unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from scipy import ndimage

from ..lesion_types import LESION_TYPES
from . import register_architecture
from .unet import UNetGenerator

#: A hidden voxel of lesion type k holds -(HIDDEN_BASE + k); anything below -HIDDEN_THRESHOLD is hidden.
HIDDEN_BASE, HIDDEN_THRESHOLD = 2.0, 1.5
#: The hidden region is the lesion mask grown by this many voxels in-plane: the generator paints the lesion's edge.
HIDDEN_RIM_VOXELS = 1


def hidden_region(mask: np.ndarray, rim: int = HIDDEN_RIM_VOXELS) -> np.ndarray:
    """The region the generator fills: ``mask > 0`` (z, y, x) grown by ``rim`` voxels within each axial slice."""
    hidden = np.asarray(mask) > 0
    if rim > 0:
        structure = np.zeros((3, 3, 3), bool)
        structure[1] = ndimage.generate_binary_structure(2, 1)
        hidden = ndimage.binary_dilation(hidden, structure, iterations=rim)
    return hidden


def hide(image: torch.Tensor, hidden: torch.Tensor, lesion_type: torch.Tensor | int) -> torch.Tensor:
    """``image`` (N, 1, H, W) in [-1, 1] with ``hidden`` (N, 1, H, W, 0/1) voxels set to the marker of
    ``lesion_type`` (an index of :data:`LESION_TYPES`, or (N,) of them)."""
    kind = torch.as_tensor(lesion_type, dtype=image.dtype, device=image.device).reshape(-1, 1, 1, 1)
    return torch.where(hidden > 0.5, -(HIDDEN_BASE + kind), image)


def reveal(x: torch.Tensor, n_types: int = len(LESION_TYPES)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image with the hidden region zeroed, hidden mask (N, 1, H, W) float, one-hot type (N, n_types)) of a
    :func:`hide`-marked input. A slice with no hidden voxel has an all-zero type."""
    hidden = (x < -HIDDEN_THRESHOLD).to(x.dtype)
    count = hidden.sum(dim=(1, 2, 3))
    mean_marker = (x * hidden).sum(dim=(1, 2, 3)) / count.clamp(min=1)
    kind = torch.round(-mean_marker - HIDDEN_BASE).clamp(0, n_types - 1).long()
    one_hot = nn.functional.one_hot(kind, n_types).to(x.dtype) * (count > 0).to(x.dtype)[:, None]
    return x * (1 - hidden), hidden, one_hot


@register_architecture("lesion_inpaint2d")
class LesionInpaintNet(nn.Module):
    """2D lesion-inpainting generator (a pix2pix U-Net over image, mask and lesion-type channels).

    Shapes: ``(N, 1, H, W)`` marked by :func:`hide` -> ``(N, 1, H, W)`` in [-1, 1]; H and W multiples of
    ``size_multiple`` (the inference engine pads). ``generate(image, hidden, one_hot)`` is the raw U-Net fill
    (for training, where the discriminators see it).

    Example:
        >>> net = LesionInpaintNet(features=8, depth=3)
        >>> x = hide(torch.zeros(1, 1, 32, 32), torch.ones(1, 1, 32, 32), 2)
        >>> net(x).shape
        torch.Size([1, 1, 32, 32])
    """

    def __init__(self, features: int = 32, depth: int = 4, n_types: int = len(LESION_TYPES), norm: str = "instance",
                 upsample: str = "bilinear"):
        super().__init__()
        self.n_types = int(n_types)
        self.unet = UNetGenerator(in_channels=2 + self.n_types, out_channels=1, features=features, depth=depth,
                                  norm=norm, upsample=upsample)
        self.size_multiple = self.unet.size_multiple
        self.out_channels = 1

    def generate(self, image: torch.Tensor, hidden: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        planes = one_hot[:, :, None, None].expand(-1, -1, *image.shape[-2:])
        return self.unet(torch.cat([image * (1 - hidden), hidden, planes], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image, hidden, one_hot = reveal(x, self.n_types)
        return torch.where(hidden > 0.5, self.generate(image, hidden, one_hot), image)
