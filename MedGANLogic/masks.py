"""A mask that goes with an image (the lesion task's ``mask``): read, checked, and put on the image's exact grid.

:func:`mask_for` accepts a binary mask or a label map with one label (any non-zero value counts as inside), as a
:class:`~MedGANLogic.volume.Volume` or a file. On the image's own grid it is used as it is; on another grid that
overlaps the image (a mask drawn on a resampled copy, a label map cropped to the lesion) it is resampled onto the
image's grid by nearest neighbour, and the plan says so. A mask that is empty, has several labels, NaNs, or lies
outside the image is refused with one sentence saying what to fix.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import InputError
from .volume import Volume

#: Grids closer than this (mm for origin and spacing; direction cosines) are the same grid.
SAME_GRID_MM, SAME_DIRECTION = 1e-3, 1e-5


def same_grid(a: Volume, b: Volume) -> bool:
    """Whether ``a`` and ``b`` have the same voxel grid (shape, spacing, origin, direction)."""
    return (a.shape == b.shape and np.allclose(a.spacing, b.spacing, atol=SAME_GRID_MM, rtol=0)
            and np.allclose(a.origin, b.origin, atol=SAME_GRID_MM, rtol=0)
            and np.allclose(a.direction, b.direction, atol=SAME_DIRECTION, rtol=0))


def _read(mask: Volume | str | os.PathLike, name: str) -> Volume:
    if isinstance(mask, Volume):
        return mask
    if isinstance(mask, (str, os.PathLike)):
        from .io import read_volume

        return read_volume(mask)
    raise InputError(f"The {name} must be a Volume or a file path, not {type(mask).__name__}.")


def mask_for(mask: Volume | str | os.PathLike, image: Volume, name: str = "mask") -> tuple[Volume, list[str]]:
    """``mask`` as a uint8 0/1 Volume on ``image``'s exact grid, and notes (one sentence each) on what was done.

    Raises:
        InputError: not a 3D volume, NaN voxels, more than one non-zero label, empty, or no overlap with the image.
    """
    vol = _read(mask, name)
    a = np.asarray(vol.array)
    if a.ndim != 3:
        raise InputError(f"The {name} must be a 3D volume; it has shape {a.shape}.")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise InputError(f"The {name} has NaN or infinite voxels; a mask holds 0 outside and 1 (or one label) "
                         f"inside.")
    labels = np.unique(a[a != 0])
    if labels.size > 1:
        shown = ", ".join(f"{v:g}" for v in labels[:5]) + (", ..." if labels.size > 5 else "")
        raise InputError(f"The {name} is not binary: it holds {labels.size} labels ({shown}); give a mask with 0 "
                         f"outside and one value inside (pick one segment or label).")
    if labels.size == 0:
        raise InputError(f"The {name} is empty (no voxel set); draw the region first.")
    binary = vol.with_array((a != 0).astype(np.uint8), metadata={"kind": "labels", "modality": "mask"})
    if same_grid(binary, image):
        return image.with_array(binary.array, metadata=binary.metadata), []
    from .resampling import grid_of, resample

    on_image = resample(binary, grid_of(image), "nearest", background=0).astype(np.uint8)
    if not on_image.any():
        raise InputError(f"The {name} does not overlap the image (it lies outside the image's field of view, or "
                         f"is smaller than one image voxel there); draw it on this image or on a copy with its "
                         f"geometry.")
    note = (f"the {name} ({' x '.join(str(n) for n in vol.shape[::-1])} voxels of "
            f"{' x '.join(f'{s:.2f}' for s in vol.spacing)} mm) was resampled onto the image's grid (nearest "
            f"neighbour): {int(on_image.sum())} of the image's voxels are inside it")
    return image.with_array(on_image, metadata=binary.metadata), [note]
