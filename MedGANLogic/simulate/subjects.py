"""Distinct subjects from the one template: deformation, affine, intensity variation, lesions, all seeded.

A subject is the template's tissue fractions resampled through a seeded smooth random elastic deformation
(about 3 mm) and a small affine (rotation up to 5 degrees, scaling up to 5 %, shift up to 4 mm), on a grid of
``spacing_mm`` covering the template's field of view. All contrasts and the CT of a subject are made from the
same fractions (paired data). Every subject is made twice from one random stream: with lesions, and without
(``Subject.healthy``); noise, bias field and deformation are identical, so the two differ exactly where the
lesion mask is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ..errors import InputError
from ..volume import Volume
from . import ct as ct_model
from . import mri
from .tissue import GM, LESION, TISSUES, WM, template_tissues

# Subject seeds of the named splits; they never overlap.
SPLITS: dict[str, tuple[int, ...]] = {
    "train": tuple(range(0, 40)),
    "val": tuple(range(1000, 1010)),
    "test": tuple(range(2000, 2010)),
}
ALL_CONTRASTS = (*mri.CONTRASTS, "CT")


@dataclass
class Subject:
    """One phantom subject. ``volumes``: "T1w", "T2w", "PD", "FLAIR" (MR, a.u.), "CT" (HU), "lesion_mask" (uint8);
    ``tissues``: fractions (n_tissues, z, y, x) named by ``tissue_names``; ``head_mask``: bool (z, y, x);
    ``healthy``: the same subject without lesions (its own ``healthy`` is None)."""

    seed: int
    volumes: dict[str, Volume]
    tissues: np.ndarray
    head_mask: np.ndarray
    tissue_names: tuple[str, ...] = TISSUES
    healthy: Subject | None = None
    lesions: list[dict] = field(default_factory=list)


def _grid(spacing_mm: float) -> tuple[Volume, np.ndarray]:
    """The subject grid (template field of view at ``spacing_mm``) and its index -> template index matrix."""
    _, template, _ = template_tissues()
    scale = tuple(float(s) / spacing_mm for s in template.spacing[::-1])
    geo = template.resampled_grid(scale)
    shape = geo.pop("shape")
    grid = Volume(np.zeros(shape, np.uint8), **geo)
    to_template = np.linalg.inv(template.ijk_to_lps()) @ grid.ijk_to_lps()
    return grid, to_template


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, coarse: int = 6) -> np.ndarray:
    """A smooth random field in [-1, 1]-ish: noise on a coarse lattice, cubic-upsampled to ``shape``."""
    lattice = rng.normal(0, 1, (coarse, coarse, coarse)).astype(np.float32)
    zoom = [n / coarse for n in shape]
    return ndimage.zoom(lattice, zoom, order=3, mode="nearest")[: shape[0], : shape[1], : shape[2]]


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
    return np.stack([ndimage.gaussian_filter(f, sigma) for f in fractions])


def _cached_blurred(spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    key = round(float(spacing_mm), 4)
    if key not in _BLURRED:
        fractions, _, depth = template_tissues()
        _BLURRED.clear()
        _BLURRED[key] = (_blur_for_spacing(fractions, spacing_mm), depth)
    return _BLURRED[key]


_BLURRED: dict[float, tuple[np.ndarray, np.ndarray]] = {}


def add_lesions(fractions: np.ndarray, grid: Volume, rng: np.random.Generator, n_lesions: int,
                radius_mm: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Irregular lesions (distorted blobs) centred in white matter: (binary mask, new fractions, description).

    Inside the mask the tissue is replaced by the lesion class (fraction 1), so the lesion changes exactly the
    voxels of its mask on every sequence.
    """
    mask = np.zeros(grid.shape, bool)
    brain = (fractions[WM] + fractions[GM]) > 0.5
    wm_core = fractions[WM] > 0.7
    candidates = np.argwhere(ndimage.binary_erosion(wm_core, iterations=1))
    described = []
    spacing_zyx = np.array(grid.spacing[::-1])
    for _ in range(n_lesions):
        if not len(candidates):
            break
        centre = candidates[rng.integers(len(candidates))]
        radius = rng.uniform(*radius_mm)
        half = np.ceil(1.6 * radius / spacing_zyx).astype(int) + 1
        lo = np.maximum(centre - half, 0)
        hi = np.minimum(centre + half + 1, grid.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        zz, yy, xx = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
        d = np.sqrt(sum(((c - m) * s) ** 2 for c, m, s in zip((zz, yy, xx), centre, spacing_zyx))) / radius
        bumps = _smooth_field(d.shape, rng, coarse=4) * 0.35
        blob = (d + bumps) < 1.0
        blob &= brain[box]
        mask[box] |= blob
        described.append({"centre_zyx": centre.tolist(), "radius_mm": round(float(radius), 2),
                          "voxels": int(blob.sum())})
    out = fractions.copy()
    out[:, mask] = 0.0
    out[LESION, mask] = 1.0
    return mask, out, described


def make_subject(seed: int, *, spacing_mm: float = 2.0, n_lesions: int = 3,
                 lesion_radius_mm: tuple[float, float] = (4.0, 12.0), snr: float = 30.0,
                 contrasts: tuple[str, ...] = ALL_CONTRASTS, elastic_mm: float = 3.0,
                 bias_amplitude: float = 0.15) -> Subject:
    """Make one subject (with lesions) and its lesion-free twin.

    Args:
        seed: subject seed (see :data:`SPLITS`); the same seed gives the same bytes.
        spacing_mm: isotropic voxel size of the subject grid (2 mm by default: fast on a CPU; 1 mm = template).
        n_lesions, lesion_radius_mm: number and radius range of the lesions (0 for none).
        snr: MR signal-to-noise ratio of every sequence: mean GM/WM signal over the noise standard deviation.
        contrasts: which of "T1w", "T2w", "PD", "FLAIR", "CT" to make.
    """
    validate_options(contrasts=contrasts, snr=snr, spacing_mm=spacing_mm)
    rng = np.random.default_rng([int(seed), 20261125])
    grid, to_template = _grid(spacing_mm)
    template, depth_t = _cached_blurred(spacing_mm)
    coords = _sampling_coordinates(grid, to_template, rng, elastic_mm, 5.0, 0.05, 4.0)
    fractions = np.stack([ndimage.map_coordinates(f, coords, order=1, mode="nearest") for f in template])
    fractions = np.clip(fractions, 0, None)
    fractions /= np.maximum(fractions.sum(axis=0), 1e-12)
    depth = ndimage.map_coordinates(depth_t, coords, order=1, mode="nearest")
    head = fractions[0] < 0.5

    # per-subject tissue variation: relaxation times and HU +- a few percent
    params = {name: tuple(v * (1 + rng.normal(0, 0.04)) if k < 2 else v for k, v in enumerate(p))
              for name, p in mri.TISSUE_PARAMS.items()}
    hu_offsets = {name: float(rng.normal(0, 3)) for name in ("gm", "wm", "csf", "soft", "fat", "lesion")}
    lesion_mask, lesioned, described = add_lesions(fractions, grid, rng, n_lesions, lesion_radius_mm)
    noise_seed = int(rng.integers(2 ** 31))
    bias = mri.bias_field(grid.shape, rng, bias_amplitude) if bias_amplitude else None
    gain = float(np.exp(rng.normal(0, 0.1)))

    def render(fr: np.ndarray) -> dict[str, Volume]:
        vols: dict[str, Volume] = {}
        for i, contrast in enumerate(mri.CONTRASTS):
            if contrast not in contrasts:
                continue
            # SNR of each sequence: its mean brain (GM/WM) signal over the noise standard deviation
            brain = 0.5 * (mri.tissue_signal(contrast, *params["wm"]) + mri.tissue_signal(contrast, *params["gm"]))
            s = mri.noiseless_contrast(fr, contrast, params) * np.float32(gain)
            if bias is not None:
                s *= bias
            sigma = brain * mri.SIGNAL_SCALE * gain / snr
            noisy = mri.add_rician_noise(s, sigma, np.random.default_rng([noise_seed, i]))
            vols[contrast] = grid.with_array(noisy, metadata={"modality": "MR", "contrast": contrast,
                                                              "units": "a.u.", "subject_seed": seed})
        if "CT" in contrasts:
            hu = ct_model.pseudo_ct(fr, depth, hu_offsets, rng=np.random.default_rng([noise_seed, 99]))
            vols["CT"] = grid.with_array(hu, metadata={"modality": "CT", "units": "HU", "subject_seed": seed})
        return vols

    healthy_vols = render(fractions)
    vols = render(lesioned)
    meta = {"kind": "labels", "modality": "mask", "segment_names": {1: "lesion"}, "subject_seed": seed}
    vols["lesion_mask"] = grid.with_array(lesion_mask.astype(np.uint8), metadata=meta)
    healthy_vols["lesion_mask"] = grid.with_array(np.zeros(grid.shape, np.uint8), metadata=meta)
    healthy = Subject(seed, healthy_vols, fractions, head)
    return Subject(seed, vols, lesioned, head, healthy=healthy, lesions=described)


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
