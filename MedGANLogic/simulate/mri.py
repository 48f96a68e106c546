"""MR contrasts from tissue fractions: signal equations, literature relaxation times, bias field, Rician noise.

Tissue parameters at 1.5 T (T1, T2 in ms; PD relative) follow the BrainWeb digital brain phantom (Kwan, Evans
and Pike, IEEE TMI 1999; Collins et al. 1998): CSF 2569/329/1.0, GM 833/83/0.86, WM 500/70/0.77, fat 350/70/1.0,
muscle/skin 900/47/1.0; cortical bone has almost no mobile protons (PD 0.05); the lesion class is vasogenic
oedema/tumour-like (T1 1100, T2 200, PD 0.95). Partial-volume voxels mix the tissues' signals linearly.

Sequences (signal equations for a magnitude image, ignoring T2* and flip-angle effects):
  * T1w: spin echo TR 500 / TE 12 ms: S = PD (1 - exp(-TR/T1)) exp(-TE/T2)
  * T2w: spin echo TR 4000 / TE 100 ms (same equation)
  * PD : spin echo TR 3000 / TE 15 ms (same equation)
  * FLAIR: inversion recovery TR 9000 / TI 1780 / TE 120 ms, TI chosen to null CSF (TI = T1_csf ln 2):
    S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)
"""

from __future__ import annotations

import numpy as np

from .tissue import TISSUES

#                T1 ms   T2 ms  PD
TISSUE_PARAMS = {
    "air": (1.0, 1.0, 0.0),
    "csf": (2569.0, 329.0, 1.0),
    "gm": (833.0, 83.0, 0.86),
    "wm": (500.0, 70.0, 0.77),
    "fat": (350.0, 70.0, 1.0),
    "soft": (900.0, 47.0, 1.0),
    "bone": (300.0, 1.0, 0.05),
    "lesion": (1100.0, 200.0, 0.95),
}
SEQUENCES = {
    "T1w": {"kind": "se", "TR": 500.0, "TE": 12.0},
    "T2w": {"kind": "se", "TR": 4000.0, "TE": 100.0},
    "PD": {"kind": "se", "TR": 3000.0, "TE": 15.0},
    "FLAIR": {"kind": "ir", "TR": 9000.0, "TI": 1780.0, "TE": 120.0},
}
CONTRASTS = tuple(SEQUENCES)
SIGNAL_SCALE = 1000.0  # arbitrary units: WM on T1w is about 400


def tissue_signal(contrast: str, t1: float, t2: float, pd: float) -> float:
    seq = SEQUENCES[contrast]
    decay = np.exp(-seq["TE"] / t2)
    if seq["kind"] == "se":
        return float(pd * (1 - np.exp(-seq["TR"] / t1)) * decay)
    return float(pd * abs(1 - 2 * np.exp(-seq["TI"] / t1) + np.exp(-seq["TR"] / t1)) * decay)


def noiseless_contrast(fractions: np.ndarray, contrast: str, params: dict[str, tuple[float, float, float]]
                       ) -> np.ndarray:
    """Signal (z, y, x) of ``contrast`` for tissue ``fractions`` (n_tissues, z, y, x), before bias and noise."""
    out = np.zeros(fractions.shape[1:], np.float32)
    for i, name in enumerate(TISSUES):
        s = tissue_signal(contrast, *params[name]) * SIGNAL_SCALE
        if s:
            out += np.float32(s) * fractions[i]
    return out


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, amplitude: float = 0.15) -> np.ndarray:
    """A smooth multiplicative field exp(sum of low-order terms), about 1 +- ``amplitude`` over the head."""
    z, y, x = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    c = rng.normal(0, amplitude / 2, 9).astype(np.float32)
    field = (c[0] * xx + c[1] * yy + c[2] * zz + c[3] * xx * yy + c[4] * yy * zz + c[5] * xx * zz
             + c[6] * (xx ** 2 - 1 / 3) + c[7] * (yy ** 2 - 1 / 3) + c[8] * (zz ** 2 - 1 / 3))
    return np.exp(field)


def add_rician_noise(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma`` per channel."""
    real = signal + rng.normal(0, sigma, signal.shape).astype(np.float32)
    imag = rng.normal(0, sigma, signal.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag)
