"""Low-dose CT by projection-domain simulation: paired low-dose / full-dose reconstructions of one slice, in HU.

For one axial slice in HU:
  1. attenuation mu = mu_water (1 + HU/1000), with mu_water = 0.0192 /mm (water at about 70 keV);
  2. forward projection (:func:`skimage.transform.radon`, parallel beam, ``n_angles`` views over 180 degrees,
     one detector bin per pixel) gives line integrals p (dimensionless, pixel size in mm times the sum), blurred
     along the detector by the aperture and focal spot (Gaussian, sigma 0.7 bin): without it the ramp filter
     turns the skull's sharp edges into aliasing ripples across the brain;
  3. transmitted photon counts N ~ Poisson(I0 exp(-p)), with I0 = ``full_dose_photons`` x dose fraction
     incident photons per detector bin and view;
  4. log transform p' = -ln(max(N, 1) / I0);
  5. filtered back-projection with the ramp filter (Kak and Slaney's discrete ramp, as in
     :func:`skimage.transform.iradon`), back to HU. ``kernel`` and ``cutoff`` choose the reconstruction kernel: the
     ramp times an apodisation window (Shepp-Logan, cosine, Hamming, Hann, as in ``iradon``'s ``filter_name``), zero
     above ``cutoff`` x Nyquist. Scanners' soft-tissue kernels are such windowed ramps: they trade resolution for
     noise and turn the ramp's fine-grained noise into a coarser, blotchier texture.
The full-dose image goes through the very same steps with the full incident count, so a pair differs only by
the photon noise. In the linear regime the reconstruction's noise standard deviation scales as 1/sqrt(dose).

Speed: a 256x256 slice is first cut to the circle that holds the head (air outside it is not scanned), and the
two sinograms of a pair are filtered and back-projected together as one complex array (the real part is the
low dose, the imaginary part the full dose): one back-projection instead of two. 256 views keep view-aliasing
streaks below the noise inside the head while a pair stays well under a second (``benchmarks/simulate.py``).

Noise level: with the default ``FULL_DOSE_PHOTONS`` the full-dose reconstruction has about 5 HU of noise in
brain on 2 mm pixels; at a fixed count per bin the noise grows as pixel_mm ** -1.5 on finer pixels.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage
from skimage.transform import radon

from ..errors import InputError
from ..volume import Volume

MU_WATER_PER_MM = 0.0192
FULL_DOSE_PHOTONS = 1.6e6  # incident photons per detector bin and view: about 5 HU of brain noise on 2 mm pixels
N_ANGLES = 256
DETECTOR_BLUR_BINS = 0.7  # detector aperture and focal spot (Gaussian sigma, bins): no aliasing ripples at edges
AIR_HU = -1000.0


def _check(slice_hu: np.ndarray, dose_fraction: float, pixel_mm: float, photons: float, n_angles: int) -> None:
    if np.ndim(slice_hu) != 2:
        raise InputError(f"ct_slice_hu must be a 2D slice (y, x) in HU; got shape {np.shape(slice_hu)}.")
    if not 0 < dose_fraction <= 1:
        raise InputError(f"Dose fraction must be in (0, 1]; got {dose_fraction} (0.25 = quarter dose).")
    if not pixel_mm > 0:
        raise InputError(f"pixel_mm must be positive; got {pixel_mm}.")
    if not photons > 0:
        raise InputError(f"full_dose_photons must be positive; got {photons}.")
    if int(n_angles) != n_angles or n_angles < 16:
        raise InputError(f"n_angles must be an integer >= 16; got {n_angles}.")


class _ScanField:
    """The square (odd side) around the circle that holds every non-air pixel of a slice: where the scan happens."""

    def __init__(self, slice_hu: np.ndarray):
        h, w = slice_hu.shape
        body = np.argwhere(slice_hu > -950.0)
        if len(body):
            centre = np.round((body.min(axis=0) + body.max(axis=0)) / 2).astype(int)
            radius = float(np.sqrt(((body - centre) ** 2).sum(axis=1)).max()) + 2.0
        else:
            centre, radius = np.array([h // 2, w // 2]), 8.0
        half = int(np.ceil(radius))
        self.side = 2 * half + 1  # odd: skimage's rotation centre side // 2 is the centre pixel
        self.offset = centre - half  # slice index of the square's pixel (0, 0)
        self.shape = (h, w)
        # overlap of the square and the slice, in slice and in square coordinates
        lo = np.maximum(self.offset, 0)
        hi = np.minimum(self.offset + self.side, (h, w))
        self.in_slice = tuple(slice(a, b) for a, b in zip(lo, hi))
        self.in_square = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, self.offset))
        yy, xx = np.mgrid[: self.side, : self.side] - half
        self.circle = yy * yy + xx * xx <= half * half

    def attenuation(self, slice_hu: np.ndarray) -> np.ndarray:
        """mu (1/mm) on the square; zero outside the scanned circle and in air."""
        hu = np.full((self.side, self.side), AIR_HU)
        hu[self.in_square] = slice_hu[self.in_slice]
        mu = np.clip(MU_WATER_PER_MM * (1.0 + hu / 1000.0), 0.0, None)
        mu[~self.circle] = 0.0
        return mu

    def to_slice(self, mu: np.ndarray) -> np.ndarray:
        """Reconstructed mu on the square -> HU on the slice's grid (air outside the scanned field)."""
        out = np.full(self.shape, AIR_HU, np.float32)
        out[self.in_slice] = (mu[self.in_square] / MU_WATER_PER_MM - 1.0) * 1000.0
        return out


def _line_integrals(field: _ScanField, slice_hu: np.ndarray, theta: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Noise-free line integrals (detector bins, views): projection, then the detector aperture's blur."""
    sinogram = radon(field.attenuation(slice_hu), theta, circle=True) * pixel_mm
    return ndimage.gaussian_filter1d(sinogram, DETECTOR_BLUR_BINS, axis=0, mode="constant")


def _theta(n_angles: int) -> np.ndarray:
    return np.linspace(0.0, 180.0, int(n_angles), endpoint=False)


def _ramp_filter(size: int) -> np.ndarray:
    """Frequency response of the discrete ramp (Kak and Slaney 1988, eq. 3.61) on ``size`` (even) samples."""
    n = np.concatenate([np.arange(1, size // 2 + 1, 2), np.arange(size // 2 - 1, 0, -2)])
    kernel = np.zeros(size)
    kernel[0] = 0.25
    kernel[1::2] = -1.0 / (np.pi * n) ** 2
    return 2.0 * np.real(np.fft.fft(kernel))


RECON_KERNELS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def check_kernel(kernel: str, cutoff: float) -> None:
    """Raise InputError unless ``kernel`` is one of :data:`RECON_KERNELS` and ``cutoff`` lies in [0.1, 1]."""
    if kernel not in RECON_KERNELS:
        raise InputError(f"Unknown reconstruction kernel {kernel!r}; choose from {', '.join(RECON_KERNELS)}.")
    if not 0.1 <= cutoff <= 1.0:
        raise InputError(f"Kernel cutoff must be in [0.1, 1] (a fraction of the Nyquist frequency); got {cutoff}.")


def reconstruction_filter(size: int, kernel: str = "ramp", cutoff: float = 1.0) -> np.ndarray:
    """Frequency response on ``size`` (even) samples: the discrete ramp times ``kernel``'s apodisation window,
    zero above ``cutoff`` x Nyquist. ``("ramp", 1.0)`` is the ramp itself; the windows are those of
    :func:`skimage.transform.iradon` stretched to the cutoff."""
    check_kernel(kernel, cutoff)
    response = _ramp_filter(size)
    if kernel == "ramp" and cutoff == 1.0:
        return response
    f = np.abs(np.fft.fftfreq(size)) / (0.5 * cutoff)  # 1 at the cutoff
    window = {"ramp": np.ones_like(f),
              "shepp-logan": np.sinc(f / 2.0),
              "cosine": np.cos(np.pi * f / 2.0),
              "hamming": 0.54 + 0.46 * np.cos(np.pi * f),
              "hann": 0.5 + 0.5 * np.cos(np.pi * f)}[kernel]
    return response * np.where(f <= 1.0, window, 0.0)


def kernel_noise_factor(kernel: str, cutoff: float = 1.0) -> float:
    """Noise standard deviation of an FBP with ``kernel`` relative to the ramp's, for white projection noise.

    Measured, not derived from the filters' energies alone: the back-projection's linear interpolation is a
    low-pass of its own that takes more from the ramp's noise than from a soft kernel's. One white-noise sinogram
    (fixed seed, 129 bins x 128 views) reconstructed both ways; the ratio of the standard deviations in the
    central disc (about 1 % precise)."""
    check_kernel(kernel, cutoff)
    if kernel == "ramp" and cutoff == 1.0:
        return 1.0
    return _white_noise_std(kernel, cutoff) / _white_noise_std("ramp", 1.0)


@functools.lru_cache(maxsize=64)
def _white_noise_std(kernel: str, cutoff: float) -> float:
    """Standard deviation, in the central disc, of the FBP of one fixed white-noise sinogram (129 bins x 128 views)."""
    sinogram = np.random.default_rng(0).standard_normal((129, 128))
    disc = np.hypot(*np.mgrid[:129, :129] - 64) <= 48
    return float(filtered_back_projection(sinogram, _theta(128), 129, kernel, cutoff)[disc].std())


def filtered_back_projection(sinogram: np.ndarray, theta_deg: np.ndarray, side: int, kernel: str = "ramp",
                             cutoff: float = 1.0) -> np.ndarray:
    """Filtered back-projection of ``sinogram`` (detector bins, views), real or complex, onto a ``side`` x
    ``side`` grid (zero outside the inscribed circle) with the reconstruction filter of ``kernel`` and ``cutoff``
    (:func:`reconstruction_filter`); the conventions of :func:`skimage.transform.iradon` (``circle=True``,
    linear interpolation). A complex sinogram reconstructs its real and imaginary parts at once."""
    n_bins = sinogram.shape[0]
    padded = max(64, int(2 ** np.ceil(np.log2(2 * n_bins))))
    spectrum = np.fft.fft(sinogram, n=padded, axis=0) * reconstruction_filter(padded, kernel, cutoff)[:, None]
    filtered = np.fft.ifft(spectrum, axis=0)[:n_bins]
    if not np.iscomplexobj(sinogram):
        filtered = filtered.real
    half = side // 2
    rows, cols = np.nonzero(np.hypot(*np.mgrid[: side, : side] - half) <= half)
    r, c = (rows - half).astype(np.float64), (cols - half).astype(np.float64)
    bins = np.arange(n_bins) - n_bins // 2
    acc = np.zeros(len(rows), filtered.dtype)
    for projection, angle in zip(filtered.T, np.deg2rad(theta_deg)):
        acc += np.interp(c * np.cos(angle) - r * np.sin(angle), bins, projection, left=0.0, right=0.0)
    out = np.zeros((side, side), filtered.dtype)
    out[rows, cols] = acc * (np.pi / (2 * len(theta_deg)))
    return out


def coloured_noise(shape: tuple[int, ...], sd: float, exponent: float, cutoff: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Stationary Gaussian noise of standard deviation ``sd`` with a radially symmetric power spectrum, drawn
    independently for every (y, x) plane of ``shape`` (float32).

    The amplitude response is ``(f / 0.5) ** exponent * exp(-(f / cutoff) ** 2 / 2)`` at radial frequency ``f``
    (cycles per pixel): ``exponent`` 0 is white noise smoothed by a Gaussian of ``1 / (2 pi cutoff)`` pixels,
    ``exponent`` 1 the ramp's fine grain, both rolled off at ``cutoff``. The textures of other reconstructions
    (soft or iterative kernels, images smoothed or resampled after reconstruction) lie between them."""
    if sd < 0 or cutoff <= 0 or exponent < 0:
        raise InputError(f"coloured_noise needs sd >= 0, cutoff > 0 and exponent >= 0; got {sd}, {cutoff}, "
                         f"{exponent}.")
    *lead, ny, nx = shape
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(ny), np.fft.rfftfreq(nx), indexing="ij"))
    response = (f / 0.5) ** exponent * np.exp(-0.5 * (f / cutoff) ** 2)
    white = rng.standard_normal((*lead, ny, nx))
    noise = np.fft.irfft2(np.fft.rfft2(white) * response, s=(ny, nx))
    scale = noise.reshape(*lead, -1).std(axis=-1)[..., None, None] if lead else noise.std()
    return (noise * (sd / np.maximum(scale, 1e-12))).astype(np.float32)


def simulate_low_dose(ct_slice_hu: np.ndarray, dose_fraction: float, *, seed: int, pixel_mm: float = 1.0,
                      full_dose_photons: float = FULL_DOSE_PHOTONS, n_angles: int = N_ANGLES,
                      kernel: str = "ramp", cutoff: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(low-dose, full-dose) filtered back-projections of one slice.

    Args:
        ct_slice_hu: (y, x) slice in HU (not modified); pixels are square, ``pixel_mm`` wide.
        dose_fraction: in (0, 1]; the low-dose incident count is ``full_dose_photons * dose_fraction``.
        seed: noise seed; the same seed gives the same bytes.
        full_dose_photons: incident photons per detector bin and view at full dose.
        n_angles: views over 180 degrees.
        kernel, cutoff: the reconstruction kernel of both images (:func:`reconstruction_filter`).

    Returns:
        Two float32 (y, x) arrays in HU on the input's grid: the low-dose and the full-dose reconstructions,
        made by the same pipeline from independent Poisson draws (air, -1000 HU, outside the scanned circle).
        The full-dose image depends on the slice and the seed only, not on ``dose_fraction``.
    """
    _check(ct_slice_hu, dose_fraction, pixel_mm, full_dose_photons, n_angles)
    check_kernel(kernel, cutoff)
    field = _ScanField(np.asarray(ct_slice_hu, np.float64))
    theta = _theta(n_angles)
    line_integrals = _line_integrals(field, ct_slice_hu, theta, pixel_mm)
    logs = []
    # independent streams: the full-dose image of a seed is the same whatever the dose fraction
    for stream, photons in enumerate((full_dose_photons * dose_fraction, full_dose_photons)):
        counts = np.random.default_rng([int(seed), 7, stream]).poisson(photons * np.exp(-line_integrals))
        logs.append(-np.log(np.maximum(counts, 1) / photons))
    mu = filtered_back_projection(logs[0] + 1j * logs[1], theta, field.side, kernel, cutoff) / pixel_mm
    return field.to_slice(mu.real), field.to_slice(mu.imag)


def noiseless_reconstruction(ct_slice_hu: np.ndarray, *, pixel_mm: float = 1.0, n_angles: int = N_ANGLES,
                             kernel: str = "ramp", cutoff: float = 1.0) -> np.ndarray:
    """FBP of the exact sinogram (HU, float32, the input's grid): the noise-free reference of a dose pair."""
    _check(ct_slice_hu, 1.0, pixel_mm, 1.0, n_angles)
    check_kernel(kernel, cutoff)
    field = _ScanField(np.asarray(ct_slice_hu, np.float64))
    theta = _theta(n_angles)
    line_integrals = _line_integrals(field, ct_slice_hu, theta, pixel_mm)
    return field.to_slice(filtered_back_projection(line_integrals, theta, field.side, kernel, cutoff) / pixel_mm)


def low_dose_volume(ct: Volume, dose_fraction: float, seed: int, *, axis: int = 0,
                    full_dose_photons: float = FULL_DOSE_PHOTONS, n_angles: int = N_ANGLES, kernel: str = "ramp",
                    cutoff: float = 1.0) -> tuple[Volume, Volume]:
    """(low-dose, full-dose) CT volumes, simulated slice by slice along array ``axis`` (0 = axial z), both
    reconstructed with ``kernel`` and ``cutoff`` (:func:`reconstruction_filter`).

    Slice ``k`` uses noise seed ``seed * 100003 + k``; the pixel size is the mean in-plane spacing. Both volumes
    have ``ct``'s geometry and metadata {"modality": "CT", "units": "HU", "dose_fraction", "contrast"}.
    """
    if axis not in (0, 1, 2):
        raise InputError(f"axis must be 0 (z), 1 (y) or 2 (x); got {axis}.")
    if not 0 < dose_fraction <= 1:
        raise InputError(f"Dose fraction must be in (0, 1]; got {dose_fraction} (0.25 = quarter dose).")
    spacing_zyx = ct.spacing[::-1]
    pixel_mm = float(np.mean([s for a, s in enumerate(spacing_zyx) if a != axis]))
    slices = np.moveaxis(ct.array, axis, 0)
    pairs = [simulate_low_dose(s, dose_fraction, seed=seed * 100003 + k, pixel_mm=pixel_mm,
                               full_dose_photons=full_dose_photons, n_angles=n_angles, kernel=kernel, cutoff=cutoff)
             for k, s in enumerate(slices)]
    low = np.ascontiguousarray(np.moveaxis(np.stack([p[0] for p in pairs]), 0, axis))
    full = np.ascontiguousarray(np.moveaxis(np.stack([p[1] for p in pairs]), 0, axis))
    meta = {"modality": "CT", "units": "HU"}
    return (ct.with_array(low, metadata=dict(meta, dose_fraction=dose_fraction,
                                             contrast=f"{dose_fraction * 100:g}% dose")),
            ct.with_array(full, metadata=dict(meta, dose_fraction=1.0, contrast="full dose")))
