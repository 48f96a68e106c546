"""Low-resolution MR for super-resolution, paired with its high-resolution target.

* Through-plane: ``thick_slices`` averages ``factor`` consecutive slices (a box slice profile, as a thick 2D
  acquisition integrates over its slab); spacing along that axis grows by ``factor``.
* In-plane: ``kspace_truncate`` keeps the central 1/``factor`` of k-space along the in-plane axes (what a
  lower acquisition matrix measures) and returns the magnitude image on the coarse grid (shape / ``factor``,
  spacing x ``factor``): a linear phase puts each sample at the centre of its coarse voxel.
Both keep the physical field of view: voxel centres move so that the outer voxel edges stay in place (the
inverse of :meth:`MedGANLogic.volume.Volume.resampled_grid`). The high-resolution target is cropped to a
multiple of ``factor`` first, so low- and high-resolution volumes cover exactly the same extent.

:func:`superres_pair` is the one degradation of super-resolution: the phantom data, the SR training pairs
(``data.degrade`` of a recipe, :mod:`MedGANLogic.train.data`) and the evaluation all call it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..degradation import SR_DEGRADATIONS, kspace_coarse
from ..errors import InputError
from ..volume import Volume


def crop_to_multiple(volume: Volume, factor: int, axes: tuple[int, ...]) -> Volume:
    """Drop trailing voxels so the size along ``axes`` is a multiple of ``factor`` (origin unchanged)."""
    slices = tuple(slice(0, n - n % factor) if a in axes else slice(None) for a, n in enumerate(volume.shape))
    return volume.with_array(np.ascontiguousarray(volume.array[slices]))


def _coarse_grid(volume: Volume, factor: int, axes: tuple[int, ...]) -> dict:
    scale = tuple(1.0 / factor if a in axes else 1.0 for a in range(3))
    grid = volume.resampled_grid(scale)
    grid.pop("shape")
    return grid


def _check(factor: int, axes: tuple[int, ...]) -> None:
    if int(factor) != factor or factor < 2:
        raise InputError(f"factor must be an integer >= 2; got {factor}.")
    if not axes or any(a not in (0, 1, 2) for a in axes):
        raise InputError(f"axes must be array axes 0 (z), 1 (y), 2 (x); got {axes}.")


def thick_slices(volume: Volume, factor: int, axis: int = 0) -> Volume:
    """Average every ``factor`` slices along ``axis``: thick slices, spacing x ``factor``, same extent."""
    _check(factor, (axis,))
    hr = crop_to_multiple(volume, factor, (axis,))
    a = np.moveaxis(hr.array, axis, 0)
    thick = a.reshape(a.shape[0] // factor, factor, *a.shape[1:]).mean(axis=1, dtype=np.float64)
    out = np.moveaxis(thick.astype(np.float32), 0, axis)
    meta = dict(volume.metadata, acquisition=f"thick slices x{factor} along axis {axis}")
    return hr.with_array(np.ascontiguousarray(out), metadata=meta, **_coarse_grid(hr, factor, (axis,)))


def kspace_truncate(volume: Volume, factor: int, axes: tuple[int, ...] = (1, 2)) -> Volume:
    """Keep the central 1/``factor`` of k-space along ``axes`` (array axes; (1, 2) = in-plane y, x).

    Returns the magnitude image on the coarse grid: shape // ``factor`` and spacing x ``factor`` along ``axes``,
    the same field of view as the input (cropped to a multiple of ``factor``); mean intensity kept.
    """
    _check(factor, axes)
    hr = crop_to_multiple(volume, factor, axes)
    out = (np.abs(kspace_coarse(hr.array, factor, axes)) / factor ** len(axes)).astype(np.float32)
    meta = dict(volume.metadata, acquisition=f"k-space truncated x{factor} along axes {list(axes)}")
    return hr.with_array(out, metadata=meta, **_coarse_grid(hr, factor, axes))


def superres_pair(volume: Volume, scale: Sequence[int], kind: str) -> tuple[Volume, Volume]:
    """(low-resolution input, high-resolution target) covering the same physical extent.

    Args:
        volume: the high-resolution volume; it is not modified.
        scale: integer factor per array axis (z, y, x), as a model card's ``scale_factor``: (2, 1, 1) is
            through-plane x2 of axial slices, (1, 2, 2) in-plane x2. Every scaled axis has the same factor.
        kind: one of :data:`SR_DEGRADATIONS`. ``thick_slices`` scales one axis (the slice direction);
            ``kspace_truncate`` scales any.

    Returns:
        The simulated acquisition (spacing x factor along the scaled axes) and ``volume`` cropped to a multiple
        of the factor along them (origin unchanged): the target a super-resolution model should give back.
    """
    scale = tuple(scale)
    if len(scale) != 3 or any(int(s) != s or s < 1 for s in scale):
        raise InputError(f"scale must be three integer factors >= 1 along (z, y, x); got {scale}.")
    axes = tuple(a for a in range(3) if scale[a] > 1)
    factors = {int(scale[a]) for a in axes}
    if len(factors) != 1:
        raise InputError(f"A super-resolution pair needs one factor on all scaled axes; scale is {scale}.")
    factor = factors.pop()
    if kind == "thick_slices":
        if len(axes) != 1:
            raise InputError("thick_slices scales one axis (the slice direction); use kspace_truncate for in-plane "
                             "super-resolution.")
        low = thick_slices(volume, factor, axes[0])
    elif kind == "kspace_truncate":
        low = kspace_truncate(volume, factor, axes)
    else:
        raise InputError(f"kind must be one of {', '.join(SR_DEGRADATIONS)}; got {kind!r}.")
    return low, crop_to_multiple(volume, factor, axes)
