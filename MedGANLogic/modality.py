"""What a volume is (MR or CT, which contrast) and whether it suits a model: one rule for each question.

* :func:`looks_like_ct`: the one rule for "do these intensities look like Hounsfield units" (used when a file
  does not record its modality);
* :func:`declare`: the volume with what the user declared, and the guess when nothing is recorded;
* :func:`describe_modality`: the one description of a volume's (or a card side's) modality, e.g. "MR T1w",
  "looks like CT (not recorded)";
* :func:`modality_problem`: why a model does not suit a volume's modality or contrast (None when it does).

Pure numpy over :class:`~MedGANLogic.volume.Volume`; imports neither torch nor Slicer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .volume import Volume

#: HU below which a voxel is air (CT air is -1000 HU; no MR scanner stores values this negative).
CT_AIR_HU = -800.0
#: At least this fraction of a CT volume is air around the body (fraction of sampled voxels).
CT_MIN_AIR_FRACTION = 0.02
#: A CT volume holds soft tissue or bone above this (HU).
CT_MIN_TISSUE_HU = 100.0


def looks_like_ct(array: np.ndarray) -> bool:
    """True when the intensities look like Hounsfield units: some air (below -800 HU, at least 2 % of the
    voxels of every 16th slice) and tissue above 100 HU. ``array`` is (z, y, x) in the file's units."""
    sample = np.asarray(array)[:: max(1, array.shape[0] // 16)]
    if sample.size == 0:
        return False
    return float(np.mean(sample < CT_AIR_HU)) > CT_MIN_AIR_FRACTION and float(sample.max()) > CT_MIN_TISSUE_HU


def declare(volume: Volume, modality: str | None = None, contrast: str | None = None) -> Volume:
    """``volume`` with the declared ``modality``/``contrast`` in its metadata (over what the file says) and, when
    no modality is recorded, ``metadata["guessed_modality"] = "CT"`` if it :func:`looks_like_ct`.

    Returns ``volume`` itself when there is nothing to add; otherwise a new Volume sharing the voxels (the input
    is never modified).
    """
    declared = {k: v for k, v in (("modality", modality), ("contrast", contrast)) if v}
    if not declared and "modality" in volume.metadata:
        return volume
    meta = dict(volume.metadata, **declared)
    meta.pop("guessed_modality", None)
    if "modality" not in meta and volume.array.size and looks_like_ct(volume.array):
        meta["guessed_modality"] = "CT"
    return Volume(volume.array, volume.spacing, volume.origin, volume.direction, meta)


def describe_modality(what: Volume | Mapping[str, Any]) -> str:
    """The modality and contrast of a volume, or of a model card's ``input``/``output`` spec, in words.

    E.g. "MR T1w", "CT", "looks like CT (not recorded)", "modality not recorded".
    """
    meta = what.metadata if isinstance(what, Volume) else what
    words = " ".join(str(v) for v in (meta.get("modality"), meta.get("contrast")) if v)
    if words:
        return words
    return "looks like CT (not recorded)" if meta.get("guessed_modality") == "CT" else "modality not recorded"


def is_ct(volume: Volume) -> bool:
    """The volume is CT: recorded as such, or (recording nothing) it :func:`looks_like_ct`."""
    if volume.modality:
        return volume.modality == "CT"
    return volume.metadata.get("guessed_modality") == "CT"


def modality_problem(card: Any, volume: Volume) -> str | None:
    """Why ``card``'s model does not suit ``volume``'s modality or contrast, as a sentence; None when it does.

    A recorded modality/contrast must equal the card's; an unrecorded modality that :func:`looks_like_ct` does
    not suit an MR model; an unrecorded contrast is not a problem here.
    """
    want_mod, want_con = card.input.get("modality"), card.input.get("contrast")
    have_mod, have_con = volume.metadata.get("modality"), volume.metadata.get("contrast")
    if want_mod in (None, "any"):
        return None
    if have_mod and have_mod != want_mod:
        return f"model {card.id} expects {want_mod} input but the volume is {have_mod}"
    if want_mod == "MR" and not have_mod and volume.metadata.get("guessed_modality") == "CT":
        return f"model {card.id} expects MR but the volume looks like CT (values in Hounsfield units)"
    if want_con and have_con and have_con != want_con:
        return f"model {card.id} expects {want_mod} {want_con} but the volume is {have_mod or ''} {have_con}".strip()
    return None
