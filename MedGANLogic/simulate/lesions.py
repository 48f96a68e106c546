"""Plausible lesion masks of three types, with location priors, and their MR appearance. All draws are seeded.

Lesion types (:data:`LESION_TYPES`):
  * ``wmh``: white-matter hyperintensities / MS-like plaques: 1-4 small ovoid blobs (2-7 mm semi-axes) in white
    matter, most of them periventricular (in the deepest third of the brain);
  * ``tumour``: a tumour-like core (5-14 mm) in deep white matter inside a shell of vasogenic oedema (3-12 mm
    thick) that spreads through white matter and stays out of the cortex;
  * ``ischaemic``: a wedge (vascular-territory-like) from the brain surface inwards, cortex and subcortical white
    matter together, 12-35 mm deep, 15-30 degrees half-opening.

Location priors (:class:`LesionPriors`) come from a tissue map (:func:`priors_from_tissues`, the phantom) or, for
any image of unknown contrast, from its intensities (:func:`priors_from_image`: head mask, depth below the head's
surface, and white matter as the intensity class that fills the deep brain). :func:`random_lesion_mask` returns a
label map: 0 background, 1 lesion (for ``tumour``: the oedema), 2 the tumour core.

Relaxation times (T1, T2 ms, PD) between white matter and CSF, as free water raises both: WMH 900/120/0.85 (the
phantom's "ms" kind), tumour core 1400/150/0.90 and oedema 1100/200/0.95, ischaemic (cytotoxic + vasogenic
oedema) 1300/260/0.92; each lesion varies by 8 % and has a smooth inner texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..lesion_types import LESION_TYPE_NAMES, LESION_TYPES
from ..volume import Volume
from .tissue import GM, WM

#: (T1 ms, T2 ms, PD) per lesion part: "wmh", "tumour" (the oedema), "tumour_core", "ischaemic".
RELAXATION = {"wmh": (900.0, 120.0, 0.85), "tumour": (1100.0, 200.0, 0.95), "tumour_core": (1400.0, 150.0, 0.90),
              "ischaemic": (1300.0, 260.0, 0.92)}
#: CT numbers (HU) of the same parts.
LESION_HU = {"wmh": 24.0, "tumour": 18.0, "tumour_core": 30.0, "ischaemic": 15.0}


def check_lesion_type(lesion_type: str) -> str:
    if lesion_type not in LESION_TYPES:
        raise InputError(f"Unknown lesion type {lesion_type!r}; choose from {', '.join(LESION_TYPES)}.")
    return lesion_type


@dataclass
class LesionPriors:
    """Where lesions may go, on a (z, y, x) grid of ``spacing_zyx`` mm.

    ``brain``: bool, the parenchyma; ``white_matter``: bool; ``depth_mm``: float32, distance below the brain's
    surface in mm (0 outside the brain).
    """

    brain: np.ndarray
    white_matter: np.ndarray
    depth_mm: np.ndarray
    spacing_zyx: tuple[float, float, float]

    @classmethod
    def from_masks(cls, brain: np.ndarray, white_matter: np.ndarray, spacing_zyx) -> LesionPriors:
        brain = brain.astype(bool)
        depth = ndimage.distance_transform_edt(brain, sampling=spacing_zyx).astype(np.float32)
        return cls(brain, white_matter.astype(bool) & brain, depth, tuple(float(s) for s in spacing_zyx))


def priors_from_tissues(fractions: np.ndarray, spacing_zyx) -> LesionPriors:
    """Priors from tissue fractions (n_tissues, z, y, x) named by :data:`.tissue.TISSUES` (CSF counts as outside
    the brain, so the ventricles' walls are the brain's deepest surface too)."""
    brain = (fractions[GM] + fractions[WM]) > 0.5
    return LesionPriors.from_masks(brain, fractions[WM] > 0.6, spacing_zyx)


def priors_from_image(volume: Volume, brain_depth_mm: float = 10.0) -> LesionPriors:
    """Priors from an image of any contrast: the head mask less its outer ``brain_depth_mm`` (scalp and skull),
    three intensity classes (multi-Otsu) inside it, and white matter as the class holding most of the deep brain
    (the central third by depth), which is true of T1w, T2w, PD and FLAIR heads alike."""
    from skimage.filters import threshold_multiotsu

    from ..normalization import head_mask

    spacing = volume.spacing[::-1]
    array = volume.array.astype(np.float32, copy=False)
    head = head_mask(array)
    depth = ndimage.distance_transform_edt(head, sampling=spacing)
    brain = head & (depth > brain_depth_mm)
    if brain.sum() < 64:
        raise InputError("The image shows too little head to place a lesion (less than 64 voxels deeper than "
                         f"{brain_depth_mm:g} mm below its surface); draw the lesion mask yourself (--mask).")
    values = array[brain]
    classes = np.digitize(array, threshold_multiotsu(values, classes=3))
    deep = brain & (depth > np.percentile(depth[brain], 66))
    wm_class = int(np.bincount(classes[deep], minlength=3).argmax())
    white = ndimage.binary_opening(brain & (classes == wm_class))
    return LesionPriors.from_masks(brain, white, spacing)


def _blob(priors: LesionPriors, centre: np.ndarray, semi_axes_mm: np.ndarray, rng: np.random.Generator,
          bumpiness: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """(box, bool blob in the box): an ellipsoid of random orientation with a bumpy surface around ``centre``."""
    from scipy.spatial.transform import Rotation

    spacing = np.array(priors.spacing_zyx)
    half = np.ceil(1.5 * semi_axes_mm.max() / spacing).astype(int) + 1
    lo, hi = np.maximum(centre - half, 0), np.minimum(centre + half + 1, priors.brain.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    offsets = np.stack(np.meshgrid(*(np.arange(a, b) - c for a, b, c in zip(lo, hi, centre)), indexing="ij"))
    rotation = Rotation.random(random_state=rng).as_matrix()
    local = np.tensordot(rotation.T, offsets.reshape(3, -1) * spacing[:, None], axes=1) / semi_axes_mm[:, None]
    d = np.sqrt((local ** 2).sum(axis=0)).reshape(offsets.shape[1:])
    bumps = ndimage.zoom(rng.standard_normal((4, 4, 4)), np.array(d.shape) / 4.0, order=3, mode="nearest")
    bumps = bumps[tuple(slice(0, n) for n in d.shape)]
    return box, (d + bumpiness * bumps / max(float(np.abs(bumps).max()), 1e-6)) < 1.0


def _pick(candidates: np.ndarray, rng: np.random.Generator, what: str) -> np.ndarray:
    points = np.argwhere(candidates)
    if not len(points):
        raise InputError(f"No place for a {what} lesion in this image (its location prior is empty); draw the "
                         f"mask yourself or choose another lesion type.")
    return points[rng.integers(len(points))]


def _wmh(priors: LesionPriors, rng: np.random.Generator, labels: np.ndarray) -> dict:
    wm = priors.white_matter
    deep = wm & (priors.depth_mm > np.percentile(priors.depth_mm[priors.brain], 66))
    count = int(rng.integers(1, 5))
    for _ in range(count):
        pool = deep if deep.any() and rng.random() < 0.75 else wm
        centre = _pick(pool, rng, "wmh")
        box, blob = _blob(priors, centre, rng.uniform(2.0, 7.0) * np.array([1, *rng.uniform(0.5, 1.0, 2)]), rng,
                          0.25)
        labels[box][blob & wm[box]] = 1
    return {"blobs": count}


def _tumour(priors: LesionPriors, rng: np.random.Generator, labels: np.ndarray) -> dict:
    core_mm = rng.uniform(5.0, 14.0)
    pool = priors.white_matter & (priors.depth_mm > core_mm)
    centre = _pick(pool if pool.any() else priors.white_matter, rng, "tumour")
    shell_mm = rng.uniform(3.0, 12.0)
    box, whole = _blob(priors, centre, (core_mm + shell_mm) * np.array([1, *rng.uniform(0.7, 1.0, 2)]), rng, 0.35)
    inner = ndimage.binary_dilation(priors.white_matter, iterations=1) & priors.brain  # oedema spares the cortex
    labels[box][whole & inner[box]] = 1
    cbox, core = _blob(priors, centre, core_mm * np.array([1, *rng.uniform(0.7, 1.0, 2)]), rng, 0.2)
    labels[cbox][core & priors.brain[cbox]] = 2
    return {"core_mm": round(float(core_mm), 2), "oedema_mm": round(float(shell_mm), 2)}


def _ischaemic(priors: LesionPriors, rng: np.random.Generator, labels: np.ndarray) -> dict:
    spacing = np.array(priors.spacing_zyx)
    surface = priors.brain & ~ndimage.binary_erosion(priors.brain) & (priors.depth_mm > 0)
    inner = priors.depth_mm > np.percentile(priors.depth_mm[priors.brain], 90)
    target = np.argwhere(inner).mean(axis=0) if inner.any() else np.argwhere(priors.brain).mean(axis=0)
    outer = surface & (np.linalg.norm((np.indices(surface.shape).T - target).T * spacing[:, None, None, None],
                                      axis=0) > 20.0)
    apex = _pick(outer if outer.any() else surface, rng, "ischaemic")
    axis = (target - apex) * spacing
    axis /= max(float(np.linalg.norm(axis)), 1e-6)
    depth_mm, half_angle = rng.uniform(12.0, 35.0), np.deg2rad(rng.uniform(15.0, 30.0))
    half = np.ceil(depth_mm / spacing).astype(int) + 1
    lo, hi = np.maximum(apex - half, 0), np.minimum(apex + half + 1, priors.brain.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    offsets = np.stack(np.meshgrid(*(np.arange(a, b) - c for a, b, c in zip(lo, hi, apex)), indexing="ij"))
    vec = offsets * spacing[:, None, None, None]
    along = np.tensordot(axis, vec, axes=1)  # mm from the apex along the axis
    across = np.sqrt(np.maximum((vec ** 2).sum(axis=0) - along ** 2, 0))
    wedge = (along > -2.0) & (along < depth_mm) & (across < np.tan(half_angle) * (along + 4.0))
    labels[box][wedge & priors.brain[box]] = 1
    return {"depth_mm": round(float(depth_mm), 2), "half_angle_deg": round(float(np.rad2deg(half_angle)), 1)}


_MAKERS = {"wmh": _wmh, "tumour": _tumour, "ischaemic": _ischaemic}


def random_lesion_mask(lesion_type: str, priors: LesionPriors, rng: np.random.Generator,
                       min_voxels: int = 8, tries: int = 10) -> tuple[np.ndarray, dict]:
    """A random lesion of ``lesion_type`` where ``priors`` allow: (uint8 labels (z, y, x): 0, 1 lesion (tumour:
    oedema), 2 tumour core; description). Redrawn (up to ``tries`` times) until it has ``min_voxels``."""
    check_lesion_type(lesion_type)
    for attempt in range(tries):
        labels = np.zeros(priors.brain.shape, np.uint8)
        described = _MAKERS[lesion_type](priors, rng, labels)
        if int((labels > 0).sum()) >= min_voxels:
            return labels, dict(described, type=lesion_type, voxels=int((labels > 0).sum()), attempts=attempt + 1)
    raise InputError(f"Could not place a {lesion_type} lesion of at least {min_voxels} voxels in {tries} tries; "
                     f"the image may show too little brain.")


def lesion_relaxation(labels: np.ndarray, lesion_type: str, rng: np.random.Generator
                      ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Per-voxel (T1, T2, PD) and HU of a lesion label map of ``lesion_type`` (each part varied by 8 %, with a
    smooth inner texture of +-10 % on T2 and +-5 % on T1); ones/zeros outside the lesion."""
    t1, t2, pd = (np.ones(labels.shape, np.float32) for _ in range(3))
    hu = np.zeros(labels.shape, np.float32)
    texture = ndimage.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 2.0)
    texture /= max(float(texture.std()), 1e-6)
    parts = {1: lesion_type, 2: "tumour_core"}
    for value, part in parts.items():
        where = labels == value
        if not where.any():
            continue
        k_t1, k_t2, k_pd = RELAXATION[part]
        s1, s2 = 1 + rng.normal(0, 0.08, 2)
        t1[where] = k_t1 * s1 * (1 + 0.05 * texture[where])
        t2[where] = k_t2 * s2 * (1 + 0.10 * texture[where])
        pd[where] = k_pd
        hu[where] = LESION_HU[part] + rng.normal(0, 3)
    return (t1, t2, pd), hu


__all__ = ["LESION_TYPES", "LESION_TYPE_NAMES", "LesionPriors", "check_lesion_type", "lesion_relaxation",
           "priors_from_image", "priors_from_tissues", "random_lesion_mask"]
