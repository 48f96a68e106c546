"""Phantom PET from tissue fractions: FDG-like uptake, scanner blur, Poisson counts (SUV), optional post-filter.

Model (image-domain, per voxel; a stand-in for a reconstructed PET image, not a projection simulation):
  1. uptake: each tissue's fraction times its FDG-like standardised uptake value (SUV), summed over tissues.
     Values after typical brain FDG PET (grey/white matter ratio about 2.5-3): grey matter 8, white matter 3,
     CSF 0.2, muscle/skin 1.0, fat 0.4, bone 0.5, air 0; lesions 12 (a hypermetabolic tumour-like lesion).
  2. scanner resolution: a Gaussian point spread function of ``psf_fwhm_mm`` (5 mm by default, a clinical
     scanner's reconstructed resolution), per axis in voxels from the grid's spacing.
  3. counts: expected counts per voxel = blurred SUV x ``counts_per_suv``; the measured image is a Poisson draw
     divided by ``counts_per_suv`` (back to SUV). Noise is Poisson-like: its variance grows with the uptake
     (variance = SUV / ``counts_per_suv``), the property the denoiser's variance-stabilising transform expects.
  4. ``postfilter_fwhm_mm`` > 0: the Gaussian post-reconstruction filter scanners apply; it blurs the reference
     too and makes the noise spatially correlated (what iterative reconstruction also does).
The noise-free reference is steps 1, 2 (and 4) without step 3.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..volume import Volume
from .tissue import tissue_weighted

UPTAKE_SUV = {"air": 0.0, "csf": 0.2, "gm": 8.0, "wm": 3.0, "fat": 0.4, "soft": 1.0, "bone": 0.5, "lesion": 12.0}
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def pet_uptake(tissues: np.ndarray, uptake: dict[str, float] | None = None) -> np.ndarray:
    """SUV (z, y, x) float32 of tissue ``tissues`` fractions (len(TISSUES), z, y, x), before blur and noise."""
    table = dict(UPTAKE_SUV, **(uptake or {}))
    return tissue_weighted(tissues, table)


def _blur(array: np.ndarray, fwhm_mm: float, spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    if fwhm_mm <= 0:
        return array
    sigma = [fwhm_mm * FWHM_TO_SIGMA / s for s in spacing_xyz[::-1]]  # voxels along (z, y, x)
    return ndimage.gaussian_filter(array, sigma, mode="nearest").astype(np.float32)


def simulate_pet(tissues: np.ndarray, grid: Volume, *, seed: int, counts_per_suv: float = 20.0,
                 psf_fwhm_mm: float = 5.0, postfilter_fwhm_mm: float = 0.0,
                 uptake: dict[str, float] | None = None) -> tuple[Volume, Volume]:
    """(noisy PET, noise-free PET) in SUV on ``grid``'s geometry.

    Args:
        tissues: fractions (len(TISSUES), z, y, x) on ``grid`` (e.g. ``make_subject(...).tissues``).
        grid: the geometry (spacing in mm matters for the blur); its voxels are not used.
        seed: Poisson noise seed; the same seed gives the same bytes.
        counts_per_suv: expected counts per voxel per SUV unit (20: grey matter at SUV 8 gets 160 counts,
            about 8 % noise; lower is noisier).
        psf_fwhm_mm: scanner resolution (Gaussian FWHM, mm); 0 for none.
        postfilter_fwhm_mm: Gaussian post-filter FWHM (mm) applied after the counts; 0 (default) for none.
        uptake: SUV per tissue name overriding :data:`UPTAKE_SUV`.

    Returns:
        Two float32 Volumes with metadata {"modality": "PT", "units": "SUV", ...}: the noisy image (non-negative)
        and its noise-free reference.
    """
    if not counts_per_suv > 0:
        raise InputError(f"counts_per_suv must be positive; got {counts_per_suv}.")
    if psf_fwhm_mm < 0 or postfilter_fwhm_mm < 0:
        raise InputError("psf_fwhm_mm and postfilter_fwhm_mm must be >= 0 (mm).")
    if tissues.shape[1:] != grid.shape:
        raise InputError(f"tissues {tissues.shape[1:]} and grid {grid.shape} must have the same (z, y, x) shape.")
    blurred = _blur(pet_uptake(tissues, uptake), psf_fwhm_mm, grid.spacing)
    expected = np.clip(blurred, 0, None) * np.float64(counts_per_suv)
    counts = np.random.default_rng([int(seed), 31]).poisson(expected)
    noisy = (counts / np.float64(counts_per_suv)).astype(np.float32)
    noisy = _blur(noisy, postfilter_fwhm_mm, grid.spacing)
    reference = _blur(blurred, postfilter_fwhm_mm, grid.spacing)
    meta = {"modality": "PT", "units": "SUV", "counts_per_suv": float(counts_per_suv),
            "psf_fwhm_mm": float(psf_fwhm_mm), "postfilter_fwhm_mm": float(postfilter_fwhm_mm)}
    return (grid.with_array(noisy, metadata=dict(meta, description="phantom PET, Poisson counts")),
            grid.with_array(reference, metadata=dict(meta, description="phantom PET, noise-free")))
