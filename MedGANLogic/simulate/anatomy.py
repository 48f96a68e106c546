"""Random anatomy for domain randomisation: the template's tissues, strongly deformed, with ventricles, cortical
folding and lesions of random size and shape. Every draw comes from the ``rng`` passed in (seeded, reproducible).

Built on :mod:`.tissue` (fractions per tissue summing to one, the skull depth map) and :mod:`.subjects` (smooth
random fields, lesion appearance). Per sample, in this order (the ranges are :class:`.randomize.DomainRanges`):

1. Geometry: a box of ``shape`` voxels at ``spacing_mm`` around the head centre (shifted at random), through a
   random affine about the head centre (rotation; scaling per axis: head size and shape; shear) and a smooth
   random elastic displacement (cubic-spline lattice of ``elastic_lattice_mm``). The template's fractions (blurred
   for the grid's spacing), skull depth, ventricle and intracranial distance maps are sampled through it.
2. Ventricles: their boundary (a signed distance map of the deep CSF, mm) moves by ``ventricle_mm``: enlarged
   ventricles take the space from grey and white matter, shrunk ones give it to white matter.
3. Cortical folding: the template is an average of 152 brains, its cortex is smooth. A band-limited random field
   (``folding_wavelength_mm``) deepens sulci (parenchyma -> CSF) and fills gyri (CSF -> grey matter) within
   ~12 mm of the inner skull, and the grey/white boundary is sharpened by ``gm_wm_sharpening``.
4. Lesions: ``n_lesions`` ellipsoids (axes ratio down to 0.4, random orientation, surface pushed in and out by a
   smooth field) in white matter, some against the ventricles (periventricular), of oedema- or MS-like kind, each
   with its own relaxation times and HU and an inner texture (:func:`.subjects._lesion_appearance`).
5. Face (with probability ``face``, drawn last): orbits with eyes, nasal cavity, sinuses and skull-base clutter
   (:mod:`.face`), outside the intracranial volume; the vitreous is recorded as ``extracranial``.
6. Contrast enhancement (with probability ``enhancement``, drawn after the face): venous sinuses, veins, choroid
   plexus, dura, pituitary (:mod:`.vessels`), recorded as ``enhancing`` (the fractions do not change).
7. Enhancing lesions (on a contrast-enhanced scan, each lesion with probability ``lesion_enhancement``, drawn
   last): a rim inside the lesion's surface (:func:`enhancing_rims`), recorded as ``lesion_enhancing``.
Fractions stay non-negative and sum to one in every voxel through every step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ..volume import Volume
from .face import add_face
from .subjects import LESION_KIND_NAMES, _cached_blurred, _lesion_appearance, _smooth_field
from .tissue import (
    AIR,
    CSF,
    GM,
    LESION,
    TISSUES,
    WM,
    _signed_distance,
    _to_coarse,
    _to_fine,
    template_icv_distance,
    template_tissues,
)
from .vessels import add_enhancing

if TYPE_CHECKING:
    from .randomize import DomainRanges

DEEP_CSF_MM = 10.0  # CSF at least this far inside the intracranial boundary is ventricle (or deep cistern)
RIBBON_MM = 12.0  # folding acts within this depth of the intracranial boundary


@dataclass
class Anatomy:
    """One random anatomy on ``grid`` (a Volume whose array is unused; geometry only).

    ``fractions``/``healthy``: (n_tissues, z, y, x) float32 summing to 1, with and without lesions (named by
    :data:`.tissue.TISSUES`); ``depth``: skull depth 0..1 (z, y, x); ``lesion_labels``: int16 (z, y, x), 0 or the
    lesion number; ``lesion_relaxation``: per-voxel (T1 ms, T2 ms, PD) of the lesion class; ``lesion_hu``: its HU;
    ``lesions``: one dict per lesion; ``draws``: the values drawn (for ``meta``).
    """

    grid: Volume
    fractions: np.ndarray
    healthy: np.ndarray
    depth: np.ndarray
    lesion_labels: np.ndarray
    lesion_relaxation: tuple[np.ndarray, np.ndarray, np.ndarray]
    lesion_hu: np.ndarray
    lesions: list[dict] = field(default_factory=list)
    draws: dict[str, Any] = field(default_factory=dict)
    extracranial: np.ndarray | None = None  # CSF-like fluid outside the cranium (vitreous; :mod:`.face`), or None
    # share of each voxel's signal that enhances after gadolinium (sinuses, veins, choroid plexus; :mod:`.vessels`),
    # or None (no contrast given)
    enhancing: np.ndarray | None = None
    # the same for the lesions' enhancing rims (:func:`enhancing_rims`; the lesioned image only), or None
    lesion_enhancing: np.ndarray | None = None

    @property
    def head_mask(self) -> np.ndarray:
        return self.fractions[AIR] < 0.5

    @property
    def brain_mask(self) -> np.ndarray:
        return (self.fractions[GM] + self.fractions[WM]) > 0.5


@functools.lru_cache(maxsize=1)
def template_distance_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ventricle signed distance mm, depth inside the intracranial volume mm, head centre (z, y, x) in template
    voxels), on the template's 1 mm grid; distances computed on a 2 mm grid (smooth) and interpolated back."""
    fractions, _, _ = template_tissues()
    shape = fractions.shape[1:]
    icv_depth = np.clip(-template_icv_distance(), 0, None)
    ventricles = _to_coarse(fractions[CSF] > 0.5) & (icv_depth > DEEP_CSF_MM)
    ventricle_sdf = _to_fine(_signed_distance(ventricles, 2.0), shape)
    head = np.argwhere(fractions[AIR] < 0.5)
    centre = (head.min(axis=0) + head.max(axis=0)) / 2.0
    return ventricle_sdf, _to_fine(icv_depth, shape), centre


def _grid(shape: tuple[int, int, int], spacing_mm: float, shift_mm: np.ndarray) -> tuple[Volume, np.ndarray]:
    """The sample's grid, centred on the head centre + ``shift_mm`` (x, y, z), and the head centre in LPS mm."""
    _, template, _ = template_tissues()
    centre_ijk = template_distance_maps()[2][::-1]
    centre_lps = (template.ijk_to_lps() @ np.append(centre_ijk, 1.0))[:3]
    half = template.direction @ (spacing_mm * (np.array(shape[::-1]) - 1) / 2.0)
    origin = centre_lps + shift_mm - half
    grid = Volume(np.zeros(shape, np.uint8), (spacing_mm,) * 3, tuple(origin), template.direction)
    return grid, centre_lps


def _template_coordinates(grid: Volume, centre_lps: np.ndarray, rng: np.random.Generator,
                          ranges: DomainRanges, draws: dict) -> np.ndarray:
    """Template voxel coordinates (3, z, y, x) (array order) of every grid voxel, through the random transform."""
    rotation = Rotation.from_euler("xyz", rng.uniform(-1, 1, 3) * ranges.rotation_deg, degrees=True).as_matrix()
    scale = rng.uniform(*ranges.head_scale, 3)
    shear = np.eye(3) + np.triu(rng.uniform(-1, 1, (3, 3)) * ranges.shear, 1)
    forward = rotation @ shear @ np.diag(scale)  # template head -> sample head, about the head centre
    elastic = rng.uniform(*ranges.elastic_mm)
    draws.update(rotation_deg=np.round(Rotation.from_matrix(rotation).as_euler("xyz", degrees=True), 2).tolist(),
                 head_scale=np.round(scale, 3).tolist(), elastic_mm=round(float(elastic), 2))
    shape = grid.shape
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size, np.float32)])
    lps = (grid.ijk_to_lps() @ ijk)[:3] - centre_lps[:, None]
    lps = np.linalg.inv(forward) @ lps + centre_lps[:, None]
    lattice = max(4, int(round(max(shape) * grid.spacing[0] / ranges.elastic_lattice_mm)))
    for axis in range(3):  # displacement in mm along x, y, z
        lps[axis] += elastic * _smooth_field(shape, rng, coarse=lattice).ravel()
    _, template, _ = template_tissues()
    tpl = np.linalg.inv(template.ijk_to_lps()) @ np.vstack([lps, np.ones((1, lps.shape[1]))])
    return tpl[2::-1].reshape(3, *shape).astype(np.float32)


def _move(fractions: np.ndarray, amount: np.ndarray, sources: tuple[int, ...], sink: int) -> None:
    """Move up to ``amount`` (z, y, x) of fraction from ``sources`` (in order) to ``sink``, in place."""
    left = np.clip(amount, 0, None).astype(np.float32)
    for s in sources:
        taken = np.minimum(left, fractions[s])
        fractions[s] -= taken
        fractions[sink] += taken
        left -= taken


def _ventricles(fractions: np.ndarray, sdf_mm: np.ndarray, spacing_mm: float, change_mm: float) -> None:
    """Move the ventricles' boundary outwards by ``change_mm`` (inwards if negative), in place."""
    before = np.clip(-sdf_mm / spacing_mm + 0.5, 0, 1)
    after = np.clip((change_mm - sdf_mm) / spacing_mm + 0.5, 0, 1)
    grow = after - before
    _move(fractions, grow, (WM, GM), CSF)
    _move(fractions, -grow, (CSF,), WM)


def _folding(fractions: np.ndarray, icv_depth_mm: np.ndarray, grid: Volume, rng: np.random.Generator,
             amplitude: float, wavelength_mm: float, sharpening: float) -> None:
    """Sulci and gyri from a band-limited random field within :data:`RIBBON_MM` of the inner skull; sharper
    grey/white boundary (in place)."""
    lattice = max(4, int(round(max(grid.shape) * grid.spacing[0] / (wavelength_mm / 2))))
    noise = _smooth_field(grid.shape, rng, coarse=lattice)
    noise /= max(float(noise.std()), 1e-6)
    inside = (fractions[CSF] + fractions[GM] + fractions[WM]) > 0.5
    ribbon = np.where(inside, np.clip(1 - icv_depth_mm / RIBBON_MM, 0, 1), 0).astype(np.float32)
    change = amplitude * noise * ribbon
    _move(fractions, change, (GM, WM), CSF)  # deeper sulci
    _move(fractions, -change, (CSF,), GM)  # fuller gyri
    parenchyma = fractions[GM] + fractions[WM]
    ratio = np.divide(fractions[WM], parenchyma, out=np.zeros_like(parenchyma), where=parenchyma > 1e-6)
    ratio = np.clip(0.5 + sharpening * (ratio - 0.5) + 0.15 * amplitude * noise * ribbon, 0, 1)
    fractions[WM] = parenchyma * ratio
    fractions[GM] = parenchyma - fractions[WM]


def random_lesions(fractions: np.ndarray, ventricle_sdf_mm: np.ndarray, grid: Volume, rng: np.random.Generator,
                   ranges: DomainRanges) -> tuple[np.ndarray, list[dict]]:
    """Lesion label map (int16, z, y, x) and descriptions: ellipsoids with bumpy surfaces in white matter.

    The count is drawn from ``ranges.n_lesions``, radii log-uniformly from ``ranges.lesion_radius_mm`` (largest
    semi-axis), the other semi-axes 0.4-1 times it; a fraction ``ranges.periventricular`` sit within 8 mm of the
    ventricles, and of the others a fraction ``ranges.juxtacortical`` are centred in the cortical grey matter (where
    metastases and many gliomas reach the brain's surface; their outline then meets the sulcal CSF). Cut to brain
    parenchyma (GM + WM > 0.5); a later lesion overwrites an earlier one where they touch.
    """
    labels = np.zeros(grid.shape, np.int16)
    brain = (fractions[GM] + fractions[WM]) > 0.5
    wm_core = ndimage.binary_erosion(fractions[WM] > 0.6)
    anywhere = np.argwhere(wm_core)
    near = np.argwhere(wm_core & (ventricle_sdf_mm < 8.0))
    cortex = np.argwhere((fractions[GM] > 0.5) & brain) if ranges.juxtacortical > 0 else anywhere[:0]
    described: list[dict] = []
    spacing = grid.spacing[0]
    for _ in range(int(rng.integers(ranges.n_lesions[0], ranges.n_lesions[1] + 1))):
        pool = near if len(near) and rng.random() < ranges.periventricular else anywhere
        if pool is anywhere and len(cortex) and rng.random() < ranges.juxtacortical:  # no draw when 0: the samples
            pool = cortex  # of earlier recipes stay as they were
        if not len(pool):
            break
        centre = pool[rng.integers(len(pool))]
        radius = float(np.exp(rng.uniform(*np.log(ranges.lesion_radius_mm))))
        axes = radius * np.array([1.0, *rng.uniform(0.4, 1.0, 2)])
        rotation = Rotation.random(random_state=rng).as_matrix()
        half = int(np.ceil(1.5 * radius / spacing)) + 1
        lo, hi = np.maximum(centre - half, 0), np.minimum(centre + half + 1, grid.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        offsets = np.stack(np.meshgrid(*(np.arange(a, b) - c for a, b, c in zip(lo, hi, centre)), indexing="ij"))
        local = np.tensordot(rotation.T, offsets.reshape(3, -1) * spacing, axes=1) / axes[:, None]
        d = np.sqrt((local ** 2).sum(axis=0)).reshape(offsets.shape[1:])
        bumps = _smooth_field(d.shape, rng, coarse=4) * rng.uniform(0.05, 0.4)
        blob = ((d + bumps) < 1.0) & brain[box]
        if not blob.any():
            continue
        labels[box][blob] = len(described) + 1
        kind = LESION_KIND_NAMES[int(rng.integers(len(LESION_KIND_NAMES)))]
        described.append({"label": len(described) + 1, "kind": kind, "centre_zyx": centre.tolist(),
                          "radius_mm": round(radius, 2), "axes_mm": np.round(axes, 2).tolist()})
    for lesion in described:
        lesion["voxels"] = int((labels == lesion["label"]).sum())
    return labels, described


def sample_anatomy(rng: np.random.Generator, ranges: DomainRanges, shape: tuple[int, int, int],
                   spacing_mm: float) -> Anatomy:
    """A random anatomy on a ``shape`` (z, y, x) box of ``spacing_mm`` isotropic voxels (see the module docstring).

    The box is centred on the head (plus a random shift of up to ``ranges.shift_mm`` per axis); a box smaller than
    the head holds part of it. Deterministic given ``rng``'s state, ``ranges``, ``shape`` and ``spacing_mm``.
    """
    draws: dict[str, Any] = {}
    shift = rng.uniform(-1, 1, 3) * ranges.shift_mm
    grid, centre = _grid(tuple(int(n) for n in shape), float(spacing_mm), shift)
    coords = _template_coordinates(grid, centre, rng, ranges, draws)
    blurred, depth_t = _cached_blurred(round(float(spacing_mm), 4))
    ventricle_t, icv_depth_t, _ = template_distance_maps()

    def sample(a: np.ndarray, cval: float) -> np.ndarray:
        return ndimage.map_coordinates(a, coords, order=1, mode="constant", cval=cval)

    fractions = np.zeros((len(TISSUES),) + grid.shape, np.float32)
    for i in range(len(TISSUES)):
        if i not in (AIR, LESION):
            fractions[i] = sample(blurred[i], 0.0)
    fractions[AIR] = np.clip(1.0 - fractions.sum(axis=0), 0, None)
    fractions /= fractions.sum(axis=0)
    depth = sample(depth_t, 1.0)
    ventricle_sdf, icv_depth = sample(ventricle_t, 100.0), sample(icv_depth_t, 0.0)

    change = rng.uniform(*ranges.ventricle_mm)
    _ventricles(fractions, ventricle_sdf, float(spacing_mm), change)
    amplitude, wavelength = rng.uniform(*ranges.folding_amplitude), rng.uniform(*ranges.folding_wavelength_mm)
    sharpening = rng.uniform(*ranges.gm_wm_sharpening)
    _folding(fractions, icv_depth, grid, rng, amplitude, wavelength, sharpening)
    fractions /= fractions.sum(axis=0)
    draws.update(shift_mm=np.round(shift, 2).tolist(), ventricle_mm=round(float(change), 2),
                 folding_amplitude=round(float(amplitude), 3), folding_wavelength_mm=round(float(wavelength), 2),
                 gm_wm_sharpening=round(float(sharpening), 3))

    labels, described = random_lesions(fractions, ventricle_sdf - change, grid, rng, ranges)
    lesioned = fractions.copy()
    mask = labels > 0
    lesioned[:, mask] = 0.0
    lesioned[LESION, mask] = 1.0
    relaxation, lesion_hu = _lesion_appearance(labels, described, rng)
    extracranial = None
    if ranges.face > 0 and rng.random() < ranges.face:  # drawn last: the draws above stay as they were
        extracranial, draws["face"] = add_face([lesioned, fractions], coords, grid, rng)
    enhancing = None
    if ranges.enhancement > 0 and rng.random() < ranges.enhancement:  # after the face: the draws above stay
        enhancing, draws["enhancement"] = add_enhancing(lesioned, coords, grid, icv_depth, ventricle_sdf - change, rng)
    lesion_enhancing = None
    if enhancing is not None and ranges.lesion_enhancement > 0 and described:  # last: the draws above stay
        lesion_enhancing, draws["lesion_enhancement"] = enhancing_rims(labels, described, float(spacing_mm), rng,
                                                                       ranges)
    return Anatomy(grid, lesioned, fractions, depth.astype(np.float32), labels, relaxation, lesion_hu,
                   described, draws, extracranial, enhancing, lesion_enhancing)


def enhancing_rims(labels: np.ndarray, described: list[dict], spacing_mm: float, rng: np.random.Generator,
                   ranges: DomainRanges) -> tuple[np.ndarray | None, list[dict[str, Any]]]:
    """The enhancement map (z, y, x, 0..1) of the lesions that enhance, and what was drawn per lesion.

    On a contrast-enhanced T1w a high-grade tumour or a metastasis shows a rim of enhancement (the broken
    blood-brain barrier at its growing edge) around a core that does not enhance (necrosis, cyst) and is dark; a
    small one enhances throughout. Each lesion enhances with probability ``ranges.lesion_enhancement``: the voxels
    within a rim of ``ranges.lesion_rim_mm`` inside its surface (partial volume at the rim's inner edge), at a
    strength of 0.6-1 (the share of the voxel's signal that goes to the enhanced level). The lesion's own appearance
    (:func:`.subjects._lesion_appearance`) is its core. None when no lesion enhances."""
    out = np.zeros(labels.shape, np.float32)
    drawn: list[dict[str, Any]] = []
    for lesion in described:
        if rng.random() >= ranges.lesion_enhancement:
            drawn.append({"label": lesion["label"], "enhancing": False})
            continue
        rim, strength = float(rng.uniform(*ranges.lesion_rim_mm)), float(rng.uniform(0.6, 1.0))
        inside = labels == lesion["label"]
        # mm from the lesion's surface to the voxel's centre (the surface lies half a voxel beyond its outer voxels)
        depth = ndimage.distance_transform_edt(inside, sampling=spacing_mm) - 0.5 * spacing_mm
        cover = np.clip((rim - depth) / spacing_mm + 0.5, 0.0, 1.0) * inside  # the rim's share of the voxel
        np.maximum(out, (strength * cover).astype(np.float32), out=out)
        drawn.append({"label": lesion["label"], "enhancing": True, "rim_mm": round(rim, 2),
                      "strength": round(strength, 2)})
    return (out if out.any() else None), drawn
