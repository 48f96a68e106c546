"""Resample a volume onto another grid (SimpleITK): into a model's voxel size and back onto the input's grid.

* :func:`grid_with_spacing`: the grid of a new voxel size over the same field of view (outer voxel edges kept,
  as :meth:`Volume.resampled_grid` does for super-resolution);
* :func:`axis_aligned_grid`: the axis-aligned grid (given direction) that covers an oblique volume;
* :func:`bspline_onto`: cubic B-spline interpolation onto a finer grid, the nearest value beyond the outermost
  voxel centres (super-resolution's baseline, and what :mod:`MedGANLogic.tasks.superres` keeps of the input grid);
* :func:`block_mean_2x2`: 2 x 2 block means over an array's last two axes (area averaging to half the resolution);
* :func:`resample`: a Volume's voxels on a grid. Images: linear (``"linear"``) or cubic B-spline (``"bspline"``,
  clipped to the input's range so it does not ring past it); label maps and masks: nearest neighbour. Before
  downsampling, a Gaussian (sigma = (factor - 1) / 2 voxels along each axis, as scikit-image's ``resize`` does)
  removes what the coarser grid cannot hold, so it does not alias.

A grid is a dict ``{"shape": (z, y, x), "spacing": (x, y, z), "origin": (x, y, z), "direction": 3x3}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .io import from_volume
from .volume import Volume

INTERPOLATORS = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline}


def grid_of(volume: Volume) -> dict[str, Any]:
    return {"shape": volume.shape, "spacing": volume.spacing, "origin": volume.origin,
            "direction": volume.direction.copy()}


def grid_with_spacing(volume: Volume, spacing: tuple[float, float, float]) -> dict[str, Any]:
    """The grid of voxel size ``spacing`` (x, y, z, mm) over ``volume``'s field of view, same direction.

    The number of voxels along an axis is the field of view over the new size, rounded (at least 1); the first
    voxel centre sits half a new voxel inside the old outer edge.
    """
    old = np.array(volume.spacing)
    new = np.array(spacing, dtype=np.float64)
    counts = np.maximum(1, np.round(np.array(volume.shape[::-1]) * old / new)).astype(int)
    origin = np.array(volume.origin) + volume.direction @ ((new - old) / 2.0)
    return {"shape": tuple(int(n) for n in counts[::-1]), "spacing": tuple(float(s) for s in new),
            "origin": tuple(float(o) for o in origin), "direction": volume.direction.copy()}


def axis_aligned_grid(volume: Volume, direction: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, Any]:
    """The grid with ``direction`` and voxel size ``spacing`` that covers every voxel of ``volume`` (its
    bounding box, edges included)."""
    direction = np.asarray(direction, dtype=np.float64)
    spacing_arr = np.array(spacing, dtype=np.float64)
    n = np.array(volume.shape[::-1], dtype=np.float64)
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, n[0] - 0.5) for j in (-0.5, n[1] - 0.5)
                        for k in (-0.5, n[2] - 0.5)])
    points = (volume.ijk_to_lps() @ corners.T)[:3]  # LPS mm, (3, 8)
    local = direction.T @ points  # along the new axes
    low, high = local.min(axis=1), local.max(axis=1)
    counts = np.maximum(1, np.ceil((high - low) / spacing_arr - 1e-6)).astype(int)
    origin = direction @ (low + spacing_arr / 2.0)
    return {"shape": tuple(int(c) for c in counts[::-1]), "spacing": tuple(float(s) for s in spacing_arr),
            "origin": tuple(float(o) for o in origin), "direction": direction.copy()}


def block_mean_2x2(array: np.ndarray, dtype: Any = None) -> np.ndarray:
    """2 x 2 block means over the last two axes of ``array`` (an odd last row or column is dropped first): the
    image at half its resolution over the same field of view, as a detector with pixels twice as large sees it.
    ``dtype``: the accumulator of the mean (numpy's default for the input when None)."""
    a = np.asarray(array)
    h, w = (n - n % 2 for n in a.shape[-2:])
    return a[..., :h, :w].reshape(*a.shape[:-2], h // 2, 2, w // 2, 2).mean(axis=(-3, -1), dtype=dtype)


def _antialias(volume: Volume, spacing: tuple[float, float, float]) -> np.ndarray:
    factors = np.array(spacing) / np.array(volume.spacing)  # (x, y, z)
    sigma = np.maximum(0.0, (factors - 1.0) / 2.0)[::-1]  # voxels along (z, y, x)
    if not (sigma > 0).any():
        return volume.array
    return ndimage.gaussian_filter(volume.array.astype(np.float32, copy=False), sigma=sigma, mode="nearest")


def _onto(grid: dict[str, Any], method: str) -> sitk.ResampleImageFilter:
    """A SimpleITK resampler onto ``grid`` with the ``method``'s interpolator."""
    f = sitk.ResampleImageFilter()
    f.SetSize([int(n) for n in grid["shape"][::-1]])
    f.SetOutputSpacing([float(s) for s in grid["spacing"]])
    f.SetOutputOrigin([float(o) for o in grid["origin"]])
    f.SetOutputDirection([float(d) for d in np.asarray(grid["direction"]).ravel()])
    f.SetInterpolator(INTERPOLATORS[method])
    return f


def bspline_onto(volume: Volume, grid: dict[str, Any]) -> np.ndarray:
    """Cubic B-spline interpolation (SimpleITK ``sitkBSpline``) of ``volume`` at the voxel centres of ``grid``, for
    upsampling (no antialiasing, no clipping). Beyond the outermost voxel centres of ``volume`` (half a voxel at each
    end of the same field of view) the nearest value is used. Returns a float32 (z, y, x) array."""
    f = _onto(grid, "bspline")
    f.SetUseNearestNeighborExtrapolator(True)
    f.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(f.Execute(from_volume(volume)))


def resample(volume: Volume, grid: dict[str, Any], method: str = "linear",
             background: float | None = None) -> np.ndarray:
    """``volume``'s voxels on ``grid`` as a (z, y, x) array (float32 for images, the input's dtype for labels).

    Args:
        volume: the source; never modified.
        grid: the target (see the module docstring).
        method: "linear" or "bspline" for images, "nearest" for label maps and masks.
        background: the value outside the source's field of view; default its minimum (air).
    """
    source = volume
    if method != "nearest":
        source = volume.with_array(_antialias(volume, grid["spacing"]).astype(np.float32, copy=False))
    image = from_volume(source)
    f = _onto(grid, method)
    f.SetDefaultPixelValue(float(volume.array.min() if background is None else background))
    f.SetOutputPixelType(image.GetPixelID())
    out = sitk.GetArrayFromImage(f.Execute(image))
    if method == "bspline":  # a cubic spline overshoots at edges: keep it inside the source's range
        np.clip(out, float(volume.array.min()), float(volume.array.max()), out=out)
    return out
