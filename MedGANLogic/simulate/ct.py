"""Pseudo-CT in Hounsfield units from tissue fractions.

Values (HU): air -1000, fat -100, soft tissue (muscle, skin) 40, CSF 15, GM 40, WM 30; lesions hypodense: oedema
18, MS-like plaque 24; bone: cortical tables about 1500, diploe about 600 (the skull depth map blends them), so the
skull spans several hundred to over 1000 HU once partial volume is included. Partial-volume voxels mix linearly.
Full-dose CT-like noise: Gaussian, slightly correlated in-plane (sigma 0.6 voxel), about 4 HU.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .tissue import BONE, TISSUES

TISSUE_HU = {"air": -1000.0, "csf": 15.0, "gm": 40.0, "wm": 30.0, "fat": -100.0, "soft": 40.0, "bone": 0.0,
             "lesion": 18.0}
LESION_HU = {"oedema": 18.0, "ms": 24.0}
CORTICAL_HU, DIPLOE_HU = 1500.0, 600.0


def bone_hu(depth: np.ndarray) -> np.ndarray:
    """Bone density across the skull: cortical at the inner (depth 0) and outer (depth 1) tables, diploe between."""
    middle = np.exp(-((depth - 0.5) / 0.22) ** 2)
    return (CORTICAL_HU + (DIPLOE_HU - CORTICAL_HU) * middle).astype(np.float32)


def noiseless_ct(fractions: np.ndarray, depth: np.ndarray, hu_offsets: dict[str, float] | None = None,
                 lesion_hu: np.ndarray | None = None) -> np.ndarray:
    """HU volume (z, y, x) from fractions (n_tissues, z, y, x) and the skull depth map (z, y, x).

    ``lesion_hu``: per-voxel HU (z, y, x) of the lesion class; without it, ``TISSUE_HU["lesion"]``.
    """
    offsets = hu_offsets or {}
    ct = np.zeros(fractions.shape[1:], np.float32)
    for i, name in enumerate(TISSUES):
        if i == BONE:
            ct += fractions[i] * bone_hu(depth)
        elif name == "lesion" and lesion_hu is not None:
            ct += fractions[i] * lesion_hu
        else:
            ct += np.float32(TISSUE_HU[name] + offsets.get(name, 0.0)) * fractions[i]
    return ct


def ct_noise(shape: tuple[int, ...], rng: np.random.Generator, noise_hu: float = 4.0) -> np.ndarray:
    """Full-dose-like CT noise (HU): Gaussian, slightly correlated in-plane (sigma 0.6 voxel), std ``noise_hu``."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (0, 0.6, 0.6))
    return noise * np.float32(noise_hu / max(float(noise.std()), 1e-6))
