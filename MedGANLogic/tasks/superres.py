"""Super-resolution: a finer grid over the same field of view.

This is the one task that changes geometry on purpose: spacing shrinks by the card's ``scale_factor``, the
origin moves by half the difference of old and new voxel sizes so the outer voxel edges stay where they were,
and the direction is unchanged.

**Detail of the input grid kept** (option ``input_detail``, default True): where the engine resamples the input into
the voxel size the model was trained at (:mod:`MedGANLogic.frame`: e.g. 0.8 mm pixels of a thick-slice T1w brought
to a through-plane model's 1.5 mm), the way there and back removes the detail finer than the model's voxels along
the axes the model does not refine. The output then adds back what that round trip takes from a cubic B-spline of
the input: ``out = model_back + spline(input) - back(spline(input in the model's frame))`` on the output grid, i.e.
the model's own change over a spline, made at its voxel size, on top of a spline of the input at the input's. Chosen
on validation phantoms 1000-1003 at 1 mm (x2 through-plane, one pass, gain over cubic B-spline, T2w / T1w / FLAIR;
``benchmarks/sr_input_detail.py``): resampled alone 0.83 / -0.08 / -0.03 dB, on the native grid 3.71 / 0.62 / 0.56,
resampled with the detail added back 3.19 / 0.78 / 0.69; with 5 mm slices 3.33 / 5.68 / 5.58, 3.23 / 4.89 / 5.00
and 3.48 / 5.74 / 5.65; means 2.55, 3.00 and 3.26. Where the frame does not resample, nothing changes.

**The input's measured data kept** (option ``consistency``, default True, for cards that name the acquisition
they were trained to invert in ``extras.degradation``: ``thick_slices`` or ``kspace_truncate``, the recipe's
``data.degrade``): the input is a measurement of the output's anatomy, made the way the card says, so the output is
changed as little as possible for that measurement to give the input back exactly
(:func:`MedGANLogic.degradation.consistent_with`: through-plane, each pair of refined slices keeps its
difference and takes the input slice as its mean; in-plane, the central k-space band the input measured gets the
input's magnitude and the band outside it, which is what the model adds, is kept). The model then decides only what
the input did not measure. Chosen on noisy validation phantoms 1000-1003 (T2w, T1w, FLAIR at SNR 30; 1 mm, 1 mm
with 5 mm slices, 2 mm; one pass; ``benchmarks/sr_consistency.py``): in-plane, the gain over cubic B-spline rose
from 2.16 to 2.36 dB against the acquired image and from 2.43 to 2.87 against the noise-free one, better in all 9
cases (B-spline with the data kept: 0.25 and 0.59); through-plane, nearly consistent already, 3.42 -> 3.48 (all 9
better) and 3.28 -> 3.26 (0.2 dB lower on T1w and FLAIR at 1 mm, whose input is resampled). A scan
acquired otherwise (another slice profile, a resampled volume) holds only approximately to it;
``consistency=False`` (``--no-consistency``) leaves the output as the model made it. The fit to the scan
(``adapt=True``) is left as it fits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..degradation import consistent_with
from ..errors import MedGANError
from ..volume import Volume
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


#: How each ``extras.degradation`` is said in notes and metadata.
DEGRADATION_WORDS = {"thick_slices": "each input slice the mean of its refined slices",
                     "kspace_truncate": "the input's k-space as the output's central band"}


def kept_degradation(card: Any, options: dict[str, Any]) -> str | None:
    """The acquisition (``card``'s ``extras.degradation``) whose measured data the output keeps in this run: None
    where the card names none or the run's ``consistency`` option is False."""
    kind = card.extras.get("degradation")
    return kind if kind and options.get("consistency", True) else None


def plan_notes(card: Any, header: Any, options: dict[str, Any]) -> list[str]:
    """The plan's note that the output will keep the input's measured data (see the module docstring), unless the
    run's ``consistency`` option is False."""
    kind = kept_degradation(card, options)
    if kind is None:
        return []
    return [f"the output keeps the data the input measured ({DEGRADATION_WORDS[kind]}, as model {card.id} was "
            f"trained); consistency=False (--no-consistency) leaves it as the model made it"]


def finish(outputs: dict[str, Volume], extras: dict[str, Any], plan: Any) -> tuple[dict[str, Volume], dict[str, Any]]:
    """On the input's refined grid: the output made consistent with the input's measured data, where the card names
    its acquisition and ``consistency`` is not False (see the module docstring)."""
    kind = kept_degradation(plan.card, plan.options)
    if kind is None:
        return outputs, extras
    image, volume = outputs["image"], plan.volume
    array = consistent_with(image.array, volume.array, [int(round(s)) for s in plan.card.scale_factor], kind)
    array = never_below(array, volume.array, image.array)  # a band limit's ringing
    said = f"{DEGRADATION_WORDS[kind]} ({kind}): the output keeps the data the input measured"
    outputs = dict(outputs, image=image.with_array(array, metadata=dict(image.metadata, consistency=said)))
    return outputs, dict(extras, consistency=said)


def never_below(array: np.ndarray, source: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``array`` (float32, changed in place) held at or above the lower of the input's and the model's minimum: what
    an added spline or band limit rings below both is not in the data."""
    return np.maximum(array, np.float32(min(float(source.min()), float(image.min()))), out=array)


def on_input_grid(outputs, extras, volume, card):
    """Say how the geometry changed, from the input's grid to the output's (also after resampling back)."""
    image = outputs["image"]
    image.metadata["geometry_changed"] = (f"super-resolution x{list(card.scale_factor)} (z, y, x): spacing "
                                          f"{[round(s, 4) for s in volume.spacing]} -> "
                                          f"{[round(s, 4) for s in image.spacing]} mm, same field of view")
    return dict(extras, input_spacing=list(volume.spacing), output_spacing=list(image.spacing))


def keep_input_detail(outputs: dict[str, Volume], extras: dict[str, Any], source: Volume, seen: Volume,
                      frame: Any, card: Any, options: dict[str, Any]) -> tuple[dict[str, Volume], dict[str, Any]]:
    """The output image (already on the input's refined grid) with the detail the resampling into the model's
    voxel size took away added back (see the module docstring): ``source`` is the input the model was shown,
    ``seen`` the same in the model's frame (before any bias correction), ``frame`` the :class:`ModelFrame`."""
    from ..frame import to_input
    from ..resampling import bspline_onto, grid_of

    if not frame.resamples or not options.get("input_detail", True):
        return outputs, extras
    image = outputs["image"]
    scale = tuple(card.scale_factor)
    fine = seen.resampled_grid(scale)
    spline = Volume(bspline_onto(seen, fine), fine["spacing"], fine["origin"], fine["direction"], {"kind": "image"})
    round_trip = to_input(spline, source, frame, scale).array
    detail = bspline_onto(source, grid_of(image))
    detail -= round_trip
    array = never_below((image.array + detail).astype(np.float32, copy=False), source.array,
                        image.array)  # a spline's ringing
    kept = dict(image.metadata, input_detail=(f"detail finer than the model's voxels "
                                             f"{[round(v, 4) for v in seen.spacing]} mm restored from a cubic "
                                             f"B-spline of the input on its own grid"))
    outputs = dict(outputs, image=image.with_array(array, metadata=kept))
    return outputs, dict(extras, input_detail=kept["input_detail"])
