"""Random face and skull-base anatomy for domain randomisation: orbits, nasal cavity, sinuses, skull-base clutter.

The template head (:mod:`.tissue`) has brain, skull, scalp and a featureless soft-tissue skull base: no eyes, no
air spaces, no bone below the brain. Real head scans have them, and on a thick slice they touch the brain: a
network that has only seen the phantom takes an eyeball or the nasal cavity for brain (``brain-mask`` did, on real
contrast-enhanced T1w). :func:`add_face` paints them into a random anatomy, per sample and at random sizes and
places, in the template's own coordinates (MNI mm, RAS), so the sample's affine and elastic deformation move them
with the rest of the head. Every structure stays at least :data:`CLEARANCE_MM` outside the template's intracranial
volume (the orbital roof, the cribriform plate and the sellar floor are bone), so the brain and the intracranial
mask do not change; what changes is everything around them.

Structures (centres and sizes in MNI mm, drawn uniformly per sample, each side its own draw):
  * eyes: a ball of vitreous (CSF-like on MR and CT; :attr:`.anatomy.Anatomy.extracranial` records it so that
    skull stripping and the intracranial mask leave it out) in a 1 mm scleral shell, a lens, and soft tissue in
    front (eyelids);
  * orbits: a cone of fat from the eye back to the orbital apex, holding the optic nerve and four rectus muscles
    (soft), walled by bone;
  * nasal cavity (air, mucosa, septum), maxillary and sphenoid sinuses (air in a bony shell), ethmoid and mastoid
    air cells (air and bone septa from a random field), a frontal sinus inside the frontal bone (most people);
  * skull-base clutter: in the soft tissue below the brain, blobs of fat (marrow, fat pads) and bone (petrous
    bone, clivus) from random smooth fields.
Fractions stay non-negative and sum to one in every voxel (each structure replaces a share of what was there).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from scipy import ndimage

from ..volume import Volume
from .shapes import coverage, ellipsoid_distance, template_ras, tube_distance
from .subjects import _smooth_field
from .tissue import AIR, BONE, CSF, FAT, SOFT, _to_fine, template_icv_distance, template_tissues

CLEARANCE_MM = 1.5  # nothing is painted nearer than this to the template's intracranial volume
SKULL_BASE_BELOW_MM = -15.0  # skull-base clutter below this MNI z (the floor of the anterior fossa is near -20)


@functools.lru_cache(maxsize=1)
def _outside_icv_mm() -> np.ndarray:
    """mm outside the template's intracranial volume (0 inside), on its 1 mm grid (computed at 2 mm, smooth)."""
    return _to_fine(np.clip(template_icv_distance(), 0, None), template_tissues()[0].shape[1:])


def _paint(arrays: list[np.ndarray], cover: np.ndarray, tissue: int) -> None:
    """Replace ``cover`` (z, y, x, 0..1) of every voxel's tissues by ``tissue``, in each fractions array, in place."""
    keep = 1.0 - cover
    for f in arrays:
        f *= keep
        f[tissue] += cover


def add_face(arrays: list[np.ndarray], coords: np.ndarray, grid: Volume, rng: np.random.Generator
             ) -> tuple[np.ndarray, dict[str, Any]]:
    """Paint orbits, nasal cavity, sinuses and skull-base clutter into each fractions array of ``arrays`` (the
    same structures in each: an anatomy with lesions and its healthy twin), in place. ``coords``: template voxel
    coordinates (3, z, y, x) of the grid's voxels (the sample's deformation). Returns the vitreous fraction
    (z, y, x; CSF that lies outside the cranium) and the values drawn."""
    spacing = float(grid.spacing[0])
    p = template_ras(coords)
    outside = ndimage.map_coordinates(_outside_icv_mm(), coords, order=1, mode="constant", cval=100.0)
    clear = np.clip((outside - CLEARANCE_MM) / spacing, 0.0, 1.0).astype(np.float32)
    head = 1.0 - arrays[0][AIR]
    fluid = np.zeros(grid.shape, np.float32)
    u = rng.uniform
    draws: dict[str, Any] = {}

    def replace(cover: np.ndarray, tissue: int) -> None:
        """:func:`_paint`, the recorded vitreous shrinking with what replaces it."""
        _paint(arrays, cover, tissue)
        fluid[...] *= 1.0 - cover

    def paint(signed_mm: np.ndarray, tissue: int, where: np.ndarray | float = 1.0) -> None:
        replace(coverage(signed_mm, spacing) * clear * where, tissue)

    # skull-base clutter first: the structures below replace it where they lie
    below = np.clip((SKULL_BASE_BELOW_MM - p[2]) / 10.0, 0.0, 1.0)
    lattice = max(4, int(round(max(grid.shape) * spacing / u(10.0, 20.0))))
    for tissue, amount in ((FAT, u(0.0, 0.35)), (BONE, u(0.0, 0.35))):
        field = _smooth_field(grid.shape, rng, coarse=lattice)
        field /= max(float(field.std()), 1e-6)
        level = float(np.quantile(field, 1.0 - amount)) if amount > 0 else np.inf
        blob = np.clip((field - level) * 2.0, 0.0, 1.0) * below * arrays[0][SOFT]
        replace((blob * clear).astype(np.float32), tissue)
        draws[f"clutter_{'fat' if tissue == FAT else 'bone'}"] = round(float(amount), 3)

    def cells(centre, axes, air_share: float) -> None:
        """Air cells: air and bone septa from a fine random field, inside an ellipsoid."""
        region = coverage(ellipsoid_distance(p, centre, axes), spacing) * clear * head
        field = _smooth_field(grid.shape, rng, coarse=max(4, int(round(max(grid.shape) * spacing / 6.0))))
        level = float(np.quantile(field, 1.0 - air_share))
        air = np.clip((field - level) / max(float(field.std()), 1e-6) * 3.0, 0.0, 1.0)
        replace(region * (1.0 - air), BONE)
        replace(region * air, AIR)

    # nasal cavity: mucosa, then air, the septum down the middle
    nose_c = (0.0, u(40.0, 50.0), u(-58.0, -50.0))
    nose_a = (u(9.0, 14.0), u(22.0, 30.0), u(14.0, 20.0))
    paint(ellipsoid_distance(p, nose_c, np.add(nose_a, 2.0)), SOFT, head)
    paint(ellipsoid_distance(p, nose_c, nose_a), AIR, head)
    paint(np.maximum(np.abs(p[0]) - u(0.7, 1.5), ellipsoid_distance(p, nose_c, nose_a)), SOFT, head)
    draws["nasal_cavity"] = {"centre": np.round(nose_c, 1).tolist(), "axes": np.round(nose_a, 1).tolist()}
    # ethmoid air cells between the orbits, sphenoid sinus behind the nose
    cells((0.0, u(30.0, 45.0), u(-40.0, -30.0)), (u(8.0, 12.0), u(15.0, 22.0), u(8.0, 12.0)), u(0.4, 0.8))
    sph_c, sph_a = (0.0, u(0.0, 14.0), u(-40.0, -30.0)), (u(8.0, 14.0), u(8.0, 12.0), u(7.0, 11.0))
    paint(ellipsoid_distance(p, sph_c, np.add(sph_a, 1.5)), BONE, head)
    paint(ellipsoid_distance(p, sph_c, sph_a), AIR, head)
    # frontal sinus: air inside the frontal bone only
    if rng.random() < 0.7:
        fs_c, fs_a = (u(-5.0, 5.0), 72.0, u(0.0, 15.0)), (u(8.0, 20.0), 15.0, u(6.0, 14.0))
        region = coverage(ellipsoid_distance(p, fs_c, fs_a), spacing) * clear * np.clip((6.0 - outside) / spacing, 0, 1)
        replace((region * arrays[0][BONE]).astype(np.float32), AIR)
        draws["frontal_sinus"] = {"centre": np.round(fs_c, 1).tolist(), "axes": np.round(fs_a, 1).tolist()}
    eyes = []
    for side in (-1.0, 1.0):
        # maxillary sinus: bony shell, mucosa, air
        mx_c = (side * u(22.0, 30.0), u(32.0, 44.0), u(-64.0, -54.0))
        mx_a = (u(9.0, 14.0), u(12.0, 17.0), u(12.0, 17.0))
        paint(ellipsoid_distance(p, mx_c, np.add(mx_a, 2.5)), BONE, head)
        paint(ellipsoid_distance(p, mx_c, np.add(mx_a, 1.0)), SOFT, head)
        paint(ellipsoid_distance(p, mx_c, mx_a), AIR, head)
        # mastoid air cells behind the ear
        r = u(7.0, 12.0)
        cells((side * u(42.0, 52.0), u(-30.0, -20.0), u(-48.0, -38.0)), (r, r, r), u(0.3, 0.7))
        # orbit: bony wall, fat cone, then nerve, muscles and the eye
        r_eye = u(10.5, 12.5)
        eye = np.array([side * u(28.0, 35.0), u(44.0, 54.0), u(-42.0, -34.0)], np.float32)
        apex = np.array([side * u(12.0, 17.0), u(8.0, 18.0), u(-36.0, -30.0)], np.float32)
        r_cone = r_eye + u(3.0, 6.0)
        paint(tube_distance(p, eye, apex, r_cone + u(1.5, 3.0), 5.0), BONE)
        paint(tube_distance(p, eye, apex, r_cone, 3.0), FAT)
        paint(tube_distance(p, eye, apex, u(1.5, 2.5), 1.5), SOFT)
        for direction in ((0, 0, 1), (0, 0, -1), (1, 0, 0), (-1, 0, 0)):
            start = eye + (r_eye - 1.0) * np.array(direction, np.float32) - np.array([0, 4.0, 0], np.float32)
            paint(tube_distance(p, start, apex, u(1.5, 2.5), 1.5), SOFT)
        paint(ellipsoid_distance(p, eye + np.array([0, 2.0, 0], np.float32), (r_eye + 3.0,) * 3), SOFT,
              np.clip(1.0 - head + (p[1] > eye[1]), 0, 1))  # eyelids and conjunctiva in front
        paint(ellipsoid_distance(p, eye, (r_eye + 1.0,) * 3), SOFT)  # sclera
        cover = coverage(ellipsoid_distance(p, eye, (r_eye,) * 3), spacing) * clear
        _paint(arrays, cover, CSF)
        fluid += cover * (1.0 - fluid)
        paint(ellipsoid_distance(p, eye + np.array([0, r_eye - 3.0, 0], np.float32), (4.5, 2.0, 4.5)), SOFT)  # lens
        eyes.append({"centre": np.round(eye, 1).tolist(), "radius_mm": round(float(r_eye), 2)})
    draws["eyes"] = eyes
    np.minimum(fluid, arrays[0][CSF], out=fluid)
    return fluid.astype(np.float32), draws
