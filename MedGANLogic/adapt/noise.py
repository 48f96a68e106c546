"""Noise models per modality: a transform that makes the noise additive and even, and how far it is correlated.

==========  ===================================  ========================================  ======================
modality    noise                                transform (in models/adapted.py)          blind radius (pixels)
==========  ===================================  ========================================  ======================
MR          Rician magnitude: complex Gaussian   identity; the output's Rician bias is     0: white
            noise, sigma from the air background  removed (Gudbjartsson and Patz 1995)
PT (PET)    Poisson-like: variance = a x mean,   generalised Anscombe 2 sqrt(x/a + 3/8),   1: reconstruction and
            gain a measured on the scan          unbiased inverse (Makitalo and Foi 2011)  post-filters correlate it
US          multiplicative speckle (Rayleigh     log(x + eps); the mean envelope is        2: the speckle grain is
            envelope)                            restored after exp                        the imaging PSF
CT          additive, spatially correlated       identity (HU)                             2: the ramp filter,
            (filtered back-projection)                                                 interpolation and soft
                                                                                       kernels spread it (CT's
                                                                                       default fit is not
                                                                                       blind: see below)
==========  ===================================  ========================================  ======================

CT's and PET's default fit (recorrupted-to-recorrupted, :mod:`.denoise`) needs the noise's covariance rather than
a blind block: :func:`noise_power` measures CT's power spectrum on the scan's flattest patches of tissue,
:func:`gaussian_noise_power` fits PET's at the high frequencies where the image holds noise alone, and
:class:`NoisePower` draws fresh noise with it. The blind radii below serve the blind-spot fit.

The blind radius is the half-width of the block around each pixel that the denoiser must not see
(:class:`~MedGANLogic.models.blindspot.BlindSpotUNet`): noise correlated over up to that many pixels cannot be
copied from what the network sees. Measured on the phantoms: FBP noise correlation 0.2 at one pixel and below
0.1 beyond; speckle 0.6-0.7 at one pixel, 0.1-0.25 at two, below 0.05 at three. Real CT is smoother than the
phantom's FBP (the high-pass residual of the real chest CT lung1, as acquired: 0.75 at one pixel, 0.29 at two),
and on the real tuning CT of ``make eval-real`` (lung2, correlated noise added; 300 steps from scratch) a fit
with radius 2 scored 27.1 dB against 26.0 with radius 1 (learning rate 1e-3), and 27.6 against 27.5 with radius 3
(3e-3): CT hides two pixels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage, optimize
from scipy.signal import correlate2d

from ..errors import InputError
from ..models.adapted import forward_transform

MODALITIES = ("MR", "CT", "PT", "US")
ALIASES = {"PET": "PT", "MRI": "MR", "ULTRASOUND": "US"}


def canonical_modality(name: Any) -> str:
    """``MR``, ``CT``, ``PT`` or ``US`` for a modality name (DICOM codes; PET, MRI and ultrasound accepted)."""
    key = str(name or "").strip().upper()
    key = ALIASES.get(key, key)
    if key not in MODALITIES:
        raise InputError(f"Fitting a denoiser to the scan needs the modality: one of {', '.join(MODALITIES)} (PT = "
                         f"PET); got {name!r}. Pass modality=... (--modality) or set it in the volume's metadata.")
    return key


@dataclass
class NoiseModel:
    """One modality's noise: its variance-stabilising transform, constants measured on the scan, blind spot.

    Attributes:
        modality: MR, CT, PT or US.
        blind_radius: half-width (pixels) of the block hidden from the network around each pixel.
        params: what was estimated (e.g. ``{"sigma": 12.3}``), for provenance.
    """

    modality: str
    blind_radius: int
    params: dict[str, float] = field(default_factory=dict)

    @property
    def transform(self) -> str:
        """The :class:`~MedGANLogic.models.adapted.ScanFittedNetwork` transform of this modality."""
        return TRANSFORM[self.modality]

    def estimate(self, array: np.ndarray) -> dict[str, float]:
        """Measure the transform's constants on the scan (``sigma`` for MR, ``gain`` for PET, ``eps`` for US)."""
        a = np.asarray(array, dtype=np.float32)
        if self.modality == "MR":
            self.params["sigma"] = rician_sigma(a)
        elif self.modality == "PT":
            self.params["gain"] = poisson_gain(a)
        elif self.modality == "US":
            positive = a[a > 0]
            self.params["eps"] = max(float(np.percentile(positive, 1)) if positive.size else 1.0, 1e-6)
        return self.params

    def noise_std(self) -> float | None:
        """The noise standard deviation in the transformed domain that the physics gives, or None (CT): Rician
        sigma for MR, 1 for PET after the Anscombe transform, pi / sqrt(24) for the log of fully developed
        speckle (the standard deviation of the log of a Rayleigh variable)."""
        if self.modality == "MR":
            return self.params.get("sigma")
        return {"PT": 1.0, "US": float(np.pi / np.sqrt(24.0))}.get(self.modality)

    def forward(self, array: np.ndarray) -> np.ndarray:
        """Intensities (z, y, x) -> the domain where the noise is additive and even (float32, a new array)."""
        with torch.no_grad():
            out = forward_transform(torch.from_numpy(np.array(array, dtype=np.float32)), self.transform, self.params)
        return out.numpy()


TRANSFORM = {"MR": "rician", "PT": "anscombe", "US": "log", "CT": "identity"}
DEFAULT_BLIND_RADIUS = {"MR": 0, "PT": 1, "US": 2, "CT": 2}


def noise_model(modality: str, blind_radius: int | None = None) -> NoiseModel:
    """The :class:`NoiseModel` of ``modality``, with its default blind radius or ``blind_radius``."""
    mod = canonical_modality(modality)
    radius = DEFAULT_BLIND_RADIUS[mod] if blind_radius is None else blind_radius
    if int(radius) != radius or radius < 0:
        raise InputError(f"blind_radius must be an integer >= 0 (pixels); got {blind_radius!r}.")
    return NoiseModel(mod, int(radius))


# --- MR: Rician ------------------------------------------------------------------------------------------------
def rician_sigma(magnitude: np.ndarray) -> float:
    """The noise sigma (per complex channel) of an MR magnitude image, from its air background.

    Background: non-zero voxels below T = 10 % of the 99th percentile. Air is Rayleigh distributed,
    F(x) = 1 - exp(-x^2 / 2 sigma^2), but T may cut its tail (at low SNR T is near sigma), so sigma is the one
    for which the median m of the background is the median of a Rayleigh variable truncated at T:
    F(m) = F(T) / 2. Without enough background (a tight crop) the high-pass estimate of Immerkaer (1996) on the
    whole image is used instead.
    """
    a = np.asarray(magnitude, dtype=np.float32)
    cut = 0.1 * float(np.percentile(a, 99))
    background = a[(a > 0) & (a < cut)]
    if background.size < 1000:
        return immerkaer_sigma(a)
    m = float(np.median(background))
    if not m < cut / np.sqrt(2.0):  # not Rayleigh-like below the cut: no root
        return m / np.sqrt(2.0 * np.log(2.0))

    def imbalance(sigma: float) -> float:
        return -np.expm1(-m * m / (2 * sigma * sigma)) + 0.5 * np.expm1(-cut * cut / (2 * sigma * sigma))

    return float(optimize.brentq(imbalance, m * 1e-3, m * 1e3))


def robust_noise_std(slices: np.ndarray, radius: int = 0, signal: np.ndarray | None = None) -> float:
    """Noise standard deviation of ``slices`` (S, H, W) for noise correlated over ``radius`` pixels; anatomy makes
    it too high rather than too low.

    Immerkaer's (1996) operator (a difference of two Laplacians, blind to smooth structure; its response to white
    noise of deviation sigma has deviation 6 sigma) on the slices sampled every ``radius + 1`` pixels, where the
    noise is uncorrelated. Edges and fine anatomy only add large responses, so a low quantile of the absolute
    responses (all sampling phases pooled, only where the operator lies inside ``signal``) is used: its 20th
    percentile is 0.2533 x 6 sigma for noise alone.
    """
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    step = int(radius) + 1
    values = []
    for k in range(len(slices)):
        image = np.asarray(slices[k], dtype=np.float64)
        inside = np.ones(image.shape, bool) if signal is None else signal[k]
        for oy in range(step):
            for ox in range(step):
                sub, keep = image[oy::step, ox::step], inside[oy::step, ox::step]
                if min(sub.shape) < 3:
                    continue
                response = ndimage.convolve(sub, kernel, mode="reflect")[1:-1, 1:-1]
                whole = ndimage.minimum_filter(keep.astype(np.uint8), size=3)[1:-1, 1:-1] > 0
                values.append(np.abs(response[whole]))
    joined = np.concatenate(values) if values else np.zeros(0)
    return float(np.percentile(joined, 20) / (6.0 * 0.2533)) if joined.size else 0.0


def immerkaer_sigma(array: np.ndarray) -> float:
    """Additive white-noise sigma from the Laplacian-difference operator of Immerkaer (1996), per axial slice:
    sigma = sqrt(pi / 2) / 6 x mean |image * N|."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    a = np.asarray(array, dtype=np.float64)
    slices = a.reshape((-1,) + a.shape[-2:])
    total = [np.abs(ndimage.convolve(s, kernel, mode="reflect"))[1:-1, 1:-1].mean() for s in slices]
    return float(np.sqrt(np.pi / 2.0) / 6.0 * np.mean(total))


# --- PET: Poisson-like -----------------------------------------------------------------------------------------
def poisson_gain(image: np.ndarray, bins: int = 16) -> float:
    """The gain a of ``variance = a x mean`` (counts scaled to image units), fitted on local statistics.

    Local mean and the variance of the difference to it (3x3 in-plane neighbourhoods) are binned by mean over the
    upper half of the positive values; a is the median of variance / mean per bin, corrected for the variance
    the local mean itself removes (a 3x3 mean of white noise leaves 8/9 of its variance in the difference).
    Correlated noise (post-filtered PET) makes it an underestimate; the transform only needs its order.
    """
    a = np.asarray(image, dtype=np.float64)
    mean = ndimage.uniform_filter(a, size=(1, 3, 3), mode="reflect")
    var = ndimage.uniform_filter((a - mean) ** 2, size=(1, 3, 3), mode="reflect") * 9.0 / 8.0
    positive = mean > 0
    if positive.sum() < 100:
        return 1.0
    lo = np.percentile(mean[positive], 50)
    use = mean > lo
    edges = np.quantile(mean[use], np.linspace(0, 1, bins + 1))
    which = np.clip(np.digitize(mean[use], edges[1:-1]), 0, bins - 1)
    ratios = [np.median(var[use][which == b]) / np.median(mean[use][which == b])
              for b in range(bins) if np.any(which == b)]
    gain = float(np.median(ratios)) if ratios else 1.0
    return gain if np.isfinite(gain) and gain > 0 else 1.0


# --- spatially correlated noise: its power spectrum, measured on the scan ------------------------------------------
@dataclass
class NoisePower:
    """Stationary, spatially correlated noise of a scan's slices: ``kernel`` colours white noise into it.

    Attributes:
        kernel: (k, k) zero-phase filter whose autocorrelation is the measured one: white Gaussian noise convolved
            with it has the scan's noise variance and correlation (its sum of squares is the variance).
        patches: how many flat patches the spectrum was averaged over.
    """

    kernel: np.ndarray
    patches: int

    @property
    def variance(self) -> float:
        return float((self.kernel.astype(np.float64) ** 2).sum())

    def correlation(self, lag: int) -> float:
        """Correlation of two pixels ``lag`` apart along a row (the kernel's autocorrelation, normalised)."""
        k = self.kernel.astype(np.float64)
        shifted = np.zeros_like(k)
        if lag < k.shape[1]:
            shifted[:, lag:] = k[:, : k.shape[1] - lag]
        return float((k * shifted).sum() / max(self.variance, 1e-30))

    def sample(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Noise of ``shape`` (N, 1, H, W): white Gaussian noise (from ``generator``) convolved with the kernel."""
        r = self.kernel.shape[-1] // 2
        n, c, h, w = shape
        white = torch.randn((n, c, h + 2 * r, w + 2 * r), generator=generator)
        weight = torch.from_numpy(np.ascontiguousarray(self.kernel, dtype=np.float32))[None, None]
        return torch.nn.functional.conv2d(white, weight)

    def summary(self) -> dict[str, Any]:
        return {"sd": round(float(np.sqrt(self.variance)), 6), "patches": self.patches,
                "correlation_1px": round(self.correlation(1), 3), "correlation_2px": round(self.correlation(2), 3),
                "kernel_size": int(self.kernel.shape[-1])}


def noise_power(slices: np.ndarray, signal: np.ndarray, sizes: tuple[int, ...] = (32, 16), flattest: float = 0.1,
                radius: int = 5, least: int = 8) -> NoisePower:
    """Measure the noise power spectrum of ``slices`` (S, H, W) on its flattest patches of tissue.

    As a CT physicist measures it on a water phantom, but on the scan itself: square patches (half overlapping;
    the first of ``sizes`` that gives at least ``least`` of them) that lie wholly in ``signal``, each less its
    least-squares quadratic surface; the ``flattest`` fraction of them (lowest residual variance: least anatomy;
    at least four) give the averaged periodogram (Hann-windowed). Its square root, taken back to the image domain
    and cut to a (2 ``radius`` + 1)^2 block, is the colouring kernel; the cut keeps the measured variance. Anatomy
    left in the patches adds power, mostly at low frequencies; choosing the flattest patches biases the level low
    on pure noise. Chosen on 36 random 128-pixel crops of the real tuning CT (lung2, 8 slices, correlated noise of
    known SD added): measured / true SD median 1.00, 10th-90th percentile 0.93-1.12 (a plane and the flattest
    quarter, as first shipped: 1.08, 0.97-1.44; too strong where flat tissue is scarce).

    It assumes the noise is stationary and the scan holds some flat tissue (soft tissue, brain, liver): on the
    phantom PET the flattest patches still hold uptake structure (the first estimator measured a correlation of
    0.90 at one pixel there), and a fit with that spectrum was far worse than the blind spot: PET's is measured by
    :func:`gaussian_noise_power`.

    Raises:
        InputError: no patch of the smallest size lies inside the signal (a tiny or empty scan).
    """
    found = _patches(slices, signal, sizes, least)
    n = found[0][1].shape[0]
    found.sort(key=lambda t: t[0])
    use = [r for _, r in found[: max(4, int(round(len(found) * flattest)))]]
    power = _periodogram(use)
    amplitude = np.fft.fftshift(np.real(np.fft.ifft2(np.sqrt(power))))  # zero-phase colouring filter
    c, r = n // 2, min(int(radius), n // 2 - 1)
    kernel = amplitude[c - r:c + r + 1, c - r:c + r + 1]
    kernel *= np.sqrt(power.mean() / max(float((kernel ** 2).sum()), 1e-30))
    return NoisePower(kernel.astype(np.float32), len(use))


# The in-plane frequency band (cycles per pixel) where a PET image holds noise alone, and the Gaussian widths (pixels)
# searched for its noise. Chosen on the validation phantom (subject 1000; 2 mm voxels, 5 mm PSF, 4 mm post-filter):
# the periodogram of the image over that of its noise (image less the noise-free reference) was 3.2 at 0.15-0.2
# cycles per pixel, 1.4 at 0.2-0.25, 1.06 at 0.25-0.3 and 1.00 from 0.3 to the corners.
PET_NOISE_BAND = (0.3, 0.5)
GAUSSIAN_WIDTHS = np.round(np.arange(0.0, 2.51, 0.02), 2)


def gaussian_noise_power(slices: np.ndarray, signal: np.ndarray, band: tuple[float, float] = PET_NOISE_BAND,
                         sizes: tuple[int, ...] = (32, 16), radius: int = 5, least: int = 8) -> NoisePower:
    """Measure PET's noise power spectrum on ``slices`` (S, H, W): a Gaussian spectrum fitted where only noise is.

    In emission tomography the noise passes the reconstruction's own smoothing and the post-filter; the activity
    passes those and the scanner's point spread function as well, so at high spatial frequencies the image is all
    noise. Flat patches cannot be found there (uptake is everywhere: :func:`noise_power` measured a correlation of
    0.90 at one pixel on the phantom PET, where the noise has 0.69). Instead the periodogram of every patch of tissue
    (less its quadratic surface, Hann-windowed, as :func:`noise_power`) is taken in ``band`` (cycles per pixel), and
    the noise is modelled as white noise smoothed by an isotropic Gaussian of width sigma: the sigma of
    ``GAUSSIAN_WIDTHS`` whose expected windowed periodogram has the same shape there (least variance of the log
    ratio), scaled to its level, gives the colouring kernel. The model extrapolates the noise to low frequencies,
    where anatomy dominates. On the validation phantoms (subjects 1000 and 1001: noise SD 0.0495 and 0.0490 of the
    unit range, correlation 0.69 at one pixel) it measured 0.052 and 0.048, correlation 0.71 and 0.70, sigma 0.86
    and 0.84 pixels (the 4 mm post-filter at 2 mm voxels is 0.85). Across acquisitions of subject 1000 (counts per
    SUV 2-20, PSF 4-7 mm, post-filter none to 6 mm: true correlation at one pixel 0 to 0.85) its SD was 0.97-1.05 of
    the true one and its correlation within 0.03.

    It assumes the noise's spectrum is Gaussian-shaped (a Gaussian post-filter, or a reconstruction whose resolution
    is) and that the activity holds no power in ``band`` (a point spread function of two pixels or more).

    Raises:
        InputError: no patch of the smallest size lies inside the signal.
    """
    found = _patches(slices, signal, sizes, least)
    n = found[0][1].shape[0]
    power = _periodogram([r for _, r in found])
    f = np.fft.fftfreq(n)
    radial = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    inside = (radial >= band[0]) & (radial <= band[1])
    measured = np.log(np.maximum(power[inside], 1e-30))
    fits = []
    for sigma in GAUSSIAN_WIDTHS:
        kernel = gaussian_kernel(float(sigma), radius)
        ratio = measured - np.log(np.maximum(windowed_power(kernel, n)[inside], 1e-30))
        fits.append((float(ratio.var()), kernel * np.exp(ratio.mean() / 2.0)))
    _, kernel = min(fits, key=lambda fit: fit[0])  # the first of equals, as the widths ascend
    return NoisePower(kernel.astype(np.float32), len(found))


def gaussian_kernel(sigma: float, radius: int) -> np.ndarray:
    """A (2 ``radius`` + 1)^2 Gaussian of width ``sigma`` pixels (unit sum; a single 1 for sigma < 0.05)."""
    kernel = np.zeros((2 * radius + 1,) * 2)
    kernel[radius, radius] = 1.0
    if sigma < 0.05:
        return kernel
    return ndimage.gaussian_filter(kernel, sigma, mode="constant", truncate=radius / sigma)


def windowed_power(kernel: np.ndarray, n: int) -> np.ndarray:
    """The expected periodogram (n x n, as :func:`_periodogram` takes it) of white noise coloured by ``kernel``: its
    autocovariance times that of the Hann window, transformed."""
    cov = correlate2d(kernel, kernel, mode="full")
    wcov = _window_covariance(n)
    r, c = cov.shape[0] // 2, wcov.shape[0] // 2
    product = cov * wcov[c - r:c + r + 1, c - r:c + r + 1]
    phase = np.exp(-2j * np.pi * np.outer(np.fft.fftfreq(n), np.arange(-r, r + 1)))
    return np.real(phase @ product @ phase.T)


@functools.lru_cache(maxsize=4)
def _window_covariance(n: int) -> np.ndarray:
    window = _hann(n)
    return correlate2d(window, window, mode="full") / (n * n)


def _hann(n: int) -> np.ndarray:
    window = np.outer(np.hanning(n), np.hanning(n))
    return window / np.sqrt((window ** 2).mean())


def _periodogram(residuals: list[np.ndarray]) -> np.ndarray:
    """The averaged Hann-windowed periodogram of square ``residuals`` (their n x n power spectrum, per pixel)."""
    n = residuals[0].shape[0]
    window = _hann(n)
    return np.mean([np.abs(np.fft.fft2(r * window)) ** 2 for r in residuals], axis=0) / (n * n)


def _patches(slices: np.ndarray, signal: np.ndarray, sizes: tuple[int, ...], least: int
             ) -> list[tuple[float, np.ndarray]]:
    """Detrended patches of the first of ``sizes`` that gives at least ``least`` (else the smallest's)."""
    found: list[tuple[float, np.ndarray]] = []
    for n in sizes:
        found = _detrended_patches(slices, signal, int(n))
        if len(found) >= least:
            break
    if not found:
        raise InputError(f"Cannot measure the scan's noise: no {min(sizes)}x{min(sizes)}-pixel patch lies wholly "
                         f"inside the tissue. Fit with the blind-spot method (method='blindspot') for scans this "
                         f"small.")
    return found


def _detrended_patches(slices: np.ndarray, signal: np.ndarray, n: int, most: int = 32
                       ) -> list[tuple[float, np.ndarray]]:
    """(residual variance, residual) of every half-overlapping n x n patch wholly in ``signal``, less its
    least-squares quadratic surface, on up to ``most`` slices spread over the stack."""
    d = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    yy, xx = np.meshgrid(d, d, indexing="ij")
    design = np.stack([np.ones(n * n), yy.ravel(), xx.ravel(), yy.ravel() ** 2, xx.ravel() ** 2,
                       (yy * xx).ravel()], 1)
    surface = design @ np.linalg.pinv(design)  # the least-squares quadratic of a flattened patch
    found: list[tuple[float, np.ndarray]] = []
    for k in np.unique(np.linspace(0, len(slices) - 1, num=min(most, len(slices))).round().astype(int)):
        image, inside = slices[k], signal[k]
        picked = [(oy, ox) for oy in range(0, image.shape[0] - n + 1, n // 2)
                  for ox in range(0, image.shape[1] - n + 1, n // 2) if inside[oy:oy + n, ox:ox + n].all()]
        if not picked:
            continue
        flat = np.stack([image[oy:oy + n, ox:ox + n].astype(np.float64).ravel() for oy, ox in picked])
        residuals = (flat - flat @ surface.T).reshape(-1, n, n)
        found.extend((float(r.var()), r) for r in residuals)
    return found
