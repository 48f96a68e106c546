"""Super-resolution: a finer grid over the same field of view.

This is the one task that changes geometry on purpose: spacing shrinks by the card's ``scale_factor``, the
origin moves by half the difference of old and new voxel sizes so the outer voxel edges stay where they were,
and the direction is unchanged.
"""

from __future__ import annotations

from ..errors import MedGANError
from . import TaskContext, image_output


def make_outputs(ctx: TaskContext):
    grid = ctx.volume.resampled_grid(ctx.card.scale_factor)
    shape = grid.pop("shape")
    if tuple(ctx.raw.shape[1:]) != shape:
        raise MedGANError(f"Model {ctx.card.id} returned shape {ctx.raw.shape[1:]}, expected {shape} for scale "
                          f"{ctx.card.scale_factor}; its card's scale_factor does not match the network.")
    image = image_output(ctx, **grid)
    outputs = {"image": image}
    return outputs, on_input_grid(outputs, {}, ctx.volume, ctx.card)


def on_input_grid(outputs, extras, volume, card):
    """Say how the geometry changed, from the input's grid to the output's (also after resampling back)."""
    image = outputs["image"]
    image.metadata["geometry_changed"] = (f"super-resolution x{list(card.scale_factor)} (z, y, x): spacing "
                                          f"{[round(s, 4) for s in volume.spacing]} -> "
                                          f"{[round(s, 4) for s in image.spacing]} mm, same field of view")
    return dict(extras, input_spacing=list(volume.spacing), output_spacing=list(image.spacing))
