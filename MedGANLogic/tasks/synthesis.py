"""Modality synthesis (T1w->T2w, MR->CT, ...): the output is a new contrast on the input's exact grid.

A CT synthesised from MR is air (-1000 HU) outside the head: beyond :data:`AIR_MARGIN_MM` from the MR's head mask
(:func:`MedGANLogic.normalization.head_mask`). There the MR holds only background noise, and an instance-norm
generator (the CycleGAN ``mr-to-ct``) scales that noise up to unit variance and draws bone into it: up to 1034 HU on
the CPU, and other values on a GPU (Testing/Python/test_cuda.py found slices of pure background differing by
2034 HU between an H200 and the CPU, both wrong). Inside the head and its margin the network's output is kept.
"""

from __future__ import annotations

import numpy as np

from . import TaskContext, image_output

AIR_HU = -1000.0
AIR_MARGIN_MM = 5.0  # kept around the head mask: the scalp's edge, and any skin the mask's threshold missed


def outside_head(mr: np.ndarray, spacing: tuple[float, float, float], margin_mm: float = AIR_MARGIN_MM) -> np.ndarray:
    """Voxels of an MR volume (z, y, x; ``spacing`` (x, y, z) mm) farther than ``margin_mm`` from its head mask.
    An MR with no head found (a blank volume) gives no such voxels: nothing is overwritten."""
    from scipy import ndimage

    from ..normalization import head_mask

    head = head_mask(mr)
    if not head.any():
        return np.zeros(mr.shape, dtype=bool)
    return ndimage.distance_transform_edt(~head, sampling=tuple(spacing[::-1])) > margin_mm


def make_outputs(ctx: TaskContext):
    image = image_output(ctx)
    extras = {}
    if ctx.card.input.get("modality") == "MR" and ctx.card.output.get("modality") == "CT":
        air = outside_head(ctx.volume.array, ctx.volume.spacing)
        image.array[air] = np.float32(AIR_HU)
        extras.update(air_outside_head_mm=AIR_MARGIN_MM, air_outside_head_voxels=int(np.count_nonzero(air)))
    return {"image": image}, extras
