"""The acquisitions super-resolution inverts, and keeping a super-resolved output consistent with its input.

:data:`SR_DEGRADATIONS` names the ways a low-resolution MR input relates to its high-resolution anatomy (a
recipe's ``data.degrade``, a card's ``extras.degradation``): ``thick_slices`` (each coarse slice the mean of
``factor`` fine ones) and ``kspace_truncate`` (the central 1/``factor`` of k-space, as a smaller acquisition matrix
measures). :mod:`MedGANLogic.simulate.lowres` simulates them (the phantom data, the training pairs and the
evaluation); :func:`consistent_with` makes a super-resolved output give back the input it was made from
(:mod:`MedGANLogic.tasks.superres`). Numpy and scipy only: a run does not load the simulator for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import fft as sfft

from .errors import InputError

#: The ways a low-resolution input is simulated from, and made consistent with, its high-resolution volume.
SR_DEGRADATIONS = ("thick_slices", "kspace_truncate")
#: Below this fraction of the input's 99th percentile, the output's coarse magnitude is too small to say which
#: phase (for a magnitude image, which sign) the measured magnitude takes: it is scaled down instead of flipped.
PHASE_FLOOR = 0.05


def _band(shape: tuple[int, ...], factor: int, axes: tuple[int, ...]) -> tuple[slice, ...]:
    """Where the central 1/``factor`` of a centred (fftshifted) spectrum of ``shape`` lies along ``axes``."""
    keep = []
    for a, n in enumerate(shape):
        m = n // factor
        keep.append(slice(n // 2 - m // 2, n // 2 - m // 2 + m) if a in axes else slice(None))
    return tuple(keep)


def _shift(spectrum: np.ndarray, factor: int, axes: tuple[int, ...], sign: int) -> np.ndarray:
    """``spectrum`` (unshifted, fine grid; changed in place, in its own precision) times the linear phase that moves
    the image by ``sign`` (factor - 1) / 2 fine voxels: coarse samples at the centres of their coarse voxels."""
    for a in axes:
        n = spectrum.shape[a]
        ramp = np.exp(sign * 2j * np.pi * np.fft.fftfreq(n) * (factor - 1) / 2)
        spectrum *= ramp.reshape([n if b == a else 1 for b in range(spectrum.ndim)])
    return spectrum


def kspace_coarse(array: np.ndarray, factor: int, axes: tuple[int, ...], fft: Any = np.fft) -> np.ndarray:
    """The complex coarse image that keeps the central 1/``factor`` of ``array``'s k-space along ``axes``, times
    ``factor`` ** len(axes): its magnitude over that is :func:`kspace_truncate`. ``fft``: numpy's (exactly the
    phantom data's) or scipy's (single precision, all cores)."""
    spectrum = np.fft.fftshift(_shift(fft.fftn(array, axes=axes), factor, axes, 1), axes=axes)
    return fft.ifftn(np.fft.ifftshift(spectrum[_band(array.shape, factor, axes)], axes=axes), axes=axes)


def kspace_fine(coarse: np.ndarray, shape: tuple[int, ...], factor: int, axes: tuple[int, ...],
                 fft: Any = np.fft) -> np.ndarray:
    """The fine image of ``shape`` whose k-space is ``coarse``'s in the central band and zero outside it: what
    :func:`kspace_coarse` takes back to ``coarse`` (less the unpaired Nyquist bin of an even band, left out so that
    a real ``coarse`` gives a real image)."""
    small = np.fft.fftshift(fft.fftn(coarse, axes=axes), axes=axes)
    for a in axes:
        if small.shape[a] % 2 == 0:
            small[tuple(0 if b == a else slice(None) for b in range(small.ndim))] = 0
    spectrum = np.zeros(shape, dtype=small.dtype)
    spectrum[_band(shape, factor, axes)] = small
    return fft.ifftn(_shift(np.fft.ifftshift(spectrum, axes=axes), factor, axes, -1), axes=axes)


class _AllCores:
    """scipy.fft on every core, in the precision it is given (numpy's transforms always compute in double)."""

    @staticmethod
    def fftn(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        return sfft.fftn(x, axes=axes, workers=-1)

    @staticmethod
    def ifftn(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        return sfft.ifftn(x, axes=axes, workers=-1)


def consistent_with(high: np.ndarray, low: np.ndarray, scale: Sequence[int], kind: str,
                    iterations: int = 3) -> np.ndarray:
    """``high`` (a super-resolved array over exactly ``low``'s field of view, ``scale`` times its voxels) changed as
    little as possible so that degrading it the way ``kind`` simulates gives back ``low``: the measured data kept.

    * ``thick_slices``: each group of ``factor`` fine slices is shifted by the difference between its coarse slice
      and the group's mean (the least-squares change; within-group detail is kept exactly; one step is exact).
    * ``kspace_truncate``: the central 1/``factor`` of ``high``'s k-space is given the magnitude ``low`` measured,
      keeping ``high``'s own phase, and everything outside that band is kept (``iterations`` alternating
      projections, each exact for the linear part, except on the band's outermost line of an even size: its
      frequency has no mirror inside the band, so a real image cannot be given it alone, and it is left as it is).
      Where the output's coarse image is near zero (under :data:`PHASE_FLOOR` of the input's 99th percentile) its
      phase says nothing: taken as it is, the measured magnitude would flip sign with the slightest change of the
      output (bf16 against fp32 moved the result by 3 % of its range), so the magnitude is scaled down there, to
      nought at nought.

    Both replace what ``high`` says about the frequencies the input measured by the measurement itself. Returns
    float32; ``high`` and ``low`` are not modified.
    """
    scale = tuple(int(s) for s in scale)
    axes = tuple(a for a in range(3) if scale[a] > 1)
    factor = scale[axes[0]] if axes else 1
    if not axes or any(scale[a] != factor for a in axes) or kind not in SR_DEGRADATIONS:
        raise InputError(f"consistent_with needs one integer factor >= 2 on the scaled axes and a kind in "
                         f"{', '.join(SR_DEGRADATIONS)}; got scale {scale}, kind {kind!r}.")
    want = tuple(n * scale[a] for a, n in enumerate(low.shape))
    if tuple(high.shape) != want:
        raise InputError(f"consistent_with: the fine array has shape {tuple(high.shape)}; {want} covers the coarse "
                         f"one of shape {tuple(low.shape)} at scale {scale}.")
    if kind == "thick_slices":
        if len(axes) != 1:
            raise InputError("thick_slices scales one axis (the slice direction).")
        fine = np.moveaxis(np.asarray(high, np.float64), axes[0], 0)
        coarse = np.moveaxis(np.asarray(low, np.float64), axes[0], 0)
        groups = fine.reshape(coarse.shape[0], factor, *coarse.shape[1:])
        fine = (groups + (coarse - groups.mean(axis=1))[:, None]).reshape(fine.shape)
        return np.ascontiguousarray(np.moveaxis(fine, 0, axes[0]), dtype=np.float32)
    out = np.array(high, np.float32)  # single precision: a 512 x 512 slab's transforms stay small and fast
    rest = [a for a in range(3) if a not in axes]
    step = 8 if rest else None  # slabs along an axis it does not scale: bounded memory on large volumes
    spans = [slice(i, i + step) for i in range(0, out.shape[rest[0]], step)] if rest else [slice(None)]
    eps = np.float32(PHASE_FLOOR * float(np.percentile(low, 99)))  # one floor for the whole input, not per slab
    for span in spans:
        where = tuple(span if rest and a == rest[0] else slice(None) for a in range(3))
        fine, coarse = out[where], np.asarray(low[where], np.float32)
        for _ in range(max(1, int(iterations))):
            measured = kspace_coarse(fine, factor, axes, _AllCores) / factor ** len(axes)
            wanted = coarse * measured / np.maximum(np.abs(measured), eps)  # the measured magnitude, own phase
            change = kspace_fine((wanted - measured).astype(np.complex64), fine.shape, factor, axes, _AllCores)
            fine = fine + np.real(change) * np.float32(factor ** len(axes))
        out[where] = fine
    return out
