"""Rough tissue masks on real scans, for the contrast-order checks of ``make eval-real``.

The real images come without tissue labels (only tumour labels), so the report needs masks it can make itself.
They are deliberately simple, documented, and reported as rough:

* CT body: above -500 HU, holes filled slice by slice, the largest connected part. Soft tissue: body voxels
  whose 5 x 5 mean lies in [-100, 100] HU, eroded by 3 pixels (flat regions where noise can be measured).
* MR head: above half the Otsu threshold of the volume, closed, holes filled per slice, the largest part.
* MR brain (a morphological skull strip): inside the head, voxels above the lowest of three multi-Otsu classes
  (the dark class holds skull, CSF and air) are eroded in-plane by 7 mm so that brain and scalp come apart,
  the largest 3D part is kept and dilated back by 7 mm; per slice, its largest part, holes filled. Slices
  where that covers less than 60 % of the largest cross-section (skull base, vertex) are dropped.
* Tissue classes on T1w (``t1_tissue_classes``): the T1w is flattened (divided by its 25 mm Gaussian-weighted
  local mean inside the brain, a crude bias-field correction), then, in the brain core (brain eroded by 6 mm,
  tumour and 2 mm around it excluded), relative to the white-matter level (the core's 90th percentile): CSF below
  0.6 of it (real T1w: CSF 0.2-0.6, grey matter 0.7-0.9 of white matter); parenchyma at or above 0.75 (the gap
  leaves partial-volume voxels out); white matter = parenchyma above its median.
* Skull shell: head voxels 1-10 mm outside the brain mask (bone, with some scalp and CSF).
All work on (z, y, x) arrays; spacings are (x, y, z) in mm, as :class:`~MedGANLogic.volume.Volume` stores them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..normalization import _disk, _largest, fill_holes_per_slice

CSF_MAX = 0.6  # of the white-matter level
PARENCHYMA_MIN = 0.75
BRAIN_ERODE_MM = 7.0
CORE_ERODE_MM = 6.0
FLATTEN_SIGMA_MM = 25.0
SHELL_MM = (1.0, 10.0)


def ct_body(hu: np.ndarray) -> np.ndarray:
    """Body mask of a CT in HU, (z, y, x) bool."""
    return _largest(fill_holes_per_slice(hu > -500.0))


def ct_soft_tissue(hu: np.ndarray) -> np.ndarray:
    """Flat soft tissue of a CT: body voxels with a 5 x 5 in-plane mean in [-100, 100] HU, eroded 3 pixels."""
    local = ndimage.uniform_filter(hu.astype(np.float32), size=(1, 5, 5))
    soft = (local > -100.0) & (local < 100.0) & ct_body(hu)
    return ndimage.binary_erosion(soft, structure=np.ones((1, 3, 3)), iterations=3)


def mr_head(image: np.ndarray) -> np.ndarray:
    """Head (foreground) mask of an MR volume, (z, y, x) bool."""
    from skimage.filters import threshold_otsu

    fg = image > 0.5 * threshold_otsu(image)
    fg = ndimage.binary_closing(fg, structure=np.ones((1, 3, 3)), iterations=2)
    return _largest(fill_holes_per_slice(fg))


def mr_brain(image: np.ndarray, spacing_xyz: tuple[float, float, float], head: np.ndarray | None = None
             ) -> np.ndarray:
    """Rough brain mask of a T1w head MR (a morphological skull strip; see the module docstring)."""
    from skimage.filters import threshold_multiotsu

    head = mr_head(image) if head is None else head
    if not head.any():
        return head
    not_dark = (image > threshold_multiotsu(image[head], classes=3)[0]) & head
    st = _disk(BRAIN_ERODE_MM, spacing_xyz)
    core = _largest(ndimage.binary_erosion(not_dark, structure=st))
    brain = ndimage.binary_dilation(core, structure=st) & head
    brain = np.stack([fill_holes_per_slice(_largest(s)[None])[0] for s in brain])  # scalp pieces joined in 3D only
    area = brain.reshape(brain.shape[0], -1).sum(1)
    brain[area < 0.6 * area.max()] = False
    return brain


def flatten(image: np.ndarray, mask: np.ndarray, spacing_xyz: tuple[float, float, float],
            sigma_mm: float = FLATTEN_SIGMA_MM) -> np.ndarray:
    """``image`` divided by its Gaussian-weighted local mean over ``mask`` (in-plane, ``sigma_mm``); 0 outside."""
    sigma = (0.0, sigma_mm / spacing_xyz[1], sigma_mm / spacing_xyz[0])
    m = mask.astype(np.float32)
    local = ndimage.gaussian_filter(image.astype(np.float32) * m, sigma) / np.maximum(ndimage.gaussian_filter(m, sigma),
                                                                                         1e-3)
    return np.where(mask, image / np.maximum(local, 1e-6), 0.0).astype(np.float32)


def t1_tissue_classes(t1: np.ndarray, brain: np.ndarray, spacing_xyz: tuple[float, float, float],
                      tumour: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Rough CSF, parenchyma and white-matter masks on a T1w (see the module docstring), (z, y, x) bool each."""
    core = ndimage.binary_erosion(brain, structure=_disk(CORE_ERODE_MM, spacing_xyz))
    if tumour is not None and tumour.any():
        core &= ~ndimage.binary_dilation(tumour > 0, structure=_disk(2.0, spacing_xyz))
    flat = flatten(t1, brain, spacing_xyz)
    wm_level = float(np.percentile(flat[core], 90)) if core.any() else 1.0
    csf = core & (flat < CSF_MAX * wm_level)
    parenchyma = core & (flat >= PARENCHYMA_MIN * wm_level)
    wm = parenchyma & (flat > np.median(flat[parenchyma])) if parenchyma.any() else parenchyma
    return {"csf": csf, "parenchyma": parenchyma, "wm": wm, "core": core}


def skull_shell(head: np.ndarray, brain: np.ndarray, spacing_xyz: tuple[float, float, float],
                shell_mm: tuple[float, float] = SHELL_MM) -> np.ndarray:
    """Head voxels between ``shell_mm[0]`` and ``shell_mm[1]`` mm outside the brain, on the brain's slices."""
    distance = ndimage.distance_transform_edt(~brain, sampling=(spacing_xyz[2], spacing_xyz[1], spacing_xyz[0]))
    on_brain_slices = brain.reshape(brain.shape[0], -1).any(1)[:, None, None]
    return head & (distance > shell_mm[0]) & (distance <= shell_mm[1]) & on_brain_slices
