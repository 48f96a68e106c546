"""Contrast-enhancing normal structures for domain randomisation: venous sinuses, deep and cortical veins, choroid
plexus, dura, pituitary and cavernous sinuses.

After gadolinium, a T1-weighted scan shows more than the brain's tissues: the blood in the dural venous sinuses and
the veins, the choroid plexus, the pituitary and the cavernous sinuses go bright, the dura a little. The template
head (:mod:`.tissue`) has none of them, so a network that learned healthy anatomy from it takes every enhancing
vessel for an anomaly (``brain-anomaly-t1`` did, on real contrast-enhanced T1w: its map was brightest along the
straight and sagittal sinuses). :func:`add_enhancing` draws them per sample, at random sizes and places, in the
template's own coordinates (MNI mm, RAS), so the sample's affine and elastic deformation move them with the head,
and returns an *enhancement map*: per voxel, the share (0..1) of its signal that becomes enhancing blood on a
contrast-enhanced T1w (:func:`.randomize._mr_images` renders it; other orderings ignore it). The tissue fractions do
not change: the intracranial mask, the lesions and every other target stay as they were.

Structures (centres and sizes in MNI mm, drawn uniformly per sample; strength 1 unless noted):
  * superior sagittal sinus: a triangle in the midline against the inner skull, over the vertex down to the torcula,
    widening towards the back;
  * torcula and transverse sinuses: a band against the inner surface of the occipital skull at the torcula's height,
    descending laterally, each side its own width; sigmoid sinuses: tubes down towards the jugular foramina;
  * straight sinus (vein of Galen to torcula) and the paired internal cerebral veins;
  * choroid plexus (strength 0.6-1): a glomus in each ventricular atrium, inside the ventricular CSF;
  * cortical veins (strength 0.5-1): thin random curves (where two random fields both cross zero) in the sulcal CSF
    within 10 mm of the inner skull;
  * dura (falx and tentorium, strength 0.2-0.6, in half of the samples): thin sheets in the midline above the
    corpus callosum and sloping from the straight sinus down to the transverse sinuses;
  * pituitary and cavernous sinuses: ellipsoids at the sella.
Enhancement replaces the share of non-air, non-bone tissue the structure covers (sinuses, veins at the skull base)
or of CSF only (choroid plexus, cortical veins, dura); never lesion tissue.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..volume import Volume
from .shapes import coverage, ellipsoid_distance, template_ras, tube_distance
from .subjects import _smooth_field
from .tissue import AIR, BONE, CSF, LESION


def add_enhancing(fractions: np.ndarray, coords: np.ndarray, grid: Volume, icv_depth: np.ndarray,
                  ventricle_sdf: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """The enhancement map (z, y, x, 0..1) of one random set of enhancing structures in the anatomy ``fractions``
    (n_tissues, z, y, x; with its lesions), and the values drawn. ``coords``: template voxel coordinates (3, z, y, x)
    of the grid's voxels; ``icv_depth``: mm inside the template's intracranial volume (0 outside);
    ``ventricle_sdf``: signed distance to the (moved) ventricles, mm, negative inside."""
    spacing = float(grid.spacing[0])
    p = template_ras(coords)
    x, y, z = p
    u = rng.uniform
    inside = np.clip(icv_depth / spacing + 0.5, 0.0, 1.0) * (icv_depth > 0)  # share inside the cranium
    vessel = np.zeros(grid.shape, np.float32)  # blood: replaces any non-air, non-bone tissue
    fluid = np.zeros(grid.shape, np.float32)  # in the CSF only
    draws: dict[str, Any] = {}

    def add(target: np.ndarray, cover: np.ndarray, strength: float = 1.0) -> None:
        np.maximum(target, (cover * strength).astype(np.float32), out=target)

    # torcula: the midline point of the inner occipital surface at height z0
    z0 = u(-6.0, 6.0)
    torcula = np.array([0.0, -98.0, z0], np.float32)
    # superior sagittal sinus: midline triangle against the inner skull, above the torcula, wider at the back
    width = np.interp(y, [-100.0, 60.0], [u(7.0, 11.0), u(3.0, 5.0)]).astype(np.float32)
    height = u(4.0, 7.0)
    triangle = np.maximum(np.abs(x) - 0.5 * width * (1.0 - icv_depth / height), icv_depth - height)
    add(vessel, coverage(triangle, spacing) * inside * np.clip((z - z0) / spacing, 0.0, 1.0) * (y < 70.0))
    # transverse sinuses: a band on the occipital inner surface, dropping laterally; sigmoid sinuses down from it
    sides = {}
    for side in (-1.0, 1.0):
        r, drop, depth = u(2.5, 5.0), u(0.15, 0.35), u(4.0, 7.0)
        half = np.sign(x) == side
        band = np.maximum(np.abs(z - (z0 - drop * np.abs(x))) - r, icv_depth - depth)
        add(vessel, coverage(band, spacing) * inside * half * np.clip((-50.0 - y) / 10.0, 0.0, 1.0))
        knee = np.array([side * u(42.0, 48.0), u(-70.0, -60.0), z0 - drop * 45.0], np.float32)
        bend = np.array([side * u(40.0, 46.0), u(-52.0, -44.0), u(-32.0, -26.0)], np.float32)
        bulb = np.array([side * u(36.0, 42.0), u(-38.0, -30.0), u(-48.0, -42.0)], np.float32)
        rs = u(2.5, 4.5)
        for a, b in ((knee, bend), (bend, bulb)):
            add(vessel, coverage(tube_distance(p, a, b, rs, rs), spacing))
        sides["right" if side > 0 else "left"] = {"radius_mm": round(float(r), 2), "sigmoid_mm": round(float(rs), 2)}
    draws["transverse"] = sides
    # straight sinus (vein of Galen to torcula) and the internal cerebral veins
    galen = np.array([0.0, u(-52.0, -44.0), u(2.0, 10.0)], np.float32)
    straight = tube_distance(p, galen, torcula + np.array([0, 6.0, 2.0], np.float32), u(1.5, 3.0), u(2.0, 3.5))
    add(vessel, coverage(straight, spacing) * inside)
    for side in (-1.0, 1.0):
        start = np.array([side * u(1.5, 3.0), u(-12.0, -4.0), u(12.0, 18.0)], np.float32)
        add(vessel, coverage(tube_distance(p, start, galen, u(0.8, 1.5), 1.5), spacing) * inside)
    # pituitary and cavernous sinuses at the sella
    sella = np.array([0.0, u(-2.0, 6.0), u(-34.0, -28.0)], np.float32)
    add(vessel, coverage(ellipsoid_distance(p, sella, (u(5.0, 7.0), u(4.0, 6.0), u(3.0, 5.0))), spacing))
    for side in (-1.0, 1.0):
        cavernous = ellipsoid_distance(p, sella + np.array([side * u(11.0, 15.0), 0, 0], np.float32),
                                       (u(3.0, 5.0), u(7.0, 10.0), u(4.0, 6.0)))
        add(vessel, coverage(cavernous, spacing))
    # choroid plexus: a glomus in each atrium, inside the ventricles
    ventricle = np.clip(0.5 - ventricle_sdf / spacing, 0.0, 1.0)
    plexus = u(0.6, 1.0)
    for side in (-1.0, 1.0):
        centre = (side * u(18.0, 26.0), u(-42.0, -32.0), u(6.0, 16.0))
        glomus = ellipsoid_distance(p, centre, (u(3.0, 6.0), u(5.0, 9.0), u(3.0, 6.0)))
        add(fluid, coverage(glomus, spacing) * ventricle, plexus)
    # cortical veins: curves where two random fields cross zero, in the superficial CSF
    lattice = max(4, int(round(max(grid.shape) * spacing / u(15.0, 30.0))))
    f1, f2 = (_smooth_field(grid.shape, rng, coarse=lattice) for _ in range(2))
    thin = u(0.15, 0.3)
    lines = np.clip(1.0 - np.maximum(np.abs(f1) / (thin * f1.std()), np.abs(f2) / (thin * f2.std())), 0.0, 1.0)
    veins = u(0.5, 1.0)
    add(fluid, lines * inside * (icv_depth < 10.0), veins)
    draws.update(torcula_z=round(float(z0), 1), galen=np.round(galen, 1).tolist(), sella=np.round(sella, 1).tolist(),
                 plexus=round(float(plexus), 2), cortical_veins=round(float(veins), 2))
    # dura: falx above the corpus callosum, tentorium from the straight sinus down to the transverse sinuses
    if rng.random() < 0.5:
        dura = u(0.2, 0.6)
        add(fluid, coverage(np.abs(x) - u(0.5, 1.2), spacing) * inside * np.clip((z - 20.0) / 10.0, 0.0, 1.0), dura)
        ridge = np.interp(y, [torcula[1], galen[1]], [z0 + 2.0, galen[2]]).astype(np.float32)
        tent = np.abs(z - (ridge - u(0.3, 0.5) * np.abs(x))) - u(0.5, 1.0)
        add(fluid, coverage(tent, spacing) * inside * (y < galen[1]), dura)
        draws["dura"] = round(float(dura), 2)
    share_all = np.clip(1.0 - fractions[AIR] - fractions[BONE] - fractions[LESION], 0.0, 1.0)
    share_csf = np.clip(fractions[CSF], 0.0, 1.0)
    enhancing = np.maximum(vessel * share_all, fluid * share_csf)
    return np.clip(enhancing, 0.0, 1.0).astype(np.float32), draws
