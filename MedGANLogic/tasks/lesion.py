"""Synthetic lesion insertion: a lesion of a chosen type painted into a mask, in the scan's own contrast and noise.

The network (:class:`MedGANLogic.models.inpaint.LesionInpaintNet`) sees, in its frame, the normalised image with
the mask (grown by one voxel in-plane) hidden and marked with the lesion type (:func:`network_input`), and fills
it. On the input's own grid (:func:`finish`) the result is blended into the input with a weight that is 1 up to
``margin_mm`` from the mask and falls linearly to 0 at ``margin_mm + feather_mm`` (the card's ``extras``, 2 + 2 mm
by default): every voxel farther from the mask keeps the input's exact value and dtype (bit-identical). Outputs:
``image`` (the input with the lesion; integer inputs stay integers) and ``mask`` (the inserted lesion's label, the
mask itself on the input grid, named after the lesion type).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..lesion_types import LESION_TYPE_NAMES, LESION_TYPES
from . import TaskContext, image_output, slice_axis_of

DEFAULT_TYPE = "wmh"


def lesion_type_of(options: dict[str, Any]) -> str:
    return str(options.get("lesion_type") or DEFAULT_TYPE)


def check_plan(card: Any, options: dict[str, Any], inputs: dict) -> None:
    """The lesion type must be one the model was trained on (its card's ``extras.lesion_types``)."""
    known = tuple(card.extras.get("lesion_types", LESION_TYPES))
    if lesion_type_of(options) not in known:
        raise InputError(f"Model {card.id} does not make {lesion_type_of(options)!r} lesions; choose lesion_type "
                         f"from {', '.join(known)}.")


def network_input(normalized: np.ndarray, inputs: dict, card: Any, options: dict[str, Any]) -> np.ndarray:
    """The normalised image (z, y, x) with the hidden region set to the lesion type's marker."""
    from ..models.inpaint import HIDDEN_BASE, hidden_region

    mask = np.asarray(inputs["mask"].array, dtype=np.float32) > 0.5  # linear resampling into the frame: > half
    axis = slice_axis_of(card, options)  # grow the mask within the slices the model sees
    hidden = np.moveaxis(hidden_region(np.moveaxis(mask, axis, 0)), 0, axis)
    if not hidden.any():
        raise InputError("The mask has no voxel left in the model's frame (it is thinner than one voxel there); "
                         "draw a larger region.")
    marked = normalized.copy()
    marked[hidden] = -(HIDDEN_BASE + LESION_TYPES.index(lesion_type_of(options)))
    return marked


def make_outputs(ctx: TaskContext):
    """The network's image in intensity units (the inpainted slices) in the model's frame; blended in ``finish``."""
    return {"image": image_output(ctx)}, {"lesion_type": lesion_type_of(ctx.options)}


def blend_weight(mask: np.ndarray, spacing_zyx, margin_mm: float, feather_mm: float) -> tuple[np.ndarray, tuple]:
    """(weight in [0, 1] (float32) over a box around ``mask``, the box as slices): 1 within ``margin_mm`` of the
    mask, linear to 0 at ``margin_mm + feather_mm``; 0 beyond (and everywhere outside the box)."""
    reach = margin_mm + feather_mm
    pad = [int(np.ceil(reach / s)) + 1 for s in spacing_zyx]
    where = np.argwhere(mask)
    lo = np.maximum(where.min(axis=0) - pad, 0)
    hi = np.minimum(where.max(axis=0) + np.array(pad) + 1, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    distance = ndimage.distance_transform_edt(~mask[box], sampling=spacing_zyx)
    weight = np.clip((reach - distance) / max(feather_mm, 1e-6), 0.0, 1.0).astype(np.float32)
    return weight, box


def composite(image: np.ndarray, generated: np.ndarray, mask: np.ndarray, spacing_zyx, margin_mm: float,
              feather_mm: float) -> tuple[np.ndarray, int]:
    """``image`` with ``generated`` blended in near ``mask`` (see :func:`blend_weight`), in ``image``'s dtype
    (integers rounded and clipped to it); voxels of weight 0 are copied unchanged. Returns (array, voxels changed).
    """
    out = image.copy()
    weight, box = blend_weight(mask.astype(bool), spacing_zyx, margin_mm, feather_mm)
    near = weight > 0
    source = image[box].astype(np.float64)
    blended = weight[near] * generated[box][near].astype(np.float64) + (1 - weight[near]) * source[near]
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        blended = np.clip(np.rint(blended), info.min, info.max)
    region = out[box]
    region[near] = blended.astype(image.dtype)
    return out, int(near.sum())


def finish(outputs: dict, extras: dict, plan: Any) -> tuple[dict, dict]:
    """On the input's grid: the inpainted image blended into the input near the mask; the lesion's label map."""
    volume, mask = plan.volume, plan.inputs["mask"]
    margin = float(plan.card.extras.get("margin_mm", 2.0))
    feather = float(plan.card.extras.get("feather_mm", 2.0))
    generated = outputs["image"]
    array, changed = composite(volume.array, generated.array, mask.array, volume.spacing[::-1], margin, feather)
    lesion_type = extras["lesion_type"]
    image = volume.with_array(array, metadata=dict(generated.metadata, lesion_type=lesion_type))
    label_meta = {k: v for k, v in generated.metadata.items() if k not in ("contrast", "units")}
    label_meta.update({"kind": "labels", "modality": "mask", "lesion_type": lesion_type,
                       "segment_names": {1: f"synthetic {LESION_TYPE_NAMES[lesion_type]}"}})
    label = volume.with_array(mask.array.astype(np.uint8), metadata=label_meta)
    extras = dict(extras, lesion_voxels=int(mask.array.sum()), changed_voxels=changed,
                  unchanged_beyond_mm=margin + feather)
    return {"image": image, "mask": label}, extras
