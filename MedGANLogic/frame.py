"""The model's frame: where a volume must be put for a model to see what it was trained on, and the way back.

:func:`decide` (called by the plan step) chooses, from the volume's geometry and the model's card:

* **orientation**: the whole-axis permutation and flips that bring the volume closest to the orientation the
  models were trained in (:data:`~MedGANLogic.orientation.TRAINING_DIRECTION`), so a 2D model sees slices in the
  plane its card's ``slice_axis`` cuts (a coronal acquisition is sliced axially for an axial model). Exact, no
  interpolation. Not for super-resolution when it would move the axis the model refines, nor when the caller
  chose ``slice_axis`` (they decided what the model sees);
* **voxel size**: when a voxel size the model sees is outside the card's ``input.spacing_mm``, resampling to the
  nearest size inside it (a 2D model's slice axis is left as it is, and so are the axes a super-resolution model
  refines: their coarse spacing is its input, and resampling them first would interpolate what it is there to
  restore); an oblique volume (the model's slices tilted
  more than :data:`~MedGANLogic.fit.OBLIQUE_DEGREES`) is resampled onto an axis-aligned grid. Not for denoising
  (:func:`~MedGANLogic.fit.on_acquisition_grid`): its noise lives on the acquisition's own voxels;
* ``native=True`` keeps the input's own grid and orientation (the fit problems then stay warnings).

:func:`to_model` puts the input into that frame; :func:`to_input` brings an output back onto the input's exact
grid (super-resolution: the input's grid refined by the card's scale, same field of view).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import orientation
from .fit import OBLIQUE_DEGREES, card_plane, fit_problems, is_superres, on_acquisition_grid, slice_plane, spacing_axes
from .orientation import IDENTITY, Flip, Order
from .resampling import axis_aligned_grid, grid_of, grid_with_spacing, resample
from .volume import Volume

#: How each kind of output comes back onto the input grid.
BACK_METHOD = {"image": "bspline", "anomaly_map": "linear", "mask": "nearest", "labels": "nearest"}


@dataclass(frozen=True)
class ModelFrame:
    """The frame a model runs in (see the module docstring); the default is the input's own grid.

    Attributes:
        order, flip: the array-axis permutation and flips into the model's orientation.
        spacing: the model's voxel size (x, y, z mm, in the reoriented axis order), or None (not resampled).
        axis_aligned: resample onto an axis-aligned grid (the volume is oblique).
        reoriented: the reorientation in words (for provenance), or None.
        resampled_from: the input's voxel size (x, y, z mm) when resampled, else None.
    """

    order: Order = IDENTITY[0]
    flip: Flip = IDENTITY[1]
    spacing: tuple[float, float, float] | None = None
    axis_aligned: bool = False
    reoriented: str | None = None
    resampled_from: tuple[float, float, float] | None = None

    @property
    def reorients(self) -> bool:
        return (self.order, self.flip) != IDENTITY

    @property
    def resamples(self) -> bool:
        return self.spacing is not None or self.axis_aligned

    @property
    def identity(self) -> bool:
        return not self.reorients and not self.resamples


def _header(volume: Volume, grid: dict[str, Any]) -> Volume:
    """A voxel-free Volume on ``grid`` (a read-only zero-stride placeholder) for geometry checks."""
    placeholder = np.broadcast_to(np.float32(0), tuple(grid["shape"]))
    return Volume(placeholder, grid["spacing"], grid["origin"], grid["direction"], dict(volume.metadata))


def _model_grid(volume: Volume, frame: ModelFrame) -> dict[str, Any]:
    reoriented = orientation.reoriented_geometry(volume, frame.order, frame.flip)
    header = _header(volume, reoriented)
    spacing = frame.spacing or header.spacing
    if frame.axis_aligned:
        return axis_aligned_grid(header, orientation.nearest_axis_aligned(header.direction), spacing)
    if frame.spacing is not None:
        return grid_with_spacing(header, spacing)
    return reoriented


def decide(volume: Volume, card: Any, slice_axis: int | None = None, native: bool = False,
           plane: int | None = None) -> ModelFrame:
    """The frame ``card``'s model should see ``volume`` in (see the module docstring). ``slice_axis``: the
    caller's axis of the input array (the volume is then not reoriented); ``plane``: an axis of the model's own
    (reoriented) frame to slice along instead of the card's (a plane of ``extras.planes``), whose slices are then
    also brought into the card's voxel size along the slice axis: sliced at the input's own fine spacing (0.8 mm
    rows of a thick-slice scan), neighbouring slices would disagree as stripes, and there would be many more."""
    if native:
        return ModelFrame()
    other_plane = plane is not None and slice_axis is None and plane != card.slice_axis
    axis = plane if other_plane else (card.slice_axis if slice_axis is None else slice_axis)
    order, flip = orientation.orientation_to(volume.direction)
    scale = card.scale_factor
    if slice_axis is not None or tuple(scale[a] for a in order) != tuple(scale):
        order = IDENTITY[0]  # keep the axes the caller chose, or the axis a super-resolution model refines
    header = _header(volume, orientation.reoriented_geometry(volume, order, flip))
    superres = is_superres(card)
    sees = spacing_axes(card, axis)  # the axes whose voxel size the card's range is about
    if other_plane:
        sees = [0, 1, 2]  # another plane's slices: their spacing too (see above)
    tilts = [slice_plane(header, a)[1] for a in ([0, 1, 2] if card.dims == "3d" else [axis])]
    own_voxels = on_acquisition_grid(card)  # a denoiser: never interpolated (only whole axes moved)
    axis_aligned = not superres and not own_voxels and max(tilts) > OBLIQUE_DEGREES
    spacing = None
    bounds = card.input.get("spacing_mm")
    if bounds and not own_voxels:
        lo, hi = float(bounds[0]), float(bounds[1])
        wanted = list(header.spacing)
        for a in sees:
            wanted[2 - a] = min(max(wanted[2 - a], lo), hi)
        if tuple(wanted) != header.spacing:
            spacing = tuple(wanted)
    if axis_aligned and spacing is None:
        spacing = header.spacing
    reoriented = None
    if (order, flip) != IDENTITY:
        planes = (slice_plane(volume, axis)[0], card_plane(card)) if card.dims != "3d" else None
        reoriented = orientation.describe(order, flip, planes)
    return ModelFrame(order=order, flip=flip, spacing=spacing, axis_aligned=axis_aligned, reoriented=reoriented,
                      resampled_from=volume.spacing if spacing is not None else None)


def remaining_problems(volume: Volume, card: Any, frame: ModelFrame | None = None,
                       slice_axis: int | None = None) -> list[str]:
    """What the model's frame does not fix: :func:`~MedGANLogic.fit.fit_problems` of the volume as the model
    will see it (voxel size and plane after resampling and reorientation; the field of view, which they keep).
    ``frame`` defaults to :func:`decide`'s; pass ``ModelFrame()`` for a native run. Geometry only: a header-only
    Volume works."""
    frame = decide(volume, card, slice_axis) if frame is None else frame
    return fit_problems(model_header(volume, frame), card, slice_axis, fov_of=model_header(volume, frame, False))


def model_header(volume: Volume, frame: ModelFrame, resampled: bool = True) -> Volume:
    """A voxel-free Volume with the geometry ``volume`` will have in ``frame`` (for the plan's checks);
    ``resampled=False``: reoriented only (the same field of view exactly)."""
    if frame.identity:
        return volume
    if not resampled:
        return _header(volume, orientation.reoriented_geometry(volume, frame.order, frame.flip))
    return _header(volume, _model_grid(volume, frame))


def to_model(volume: Volume, frame: ModelFrame) -> Volume:
    """``volume`` in the model's frame (the input itself when the frame is its own grid)."""
    if frame.identity:
        return volume
    moved = orientation.reorient(volume, frame.order, frame.flip)
    if not frame.resamples:
        return moved
    grid = _model_grid(volume, frame)
    return _header(volume, grid).with_array(resample(moved, grid, "linear"), metadata=volume.metadata)


def to_input(out: Volume, volume: Volume, frame: ModelFrame, scale: tuple[float, float, float]) -> Volume:
    """An output made in ``frame`` on ``volume``'s exact grid (refined by ``scale`` for super-resolution)."""
    if frame.identity:
        return out
    target = _header(volume, orientation.reoriented_geometry(volume, frame.order, frame.flip))
    final = volume
    if any(s != 1 for s in scale):
        fine = target.resampled_grid(scale)
        target = _header(volume, fine)
        geometry = volume.resampled_grid(scale)
        final = _header(volume, geometry)
    array = out.array
    if frame.resamples:
        method = BACK_METHOD.get(str(out.metadata.get("kind", "image")), "bspline")
        array = resample(out, grid_of(target), method)
    array = orientation.restore(array, frame.order, frame.flip)
    return Volume(array, final.spacing, final.origin, final.direction.copy(), out.metadata)
