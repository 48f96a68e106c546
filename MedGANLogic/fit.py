"""Does a volume's geometry suit a model: voxel size, field of view and the plane a 2D model sees.

One check for every caller (the plan step, so the CLI, Python and the Slicer panel give the same answer):
:func:`fit_problems` returns sentences, empty when the volume suits the model. A card may declare
``input.spacing_mm: [min, max]`` (voxel sizes it was trained on, mm) and ``input.fov_mm: [min, max]`` (field of
view along every axis it sees in full). A 2D/2.5D model was trained on slices in one anatomical plane: the plane
its card's ``slice_axis`` cuts from a volume in the standard (axial-acquired, LPS-aligned) orientation.

Pure numpy over :class:`~MedGANLogic.volume.Volume` geometry (a header-only Volume works); no torch, no Slicer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .volume import Volume

#: Anatomical plane of the slices cut along array axis 0 (z), 1 (y), 2 (x) of a volume in standard orientation.
PLANES = ("axial", "coronal", "sagittal")
#: A slice normal further than this from every patient axis is oblique (degrees).
OBLIQUE_DEGREES = 20.0


def card_plane(card: Any) -> str:
    """The anatomical plane a 2D/2.5D model was trained on: the one its ``slice_axis`` cuts in the standard
    orientation (0 axial, 1 coronal, 2 sagittal)."""
    return PLANES[card.slice_axis]


def slice_plane(volume: Volume, axis: int) -> tuple[str, float]:
    """(plane, tilt): the anatomical plane of the slices cut along array ``axis`` (0 = k, 1 = j, 2 = i) of
    ``volume``, and the angle in degrees between their normal and the nearest patient axis."""
    normal = np.abs(volume.direction[:, 2 - int(axis)])  # direction column c is the LPS vector of index axis c
    nearest = int(np.argmax(normal))  # 0 L-R, 1 P-A, 2 S-I
    tilt = float(np.degrees(np.arccos(np.clip(normal[nearest] / np.linalg.norm(normal), -1.0, 1.0))))
    return PLANES[2 - nearest], tilt


def is_superres(card: Any) -> bool:
    """Whether ``card``'s model changes the grid (super-resolution): it works along the acquisition's own axes, so
    an oblique acquisition is not held against it (resampling it would blur the slices it is meant to refine)."""
    return any(float(s) != 1.0 for s in card.scale_factor)


def on_acquisition_grid(card: Any) -> bool:
    """Whether ``card``'s model must run on the acquisition's own voxels (denoising): the noise it removes lives on
    them, and resampling would blur the image and correlate the noise before the model sees it, then blur again on
    the way back. Such a model is never resampled for voxel size or obliquity (reorientation, which moves whole
    axes without interpolating, still applies), and a voxel size outside its card's range is a note, not a
    problem."""
    return getattr(card, "task", None) == "denoise"


def spacing_axes(card: Any, slice_axis: int | None = None) -> list[int]:
    """The array axes (0 = z) whose voxel size the card's ``input.spacing_mm`` is about: all of them for a 3D
    model, those in its slices for a 2D one, and never the axes a super-resolution model refines (their coarse
    spacing is its input, which the engine does not resample)."""
    axis = card.slice_axis if slice_axis is None else int(slice_axis)
    axes = [0, 1, 2] if card.dims == "3d" else [a for a in range(3) if a != axis]
    return [a for a in axes if float(card.scale_factor[a]) == 1.0]


def outside_spacing(volume: Volume, card: Any, slice_axis: int | None = None) -> list[str]:
    """The voxel sizes of ``volume`` along :func:`spacing_axes` that are outside its card's ``input.spacing_mm``,
    as "x 0.57 mm"."""
    spacing_range = card.input.get("spacing_mm")
    if not spacing_range:
        return []
    lo, hi = float(spacing_range[0]), float(spacing_range[1])
    spacing = dict(zip((2, 1, 0), volume.spacing))  # array axis -> voxel size (volume.spacing is x, y, z)
    return [f"{'zyx'[a]} {spacing[a]:.2f} mm" for a in (2, 1, 0)
            if a in spacing_axes(card, slice_axis) and not lo <= spacing[a] <= hi]


def fit_problems(volume: Volume, card: Any, slice_axis: int | None = None, fov_of: Volume | None = None) -> list[str]:
    """Why ``volume``'s geometry does not suit ``card``'s model, as sentences; empty when it does.

    Checks every voxel size against ``input.spacing_mm`` (a 2D model's slice axis may be coarser: only in-plane
    voxel sizes count), the field of view against ``input.fov_mm`` along the axes the model sees in full, and for
    2D/2.5D models the plane of the slices they will see. ``slice_axis`` overrides the card's (array axis, 0 = z).
    ``fov_of``: the volume whose field of view counts, when ``volume`` is a resampled grid of it (whose voxel
    counts were rounded); same axis order as ``volume``.
    """
    problems = []
    axis = card.slice_axis if slice_axis is None else int(slice_axis)
    spec = card.input
    bad = [] if on_acquisition_grid(card) else outside_spacing(volume, card, slice_axis)
    if bad:
        lo, hi = (float(v) for v in spec["spacing_mm"])
        problems.append(f"voxel size {', '.join(bad)} is outside the {lo:g}-{hi:g} mm model {card.id} was "
                        f"trained on; run without native=True (--native) for MedGAN to resample it, or pick "
                        f"another model")
    fov_range = spec.get("fov_mm")
    if fov_range:
        lo, hi = float(fov_range[0]), float(fov_range[1])
        extent = (fov_of or volume).physical_extent()
        axes = [0, 1, 2] if card.dims == "3d" else [a for a in range(3) if a != 2 - axis]
        small = [f"{'xyz'[a]} {extent[a]:.0f} mm" for a in axes if extent[a] < lo]
        large = [f"{'xyz'[a]} {extent[a]:.0f} mm" for a in axes if extent[a] > hi]
        if small:
            problems.append(f"field of view {', '.join(small)} is smaller than the {lo:g}-{hi:g} mm model {card.id} "
                            f"expects (a partial scan?); load the whole scan or pick another model")
        if large:
            problems.append(f"field of view {', '.join(large)} is larger than the {lo:g}-{hi:g} mm model {card.id} "
                            f"expects; crop the volume or pick another model")
    if card.dims != "3d":
        plane, tilt = slice_plane(volume, axis)
        trained = card_plane(card)
        if plane != trained and not (getattr(card, "extras", None) or {}).get("planes"):  # trained on all planes
            problems.append(f"model {card.id} was trained on {trained} slices but slicing this volume along "
                            f"{'kji'[axis]} gives {plane} slices (a volume acquired in another plane); reorient it "
                            f"or pick another model")
        elif tilt > OBLIQUE_DEGREES and not is_superres(card) and not on_acquisition_grid(card):
            # SR refines the acquisition's own slice axis; a denoiser works on the acquisition's own voxels
            problems.append(f"the {plane} slices model {card.id} will see are tilted {tilt:.0f} degrees (an oblique "
                            f"acquisition); resample the volume to an axis-aligned grid")
    return problems
