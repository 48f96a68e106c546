"""Ultrasound-like speckle images from tissue fractions: echogenicity times fully developed speckle.

Model (envelope-detected amplitude, before log compression; a texture model, not an acoustic simulation):
  1. echogenicity: each tissue's fraction times its relative backscatter amplitude (CSF nearly anechoic 0.05,
     grey matter 0.45, white matter 0.6, muscle/skin 0.7, fat 0.9, bone 1.6, lesions 1.0, air 0).
  2. scattering: every voxel holds a circular complex Gaussian scatterer scaled by its echogenicity; the
     imaging system's point spread function (a Gaussian with ``psf_sigma_voxels`` along (z, y, x)) sums the
     scatterers' echoes, and the envelope is the magnitude. Where echogenicity varies slowly the envelope is
     Rayleigh distributed around it: multiplicative speckle, spatially correlated over the PSF's size.
  3. scale: the PSF is normalised so that the mean squared envelope equals the squared echogenicity blurred
     by the PSF's intensity profile.
The noise-free reference returned is the expected envelope (Rayleigh mean, sqrt(pi)/2 times the root mean square),
which is what an unbiased despeckling filter should recover.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..volume import Volume
from .tissue import tissue_weighted

ECHOGENICITY = {"air": 0.0, "csf": 0.05, "gm": 0.45, "wm": 0.6, "fat": 0.9, "soft": 0.7, "bone": 1.6,
                "lesion": 1.0}
RAYLEIGH_MEAN = float(np.sqrt(np.pi) / 2.0)  # E[envelope] / sqrt(E[envelope^2]) for fully developed speckle


def echogenicity(tissues: np.ndarray, values: dict[str, float] | None = None) -> np.ndarray:
    """Relative backscatter amplitude (z, y, x) float32 of ``tissues`` fractions (len(TISSUES), z, y, x)."""
    table = dict(ECHOGENICITY, **(values or {}))
    return tissue_weighted(tissues, table)


def simulate_ultrasound(tissues: np.ndarray, grid: Volume, *, seed: int,
                        psf_sigma_voxels: tuple[float, float, float] = (1.0, 0.7, 1.2),
                        gain: float = 100.0, values: dict[str, float] | None = None) -> tuple[Volume, Volume]:
    """(speckled envelope, expected envelope) on ``grid``'s geometry, in arbitrary units (``gain`` x amplitude).

    Args:
        tissues: fractions (len(TISSUES), z, y, x) on ``grid`` (e.g. ``make_subject(...).tissues``).
        grid: the geometry; its voxels are not used.
        seed: speckle seed; the same seed gives the same bytes.
        psf_sigma_voxels: Gaussian PSF width along (z, y, x) in voxels (the speckle grain); (1.0, 0.7, 1.2) puts
            the axial direction along y and the coarser lateral and elevation directions along x and z.
        gain: scale of the output (an echogenicity of 1 gives a mean envelope of about ``gain``).
        values: echogenicity per tissue name overriding :data:`ECHOGENICITY`.

    Returns:
        Two float32 Volumes with metadata {"modality": "US", "units": "a.u. (envelope)"}: the speckled envelope
        (non-negative) and its expected value (the despeckled reference).
    """
    if len(psf_sigma_voxels) != 3 or min(psf_sigma_voxels) <= 0:
        raise InputError(f"psf_sigma_voxels must be three positive widths along (z, y, x); got {psf_sigma_voxels}.")
    if tissues.shape[1:] != grid.shape:
        raise InputError(f"tissues {tissues.shape[1:]} and grid {grid.shape} must have the same (z, y, x) shape.")
    amp = echogenicity(tissues, values).astype(np.float64)
    rng = np.random.default_rng([int(seed), 47])
    scatter = (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape)) / np.sqrt(2.0)
    sigma = tuple(float(s) for s in psf_sigma_voxels)
    # the PSF h (unit peak Gaussian) sums echoes: |h * (amp w)|; normalised by sqrt(sum h^2) so E|.|^2 = (h^2 * amp^2)
    half = int(np.ceil(4.0 * max(sigma))) + 1  # gaussian_filter truncates at 4 sigma
    impulse = np.zeros((2 * half + 1,) * 3)
    impulse[half, half, half] = 1.0
    h = ndimage.gaussian_filter(impulse, sigma, mode="constant")
    norm = np.sqrt(np.sum(h ** 2))
    field = (ndimage.gaussian_filter((amp * scatter).real, sigma, mode="constant")
             + 1j * ndimage.gaussian_filter((amp * scatter).imag, sigma, mode="constant")) / norm
    envelope = np.abs(field)
    # intensity profile of the PSF: h^2, a Gaussian of width sigma / sqrt(2), normalised to unit sum
    mean_square = ndimage.gaussian_filter(amp ** 2, tuple(s / np.sqrt(2.0) for s in sigma), mode="constant")
    expected = RAYLEIGH_MEAN * np.sqrt(mean_square)
    meta = {"modality": "US", "units": "a.u. (envelope)", "psf_sigma_voxels": list(sigma)}
    return (grid.with_array((gain * envelope).astype(np.float32), metadata=dict(meta, description="speckled")),
            grid.with_array((gain * expected).astype(np.float32), metadata=dict(meta, description="expected")))
