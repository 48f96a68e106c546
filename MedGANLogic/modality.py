"""What a volume is (MR or CT, which contrast) and whether it suits a model: one rule for each question.

* :func:`looks_like_ct`: the one rule for "do these intensities look like Hounsfield units" (used when a file
  does not record its modality), and :func:`guess_modality`, which also says when they cannot be;
* :func:`declare`: the volume with what the user declared, and the guess when nothing is recorded;
* :func:`describe_modality`: the one description of a volume's (or a card side's) modality, e.g. "MR T1w",
  "looks like CT (not recorded)";
* :func:`modality_problem`: why a model does not suit a volume's modality, contrast or body part (None when it
  does).

Pure numpy over :class:`~MedGANLogic.volume.Volume`; imports neither torch nor Slicer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .volume import Volume

#: The most voxels a statistic of a whole volume looks at (a strided sample of larger volumes).
_MAX_VOXELS = 2_000_000
#: HU below which a voxel is air (CT air is -1000 HU; no MR scanner stores values this negative).
CT_AIR_HU = -800.0
#: At least this fraction of a CT volume is air around the body (fraction of sampled voxels).
CT_MIN_AIR_FRACTION = 0.02
#: A CT volume holds soft tissue or bone above this (HU).
CT_MIN_TISSUE_HU = 100.0


def _strided_sample(array: np.ndarray) -> tuple[np.ndarray, int]:
    """Every ``step``-th voxel along each axis of a (z, y, x) array, as float32, with ``step`` chosen so that at most
    about :data:`_MAX_VOXELS` are looked at: (sample, step)."""
    array = np.asarray(array)
    step = max(1, int(np.ceil((array.size / _MAX_VOXELS) ** (1 / 3))))
    return np.asarray(array[::step, ::step, ::step], dtype=np.float32), step


def _every_16th_slice(array: np.ndarray) -> np.ndarray:
    """The voxels the modality guesses look at: every 16th slice of a (z, y, x) array (a view)."""
    return np.asarray(array)[:: max(1, len(array) // 16)]


def looks_like_ct(array: np.ndarray) -> bool:
    """True when the intensities look like Hounsfield units: some air (below -800 HU, at least 2 % of the
    voxels of every 16th slice) and tissue above 100 HU. ``array`` is (z, y, x) in the file's units."""
    sample = _every_16th_slice(array)
    if sample.size == 0:
        return False
    return float(np.mean(sample < CT_AIR_HU)) > CT_MIN_AIR_FRACTION and float(sample.max()) > CT_MIN_TISSUE_HU


#: ``guessed_modality`` of a volume that records no modality and has no negative voxel: a magnitude image (MR,
#: PET, ultrasound), or CT stored without its rescale intercept; in neither case Hounsfield units, which always
#: put air (-1000) and fat (about -100) below zero.
NOT_CT = "not CT"


def guess_modality(array: np.ndarray) -> str | None:
    """What the voxels (z, y, x) of a volume that records no modality say: "CT" when they :func:`looks_like_ct`,
    :data:`NOT_CT` when none is negative (they cannot be Hounsfield units), else None (no guess). Both look at
    every 16th slice (CT has air or fat in every slice)."""
    sample = _every_16th_slice(array)
    if sample.size == 0:
        return None
    if looks_like_ct(array):
        return "CT"
    return NOT_CT if float(sample.min()) >= 0 else None


def declare(volume: Volume, modality: str | None = None, contrast: str | None = None) -> Volume:
    """``volume`` with the declared ``modality``/``contrast`` in its metadata (over what the file says) and, when
    no modality is recorded, ``metadata["guessed_modality"]``: :func:`guess_modality` of its voxels, if any.

    Returns ``volume`` itself when there is nothing to add; otherwise a new Volume sharing the voxels (the input
    is never modified).
    """
    declared = {k: v for k, v in (("modality", modality), ("contrast", contrast)) if v}
    if not declared and "modality" in volume.metadata:
        return volume
    meta = dict(volume.metadata, **declared)
    meta.pop("guessed_modality", None)
    if "modality" not in meta and (guess := guess_modality(volume.array)):
        meta["guessed_modality"] = guess
    return Volume(volume.array, volume.spacing, volume.origin, volume.direction, meta)


def describe_modality(what: Volume | Mapping[str, Any]) -> str:
    """The modality and contrast of a volume, or of a model card's ``input``/``output`` spec, in words.

    E.g. "MR T1w", "CT", "looks like CT (not recorded)", "modality not recorded".
    """
    meta = what.metadata if isinstance(what, Volume) else what
    words = " ".join(str(v) for v in (meta.get("modality"), meta.get("contrast")) if v)
    if words:
        return words
    return {"CT": "looks like CT (not recorded)",
            NOT_CT: "modality not recorded (not CT: no negative values)"}.get(
        meta.get("guessed_modality"), "modality not recorded")


def is_ct(volume: Volume) -> bool:
    """The volume is CT: recorded as such, or (recording nothing) it :func:`looks_like_ct`."""
    if volume.modality:
        return volume.modality == "CT"
    return volume.metadata.get("guessed_modality") == "CT"


def modality_problem(card: Any, volume: Volume) -> str | None:
    """Why ``card``'s model does not suit ``volume``'s modality, contrast or body part (:func:`body_part_problem`),
    as a sentence; None when it does.

    A recorded modality/contrast must equal the card's; an unrecorded modality that :func:`looks_like_ct` does
    not suit an MR model, nor one without negative values (:data:`NOT_CT`) a CT model; an unrecorded contrast is
    not a problem here.
    """
    want_mod, want_con = card.input.get("modality"), card.input.get("contrast")
    have_mod, have_con = volume.metadata.get("modality"), volume.metadata.get("contrast")
    if want_mod in (None, "any"):
        return None
    if have_mod and have_mod != want_mod:
        return f"model {card.id} expects {want_mod} input but the volume is {have_mod}"
    if want_mod == "MR" and not have_mod and volume.metadata.get("guessed_modality") == "CT":
        return f"model {card.id} expects MR but the volume looks like CT (values in Hounsfield units)"
    if want_mod == "CT" and not have_mod and volume.metadata.get("guessed_modality") == NOT_CT:
        return (f"model {card.id} expects CT in Hounsfield units but the volume records no modality and has no "
                f"negative values (CT air is -1000 HU, fat about -100): it is not CT in HU (an MR? declare "
                f"modality=MR, --modality MR, and pick an MR model; a CT stored without its rescale intercept: "
                f"convert it to HU first)")
    if want_con and have_con and have_con != want_con:
        return f"model {card.id} expects {want_mod} {want_con} but the volume is {have_mod or ''} {have_con}".strip()
    return body_part_problem(card, volume)


#: A head encloses little air (paranasal sinuses, mastoid cells, nasal cavity, airway: a few % of its volume; the
#: phantom heads 0.4 %); a chest's lungs are a fifth to a quarter of its body (the pyradiomics chest CTs: 19 and
#: 27 %), and bowel gas can be several % of an abdomen. Above this, a CT is not (only) a head.
HEAD_MAX_ENCLOSED_AIR = 0.10
#: Body voxels (HU) and enclosed air (HU) for :func:`enclosed_air_fraction`.
_BODY_HU, _AIR_HU = -500.0, -400.0


def enclosed_air_fraction(array: np.ndarray) -> float:
    """The fraction of a CT's body (HU, (z, y, x)) that is air enclosed by it: lungs, bowel gas, sinuses.

    The body is the largest connected region above -500 HU; what it encloses is filled slice by slice along each
    of the three axes (lungs are enclosed in axial slices even where the trachea leaves the volume), and the air
    is what the filling adds below -400 HU. Looks at no more than about 2 million voxels (a strided sample).
    """
    from scipy import ndimage

    sample, _ = _strided_sample(array)
    labels, n = ndimage.label(sample > _BODY_HU)
    if n == 0:
        return 0.0
    body = labels == 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(sample), labels, range(1, n + 1))))
    filled = body.copy()
    for axis in range(3):  # a hole in any slice along any axis: a 2D cross in the planes normal to ``axis``
        structure = np.zeros((3, 3, 3), bool)
        index = [slice(None)] * 3
        index[axis] = 1
        structure[tuple(index)] = ndimage.generate_binary_structure(2, 1)
        filled |= ndimage.binary_fill_holes(body, structure=structure)
    air = filled & ~body & (sample < _AIR_HU)
    return float(air.sum() / max(int(filled.sum()), 1))


def body_part_problem(card: Any, volume: Volume) -> str | None:
    """Why ``card``'s model, made for one body part (``input.body_part``: "head"), does not suit ``volume``, as a
    sentence; None when it does or nothing tells. A CT is not a head when more than
    :data:`HEAD_MAX_ENCLOSED_AIR` of its body is enclosed air (:func:`enclosed_air_fraction`)."""
    if card.input.get("body_part") != "head" or not is_ct(volume):
        return None
    air = enclosed_air_fraction(volume.array)
    if air <= HEAD_MAX_ENCLOSED_AIR:
        return None
    return (f"model {card.id} was made for heads, but {air:.0%} of this CT's body is enclosed air (lungs or bowel "
            f"gas; a head holds a few %: sinuses and airways): a chest or abdomen, not a head. Give it a head CT")


#: Fractions of the central brain that make the CSF "bright" (T2w) or "dark" (T1w, FLAIR), and the dark tail's
#: level relative to the parenchyma above which CSF is merely darker (T1w) and below which it is suppressed
#: (FLAIR). Measured on the phantoms (Testing/Python/test_modality.py); between the two levels: unknown.
_CSF_FRACTION, _T1W_DARK_LEVEL, _FLAIR_DARK_LEVEL = 0.05, 0.35, 0.28
#: A head's central brain has a parenchyma peak: at least this fraction within +-20 % of it (phantoms: 0.47-0.87).
_PEAK_FRACTION = 0.4
#: A whole head spans at least this much (mm) along the two longest axes of its mask (a newborn's head is about
#: 95 mm across); a smaller mask is a partial field of view or another body part, whose contrast is not judged.
_MIN_HEAD_MM = 80.0


def estimate_contrast(volume: Volume) -> tuple[str | None, str]:
    """The MR contrast a head volume looks like, from tissue statistics: ("T1w" | "T2w" | "FLAIR" | None, why).

    Inside the central brain (the inner 40 % of the head mask's extent, where the ventricles lie in white
    matter), relative to the white-matter peak M of the intensity histogram (which must hold 40 % of the voxels
    within +-20 %, else there is no brain to judge): T2w when CSF is the brightest tissue
    (over 5 % of the voxels above 1.5 M, almost none below 0.6 M); otherwise, when CSF is the darkest (over 5 %
    below 0.6 M), T1w if that dark tail sits at 35 % or more of the parenchyma's 90th percentile (white matter
    brighter than CSF, CSF not suppressed), FLAIR if at 28 % or less (CSF suppressed). Anything else (PD, a
    body part, too few voxels, a mask smaller than a head: under 80 mm along either of its two longest axes) is
    None: unknown, said plainly. ``why`` is one sentence of evidence.
    """
    from .normalization import head_mask

    array, step = _strided_sample(volume.array)  # statistics need no more voxels than this
    head = head_mask(array)
    if head.sum() < 1000:
        return None, "too few head voxels to estimate the contrast"
    where = np.argwhere(head)
    low, high = where.min(axis=0), where.max(axis=0)
    span_mm = sorted(((high - low + 1) * step * np.asarray(volume.spacing[::-1], float)).tolist(), reverse=True)
    if span_mm[1] < _MIN_HEAD_MM:
        return None, (f"the head mask spans only {span_mm[0]:.0f} x {span_mm[1]:.0f} mm, less than a whole head: a "
                      f"partial field of view or another body part")
    centre, radius = (low + high) / 2.0, np.maximum((high - low) / 2.0, 1.0)
    grid = np.ogrid[tuple(slice(0, n) for n in array.shape)]
    distance = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius))
    core = array[head & (distance < 0.4 ** 2)]
    if core.size < 200:
        return None, "too few central voxels to estimate the contrast"
    p1, p90, p99 = np.percentile(core, [1, 90, 99])
    counts, edges = np.histogram(core, bins=64, range=(float(np.percentile(core, 1)), float(p99)))
    from scipy import ndimage

    peak = int(np.argmax(ndimage.gaussian_filter1d(counts.astype(np.float64), 1.5)))
    mode = float(edges[peak] + edges[peak + 1]) / 2.0
    bright, dark = float(np.mean(core > 1.5 * mode)), float(np.mean(core < 0.6 * mode))
    level = float(p1 / p90) if p90 > 0 else 1.0
    if float(np.mean((core > 0.8 * mode) & (core < 1.2 * mode))) < _PEAK_FRACTION:
        return None, "no clear white-matter peak in the central brain"
    if bright > _CSF_FRACTION and dark < 0.4 * _CSF_FRACTION:
        return "T2w", f"CSF is the brightest tissue: {bright:.0%} of the central brain above 1.5x white matter"
    if dark > _CSF_FRACTION and bright < 0.6 * _CSF_FRACTION:
        if level >= _T1W_DARK_LEVEL:
            return "T1w", f"white matter brighter than CSF, CSF not suppressed: at {level:.2f} of the parenchyma"
        if level <= _FLAIR_DARK_LEVEL:
            return "FLAIR", f"CSF dark and suppressed: at {level:.2f} of the parenchyma"
    return None, "the tissue statistics fit none of T1w, T2w, FLAIR clearly"
