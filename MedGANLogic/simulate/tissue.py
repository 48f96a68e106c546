"""Fuzzy tissue model of the head from the MNI ICBM152 2009a template (shipped inside the nilearn wheel).

Method:
  1. Read the 1 mm T1 template and its grey- and white-matter probability maps from the installed ``nilearn``
     package (``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``); never the
     network. The shipped T1 is brain-extracted: its non-zero voxels are the template's brain mask.
  2. Brain mask = T1 > 0 or GM + WM > 0.3, holes filled. The head around it is built from signed distance maps
     (mm; computed on a 2 mm grid, where they are smooth, and interpolated back to 1 mm):
       * intracranial volume (ICV) = the brain mask closed by a 6 mm ball: the inner table of the skull runs
         smoothly over the gyri, the sulci and the space between them hold CSF;
       * skull = 0 to 6 mm outside the ICV; its depth (0 inner table, 1 outer table) lets the CT give the
         tables cortical and the diploe cancellous density;
       * head envelope = the skull closed by a 16 mm ball, then extended downwards with a taper of 0.35 mm per
         mm, so the skull base, face and neck below the brain are one body rather than islands around the
         temporal lobes and cerebellum; what the envelope adds inside (skull base, neck) is soft tissue (muscle);
       * scalp outside the envelope: 0-2 mm galea/muscle (soft), 2-5.5 mm subcutaneous fat, 5.5-7 mm skin
         (soft); air beyond.
  3. Partial volume: every boundary is a one-voxel ramp of its signed distance (coverage of a 1 mm voxel),
     the layers telescope, and GM/WM (scaled down where they exceed the ICV coverage) leave CSF the rest of
     the ICV, so the fractions are non-negative and sum to exactly one in every voxel.
Not modelled here: orbits, sinuses, vertebrae, vessels (the phantom's lower slices are brain, skull and soft tissue).
The domain randomiser can add eyes, orbits, nasal cavity, sinuses and skull-base clutter per sample (:mod:`.face`).

The template's licence notice travels with derived data (``Resources/SampleData/LICENSE-MNI152.txt``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError, MedGANError
from ..volume import Volume

# The notice that travels with anything derived from the template (MNI's licence for the ICBM 2009 atlases, as
# published with them by the NIST lab of the Montreal Neurological Institute; nilearn lists the licence as unknown).
MNI_NOTICE = """Data in this folder are derived from the MNI ICBM152 non-linear symmetric 2009a template (the files
mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz shipped inside the nilearn Python package), by
MedGAN's phantom simulator (MedGANLogic/simulate). They are simulated images, not images of any person.

Template: http://nist.mni.mcgill.ca/icbm-152-nonlinear-atlases-2009/
  VS Fonov, AC Evans, K Botteron, CR Almli, RC McKinstry, DL Collins and BDCG. Unbiased average age-appropriate
  atlases for pediatric studies. NeuroImage 54(1), 2011. doi:10.1016/j.neuroimage.2010.07.033
  VS Fonov, AC Evans, RC McKinstry, CR Almli and DL Collins. Unbiased nonlinear average age-appropriate brain
  templates from birth to adulthood. NeuroImage 47, Supplement 1, S102, 2009. doi:10.1016/S1053-8119(09)70884-5
  DL Collins, AP Zijdenbos, WFC Baare and AC Evans. ANIMAL+INSECT: improved cortical structure segmentation.
  IPMI 1999.

Licence of the template:

Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute,
McGill University. Permission to use, copy, modify, and distribute this software and its documentation for any
purpose and without fee is hereby granted, provided that the above copyright notice appear in all copies. The
authors and McGill University make no representations about the suitability of this software for any purpose.
It is provided "as is" without express or implied warranty. The authors are not responsible for any data loss,
equipment damage, property loss, or injury to subjects or patients resulting from the use or misuse of this
software package.
"""
LICENCE_FILE = "LICENSE-MNI152.txt"

TISSUES = ("air", "csf", "gm", "wm", "fat", "soft", "bone", "lesion")
AIR, CSF, GM, WM, FAT, SOFT, BONE, LESION = range(len(TISSUES))

ICV_CLOSING_MM = 10.0
SKULL_MM = 6.0
ENVELOPE_CLOSING_MM = 16.0
NECK_TAPER = 0.35  # mm narrower per mm downwards below the widest level of the head
SCALP_LAYERS_MM = (("soft", 2.0), ("fat", 5.5), ("soft", 7.0))  # outer edge of galea, fat, skin


def template_dir() -> Path:
    """Folder of the MNI152 template files inside the installed nilearn package."""
    try:
        import nilearn
    except ImportError as exc:
        raise MedGANError("nilearn is not installed: the phantom data are made from the MNI152 template it ships. "
                          "Install it with `pip install 'medgan[data]'` (or `pip install nilearn`).") from exc
    folder = Path(os.path.dirname(nilearn.__file__)) / "datasets" / "data"
    if not (folder / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz").is_file():
        raise MedGANError(f"The MNI152 template is missing from nilearn ({folder}); reinstall nilearn.")
    return folder


def _read(name: str) -> sitk.Image:
    return sitk.ReadImage(str(template_dir() / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"),
                          sitk.sitkFloat32)


def _signed_distance(mask: np.ndarray, voxel_mm: float) -> np.ndarray:
    """mm to the mask's boundary: positive outside, negative inside."""
    return ((ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)) * voxel_mm
            ).astype(np.float32)


def _closing(mask: np.ndarray, radius_mm: float, voxel_mm: float) -> np.ndarray:
    """Morphological closing by a ball, through distance maps (exact Euclidean ball, any radius)."""
    dilated = _signed_distance(mask, voxel_mm) <= radius_mm
    return ndimage.binary_fill_holes(_signed_distance(dilated, voxel_mm) <= -radius_mm)


def _to_coarse(mask: np.ndarray) -> np.ndarray:
    """1 mm boolean -> 2 mm boolean (majority of each 2x2x2 block; odd edges padded with False)."""
    pad = [(0, n % 2) for n in mask.shape]
    m = np.pad(mask, pad).astype(np.float32)
    z, y, x = m.shape
    return m.reshape(z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(1, 3, 5)) >= 0.5


def _to_fine(coarse: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """2 mm field -> 1 mm grid by linear interpolation (coarse voxel c covers fine voxels 2c and 2c + 1)."""
    fine = ndimage.zoom(coarse, 2, order=1, mode="nearest", grid_mode=True)
    return np.ascontiguousarray(fine[: shape[0], : shape[1], : shape[2]], dtype=np.float32)


def _extend_downwards(sdf: np.ndarray, taper_per_slice_mm: float) -> np.ndarray:
    """Each axial slice (array axis 0 runs inferior -> superior) holds the slice above shrunk by the taper."""
    out = sdf.copy()
    for k in range(out.shape[0] - 2, -1, -1):
        np.minimum(out[k], out[k + 1] + taper_per_slice_mm, out=out[k])
    return out


def _coverage(signed_mm: np.ndarray, edge_mm: float) -> np.ndarray:
    """Fraction of a 1 mm voxel inside ``signed distance <= edge_mm`` (a one-voxel ramp)."""
    return np.clip(edge_mm - signed_mm + 0.5, 0.0, 1.0)


@functools.lru_cache(maxsize=1)
def template_tissues() -> tuple[np.ndarray, Volume, np.ndarray]:
    """(fractions (len(TISSUES), z, y, x) at 1 mm summing to 1; the template grid; skull depth 0..1 per voxel).

    Cached in-process (a few seconds to build). The lesion class is all zeros here; lesions are added per
    subject. The skull depth map (0 at the inner table, 1 at the outer table) feeds the CT's bone density.
    """
    t1_img = _read("t1")
    t1 = sitk.GetArrayFromImage(t1_img)
    shape = t1.shape
    # nilearn ships the probability maps scaled to 0..255
    gm = sitk.GetArrayFromImage(_read("gm"))
    wm = sitk.GetArrayFromImage(_read("wm"))
    scale = max(float(gm.max()), float(wm.max()), 1.0)
    gm, wm = np.clip(gm / scale, 0, 1), np.clip(wm / scale, 0, 1)
    grid = Volume(np.zeros(shape, np.uint8), t1_img.GetSpacing(), t1_img.GetOrigin(),
                  np.array(t1_img.GetDirection()).reshape(3, 3))

    brain = ndimage.binary_fill_holes((t1 > 0) | (gm + wm > 0.3))
    coarse = _to_coarse(brain)
    icv = _closing(coarse, ICV_CLOSING_MM, 2.0)
    for k in range(icv.shape[0]):  # cisterns enclosed by brain in an axial slice are CSF, not skull
        icv[k] = ndimage.binary_fill_holes(icv[k])
    d_icv = _signed_distance(icv, 2.0)
    skull_outer = d_icv <= SKULL_MM
    envelope = _signed_distance(_closing(skull_outer, ENVELOPE_CLOSING_MM, 2.0), 2.0)
    envelope = _extend_downwards(envelope, 2.0 * NECK_TAPER)
    envelope = np.minimum(envelope, d_icv - SKULL_MM)  # the envelope holds the whole skull
    d_icv, d_env = _to_fine(d_icv, shape), _to_fine(envelope, shape)

    fractions = np.zeros((len(TISSUES),) + shape, np.float32)
    inside_icv = _coverage(d_icv, 0.0)
    inside_skull = np.maximum(_coverage(d_icv, SKULL_MM), inside_icv)
    inside_env = np.maximum(_coverage(d_env, 0.0), inside_skull)
    brain_sum = gm + wm
    fit = np.where(brain_sum > inside_icv, inside_icv / np.maximum(brain_sum, 1e-6), 1.0).astype(np.float32)
    fractions[GM], fractions[WM] = gm * fit, wm * fit
    fractions[CSF] = np.clip(inside_icv - fractions[GM] - fractions[WM], 0, None)
    fractions[BONE] = inside_skull - inside_icv
    fractions[SOFT] = inside_env - inside_skull  # skull base, neck
    inner = inside_env
    for name, edge in SCALP_LAYERS_MM:
        outer = np.maximum(_coverage(d_env, edge), inner)
        fractions[TISSUES.index(name)] += outer - inner
        inner = outer
    fractions[AIR] = 1.0 - inner
    fractions /= fractions.sum(axis=0)  # exact to float rounding: the layers above telescope to one
    depth = np.clip(d_icv / SKULL_MM, 0, 1).astype(np.float32)
    return fractions, grid, depth


@functools.lru_cache(maxsize=1)
def template_icv_distance() -> np.ndarray:
    """Signed distance (mm; positive outside, negative inside) to the template's intracranial volume (CSF, grey and
    white matter over half a voxel), on the 2 mm grid of :func:`_to_coarse` (smooth; cached in-process)."""
    fractions, _, _ = template_tissues()
    return _signed_distance(_to_coarse((fractions[CSF] + fractions[GM] + fractions[WM]) > 0.5), 2.0)


def tissue_weighted(tissues: np.ndarray, table: dict[str, float]) -> np.ndarray:
    """Sum over tissues of ``table[name]`` x its fraction: (z, y, x) float32 from ``tissues`` fractions
    (len(TISSUES), z, y, x); one value per tissue (PET uptake, ultrasound echogenicity, ...)."""
    if tissues.ndim != 4 or tissues.shape[0] != len(TISSUES):
        raise InputError(f"tissues must be fractions of shape ({len(TISSUES)}, z, y, x); got {tissues.shape}.")
    out = np.zeros(tissues.shape[1:], np.float32)
    for i, name in enumerate(TISSUES):
        if table[name]:
            out += np.float32(table[name]) * tissues[i]
    return out
