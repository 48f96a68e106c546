"""A fitted network as a model folder: ``weights.safetensors`` + ``card.json`` saying which scan it was fitted on.

The card (:mod:`MedGANLogic.models.card`) describes a ``scan_fitted2d`` network
(:class:`~MedGANLogic.models.adapted.ScanFittedNetwork`) with ``normalization: none`` on both sides, because the
network carries its own transform and window. ``extras.fitted_on`` names the scan (source, shape, spacing,
modality and the SHA-256 of its voxels) and ``extras.fit`` holds the fitting record. Such a folder runs through
``MedGANLogic.run`` like any model (a super-resolution fit then runs in one plane, where the fit fused two), and
is the starting point of a later fit (``init=``): on any other scan it is only that.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.card import ModelCard
from ..volume import Volume
from .loop import FitRecord

CARD_MODALITIES = ("MR", "CT")  # the modalities a card can name today; others are "any" (extras say which)


def voxel_sha256(volume: Volume) -> str:
    """SHA-256 of the volume's voxels (float32, C order): identifies the scan without storing any of it."""
    return hashlib.sha256(np.ascontiguousarray(volume.array, dtype=np.float32).tobytes()).hexdigest()


def _plane(scaled_axis: int) -> tuple[int, bool]:
    """(slice axis, transpose) so that a network whose H is the low-resolution axis runs on 2d slices."""
    in_plane = [a for a in range(3) if a != scaled_axis]
    slice_axis = in_plane[0] if in_plane[1] > scaled_axis else in_plane[1]
    remaining = [a for a in range(3) if a != slice_axis]
    return slice_axis, remaining[0] != scaled_axis


def fitted_card(task: str, volume: Volume, net: torch.nn.Module, record: FitRecord) -> dict[str, Any]:
    """A model card (without weights) for ``net`` fitted to ``volume`` by the fit that ``record`` describes."""
    details = record.details
    modality = str(details.get("modality") or volume.metadata.get("modality") or "any")
    scale = [1, 1, 1]
    if task == "superres":
        axis = int(details["scaled_axis"])
        scale[axis] = int(details["factor"])
        slice_axis, transpose = _plane(axis)
    else:
        slice_axis, transpose = int(details["slice_axis"]), False
    scan = fitted_on(volume, modality)
    digest, source = scan["voxels_sha256"], scan["source"]
    card_modality = modality if modality in CARD_MODALITIES else "any"
    what = "denoiser" if task == "denoise" else f"super-resolution x{scale[int(details.get('scaled_axis', 0))]}"
    return {
        "id": f"fitted-{task}-{modality.lower()}-{digest[:10]}-s{record.seed}",
        "version": "1.0.0", "task": task,
        "name": f"{modality} {what} fitted to one scan ({Path(source).name})",
        "architecture": {"name": "scan_fitted2d",
                         "params": {"inner": details["network"], "transform": details.get("transform", "identity"),
                                    "window": [float(w) for w in details["window"]],
                                    "constants": {k: float(v) for k, v in net.constants.items()},
                                    "transpose": transpose,
                                    "self_ensemble": int(getattr(net, "self_ensemble", 1))}},
        "dims": "2d", "slice_axis": slice_axis, "context_slices": 0, "scale_factor": scale,
        "input": {"modality": card_modality, "normalization": {"kind": "none"}},
        "output": {"modality": card_modality, "units": str(volume.metadata.get("units", "as the input")),
                   "normalization": {"kind": "none"}},
        "training_data": (f"self-supervised: fitted to one scan only ({source}, {modality}, shape {list(volume.shape)} "
                          f"(z, y, x), spacing {[round(s, 4) for s in volume.spacing]} mm (x, y, z)); no other data"),
        "license": "the weights derive from the scan they were fitted on: share them only as that scan may be shared",
        "intended_use": "research, not for diagnosis: made for the one scan it was fitted on; on other scans only "
                        "a starting point for another fit",
        "notes": record.method + (". Saved for one plane: the fit itself averaged two orthogonal planes."
                                  if task == "superres" else "."),
        "extras": {"fitted_on": scan, "fit": record.summary()},
    }


def fitted_on(volume: Volume, modality: str | None) -> dict[str, Any]:
    """What a fitted model's card says of the scan it was fitted on (``extras.fitted_on``): source, modality,
    shape, spacing and the SHA-256 of its voxels (none of the voxels themselves)."""
    return {"source": str(volume.metadata.get("source", volume.metadata.get("name", "an unnamed volume"))),
            "modality": str(modality or volume.metadata.get("modality") or "any"), "shape_zyx": list(volume.shape),
            "spacing_xyz_mm": list(volume.spacing), "voxels_sha256": voxel_sha256(volume)}


def save_fitted_model(result: Any, folder: str | Path, model_id: str | None = None) -> ModelCard:
    """Write ``result`` (an :class:`~MedGANLogic.adapt.AdaptResult`) as a model folder; returns its card.

    Weights are stored in float32 (a per-scan network is small). ``model_id`` overrides the card's id.
    """
    from ..models.registry import save_model

    card = dict(result.card)
    if model_id:
        card["id"] = model_id
    return save_model(folder, card, result.network.state_dict(), dtype=torch.float32)
