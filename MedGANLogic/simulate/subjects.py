"""Distinct subjects from the one template: deformation, affine, intensity variation, lesions, all seeded.

A subject is the template's tissue fractions resampled through a seeded smooth random elastic deformation
(about 3 mm) and a small affine (rotation up to 5 degrees, scaling up to 5 %, shift up to 4 mm), on a grid of
``spacing_mm`` covering the template's field of view. All contrasts and the CT of a subject are made from the
same fractions (paired data). Per subject, relaxation times vary by about 4 %, CT numbers by about 3 HU, the MR
gain by about 10 %, and a smooth multiplicative bias field (about +-15 %) changes each MR volume.

Lesions (:func:`add_lesions`) are irregular blobs in white matter of two kinds, oedema/tumour-like and MS-like,
each with its own relaxation times and HU and a smooth internal texture. Every subject is rendered twice with
the same anatomy, bias field and noise draw: with lesions, and without (``Subject.healthy``), so the two differ
exactly where the lesion mask is set.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ..errors import InputError
from ..volume import Volume
from . import ct as ct_model
from . import mri
from .tissue import AIR, GM, LESION, TISSUES, WM, template_tissues

LESION_KIND_NAMES = tuple(mri.LESION_KINDS)

# Subject seeds of the named splits; they never overlap.
SPLITS: dict[str, tuple[int, ...]] = {
    "train": tuple(range(0, 40)),
    "val": tuple(range(1000, 1010)),
    "test": tuple(range(2000, 2010)),
}
ALL_CONTRASTS = (*mri.CONTRASTS, "CT")


@dataclass
class Subject:
    """One phantom subject.

    ``volumes``: "T1w", "T2w", "PD", "FLAIR" (MR, a.u., metadata {"modality": "MR", "contrast"}), "CT" (HU,
    {"modality": "CT", "units": "HU"}) and "lesion_mask" (uint8 0/1), all on one grid; ``tissues``: fractions
    (n_tissues, z, y, x) float32 summing to 1, named by ``tissue_names``; ``head_mask``: bool (z, y, x), voxels
    less than half air; ``healthy``: the same subject without lesions (its own ``healthy`` is None);
    ``lesions``: one dict per lesion (label, kind, centre_zyx, radius_mm, voxels); ``lesion_labels``: int16
    (z, y, x) map of lesion labels (None for the healthy twin).
    """

    seed: int
    volumes: dict[str, Volume]
    tissues: np.ndarray
    head_mask: np.ndarray
    tissue_names: tuple[str, ...] = TISSUES
    healthy: Subject | None = None
    lesions: list[dict] = field(default_factory=list)
    lesion_labels: np.ndarray | None = None


def _grid(spacing_mm: float) -> tuple[Volume, np.ndarray]:
    """The subject grid (template field of view at ``spacing_mm``) and its index -> template index matrix."""
    _, template, _ = template_tissues()
    scale = tuple(float(s) / spacing_mm for s in template.spacing[::-1])
    geo = template.resampled_grid(scale)
    shape = geo.pop("shape")
    grid = Volume(np.zeros(shape, np.uint8), **geo)
    to_template = np.linalg.inv(template.ijk_to_lps()) @ grid.ijk_to_lps()
    return grid, to_template


@functools.lru_cache(maxsize=64)
def _cubic_weights(coarse: int, n: int) -> np.ndarray:
    """(n, coarse) weights of cubic-spline zooming ``coarse`` lattice points to ``n`` samples (mode nearest)."""
    eye = np.eye(coarse, dtype=np.float64)
    return np.stack([ndimage.zoom(e, n / coarse, order=3, mode="nearest")[:n] for e in eye], axis=1)


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, coarse: int = 6) -> np.ndarray:
    """A smooth random field (standard normal on a coarse lattice, cubic-spline upsampled to ``shape``).

    The 3D spline zoom is separable, so it is three small matrix products instead of a full-grid zoom.
    """
    lattice = rng.normal(0, 1, (coarse, coarse, coarse))
    wz, wy, wx = (_cubic_weights(coarse, int(n)) for n in shape)
    return np.einsum("abc,za,yb,xc->zyx", lattice, wz, wy, wx, optimize=True).astype(np.float32)


def _sampling_coordinates(grid: Volume, to_template: np.ndarray, rng: np.random.Generator,
                          elastic_mm: float, rotate_deg: float, scale: float, shift_mm: float) -> np.ndarray:
    shape = grid.shape
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    centre = (np.array(shape[::-1], np.float32) - 1) / 2  # (i, j, k)
    rot = Rotation.from_euler("xyz", rng.uniform(-rotate_deg, rotate_deg, 3), degrees=True).as_matrix()
    zoom = 1 + rng.uniform(-scale, scale, 3)
    affine = rot @ np.diag(zoom)
    shift = rng.uniform(-shift_mm, shift_mm, 3) / np.array(grid.spacing)
    ijk = np.stack([i, j, k]).reshape(3, -1) - centre[:, None]
    ijk = (affine @ ijk) + centre[:, None] + shift[:, None]
    ijk = ijk.reshape(3, *shape)
    for axis in range(3):  # elastic part, in mm converted to grid voxels along each axis
        ijk[axis] += _smooth_field(shape, rng) * np.float32(elastic_mm / grid.spacing[axis])
    hom = np.concatenate([ijk.reshape(3, -1), np.ones((1, ijk[0].size), np.float32)])
    tpl = (to_template @ hom)[:3].reshape(3, *shape)  # template (i, j, k)
    return tpl[::-1]  # (k, j, i) = array order for map_coordinates


def _blur_for_spacing(fractions: np.ndarray, spacing_mm: float) -> np.ndarray:
    sigma = 0.4 * max(spacing_mm - 1.0, 0.0)
    if sigma == 0:
        return fractions
    return np.stack([ndimage.gaussian_filter(f, sigma) if i not in (AIR, LESION) else f
                     for i, f in enumerate(fractions)])


@functools.lru_cache(maxsize=2)
def _cached_blurred(spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The template's fractions smoothed for sampling at ``spacing_mm`` (anti-aliasing), and its depth map."""
    fractions, _, depth = template_tissues()
    return _blur_for_spacing(fractions, spacing_mm), depth


def add_lesions(fractions: np.ndarray, grid: Volume, rng: np.random.Generator, n_lesions: int,
                radius_mm: tuple[float, float], kinds: tuple[str, ...] = LESION_KIND_NAMES
                ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Irregular lesions centred in white matter: (label map (z, y, x) int16, new fractions, description).

    Each lesion is a ball of radius ``radius_mm`` (drawn per lesion) whose surface is pushed in and out by a smooth
    random field (+-35 % of the radius), cut to brain parenchyma (GM + WM > 0.5); label k > 0 marks lesion k
    (a later lesion overwrites an earlier one where they touch). Inside the labels the tissue is replaced by the
    lesion class (fraction 1), so the lesions change exactly the voxels of the mask on every sequence.
    """
    for kind in kinds:
        if kind not in LESION_KIND_NAMES:
            raise InputError(f"Unknown lesion kind {kind!r}; choose from {', '.join(LESION_KIND_NAMES)}.")
    labels = np.zeros(grid.shape, np.int16)
    brain = (fractions[WM] + fractions[GM]) > 0.5
    wm_core = fractions[WM] > 0.7
    candidates = np.argwhere(ndimage.binary_erosion(wm_core, iterations=1))
    described: list[dict] = []
    spacing_zyx = np.array(grid.spacing[::-1])
    for _ in range(n_lesions):
        if not len(candidates) or not kinds:
            break
        centre = candidates[rng.integers(len(candidates))]
        radius = rng.uniform(*radius_mm)
        kind = kinds[int(rng.integers(len(kinds)))]
        half = np.ceil(1.6 * radius / spacing_zyx).astype(int) + 1
        lo = np.maximum(centre - half, 0)
        hi = np.minimum(centre + half + 1, grid.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        zz, yy, xx = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
        d = np.sqrt(sum(((c - m) * s) ** 2 for c, m, s in zip((zz, yy, xx), centre, spacing_zyx))) / radius
        bumps = _smooth_field(d.shape, rng, coarse=4) * 0.35
        blob = ((d + bumps) < 1.0) & brain[box]
        labels[box][blob] = len(described) + 1
        described.append({"label": len(described) + 1, "kind": kind, "centre_zyx": centre.tolist(),
                          "radius_mm": round(float(radius), 2), "voxels": int(blob.sum())})
    mask = labels > 0
    for lesion in described:
        lesion["voxels"] = int((labels == lesion["label"]).sum())
    out = fractions.copy()
    out[:, mask] = 0.0
    out[LESION, mask] = 1.0
    return labels, out, described


def _lesion_appearance(labels: np.ndarray, described: list[dict], rng: np.random.Generator
                       ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Per-voxel (T1, T2, PD) and HU of the lesion class: each lesion's kind, varied per lesion (T1, T2 +-8 %,
    HU +-3) and inside it (a smooth texture, T2 +-10 %, T1 +-5 %)."""
    t1, t2 = np.ones(labels.shape, np.float32), np.ones(labels.shape, np.float32)
    pd = np.ones(labels.shape, np.float32)
    hu = np.zeros(labels.shape, np.float32)
    texture = _smooth_field(labels.shape, rng, coarse=12) if described else None
    for lesion in described:
        where = labels == lesion["label"]
        k_t1, k_t2, k_pd = mri.LESION_KINDS[lesion["kind"]]
        scale_t1, scale_t2 = 1 + rng.normal(0, 0.08, 2)
        t1[where] = k_t1 * scale_t1 * (1 + 0.05 * texture[where])
        t2[where] = k_t2 * scale_t2 * (1 + 0.10 * texture[where])
        pd[where] = k_pd
        hu[where] = ct_model.LESION_HU[lesion["kind"]] + rng.normal(0, 3)
    return (t1, t2, pd), hu


def make_subject(seed: int, *, spacing_mm: float = 2.0, n_lesions: int = 3,
                 lesion_radius_mm: tuple[float, float] = (4.0, 12.0), snr: float = 30.0,
                 contrasts: tuple[str, ...] = ALL_CONTRASTS, lesion_kinds: tuple[str, ...] = LESION_KIND_NAMES,
                 elastic_mm: float = 3.0, bias_amplitude: float = 0.15) -> Subject:
    """Make one subject (with lesions) and its lesion-free twin.

    Args:
        seed: subject seed (see :data:`SPLITS`); the same seed (and options) gives the same bytes.
        spacing_mm: isotropic voxel size of the subject grid in mm (2 mm by default: fast on a CPU;
            1 mm = the template's resolution). The grid covers the template's field of view.
        n_lesions, lesion_radius_mm: number of lesions (0 for none) and the range their radii (mm) are drawn from.
        snr: MR signal-to-noise ratio of every sequence: its mean GM/WM signal over the noise standard deviation.
        contrasts: which of "T1w", "T2w", "PD", "FLAIR", "CT" to make (a contrast's bytes do not depend on
            which others are made).
        lesion_kinds: kinds each lesion is drawn from: "oedema" (tumour/oedema-like), "ms" (plaque-like).
        elastic_mm, bias_amplitude: size of the random elastic deformation (mm) and of the MR bias field.

    Returns:
        A :class:`Subject`: MR volumes in arbitrary units (WM on T1w about 400), CT in HU, "lesion_mask" (uint8
        0/1), all on one grid; ``healthy``, the same subject (anatomy, bias, noise) without lesions.
    """
    validate_options(contrasts=contrasts, snr=snr, spacing_mm=spacing_mm)
    rng = np.random.default_rng([int(seed), 20261125])
    grid, to_template = _grid(spacing_mm)
    template, depth_t = _cached_blurred(round(float(spacing_mm), 4))
    coords = _sampling_coordinates(grid, to_template, rng, elastic_mm, 5.0, 0.05, 4.0)
    # linear interpolation keeps the sum of the fractions at one: air is what the others leave
    fractions = np.zeros((len(TISSUES),) + grid.shape, np.float32)
    for i in range(len(TISSUES)):
        if i not in (AIR, LESION):
            fractions[i] = ndimage.map_coordinates(template[i], coords, order=1, mode="nearest")
    fractions[AIR] = np.clip(1.0 - fractions.sum(axis=0), 0, None)
    fractions /= fractions.sum(axis=0)
    depth = ndimage.map_coordinates(depth_t, coords, order=1, mode="nearest")
    head = fractions[AIR] < 0.5

    # per-subject tissue variation: relaxation times and HU +- a few percent
    params = {name: tuple(v * (1 + rng.normal(0, 0.04)) if k < 2 else v for k, v in enumerate(p))
              for name, p in mri.TISSUE_PARAMS.items()}
    hu_offsets = {name: float(rng.normal(0, 3)) for name in ("gm", "wm", "csf", "soft", "fat")}
    labels, lesioned, described = add_lesions(fractions, grid, rng, n_lesions, lesion_radius_mm, lesion_kinds)
    noise_seed = int(rng.integers(2 ** 31))
    bias = mri.bias_field(grid.shape, rng, bias_amplitude) if bias_amplitude else None
    gain = float(np.exp(rng.normal(0, 0.1)))
    relaxation, lesion_hu = _lesion_appearance(labels, described, rng)

    healthy_vols: dict[str, Volume] = {}
    vols: dict[str, Volume] = {}
    for i, contrast in enumerate(mri.CONTRASTS):
        if contrast not in contrasts:
            continue
        # SNR of each sequence: its mean brain (GM/WM) signal over the noise standard deviation
        brain = 0.5 * (mri.tissue_signal(contrast, *params["wm"]) + mri.tissue_signal(contrast, *params["gm"]))
        pair = []
        for fr in (fractions, lesioned):
            s = mri.noiseless_contrast(fr, contrast, params, relaxation) * np.float32(gain)
            pair.append(s * bias if bias is not None else s)
        sigma = brain * mri.SIGNAL_SCALE * gain / snr
        noisy = mri.add_rician_noise(pair, sigma, np.random.default_rng([noise_seed, i]))
        meta = {"modality": "MR", "contrast": contrast, "units": "a.u.", "subject_seed": seed}
        healthy_vols[contrast] = grid.with_array(noisy[0], metadata=meta)
        vols[contrast] = grid.with_array(noisy[1], metadata=meta)
    if "CT" in contrasts:
        noise = ct_model.ct_noise(grid.shape, np.random.default_rng([noise_seed, 99]))
        meta = {"modality": "CT", "units": "HU", "subject_seed": seed}
        healthy_vols["CT"] = grid.with_array(ct_model.noiseless_ct(fractions, depth, hu_offsets) + noise,
                                             metadata=meta)
        vols["CT"] = grid.with_array(ct_model.noiseless_ct(lesioned, depth, hu_offsets, lesion_hu) + noise,
                                     metadata=meta)
    meta = {"kind": "labels", "modality": "mask", "segment_names": {1: "lesion"}, "subject_seed": seed}
    vols["lesion_mask"] = grid.with_array((labels > 0).astype(np.uint8), metadata=meta)
    healthy_vols["lesion_mask"] = grid.with_array(np.zeros(grid.shape, np.uint8), metadata=meta)
    healthy = Subject(seed, healthy_vols, fractions, head)
    return Subject(seed, vols, lesioned, head, healthy=healthy, lesions=described, lesion_labels=labels)


def validate_options(*, contrasts=ALL_CONTRASTS, snr: float = 30.0, spacing_mm: float = 2.0,
                     dose: float | None = None) -> None:
    """One-line errors for what `medgan simulate` cannot make, raised before anything is written."""
    unknown = [c for c in contrasts if c not in ALL_CONTRASTS]
    if unknown:
        raise InputError(f"Unknown contrast(s) {', '.join(unknown)}; choose from {', '.join(ALL_CONTRASTS)}.")
    if not snr > 0:
        raise InputError(f"SNR must be positive; got {snr}.")
    if not 0.5 <= spacing_mm <= 8:
        raise InputError(f"spacing must be between 0.5 and 8 mm; got {spacing_mm}.")
    if dose is not None and not 0 < dose <= 1:
        raise InputError(f"Dose fraction must be in (0, 1]; got {dose} (0.25 = quarter dose).")
