"""How a scanner sees an anatomy: any voxel size, realistic slice profiles, motion, partial field of view.

The domain-randomised generator (:mod:`.randomize`) draws an acquisition per sample and passes a noise-free
high-resolution volume through it:

* in-plane (the two axes other than ``slice_axis``): the scanner measures the central part of k-space, so the
  image is Fourier-resampled onto the coarser grid (:func:`fourier_resample`: sinc blur with its Gibbs ringing,
  as MR acquisition matrices do); integer factors give exactly :func:`.lowres.kspace_truncate`;
* through-plane: each slice integrates the anatomy over its slice profile (:data:`PROFILES`): ``box`` (an ideal
  2D slice), ``gaussian`` (the smooth edges of a real slice-selective pulse; FWHM = thickness) or ``kspace``
  (a 3D acquisition, Fourier-resampled along the slice axis too); slices ``spacing`` apart may be thinner (gap)
  or thicker (overlap) than their spacing. A box profile as thick as its spacing at an integer factor gives
  exactly :func:`.lowres.thick_slices`;
* motion (:func:`motion_artifact`): the phase-encode lines are acquired in segments, each with the head at a
  different position (rigid translation): blur and ghosting along the phase-encode axis;
* partial field of view (:func:`fov_box`): a box cuts the volume; outside it nothing was scanned.

Geometry is exact: the acquired volume keeps the physical field of view (edges in place; its spacing is the
field of view over the number of voxels, within a voxel of what was asked), and :func:`to_grid` brings it back
onto any grid with the same direction (SynthSR feeds its networks such upsampled inputs).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..volume import Volume

PROFILES = ("box", "gaussian", "kspace")
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _fourier_crop(array: np.ndarray, axis: int, n_new: int) -> np.ndarray:
    """Complex samples of the central ``n_new`` frequencies along ``axis``; sample j at coarse voxel j's centre."""
    n = array.shape[axis]
    spectrum = np.fft.fft(array, axis=axis)
    shape = [n if a == axis else 1 for a in range(array.ndim)]
    spectrum *= np.exp(2j * np.pi * np.fft.fftfreq(n) * (n / n_new - 1) / 2).reshape(shape)
    spectrum = np.fft.fftshift(spectrum, axes=axis)
    start = n // 2 - n_new // 2
    kept = np.take(spectrum, np.arange(start, start + n_new), axis=axis)
    return np.fft.ifft(np.fft.ifftshift(kept, axes=axis), axis=axis) * (n_new / n)


def fourier_resample(array: np.ndarray, axes: dict[int, int], magnitude: bool = True) -> np.ndarray:
    """Keep the central ``n_new`` frequencies of ``array`` along each ``axis`` of ``axes`` ({axis: n_new}).

    Returns ``n_new`` samples per axis covering the same extent, sample j at the centre of coarse voxel j (a linear
    phase moves it there), mean intensity kept; the magnitude image (MR) or, with ``magnitude=False``, the real
    part (e.g. HU). Integer factors give :func:`.lowres.kspace_truncate`.
    """
    out = np.asarray(array)
    for axis, n_new in axes.items():
        if not 1 <= n_new <= array.shape[axis]:
            raise InputError(f"n_new along axis {axis} must be between 1 and {array.shape[axis]}; got {n_new}.")
        if n_new < array.shape[axis]:
            out = _fourier_crop(out, axis, n_new)
    if not np.iscomplexobj(out):
        return np.asarray(out, np.float32)
    return (np.abs(out) if magnitude else out.real).astype(np.float32)


def _sample_along(a: np.ndarray, axis: int, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``a`` at fractional indices ``positions`` along ``axis`` (clamped at the ends)."""
    n = a.shape[axis]
    p = np.clip(positions, 0, n - 1)
    lo = np.floor(p).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (p - lo).astype(np.float32).reshape([-1 if b == axis else 1 for b in range(a.ndim)])
    return np.take(a, lo, axis=axis) * (1 - w) + np.take(a, hi, axis=axis) * w


def _box_average(a: np.ndarray, axis: int, centres: np.ndarray, width: float) -> np.ndarray:
    """Mean of ``a`` (piecewise constant per voxel) over [c - width/2, c + width/2] (fine-voxel units) per centre."""
    n = a.shape[axis]
    zero = np.zeros_like(np.take(a, [0], axis=axis), dtype=np.float64)
    integral = np.concatenate([zero, np.cumsum(a, axis=axis, dtype=np.float64)], axis=axis)  # at edges i - 0.5
    lo = np.clip(centres - width / 2, -0.5, n - 0.5)
    hi = np.clip(centres + width / 2, -0.5, n - 0.5)
    span = np.maximum(hi - lo, 1e-6).reshape([-1 if b == axis else 1 for b in range(a.ndim)])
    total = _sample_along(integral, axis, hi + 0.5) - _sample_along(integral, axis, lo + 0.5)
    return (total / span).astype(np.float32)


def _coarse_geometry(volume: Volume, counts: tuple[int, int, int]) -> dict:
    """Spacing and origin of ``counts`` (z, y, x) voxels covering ``volume``'s field of view (edges in place)."""
    old = np.array(volume.spacing)
    new = old * np.array(volume.shape[::-1]) / np.array(counts[::-1])
    origin = np.array(volume.origin) + volume.direction @ ((new - old) / 2.0)
    return {"spacing": tuple(float(s) for s in new), "origin": tuple(float(o) for o in origin)}


def acquire(volume: Volume, spacing_mm: tuple[float, float, float], *, slice_axis: int = 0, profile: str = "box",
            thickness_mm: float | None = None, magnitude: bool = True, inplane: str = "fourier") -> Volume:
    """The image an acquisition with voxel size ``spacing_mm`` (z, y, x) makes of a finer ``volume``.

    Args:
        volume: the noise-free high-resolution volume (not modified).
        spacing_mm: wanted voxel size along the array axes (z, y, x), mm; an axis already as coarse is kept.
        slice_axis: array axis of the slice direction (0 axial, 1 coronal, 2 sagittal for a (z, y, x) volume).
        profile: slice profile, one of :data:`PROFILES`; ``kspace`` ignores ``thickness_mm``.
        thickness_mm: slice thickness (box width or Gaussian FWHM); by default the slice spacing.
        magnitude: MR magnitude image (True) or signed values (False, e.g. HU) after Fourier resampling.
        inplane: ``fourier`` (MR: k-space truncation) or ``gaussian`` (CT: a reconstruction kernel of FWHM = the
            pixel size, without the ringing a truncated spectrum puts at bone and air edges).

    Returns:
        A Volume covering the same field of view with about ``spacing_mm`` (exactly extent / voxel count),
        metadata ``acquisition`` = {"spacing_mm", "slice_axis", "profile", "thickness_mm"}.
    """
    if slice_axis not in (0, 1, 2):
        raise InputError(f"slice_axis must be 0, 1 or 2; got {slice_axis}.")
    if inplane not in ("fourier", "gaussian"):
        raise InputError(f"inplane must be 'fourier' or 'gaussian'; got {inplane!r}.")
    if profile not in PROFILES:
        raise InputError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}.")
    fine = np.array(volume.spacing[::-1])
    wanted = np.maximum(np.asarray(spacing_mm, np.float64), fine)
    counts = tuple(int(max(1, round(n * h / s))) for n, h, s in zip(volume.shape, fine, wanted))
    out = np.asarray(volume.array, np.float32)
    for axis in range(3):  # the slab integrates over the slice profile (linear: before the Fourier encoding)
        kind = profile if axis == slice_axis else inplane
        if kind in ("kspace", "fourier"):
            continue
        centres = (np.arange(counts[axis]) + 0.5) * volume.shape[axis] / counts[axis] - 0.5  # in fine voxels
        width = (thickness_mm if axis == slice_axis and thickness_mm else wanted[axis]) / fine[axis]
        if kind == "box":
            out = _box_average(out, axis, centres, width)
        else:
            sigma = width / FWHM_PER_SIGMA
            out = _sample_along(ndimage.gaussian_filter1d(out, sigma, axis=axis, mode="nearest"), axis, centres)
    fourier = {a: counts[a] for a in range(3) if (profile if a == slice_axis else inplane) in ("kspace", "fourier")}
    out = fourier_resample(out, fourier, magnitude)
    geometry = _coarse_geometry(volume, counts)
    thickness = float(thickness_mm or wanted[slice_axis]) if profile != "kspace" else geometry["spacing"][
        2 - slice_axis]
    meta = {"acquisition": {"spacing_mm": [geometry["spacing"][2 - a] for a in range(3)],
                            "slice_axis": slice_axis, "profile": profile, "thickness_mm": round(thickness, 4)}}
    return volume.with_array(np.ascontiguousarray(out, dtype=np.float32), metadata=meta, **geometry)


def to_grid(volume: Volume, grid: Volume, order: int = 1) -> np.ndarray:
    """``volume`` resampled onto ``grid`` (same direction), float32 (z, y, x) of ``grid.shape``.

    Order 1 (linear) or 3 (cubic B-spline); outside ``volume`` the nearest edge value.
    """
    if not np.allclose(volume.direction, grid.direction, atol=1e-6):
        raise InputError("to_grid needs volumes with the same direction; resample with the engine first.")
    s_in, s_out = np.array(volume.spacing[::-1]), np.array(grid.spacing[::-1])
    shift_xyz = grid.direction.T @ (np.array(grid.origin) - np.array(volume.origin))
    offset = shift_xyz[::-1] / s_in
    out = ndimage.affine_transform(np.asarray(volume.array, np.float32), s_out / s_in, offset=offset,
                                   output_shape=grid.shape, order=order, mode="nearest")
    return out.astype(np.float32)


def motion_artifact(array: np.ndarray, rng: np.random.Generator, spacing_mm: tuple[float, float, float], *,
                    max_shift_mm: float, slice_axis: int = 0, segments: int = 8) -> tuple[np.ndarray, dict]:
    """Rigid in-plane translation during the acquisition: blur and ghosts along the phase-encode axis.

    The phase-encode lines (one in-plane axis, drawn) are acquired in ``segments`` consecutive blocks; block k sees
    the head moved by a random walk of in-plane translations (largest |shift| scaled to ``max_shift_mm``, the
    k-space centre block at rest). Returns (magnitude image (z, y, x) float32, description).
    """
    in_plane = [a for a in range(3) if a != slice_axis]
    phase_axis = in_plane[int(rng.integers(2))]
    steps = rng.normal(0, 1, (segments, 2))
    walk = np.cumsum(steps, axis=0)
    walk -= walk[segments // 2]  # the k-space centre was acquired at the reference position
    walk *= max_shift_mm / max(float(np.abs(walk).max()), 1e-6)
    if max_shift_mm <= 0:
        return np.asarray(array, np.float32), {"phase_axis": phase_axis, "max_shift_mm": 0.0}
    spectrum = np.fft.fftn(array, axes=in_plane)
    n = array.shape[phase_axis]
    centred = (np.arange(n) + n // 2) % n  # a line's place in k-space order (DC in the middle)
    block = (centred * segments) // n
    out = np.zeros_like(spectrum)
    freqs = [np.fft.fftfreq(array.shape[a]).reshape([-1 if b == a else 1 for b in range(3)]) for a in in_plane]
    for k in range(segments):
        lines = (block == k).reshape([-1 if b == phase_axis else 1 for b in range(3)])
        shift_vox = walk[k] / np.array([spacing_mm[a] for a in in_plane])
        phase = np.exp(-2j * np.pi * (freqs[0] * shift_vox[0] + freqs[1] * shift_vox[1]))
        out += np.where(lines, spectrum * phase, 0)
    image = np.abs(np.fft.ifftn(out, axes=in_plane)).astype(np.float32)
    return image, {"phase_axis": phase_axis, "max_shift_mm": round(float(max_shift_mm), 3)}


def fov_box(shape: tuple[int, int, int], rng: np.random.Generator, min_fraction: float) -> tuple[slice, ...]:
    """A random box of at least ``min_fraction`` of ``shape`` along each axis: the scanned part of the volume."""
    box = []
    for n in shape:
        size = int(np.clip(round(n * rng.uniform(min_fraction, 1.0)), 1, n))
        start = int(rng.integers(0, n - size + 1))
        box.append(slice(start, start + size))
    return tuple(box)
