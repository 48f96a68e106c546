"""Random appearance for domain randomisation: what a scanner of any contrast makes of an anatomy's tissues.

MR (:func:`random_mr_contrast`, :func:`render_mr`): a Gaussian mixture per tissue whose means are drawn per
sample, so a network cannot learn a lookup from intensity to tissue. For the physical orderings the means come
from the signal equations of :mod:`.mri` with sequence timings drawn from :data:`SEQUENCE_RANGES` and relaxation
times jittered around the literature values (log-normal), then each mean is jittered again (the mixture); the
``random`` ordering draws every tissue's mean uniformly (SynthSeg's choice), air stays dark (no protons).

* T1w-like: spin echo (short TR, short TE) or MPRAGE-like inversion recovery (TI 700-1100 ms): WM > GM > CSF
  (the jitters leave GM at or above WM in about 13 % of draws with the default ranges, as in an unmyelinated brain);
* T2w-like: spin echo (long TR, long TE): CSF > GM > WM (WM above GM in about 8 % of draws);
* FLAIR-like: inversion recovery with TI nulling CSF (+-10 %): lesions and GM bright, CSF dark;
* PD-like: spin echo (long TR, short TE): CSF, GM and WM within a few tens of percent (GM > WM by ~10 %,
  which the relaxation jitter may swap).

Within a tissue the intensity varies by a random fraction (a smooth texture, the mixture's spread). Then a
gamma (intensity non-linearity), a multiplicative bias field (:func:`.mri.bias_field`) and, after the
acquisition, Rician noise (:func:`.mri.add_rician_noise`) at a signal-to-noise ratio defined on brain tissue.

CT (:func:`random_ct_offsets`): HU per tissue stay physical; soft-tissue values vary by a few HU per sample.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from . import mri
from .tissue import AIR, BONE, GM, LESION, TISSUES, WM

if TYPE_CHECKING:
    from .randomize import DomainRanges

ORDERINGS = ("T1w", "T2w", "FLAIR", "PD", "random")
# Sequence timings (ms) drawn uniformly per sample; "TI": "null_csf" puts the inversion time at CSF's null point.
SEQUENCE_RANGES: dict[str, tuple[dict[str, Any], ...]] = {
    "T1w": ({"kind": "se", "TR": (400.0, 700.0), "TE": (8.0, 20.0)},
            {"kind": "ir", "TR": (1900.0, 2500.0), "TI": (700.0, 1100.0), "TE": (2.5, 5.0)}),
    "T2w": ({"kind": "se", "TR": (2500.0, 6000.0), "TE": (80.0, 130.0)},),
    "PD": ({"kind": "se", "TR": (2500.0, 5000.0), "TE": (8.0, 20.0)},),
    "FLAIR": ({"kind": "ir", "TR": (6000.0, 11000.0), "TI": "null_csf", "TE": (80.0, 140.0)},),
}


def _draw_sequence(ordering: str, rng: np.random.Generator, t1_csf: float) -> dict[str, Any]:
    options = SEQUENCE_RANGES[ordering]
    template = options[int(rng.integers(len(options)))]
    seq: dict[str, Any] = {"kind": template["kind"]}
    for key in ("TR", "TE", "TI"):
        if key in template and template[key] != "null_csf":
            seq[key] = round(float(rng.uniform(*template[key])), 1)
    if template.get("TI") == "null_csf":  # S(TI) = 0: TI = T1 ln(2 / (1 + exp(-TR / T1)))
        null = t1_csf * np.log(2.0 / (1.0 + np.exp(-seq["TR"] / t1_csf)))
        seq["TI"] = round(float(null * rng.uniform(0.9, 1.1)), 1)
    return seq


def random_mr_contrast(ordering: str, rng: np.random.Generator, ranges: DomainRanges) -> dict[str, Any]:
    """One MR contrast: {"ordering", "sequence" (None for random), "means" {tissue: a.u.}, "lesion_gain",
    "tissue_std" {tissue: fraction of its mean}} (signal scale :data:`.mri.SIGNAL_SCALE`: WM on T1w ~400)."""
    if ordering not in ORDERINGS:
        raise InputError(f"Unknown contrast ordering {ordering!r}; choose from {', '.join(ORDERINGS)}.")
    # field strength and sequence details move every tissue's T1 and T2 together; each tissue a third as much
    common = rng.normal(0, ranges.relaxation_jitter, 3) * (1, 1, 0)
    jitter = {name: np.exp(common + rng.normal(0, ranges.relaxation_jitter / 3, 3) * (1, 1, 1.5)) for name in TISSUES}
    params = {name: tuple(float(v * j) for v, j in zip(mri.TISSUE_PARAMS[name], jitter[name])) for name in TISSUES}
    if ordering == "random":
        sequence = None
        means = {name: float(rng.uniform(0, 1)) * mri.SIGNAL_SCALE for name in TISSUES}
        means["air"] = 0.0
    else:
        sequence = _draw_sequence(ordering, rng, params["csf"][0])
        means = {name: float(mri.sequence_signal(sequence, *params[name])) * mri.SIGNAL_SCALE for name in TISSUES}
        means = {name: m * float(np.exp(rng.normal(0, ranges.mean_jitter))) for name, m in means.items()}
    std = {name: float(rng.uniform(*ranges.tissue_std)) for name in TISSUES}
    return {"ordering": ordering, "sequence": sequence, "means": means, "tissue_std": std,
            "relaxation_scale": {name: np.round(j, 3).tolist() for name, j in jitter.items()},
            "lesion_gain": float(np.exp(rng.normal(0, ranges.mean_jitter)))}


def render_mr(fractions: np.ndarray, contrast: dict[str, Any], rng: np.random.Generator,
              lesion_relaxation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Noise-free image (z, y, x, a.u.) of ``fractions`` (n_tissues, z, y, x) in ``contrast``.

    Sum over tissues of fraction x (mean + spread x texture); the texture is one smooth standard-normal field.
    The lesion class follows its per-voxel relaxation times through the same sequence (physical orderings), or
    gets a random mean (``random``).
    """
    texture = ndimage.gaussian_filter(rng.standard_normal(fractions.shape[1:], dtype=np.float32), 0.7)
    texture /= max(float(texture.std()), 1e-6)
    out = np.zeros(fractions.shape[1:], np.float32)
    for i, name in enumerate(TISSUES):
        f = fractions[i]
        if name == "lesion":
            where = f > 0
            if not where.any():
                continue
            if contrast["sequence"] is not None and lesion_relaxation is not None:
                t1, t2, pd = (a[where] for a in lesion_relaxation)
                scale = contrast["relaxation_scale"]["lesion"]
                mean = (mri.sequence_signal(contrast["sequence"], t1 * scale[0], t2 * scale[1], pd * scale[2])
                        * mri.SIGNAL_SCALE * contrast["lesion_gain"])
            else:
                mean = contrast["means"]["lesion"]
            spread = 1 + contrast["tissue_std"]["lesion"] * texture[where]
            out[where] += (f[where] * mean * spread).astype(np.float32)
            continue
        mean = np.float32(contrast["means"][name])
        if mean:
            out += f * mean * (1 + np.float32(contrast["tissue_std"][name]) * texture)
    return np.clip(out, 0, None)


def apply_gamma(image: np.ndarray, gamma: float, high: float | None = None) -> np.ndarray:
    """``high * (image / high) ** gamma``; ``high`` by default the 99.5th percentile of the non-zero voxels."""
    if high is None:
        positive = image[image > 0]
        high = float(np.percentile(positive, 99.5)) if positive.size else 1.0
    return (high * np.power(np.clip(image / max(high, 1e-6), 0, None), gamma)).astype(np.float32)


def brain_signal(image: np.ndarray, fractions: np.ndarray) -> float:
    """Mean of ``image`` over brain tissue (GM + WM + lesion > 0.5): the S of the signal-to-noise ratio."""
    brain = (fractions[GM] + fractions[WM] + fractions[LESION]) > 0.5
    if not brain.any():
        brain = fractions[AIR] < 0.5
    return float(image[brain].mean()) if brain.any() else float(image.mean())


def random_ct_offsets(rng: np.random.Generator, ranges: DomainRanges) -> dict[str, float]:
    """Per-sample HU offsets of the soft tissues (normal, ``ranges.ct_hu_jitter`` HU); air, bone kept."""
    return {name: float(rng.normal(0, ranges.ct_hu_jitter)) for name in TISSUES
            if TISSUES.index(name) not in (AIR, BONE, LESION)}
