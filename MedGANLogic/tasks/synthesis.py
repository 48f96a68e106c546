"""Modality synthesis (T1w->T2w, MR->CT, ...): the output is a new contrast on the input's exact grid.

A CT synthesised from MR is air (-1000 HU) outside the head: beyond :data:`AIR_MARGIN_MM` from the MR's head mask
(:func:`MedGANLogic.normalization.head_mask`). There the MR holds only background noise, and an instance-norm
generator (the CycleGAN ``mr-to-ct``) scales that noise up to unit variance and draws bone into it: up to 1034 HU on
the CPU, and other values on a GPU (Testing/Python/test_cuda.py found slices of pure background differing by
2034 HU between an H200 and the CPU, both wrong). Inside the head and its margin the network's output is kept.

An MR synthesised from CT is background (the darkest value of the model's output window: what it gives air) beyond
:data:`BODY_MARGIN_MM` from the CT's body (:func:`MedGANLogic.normalization.ct_body_mask`): the table, the head holder
and the slices of air above the head. A network trained on heads alone draws a plastic holder, which has the HU of
soft tissue, as tissue (a 4 mm shell behind the sample head came out at the brightness of the head itself), and the
instance-norm CycleGAN ``ct-to-mr`` drew signal up to 680 into the sample's slices of air. The network is shown the
CT with the objects outside the body set to air (:func:`network_source`), so what the patient lies on does not change
the synthetic MR of the head either (the holder moved the head's median by 10 of the window's 637).
"""

from __future__ import annotations

import numpy as np

from . import TaskContext, image_output

AIR_HU = -1000.0
AIR_MARGIN_MM = 5.0  # kept around the head mask: the scalp's edge, and any skin the mask's threshold missed
BODY_MARGIN_MM = 2.0  # kept around the CT's body: the skin's partial-volume edge


def _beyond(mask: np.ndarray, spacing: tuple[float, float, float], margin_mm: float) -> np.ndarray:
    """Voxels farther than ``margin_mm`` from ``mask`` (z, y, x; ``spacing`` (x, y, z) mm); none for an empty mask."""
    from scipy import ndimage

    from ..normalization import ellipsoid

    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    return ~ndimage.binary_dilation(mask, structure=ellipsoid(margin_mm, spacing[::-1]))


def outside_head(mr: np.ndarray, spacing: tuple[float, float, float], margin_mm: float = AIR_MARGIN_MM) -> np.ndarray:
    """Voxels of an MR volume (z, y, x; ``spacing`` (x, y, z) mm) farther than ``margin_mm`` from its head mask.
    An MR with no head found (a blank volume) gives no such voxels: nothing is overwritten."""
    from ..normalization import head_mask

    return _beyond(head_mask(mr), spacing, margin_mm)


def outside_body(ct: np.ndarray, spacing: tuple[float, float, float], margin_mm: float = BODY_MARGIN_MM,
                 body: np.ndarray | None = None) -> np.ndarray:
    """Voxels of a CT (z, y, x, HU; ``spacing`` (x, y, z) mm) farther than ``margin_mm`` from the patient's body
    (:func:`MedGANLogic.normalization.ct_body_mask`: no table, no holder; ``body``: that mask when already made).
    A CT with no body found (all air) gives no such voxels: nothing is overwritten."""
    from ..normalization import ct_body_mask

    return _beyond(ct_body_mask(ct, spacing) if body is None else body, spacing, margin_mm)


def background_value(card) -> float:
    """What a synthetic MR holds where there is no body: the low end of the card's output window (the value its
    network gives air), or 0 for an output without a fixed window."""
    norm = card.output.get("normalization") or {}
    return float(norm["window"][0]) if norm.get("kind") == "fixed" and norm.get("window") else 0.0


def ct_to_mr(card) -> bool:
    """Whether ``card``'s model synthesises MR from CT."""
    return card.input.get("modality") == "CT" and card.output.get("modality") == "MR"


def input_body(plan) -> np.ndarray:
    """The CT body of the run's input (:func:`MedGANLogic.normalization.ct_body_mask` on ``plan.volume``'s grid),
    made once per run (``plan.memo``): the network's source of every pass and the background of :func:`finish`
    share it (on a 400 x 512 x 512 CT it takes seconds)."""
    from ..normalization import ct_body_mask

    if "ct_body" not in plan.memo:
        plan.memo["ct_body"] = ct_body_mask(plan.volume.array, plan.volume.spacing)
    return plan.memo["ct_body"]


def network_source(plan):
    """For CT -> MR: the CT with the objects outside the body (above -500 HU: table, holder) set to air (-1000 HU), a
    new volume; air, foam and their noise stay as acquired (the network learned CTs with noisy air: air made exactly
    -1000 moved its phantom MAE in the head from 84.4 to 87.1). Other models see the input as it is."""
    volume = plan.volume
    if not ct_to_mr(plan.card):
        return volume
    objects = ~input_body(plan) & (volume.array > -500.0)
    if not objects.any():
        return volume
    return volume.with_array(np.where(objects, np.float32(AIR_HU), volume.array).astype(volume.array.dtype))


def make_outputs(ctx: TaskContext):
    image = image_output(ctx)
    extras = {}
    if ctx.card.input.get("modality") == "MR" and ctx.card.output.get("modality") == "CT":
        air = outside_head(ctx.volume.array, ctx.volume.spacing)
        image.array[air] = np.float32(AIR_HU)
        extras.update(air_outside_head_mm=AIR_MARGIN_MM, air_outside_head_voxels=int(np.count_nonzero(air)))
    return {"image": image}, extras


def finish(outputs, extras, plan):
    """For CT -> MR, on the input's grid (after every pass, resampled back): the background value beyond
    :data:`BODY_MARGIN_MM` of the input's body (:func:`input_body`, the mask the network's source was made with)."""
    if not ct_to_mr(plan.card):
        return outputs, extras
    outside = outside_body(plan.volume.array, plan.volume.spacing, body=input_body(plan))
    value = background_value(plan.card)
    image = outputs["image"]
    image.array[outside] = np.float32(value)
    return outputs, dict(extras, background_outside_body_mm=BODY_MARGIN_MM, background_value=value,
                         background_outside_body_voxels=int(np.count_nonzero(outside)))
