"""Fuzzy tissue model of the head from the MNI ICBM152 2009a template (shipped inside the nilearn wheel).

Method:
  1. Read the 1 mm T1 template and its grey- and white-matter probability maps from the installed ``nilearn``
     package (``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``); never the network.
  2. The shipped T1 is skull-stripped, so the head is built around the brain from distance to the ICV.
  3. Intracranial volume (ICV) = GM + WM > 0.3, closed and hole-filled (ventricles and sulci inside), dilated by
     1 mm; CSF = what GM and WM leave of the ICV.
  4. Layers outside the ICV (mm): 0-1 CSF (subarachnoid), 1-7 skull, 7-9 galea/muscle, 9-12.5 fat,
     12.5-14 skin; air beyond.
  5. Each class gets a non-negative score (probability maps for GM/WM, Gaussian-smoothed masks for the others,
     sigma 0.7 mm, giving partial-volume edges); dividing by the sum makes fractions that sum to one per voxel.

The template's licence notice travels with derived data (``Resources/SampleData/LICENSE-MNI152.txt``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import MedGANError
from ..volume import Volume

TISSUES = ("air", "csf", "gm", "wm", "fat", "soft", "bone", "lesion")
AIR, CSF, GM, WM, FAT, SOFT, BONE, LESION = range(len(TISSUES))


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


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    for k in range(out.shape[0]):
        out[k] = ndimage.binary_fill_holes(out[k])
    return out


@functools.lru_cache(maxsize=1)
def template_tissues() -> tuple[np.ndarray, Volume, np.ndarray]:
    """(fractions (len(TISSUES), z, y, x) at 1 mm summing to 1; the template grid; skull depth 0..1 per voxel).

    The lesion class is all zeros here; lesions are added per subject. The skull depth map (0 at the inner
    table, 1 at the outer table) lets CT give the tables cortical and the diploe cancellous bone densities.
    """
    return _template_tissues()


@functools.lru_cache(maxsize=1)
def _template_tissues() -> tuple[np.ndarray, Volume, np.ndarray]:
    t1_img = _read("t1")
    shape = sitk.GetArrayFromImage(t1_img).shape
    # nilearn ships the probability maps scaled to 0..255
    gm = sitk.GetArrayFromImage(_read("gm"))
    wm = sitk.GetArrayFromImage(_read("wm"))
    scale = max(float(gm.max()), float(wm.max()), 1.0)
    gm, wm = np.clip(gm / scale, 0, 1), np.clip(wm / scale, 0, 1)
    grid = Volume(np.zeros(shape, np.uint8), t1_img.GetSpacing(), t1_img.GetOrigin(),
                  np.array(t1_img.GetDirection()).reshape(3, 3))

    # The shipped T1 is skull-stripped: the head around the brain is built from the ICV's distance map.
    icv = ndimage.binary_closing(gm + wm > 0.3, iterations=4)
    icv = _fill_slices(icv)
    icv = ndimage.binary_dilation(icv, iterations=1)
    dist = ndimage.distance_transform_edt(~icv).astype(np.float32)  # mm outside the ICV (1 mm voxels)
    inner, outer = 1.0, 7.0  # skull from 1 to 7 mm outside the ICV (dura/CSF gap, then bone)
    skull = (dist > inner) & (dist <= outer)
    galea = (dist > outer) & (dist <= 9.0)
    fat = (dist > 9.0) & (dist <= 12.5)
    skin = (dist > 12.5) & (dist <= 14.0)
    head = dist <= 14.0

    def soft_mask(m: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(m.astype(np.float32), 0.7)

    icv_s = soft_mask(icv)
    scores = np.zeros((len(TISSUES),) + shape, np.float32)
    scores[GM] = gm * icv_s
    scores[WM] = wm * icv_s
    scores[CSF] = np.clip(icv_s - gm - wm, 0, None) + soft_mask((dist > 0) & (dist <= inner)) * (1 - icv_s)
    scores[BONE] = soft_mask(skull) * (1 - icv_s)
    scores[FAT] = soft_mask(fat)
    scores[SOFT] = soft_mask(galea | skin)
    scores[AIR] = np.clip(1 - soft_mask(head), 0, None)
    scores[AIR][scores.sum(axis=0) < 1e-6] = 1.0
    scores /= np.maximum(scores.sum(axis=0), 1e-12)
    depth = np.clip((dist - inner) / (outer - inner), 0, 1).astype(np.float32)
    return scores, grid, depth
