"""Domain-randomised training samples (SynthSeg/SynthSR-style): random anatomy, random scanner, physical targets.

Every sample draws a new anatomy (:mod:`.anatomy`), a new appearance (:mod:`.appearance`) and a new acquisition
(:mod:`.acquisition`) within the ranges of :class:`DomainRanges`, so a network cannot learn one contrast,
resolution or noise level; its target stays physical and independent of the input's random draws:
MR targets from the signal equations of :mod:`.mri` with the literature relaxation times (e.g. the T2w of
``SEQUENCES["T2w"]``), CT targets in HU per tissue (:mod:`.ct`), denoising targets the full-dose reconstruction
(CT, :mod:`.lowdose`) or the noise-free acquisition (MR).

Tasks (:data:`TASKS`) and their options:
  * ``synthesize``: ``source`` = an ordering of :data:`.appearance.ORDERINGS` or "any" (drawn per sample),
    ``target`` = "T1w", "T2w", "PD", "FLAIR" or "CT". Input: the random acquisition brought back onto the
    target grid (linear), as SynthSR feeds its network. T1w->T2w, MR->CT and any->T2w are three option sets.
  * ``denoise``: ``modality`` "MR" (Rician noise; target the same acquisition without noise) or "CT" (low-dose
    projection-domain reconstruction with a kernel drawn from ``ranges.ct_kernels``; target the full-dose one, same
    kernel; real CT slices from the cache when there are,
    ``real_ct``: None = with probability ``ranges.real_ct_fraction``, True = required, False = phantom only;
    ``slices``: reconstruct only that many slices of the phantom, the central ones or, with
    ``slice_position="random"``, a run of them at a random height, so that skull base and vertex are drawn too).
  * ``superres``: ``scale`` (z, y, x) integer factors, e.g. (2, 1, 1), or None (drawn); ``degrade`` one of
    :data:`SR_DEGRADATIONS` or None (drawn). The project's :func:`.lowres.thick_slices` and
    :func:`.lowres.kspace_truncate`, or a Gaussian slice profile (:func:`.acquisition.acquire`); input on the
    low-resolution grid, target the noise-free high-resolution image of the same random contrast.
  * ``anomaly``: input with lesions, target its lesion-free twin (same appearance, same noise draw);
    ``labels`` holds the lesion label (:data:`.tissue.TISSUES` index of "lesion").
  * ``brainmask``: input an MR acquisition of any ordering (``ordering`` "any" or one of
    :data:`.appearance.ORDERINGS`), lesions included; target the intracranial mask (:func:`intracranial`: CSF,
    grey and white matter and lesions, holes filled; never the eyes), 1 inside, 0 outside, as SynthStrip learns
    skull stripping.
  * ``lesionmask``: input an MR acquisition (``ordering``, default "FLAIR"); target the lesion mask (the anatomy's
    lesion labels, 1 inside any lesion, 0 elsewhere), as SynthSeg learns segmentation from synthetic images.

``random_sample`` returns {"input": Volume, "target": Volume, "labels": Volume (uint8 dominant tissue per voxel,
indices of :data:`.tissue.TISSUES`, on the target grid), "meta": dict of every value drawn}. Outside a partial
field of view input, target and labels are background (MR 0, CT -1000 HU, label air).

    python -m MedGANLogic.simulate.randomize --png Testing/Reports/randomized_samples.png
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..volume import Volume
from . import ct as ct_model
from . import mri
from .acquisition import PROFILES, acquire, fov_box, motion_artifact, to_grid
from .anatomy import Anatomy, sample_anatomy
from .appearance import ORDERINGS, apply_gamma, brain_signal, random_ct_offsets, random_mr_contrast, render_mr
from .lowdose import FULL_DOSE_PHOTONS, RECON_KERNELS, coloured_noise, kernel_noise_factor, simulate_low_dose
from .lowres import crop_to_multiple, kspace_truncate, thick_slices
from .real_ct import random_real_slice, real_ct_status, real_ct_volumes
from .tissue import CSF, GM, LESION, TISSUES, WM

TASKS = ("synthesize", "denoise", "superres", "anomaly", "brainmask", "lesionmask")
TARGETS = (*mri.CONTRASTS, "CT")
SR_DEGRADATIONS = ("thick_slices", "kspace_truncate", "gaussian")
# the DomainRanges fields that are probabilities
PROBABILITIES = ("periventricular", "juxtacortical", "face", "enhancement", "lesion_enhancement", "partial_fov",
                 "motion", "skull_strip", "real_ct_fraction", "ct_image_noise")
# Nominal CT noise (HU, std in brain) of FULL_DOSE_PHOTONS on 2 mm pixels; it scales as N^-1/2 and pixel^-3/2.
CT_NOISE_AT_FULL_DOSE_2MM = 5.0


@dataclass(frozen=True)
class DomainRanges:
    """Every range the generator draws from, with units. (lo, hi) pairs are drawn uniformly unless noted."""

    # --- anatomy (:mod:`.anatomy`) ---
    shift_mm: float = 10.0  # box centre off the head centre, +- mm per axis
    rotation_deg: float = 15.0  # +- degrees about each axis
    head_scale: tuple[float, float] = (0.85, 1.15)  # head size and shape: scale per axis
    shear: float = 0.05  # +- off-diagonal shear
    elastic_mm: tuple[float, float] = (0.0, 4.0)  # elastic displacement, mm (std of its lattice)
    elastic_lattice_mm: float = 32.0  # spacing of the elastic lattice, mm
    ventricle_mm: tuple[float, float] = (-2.0, 6.0)  # ventricle boundary moved outwards, mm
    folding_amplitude: tuple[float, float] = (0.0, 0.6)  # tissue fraction moved by sulci/gyri at 1 field std
    folding_wavelength_mm: tuple[float, float] = (6.0, 14.0)  # size of the folding pattern, mm
    gm_wm_sharpening: tuple[float, float] = (1.0, 2.5)  # grey/white boundary contrast gain (1 = template)
    n_lesions: tuple[int, int] = (0, 5)  # lesions per sample (integers, inclusive)
    lesion_radius_mm: tuple[float, float] = (2.0, 20.0)  # largest semi-axis, mm, log-uniform
    periventricular: float = 0.5  # probability a lesion sits within 8 mm of the ventricles
    # probability that a lesion not placed periventricular is centred in the cortical grey matter instead of the white
    # matter (:func:`.anatomy.random_lesions`). 0 by default (earlier recipes' samples byte for byte)
    juxtacortical: float = 0.0
    # probability of a face and skull base (:mod:`.face`: eyes, orbital fat and muscles, nasal cavity, sinuses, air
    # cells, fat and bone below the brain). 0 by default (the samples of earlier recipes, byte for byte): the
    # recipes that want it say so
    face: float = 0.0
    # probability of a contrast-enhanced scan (:mod:`.vessels`: venous sinuses, veins, choroid plexus, dura and
    # pituitary bright on T1w, at enhancement_gain x the white-matter mean; other orderings ignore it). 0 by default
    # (earlier recipes' samples byte for byte)
    enhancement: float = 0.0
    enhancement_gain: tuple[float, float] = (1.2, 2.2)
    # probability that a lesion of a contrast-enhanced scan enhances (:func:`.anatomy.enhancing_rims`): a rim of
    # lesion_rim_mm inside its surface goes to the enhanced level (strength 0.6-1), around the lesion's own
    # appearance (its core); a lesion thinner than twice the rim enhances throughout. The lesioned
    # image only (the healthy twin has no lesion). 0 by default (earlier recipes' samples byte for byte)
    lesion_enhancement: float = 0.0
    lesion_rim_mm: tuple[float, float] = (1.5, 5.0)
    # --- MR appearance (:mod:`.appearance`) ---
    orderings: tuple[str, ...] = ORDERINGS  # contrast orderings drawn for "any"
    relaxation_jitter: float = 0.10  # log-normal std of T1, T2 of all tissues together (a third per tissue)
    mean_jitter: float = 0.15  # log-normal std of each tissue's mean after the signal equation (the mixture)
    tissue_std: tuple[float, float] = (0.0, 0.10)  # within-tissue spread, fraction of the tissue's mean
    gamma_log_std: float = 0.25  # gamma = exp(normal(0, this))
    bias_amplitude: tuple[float, float] = (0.0, 0.4)  # multiplicative bias field, about 1 +- this
    snr: tuple[float, float] = (3.0, 60.0)  # brain signal / Rician sigma, log-uniform
    # --- acquisition (:mod:`.acquisition`) ---
    inplane_mm: tuple[float, float] = (0.5, 3.0)  # in-plane voxel size, mm (never finer than the anatomy grid)
    slice_mm: tuple[float, float] = (1.0, 7.0)  # slice spacing, mm
    slice_thickness_ratio: tuple[float, float] = (0.8, 1.2)  # thickness / spacing: < 1 gap, > 1 overlap
    profiles: tuple[str, ...] = PROFILES  # slice profiles drawn
    slice_axes: tuple[int, ...] = (0, 1, 2)  # slicing plane: axial, coronal, sagittal (array axis)
    partial_fov: float = 0.3  # probability of a partial field of view
    fov_min_fraction: float = 0.6  # smallest kept fraction of the box per axis
    motion: float = 0.3  # probability of motion during the acquisition
    motion_mm: tuple[float, float] = (0.5, 3.0)  # largest in-plane translation, mm
    # probability of a skull-stripped scan (the brain and its CSF kept, grown by a random margin to mimic the
    # slack of real stripping tools; input and target stripped alike). 0 by default: the recipes that want it say so
    skull_strip: float = 0.0
    skull_strip_margin_mm: tuple[float, float] = (0.0, 4.0)
    # --- CT (:mod:`.ct`, :mod:`.lowdose`, :mod:`.real_ct`) ---
    ct_hu_jitter: float = 5.0  # std of per-sample soft-tissue HU offsets, HU
    ct_inplane_mm: tuple[float, float] = (0.5, 2.0)  # reconstruction pixel, mm
    ct_slice_mm: tuple[float, float] = (0.5, 5.0)  # reconstructed slice thickness, mm
    ct_noise_hu: tuple[float, float] = (3.0, 80.0)  # nominal low-dose noise in brain, HU, log-uniform
    ct_dose_fraction: tuple[float, float] = (0.1, 0.5)  # low dose / full dose
    real_ct_fraction: float = 0.5  # probability of real CT anatomy when the cache has it
    # reconstruction kernel (:func:`.lowdose.reconstruction_filter`) of both images of a pair, drawn uniformly from
    # the list (a kernel listed twice is drawn twice as often): "ramp" is the plain full-band ramp, the others are
    # windowed ramps cut off at a fraction of Nyquist drawn from ct_kernel_cutoff. The photon count is scaled so the
    # nominal noise holds whatever the kernel. The ramp alone by default (the samples of earlier recipes, byte for
    # byte); a draw has its own stream
    ct_kernels: tuple[str, ...] = ("ramp",)
    ct_kernel_cutoff: tuple[float, float] = (1.0, 1.0)
    # probability that a pair's low-dose image is instead its full-dose image plus image-domain Gaussian noise of
    # the drawn nominal level with a random texture (:func:`.lowdose.coloured_noise`: amplitude spectrum f ** exponent
    # rolled off by a Gaussian at cutoff cycles per pixel, log-uniform): noise grains the projection simulator does
    # not make (images smoothed or resampled after reconstruction, iterative reconstructions). 0 by default (the
    # samples of earlier recipes, byte for byte); a draw has its own stream
    ct_image_noise: float = 0.0
    ct_image_noise_exponent: tuple[float, float] = (0.0, 1.0)
    ct_image_noise_cutoff: tuple[float, float] = (0.08, 0.5)
    # --- super-resolution ---
    sr_factor: tuple[int, int] = (2, 4)  # integer factor when a sample draws its own scale (inclusive)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
                if value[0] > value[1]:
                    raise InputError(f"DomainRanges.{f.name} must be (low, high) with low <= high; got {value}.")
        for name in PROBABILITIES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"DomainRanges.{name} is a probability and must lie in [0, 1]; got "
                                 f"{getattr(self, name)}.")
        if self.snr[0] <= 0 or min(self.inplane_mm + self.slice_mm + self.ct_inplane_mm) <= 0:
            raise InputError("DomainRanges: snr, inplane_mm, slice_mm and ct_inplane_mm must be positive.")
        if unknown := [o for o in self.orderings if o not in ORDERINGS]:
            raise InputError(f"DomainRanges.orderings: unknown {unknown}; choose from {', '.join(ORDERINGS)}.")
        if not self.ct_kernels or (unknown := [k for k in self.ct_kernels if k not in RECON_KERNELS]):
            raise InputError(f"DomainRanges.ct_kernels must name one or more of {', '.join(RECON_KERNELS)}; got "
                             f"{list(self.ct_kernels)}.")
        if not 0.1 <= self.ct_kernel_cutoff[0] <= self.ct_kernel_cutoff[1] <= 1.0:
            raise InputError(f"DomainRanges.ct_kernel_cutoff must lie in [0.1, 1] (fraction of Nyquist); got "
                             f"{self.ct_kernel_cutoff}.")
        if not (0 < self.ct_dose_fraction[0] and self.ct_dose_fraction[1] <= 1):
            raise InputError(f"DomainRanges.ct_dose_fraction must lie in (0, 1]; got {self.ct_dose_fraction}.")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> DomainRanges:
        """Ranges from a recipe's ``data.ranges`` (lists become tuples); unknown names are an error listing them."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = dict(values or {})
        if unknown := sorted(set(values) - names):
            raise InputError(f"Unknown domain range(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}.")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """One draw, uniform in the logarithm between ``bounds`` (both > 0): each factor of the range equally likely."""
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


def _streams(rng: np.random.Generator) -> dict[str, int]:
    """Independent seeds for anatomy, appearance, acquisition and noise (re-creatable for twins)."""
    return dict(zip(("anatomy", "appearance", "acquisition", "noise"), (int(s) for s in rng.integers(2 ** 62, size=4))))


def _labels(anatomy: Anatomy, keep: np.ndarray | None) -> Volume:
    labels = np.argmax(anatomy.fractions, axis=0).astype(np.uint8)
    if keep is not None:
        labels[~keep] = 0
    return anatomy.grid.with_array(labels, metadata={"kind": "labels", "segment_names": dict(enumerate(TISSUES))})


def _fov(shape: tuple[int, ...], rng: np.random.Generator, ranges: DomainRanges) -> tuple[np.ndarray | None, list]:
    if rng.random() >= ranges.partial_fov:
        return None, []
    box = fov_box(shape, rng, ranges.fov_min_fraction)
    keep = np.zeros(shape, bool)
    keep[box] = True
    return keep, [[s.start, s.stop] for s in box]


def intracranial(anatomy: Anatomy) -> np.ndarray:
    """The intracranial tissues of ``anatomy`` (CSF, grey and white matter, lesions: more than half of a voxel)
    with holes filled, (z, y, x) bool: what skull stripping keeps."""
    f = anatomy.fractions
    csf = f[CSF] if anatomy.extracranial is None else f[CSF] - anatomy.extracranial  # the eyes are not brain
    return ndimage.binary_fill_holes((csf + f[GM] + f[WM] + f[LESION]) > 0.5)


def _strip(anatomy: Anatomy, rng: np.random.Generator, ranges: DomainRanges) -> tuple[np.ndarray | None, Any]:
    """The kept region of a skull-stripped scan (probability ``ranges.skull_strip``), or (None, None): the
    intracranial tissues (CSF, grey and white matter, lesions) with holes filled, grown by a random margin."""
    if ranges.skull_strip <= 0 or rng.random() >= ranges.skull_strip:
        return None, None
    brain = intracranial(anatomy)
    margin_mm = float(rng.uniform(*ranges.skull_strip_margin_mm))
    steps = int(round(margin_mm / anatomy.grid.spacing[0]))
    if steps:
        brain = ndimage.binary_dilation(brain, iterations=steps)
    return brain, round(margin_mm, 2)


def physical_target(anatomy: Anatomy, target: str) -> np.ndarray:
    """The physical target (z, y, x) of ``anatomy``: MR (a.u.) from the literature relaxation times through
    :data:`.mri.SEQUENCES`, CT in HU per tissue (:func:`.ct.noiseless_ct`); lesions with their own values."""
    if target == "CT":
        return ct_model.noiseless_ct(anatomy.fractions, anatomy.depth, lesion_hu=anatomy.lesion_hu)
    if target not in mri.CONTRASTS:
        raise InputError(f"Unknown target {target!r}; choose from {', '.join(TARGETS)}.")
    return mri.noiseless_contrast(anatomy.fractions, target, mri.TISSUE_PARAMS, anatomy.lesion_relaxation)


def _mr_images(anatomy: Anatomy, ordering: str, seeds: dict[str, int], ranges: DomainRanges,
               healthy_twin: bool = False) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Noise-free high-resolution images (with lesions[, without]) of one random MR appearance, and its draws."""
    rng = np.random.default_rng(seeds["appearance"])
    if ordering == "any":
        ordering = ranges.orderings[int(rng.integers(len(ranges.orderings)))]
    contrast = random_mr_contrast(ordering, rng, ranges)
    gamma = float(np.exp(rng.normal(0, ranges.gamma_log_std)))
    amplitude = float(rng.uniform(*ranges.bias_amplitude))
    bias = mri.bias_field(anatomy.grid.shape, rng, amplitude) if amplitude else 1.0
    texture_seed = int(rng.integers(2 ** 62))
    enhanced = None  # gadolinium shortens T1: the enhancing share goes to a level above white matter, on T1w
    if anatomy.enhancing is not None and ordering == "T1w":  # drawn last: samples without it stay as they were
        enhanced = float(rng.uniform(*ranges.enhancement_gain)) * contrast["means"]["wm"]
    images, high = [], None
    for i, fractions in enumerate([anatomy.fractions] + ([anatomy.healthy] if healthy_twin else [])):
        clean = render_mr(fractions, contrast, np.random.default_rng(texture_seed), anatomy.lesion_relaxation)
        if enhanced is not None:
            clean += anatomy.enhancing * (enhanced - clean)
        if high is None:  # one intensity curve for both twins
            positive = clean[clean > 0]
            high = float(np.percentile(positive, 99.5)) if positive.size else 1.0
        if enhanced is not None and i == 0 and anatomy.lesion_enhancing is not None:  # the lesions' rims: the
            clean += anatomy.lesion_enhancing * (enhanced - clean)  # lesioned image only, after the curve's level
        images.append((apply_gamma(clean, gamma, high) * bias).astype(np.float32))
    draws = {"ordering": ordering, "sequence": contrast["sequence"], "gamma": round(gamma, 3),
             "bias_amplitude": round(amplitude, 3),
             "tissue_means": {k: round(v, 1) for k, v in contrast["means"].items()},
             "enhancement": None if enhanced is None else round(enhanced, 1)}
    return images, draws


def _mr_acquisition(anatomy: Anatomy, images: list[np.ndarray], seeds: dict[str, int], ranges: DomainRanges,
                    keep: np.ndarray | None) -> tuple[list[Volume], list[Volume], dict[str, Any]]:
    """(noisy acquisitions, noise-free acquisitions, draws) of ``images``: resolution, slice profile, motion,
    Rician noise at a drawn SNR (one noise draw for all images: twins differ only where their anatomy does)."""
    rng = np.random.default_rng(seeds["acquisition"])
    axis = int(ranges.slice_axes[int(rng.integers(len(ranges.slice_axes)))])
    spacing = [float(rng.uniform(*ranges.inplane_mm))] * 3
    spacing[axis] = float(rng.uniform(*ranges.slice_mm))
    profile = ranges.profiles[int(rng.integers(len(ranges.profiles)))]
    thickness = spacing[axis] * float(rng.uniform(*ranges.slice_thickness_ratio))
    moved = rng.random() < ranges.motion
    motion_mm = float(rng.uniform(*ranges.motion_mm)) if moved else 0.0
    motion_seed = int(rng.integers(2 ** 62))
    signal = brain_signal(images[0], anatomy.fractions)
    snr = log_uniform(rng, ranges.snr)
    clean_volumes, draws = [], {}
    for image in images:
        if keep is not None:
            image = np.where(keep, image, 0).astype(np.float32)
        vol = acquire(anatomy.grid.with_array(image), tuple(spacing), slice_axis=axis, profile=profile,
                      thickness_mm=thickness)
        if moved:
            arr, draws["motion"] = motion_artifact(vol.array, np.random.default_rng(motion_seed),
                                                   vol.spacing[::-1], max_shift_mm=motion_mm, slice_axis=axis)
            vol = vol.with_array(arr)
        clean_volumes.append(vol)
    sigma = signal / snr
    noisy_arrays = mri.add_rician_noise([v.array for v in clean_volumes], sigma,
                                        np.random.default_rng(seeds["noise"]))
    if keep is not None:  # nothing was scanned outside the field of view
        seen = to_grid(anatomy.grid.with_array(keep.astype(np.float32)), clean_volumes[0], order=1) > 0.5
        noisy_arrays = [np.where(seen, a, 0).astype(np.float32) for a in noisy_arrays]
        clean_volumes = [v.with_array(np.where(seen, v.array, 0).astype(np.float32)) for v in clean_volumes]
    noisy = [v.with_array(a) for v, a in zip(clean_volumes, noisy_arrays)]
    draws.update(clean_volumes[0].metadata["acquisition"], snr=round(snr, 3), noise_sigma=round(float(sigma), 4),
                 brain_signal=round(signal, 3))
    draws.setdefault("motion", None)
    return noisy, clean_volumes, draws


def _background(target: str) -> float:
    return ct_model.TISSUE_HU["air"] if target == "CT" else 0.0


def _synthesize(anatomy, seeds, ranges, keep, source: str = "any", target: str = "T2w") -> dict[str, Any]:
    if source != "any" and source not in ORDERINGS:
        raise InputError(f"synthesize: source must be 'any' or one of {', '.join(ORDERINGS)}; got {source!r}.")
    images, appearance = _mr_images(anatomy, source, seeds, ranges)
    noisy, _, acquisition = _mr_acquisition(anatomy, images, seeds, ranges, keep)
    physical = physical_target(anatomy, target)
    if keep is not None:
        physical = np.where(keep, physical, _background(target)).astype(np.float32)
    units = {"modality": "CT", "units": "HU"} if target == "CT" else {"modality": "MR", "contrast": target,
                                                                      "units": "a.u."}
    return {"input": anatomy.grid.with_array(to_grid(noisy[0], anatomy.grid, order=1),
                                             metadata={"modality": "MR", "contrast": appearance["ordering"]}),
            "acquired": noisy[0], "target": anatomy.grid.with_array(physical, metadata=units),
            "meta": {"appearance": appearance, "acquisition": acquisition}}


def _ct_photons(noise_hu: float, pixel_mm: float) -> float:
    """Incident photons per bin and view that give ``noise_hu`` of brain noise on ``pixel_mm`` pixels."""
    return FULL_DOSE_PHOTONS * (CT_NOISE_AT_FULL_DOSE_2MM / noise_hu) ** 2 * (2.0 / pixel_mm) ** 3


def ct_full_dose_photons(noise_hu: float, pixel_mm: float, dose_fraction: float, kernel: str = "ramp",
                         cutoff: float = 1.0) -> float:
    """Full-dose incident photons per bin and view that give a low-dose image (``dose_fraction``) ``noise_hu`` of
    noise in brain on ``pixel_mm`` pixels reconstructed with ``kernel`` (the randomiser's CT noise calibration)."""
    return _ct_photons(noise_hu, pixel_mm) * kernel_noise_factor(kernel, cutoff) ** 2 / dose_fraction


def draw_ct_kernel(rng: np.random.Generator, ranges: DomainRanges) -> tuple[str, float]:
    """A reconstruction kernel and cutoff drawn from ``ranges`` ("ramp" is the plain full-band ramp, the sharpest
    kernel; the cutoff is drawn for the windowed ones; nothing is drawn for the ramp alone)."""
    if set(ranges.ct_kernels) == {"ramp"}:
        return "ramp", 1.0
    kernel, cutoff = str(rng.choice(ranges.ct_kernels)), float(rng.uniform(*ranges.ct_kernel_cutoff))
    return kernel, 1.0 if kernel == "ramp" else cutoff


def image_domain_low_dose(full: np.ndarray, noise_hu: float, rng: np.random.Generator,
                          ranges: DomainRanges) -> tuple[np.ndarray | None, dict[str, float]]:
    """With probability ``ranges.ct_image_noise``, a low-dose stand-in for the full-dose slices ``full`` (HU,
    (..., y, x)): ``full`` plus coloured noise (:func:`.lowdose.coloured_noise`) of ``noise_hu`` with a texture drawn
    from ``ranges``; else (None, {}). Draws nothing from ``rng`` when the probability is 0."""
    if ranges.ct_image_noise <= 0.0 or rng.random() >= ranges.ct_image_noise:
        return None, {}
    exponent = float(rng.uniform(*ranges.ct_image_noise_exponent))
    cutoff = log_uniform(rng, ranges.ct_image_noise_cutoff)
    low = full + coloured_noise(full.shape, noise_hu, exponent, cutoff, rng)
    return low.astype(np.float32), {"image_noise_exponent": round(exponent, 4), "image_noise_cutoff": round(cutoff, 4)}


def _ct_kernel(seeds: dict[str, int], ranges: DomainRanges) -> tuple[str, float]:
    """The sample's reconstruction kernel and cutoff, from a stream of its own."""
    return draw_ct_kernel(np.random.default_rng([seeds["acquisition"], 13]), ranges)


def _denoise_ct(anatomy, seeds, ranges, keep, real_ct: bool | None, slices: int | None, cache,
                slice_position: str = "central") -> dict[str, Any]:
    rng = np.random.default_rng(seeds["acquisition"])
    noise_hu, dose = log_uniform(rng, ranges.ct_noise_hu), float(rng.uniform(*ranges.ct_dose_fraction))
    pixel, thickness = float(rng.uniform(*ranges.ct_inplane_mm)), float(rng.uniform(*ranges.ct_slice_mm))
    use_real = rng.random() < ranges.real_ct_fraction if real_ct is None else real_ct
    names, message = real_ct_status(cache) if use_real else ([], "")
    if real_ct and not names:
        raise InputError(message)
    meta: dict[str, Any] = {"dose_fraction": round(dose, 4), "nominal_noise_hu": round(noise_hu, 2),
                            "real_ct": message or "phantom CT anatomy (real CT not drawn)"}
    noise_rng = np.random.default_rng(seeds["noise"])
    if names:
        slice_hu, pixel, meta["real_slice"] = random_real_slice(real_ct_volumes(cache), rng, ranges.ct_inplane_mm)
        stack, geometry = slice_hu[None], {"spacing": (pixel, pixel, 5.0), "direction": np.eye(3)}
    else:
        hu = ct_model.noiseless_ct(anatomy.fractions, anatomy.depth, random_ct_offsets(rng, ranges),
                                   anatomy.lesion_hu)
        if keep is not None:
            hu = np.where(keep, hu, ct_model.TISSUE_HU["air"]).astype(np.float32)
        vol = acquire(anatomy.grid.with_array(hu), (thickness, pixel, pixel), slice_axis=0, profile="box",
                      magnitude=False, inplane="gaussian")
        pixel = float(np.mean(vol.spacing[:2]))
        stack, geometry = vol.array, {"spacing": vol.spacing, "origin": vol.origin, "direction": vol.direction}
        if slices is not None:  # only some slices (2D training): each costs a projection and an FBP
            if slice_position == "random":  # its own stream: the other draws stay as they are
                first = int(np.random.default_rng([seeds["acquisition"], 11]).integers(
                    0, max(1, stack.shape[0] - slices + 1)))
            elif slice_position == "central":
                first = max(0, stack.shape[0] // 2 - slices // 2)
            else:
                raise InputError(f"denoise: slice_position must be 'central' or 'random'; got {slice_position!r}.")
            stack = stack[first:first + slices]
            geometry["origin"] = tuple(np.array(vol.origin) + vol.direction @ np.array([0, 0, first * vol.spacing[2]]))
    kernel, cutoff = _ct_kernel(seeds, ranges)
    full_photons = ct_full_dose_photons(noise_hu, pixel, dose, kernel, cutoff)
    pairs = [simulate_low_dose(s, dose, seed=int(noise_rng.integers(2 ** 31)), pixel_mm=pixel,
                               full_dose_photons=full_photons, kernel=kernel, cutoff=cutoff) for s in stack]
    low_hu, full_hu = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    image_low, drawn = image_domain_low_dose(full_hu, noise_hu, np.random.default_rng([seeds["noise"], 17]), ranges)
    if image_low is not None:
        low_hu = image_low
        meta.update(drawn)
    base = Volume(np.zeros(stack.shape, np.float32), **geometry)
    low = base.with_array(low_hu, metadata={"modality": "CT", "units": "HU", "dose_fraction": dose})
    full = base.with_array(full_hu, metadata={"modality": "CT", "units": "HU", "dose_fraction": 1.0})
    meta.update(pixel_mm=round(pixel, 4), full_dose_photons=round(full_photons, 1), kernel=kernel,
                cutoff=round(cutoff, 4))
    return {"input": low, "target": full, "meta": {"ct": meta}}


def _denoise(anatomy, seeds, ranges, keep, modality: str = "MR", ordering: str = "any", real_ct: bool | None = None,
             slices: int | None = None, cache=None, slice_position: str = "central") -> dict[str, Any]:
    if modality == "CT":
        return _denoise_ct(anatomy, seeds, ranges, keep, real_ct, slices, cache, slice_position)
    if modality != "MR":
        raise InputError(f"denoise: modality must be 'MR' or 'CT'; got {modality!r}.")
    images, appearance = _mr_images(anatomy, ordering, seeds, ranges)
    noisy, clean, acquisition = _mr_acquisition(anatomy, images, seeds, ranges, keep)
    meta = {"modality": "MR", "contrast": appearance["ordering"]}
    return {"input": noisy[0].with_array(noisy[0].array, metadata=meta),
            "target": clean[0].with_array(clean[0].array, metadata=meta),
            "meta": {"appearance": appearance, "acquisition": acquisition}}


def _superres(anatomy, seeds, ranges, keep, scale: tuple[int, int, int] | None = None, degrade: str | None = None,
              ordering: str = "any") -> dict[str, Any]:
    rng = np.random.default_rng(seeds["acquisition"])
    if scale is None:
        factor = int(rng.integers(ranges.sr_factor[0], ranges.sr_factor[1] + 1))
        axis = int(ranges.slice_axes[int(rng.integers(len(ranges.slice_axes)))])
        inplane = degrade == "kspace_truncate" or (degrade is None and rng.random() < 1 / 3)
        scale = tuple(factor if (a != axis) == inplane else 1 for a in range(3))
    scale = tuple(int(s) for s in scale)
    axes = tuple(a for a in range(3) if scale[a] > 1)
    if not axes or len({scale[a] for a in axes}) != 1:
        raise InputError(f"superres: scale needs one integer factor > 1 on the scaled axes; got {scale}.")
    factor = scale[axes[0]]
    choices = ("kspace_truncate",) if len(axes) > 1 else ("thick_slices", "kspace_truncate", "gaussian")
    degrade = degrade or choices[int(rng.integers(len(choices)))]
    if degrade not in choices:
        raise InputError(f"superres: degrade {degrade!r} cannot make scale {scale}; use {', '.join(choices)}.")
    images, appearance = _mr_images(anatomy, ordering, seeds, ranges)
    image = images[0] if keep is None else np.where(keep, images[0], 0).astype(np.float32)
    high = crop_to_multiple(anatomy.grid.with_array(image), factor, axes)
    if degrade == "thick_slices":
        low = thick_slices(high, factor, axes[0])
    elif degrade == "kspace_truncate":
        low = kspace_truncate(high, factor, axes)
    else:
        spacing = tuple(s * (factor if a in axes else 1) for a, s in enumerate(high.spacing[::-1]))
        low = acquire(high, spacing, slice_axis=axes[0], profile="gaussian")
    snr = log_uniform(rng, ranges.snr)
    sigma = brain_signal(images[0], anatomy.fractions) / snr
    noisy = mri.add_rician_noise([low.array], sigma, np.random.default_rng(seeds["noise"]))[0]
    meta = {"modality": "MR", "contrast": appearance["ordering"]}
    return {"input": low.with_array(noisy, metadata=meta), "target": high.with_array(high.array, metadata=meta),
            "meta": {"appearance": appearance, "superres": {"scale": list(scale), "degrade": degrade,
                                                            "snr": round(snr, 3), "noise_sigma": round(sigma, 4)}}}


def _anomaly(anatomy, seeds, ranges, keep, ordering: str = "any") -> dict[str, Any]:
    images, appearance = _mr_images(anatomy, ordering, seeds, ranges, healthy_twin=True)
    noisy, _, acquisition = _mr_acquisition(anatomy, images, seeds, ranges, keep)
    meta = {"modality": "MR", "contrast": appearance["ordering"]}
    lesioned, healthy = (anatomy.grid.with_array(to_grid(v, anatomy.grid, order=1), metadata=meta) for v in noisy)
    return {"input": lesioned, "target": healthy, "meta": {"appearance": appearance, "acquisition": acquisition}}


def _mask_sample(anatomy, seeds, ranges, keep, ordering: str, mask: np.ndarray) -> dict[str, Any]:
    """An MR acquisition of ``ordering`` brought back onto the anatomy grid, with ``mask`` (inside the field of
    view) as its 0/1 target."""
    images, appearance = _mr_images(anatomy, ordering, seeds, ranges)
    noisy, _, acquisition = _mr_acquisition(anatomy, images, seeds, ranges, keep)
    if keep is not None:
        mask = mask & keep
    return {"input": anatomy.grid.with_array(to_grid(noisy[0], anatomy.grid, order=1),
                                             metadata={"modality": "MR", "contrast": appearance["ordering"]}),
            "target": anatomy.grid.with_array(mask.astype(np.float32), metadata={"kind": "mask"}),
            "meta": {"appearance": appearance, "acquisition": acquisition}}


def _brainmask(anatomy, seeds, ranges, keep, ordering: str = "any") -> dict[str, Any]:
    return _mask_sample(anatomy, seeds, ranges, keep, ordering, intracranial(anatomy))


def _lesionmask(anatomy, seeds, ranges, keep, ordering: str = "FLAIR") -> dict[str, Any]:
    return _mask_sample(anatomy, seeds, ranges, keep, ordering, anatomy.lesion_labels > 0)


_TASK_FUNCTIONS = {"synthesize": _synthesize, "denoise": _denoise, "superres": _superres, "anomaly": _anomaly,
                   "brainmask": _brainmask, "lesionmask": _lesionmask}


def random_sample(task: str, rng: np.random.Generator, *, ranges: DomainRanges | None = None,
                  shape: tuple[int, int, int] = (96, 112, 96), spacing_mm: float = 2.0,
                  anatomy: Anatomy | None = None, **options: Any) -> dict[str, Any]:
    """One randomised sample of ``task`` (see the module docstring): {"input", "target", "labels", "meta"}.

    ``shape`` (z, y, x) voxels of ``spacing_mm`` (isotropic) is the target grid (the default covers a head at
    2 mm); ``anatomy`` reuses a drawn anatomy (the target then depends on it alone). The same ``rng`` state gives
    the same bytes.
    """
    if task not in _TASK_FUNCTIONS:
        raise InputError(f"Unknown task {task!r}; choose from {', '.join(TASKS)}.")
    ranges = ranges or DomainRanges()
    seeds = _streams(rng)
    if anatomy is None:
        anatomy = sample_anatomy(np.random.default_rng(seeds["anatomy"]), ranges, shape, spacing_mm)
    keep, box = _fov(anatomy.grid.shape, np.random.default_rng([seeds["acquisition"], 1]), ranges)
    stripped, margin = _strip(anatomy, np.random.default_rng([seeds["acquisition"], 2]), ranges)
    if stripped is not None:
        keep = stripped if keep is None else keep & stripped
    out = _TASK_FUNCTIONS[task](anatomy, seeds, ranges, keep, **options)
    out["labels"] = _labels(anatomy, keep)
    out["meta"].update(task=task, options=options, seeds=seeds, anatomy=anatomy.draws, lesions=anatomy.lesions,
                       fov_box=box, skull_strip_margin_mm=margin)
    return out


class DomainRandomizer:
    """Seeded sample stream: ``DomainRandomizer(seed).sample(task, index, **options)`` is
    :func:`random_sample` with ``rng = default_rng([seed, index])`` (the same seed and index give the same bytes).

    Example:
        >>> gen = DomainRandomizer(7, DomainRanges(snr=(10.0, 20.0)), shape=(24, 48, 48))  # doctest: +SKIP
        >>> s = gen.sample("synthesize", 0, source="T1w", target="T2w")                     # doctest: +SKIP
        >>> s["input"].shape, s["target"].metadata["contrast"]                               # doctest: +SKIP
        ((24, 48, 48), 'T2w')
    """

    def __init__(self, seed: int, ranges: DomainRanges | dict[str, Any] | None = None, *,
                 shape: tuple[int, int, int] = (96, 112, 96), spacing_mm: float = 2.0):
        self.seed = int(seed)
        self.ranges = ranges if isinstance(ranges, DomainRanges) else DomainRanges.from_dict(ranges)
        self.shape, self.spacing_mm = tuple(int(n) for n in shape), float(spacing_mm)

    def sample(self, task: str, index: int, **options: Any) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, int(index)])
        return random_sample(task, rng, ranges=self.ranges, shape=self.shape, spacing_mm=self.spacing_mm,
                             **options)

    def arrays(self, task: str, count: int, keys: Sequence[str], workers: int | None = None,
               **options: Any) -> Iterator[dict[str, np.ndarray]]:
        """``{key: float32 array}`` of samples 0 .. ``count`` - 1 of :meth:`sample`, in order, drawn by ``workers``
        processes (default :func:`sample_workers`). Each sample is seeded by its index alone, so the arrays are the
        same however many processes draw them."""
        draw = functools.partial(_sample_arrays, self, task, tuple(keys), options)
        yield from forked_map(draw, range(count), sample_workers(count) if workers is None else int(workers))


def forked_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int, chunksize: int = 1) -> Iterator[Any]:
    """``map(fn, items)`` in order, over ``workers`` forked processes (in this process for 1 or fewer).

    Forked workers (as torch's DataLoader forks them) inherit the loaded modules and what the caller loaded before
    the call; they run no torch code. Spawned ones would re-run the caller's main script (a user's script without a
    ``__main__`` guard, Slicer's console), so where fork is missing (Windows) everything runs here."""
    import multiprocessing

    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield from map(fn, items)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        yield from pool.map(fn, items, chunksize=chunksize)


def sample_workers(count: int) -> int:
    """Processes that draw ``count`` randomised samples: ``$MEDGAN_SAMPLE_WORKERS`` where set, else one per CPU
    core this process may use (at most 8) for 16 samples or more (a 1 mm head takes seconds to draw; a process
    starts in about one), else 1 (in this process)."""
    text = os.environ.get("MEDGAN_SAMPLE_WORKERS", "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise InputError(f"MEDGAN_SAMPLE_WORKERS must be a whole number of processes >= 1; got {text!r}.")
        return int(text)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 8) if count >= 16 else 1


def _sample_arrays(generator: DomainRandomizer, task: str, keys: tuple[str, ...], options: dict[str, Any],
                   index: int) -> dict[str, np.ndarray]:
    """The ``keys`` of sample ``index`` as float32 arrays (what a worker process sends back)."""
    sample = generator.sample(task, index, **options)
    return {key: np.asarray(sample[key].array, np.float32) for key in keys}


def main(argv: list[str] | None = None) -> int:
    """``python -m MedGANLogic.simulate.randomize --png OUT.png [--seed N]``: a picture of randomised samples."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m MedGANLogic.simulate.randomize", description=main.__doc__)
    parser.add_argument("--png", default="Testing/Reports/randomized_samples.png", help="picture to write")
    parser.add_argument("--seed", type=int, default=15, help="generator seed")
    args = parser.parse_args(argv)
    from .randomize_figure import make_figure

    print(make_figure(args.png, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
