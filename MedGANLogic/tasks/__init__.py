"""The tasks: what is made of a network's raw output. One small module each.

Every task module defines ``PRIMARY`` (the name of its main output) and
``make_outputs(ctx: TaskContext) -> tuple[dict[str, Volume], dict]`` (output volumes and extras such as a case
score). The shared work (checks, normalisation, inference, provenance) lives in :mod:`MedGANLogic.pipeline`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import MedGANError
from ..normalization import denormalize
from ..volume import Volume

TASK_MODULES = {"synthesize": "synthesis", "denoise": "denoise", "superres": "superres", "anomaly": "anomaly",
                "segment": "segment"}
TASK_OPTIONS = {"anomaly": ("threshold", "smoothing_mm"), "segment": ("min_probability",)}


@dataclass
class TaskContext:
    """What a task gets: the card, the input, its normalised form and the network's raw output."""

    card: Any
    volume: Volume
    normalized: np.ndarray  # (z, y, x) in the card's input range
    stats: dict[str, float]  # the input's intensity window
    raw: np.ndarray  # (channels, z', y', x') in the network's output range
    options: dict[str, Any] = field(default_factory=dict)
    net: Any = None


def get_task(name: str) -> ModuleType:
    if name not in TASK_MODULES:
        raise MedGANError(f"Unknown task {name!r}; choose one of {', '.join(TASK_MODULES)}.")
    return importlib.import_module(f"{__name__}.{TASK_MODULES[name]}")


def output_metadata(ctx: TaskContext, kind: str = "image") -> dict[str, Any]:
    out = ctx.card.output
    meta = {k: v for k, v in ctx.volume.metadata.items() if k not in ("provenance", "source", "synthetic")}
    meta.update({"kind": kind, "synthetic": True})
    for key in ("modality", "contrast", "units"):
        if out.get(key) not in (None, "any"):
            meta[key] = out[key]
    if kind != "image":
        meta.pop("contrast", None)
    return meta


def image_output(ctx: TaskContext, **geometry: Any) -> Volume:
    """Channel 0 of the raw output, back in intensity units (HU for CT), on the input grid or ``geometry``."""
    spec = ctx.card.output["normalization"]
    raw = ctx.raw[0]  # the raw output is ours alone: transform it in place, no whole-volume copies
    if spec["kind"] != "none":  # stay inside the intensity range the model was trained to produce
        norm = ctx.card.input["normalization"] if spec["kind"] == "same_as_input" else spec
        np.clip(raw, *norm.get("range", [-1.0, 1.0]), out=raw)
    image = denormalize(raw, spec, ctx.stats, ctx.card.input["normalization"], inplace=True)
    return ctx.volume.with_array(image, metadata=output_metadata(ctx), **geometry)
