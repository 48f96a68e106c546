"""MR contrasts from tissue fractions: signal equations, literature relaxation times, bias field, Rician noise.

Tissue parameters at 1.5 T (T1, T2 in ms; PD relative) follow the BrainWeb digital brain phantom (Kwan, Evans
and Pike, IEEE TMI 1999; Collins et al. 1998): CSF 2569/329/1.0, GM 833/83/0.86, WM 500/70/0.77, fat 350/70/1.0,
muscle/skin 900/47/1.0; cortical bone has almost no mobile protons (PD 0.05). Lesions (not in BrainWeb's normal
phantom; values chosen between WM and CSF, as free water raises both relaxation times): "oedema" (vasogenic
oedema / tumour-like, T1 1100, T2 200, PD 0.95) and "ms" (demyelinating plaque-like, T1 900, T2 120, PD 0.85):
bright on T2w and FLAIR, dark on T1w against white matter. Partial-volume voxels mix the tissues' signals
linearly.

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
LESION_KINDS = {"oedema": (1100.0, 200.0, 0.95), "ms": (900.0, 120.0, 0.85)}
SEQUENCES = {
    "T1w": {"kind": "se", "TR": 500.0, "TE": 12.0},
    "T2w": {"kind": "se", "TR": 4000.0, "TE": 100.0},
    "PD": {"kind": "se", "TR": 3000.0, "TE": 15.0},
    "FLAIR": {"kind": "ir", "TR": 9000.0, "TI": 1780.0, "TE": 120.0},
}
CONTRASTS = tuple(SEQUENCES)
SIGNAL_SCALE = 1000.0  # arbitrary units: WM on T1w is about 400


def tissue_signal(contrast: str, t1, t2, pd):
    """Signal (relative to PD 1) of one tissue, or of arrays of T1, T2 (ms) and PD, for ``contrast``."""
    return sequence_signal(SEQUENCES[contrast], t1, t2, pd)


def sequence_signal(seq: dict, t1, t2, pd):
    """Signal (relative to PD 1) for a sequence ``{"kind": "se"|"ir", "TR", "TE"[, "TI"]}`` (ms), as in
    :data:`SEQUENCES`: the equations of the module docstring; scalars or arrays of T1, T2 (ms) and PD."""
    decay = np.exp(-seq["TE"] / np.asarray(t2, np.float64))
    recovery = np.exp(-seq["TR"] / np.asarray(t1, np.float64))
    if seq["kind"] == "se":
        signal = pd * (1 - recovery) * decay
    else:
        signal = pd * np.abs(1 - 2 * np.exp(-seq["TI"] / np.asarray(t1, np.float64)) + recovery) * decay
    return float(signal) if np.ndim(signal) == 0 else signal


def noiseless_contrast(fractions: np.ndarray, contrast: str, params: dict[str, tuple[float, float, float]],
                       lesion_relaxation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Signal (z, y, x) of ``contrast`` for tissue ``fractions`` (n_tissues, z, y, x), before bias and noise.

    ``lesion_relaxation``: per-voxel (T1, T2, PD) arrays (z, y, x) for the lesion class (heterogeneous lesions);
    without it the lesion class uses ``params["lesion"]``.
    """
    out = np.zeros(fractions.shape[1:], np.float32)
    for i, name in enumerate(TISSUES):
        if name == "lesion" and lesion_relaxation is not None:
            where = fractions[i] > 0
            if where.any():
                t1, t2, pd = (a[where] for a in lesion_relaxation)
                out[where] += (tissue_signal(contrast, t1, t2, pd) * SIGNAL_SCALE * fractions[i][where]
                               ).astype(np.float32)
            continue
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


def add_rician_noise(signals: list[np.ndarray], sigma: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Magnitudes of each signal plus the same complex Gaussian noise (standard deviation ``sigma`` per channel).

    One noise draw for several signals of one acquisition (a subject with and without lesions): they then
    differ exactly where their noiseless signals differ.
    """
    sigma = np.float32(sigma)
    shape = signals[0].shape
    noise_real = sigma * rng.standard_normal(shape, dtype=np.float32)
    imag_squared = np.square(sigma * rng.standard_normal(shape, dtype=np.float32))
    out = []
    for s in signals:
        real = s + noise_real
        out.append(np.sqrt(real * real + imag_squared))
    return out
