"""The tasks: what is made of a network's raw output. One small module each, one table of them all.

:data:`TASKS` is the one list of tasks: name, module, label, output label, main output and options. The CLI's
choices, the model card's task check, the panel and the output names all read it. Every task module defines
``make_outputs(ctx: TaskContext) -> tuple[dict[str, Volume], dict]`` (output volumes and extras such as a case
score), and may define ``network_source(plan) -> Volume`` (the input, ``plan.volume``, as the network is to see it,
on the input's grid: a new volume, never the input changed; what it derives from the input and ``finish`` uses too
goes in ``plan.memo``), ``on_input_grid(outputs, extras, volume, card) -> extras``,
called after outputs made in the model's frame were resampled back onto the input's grid (to re-derive what
depends on the grid); a task with second inputs (``TaskSpec.inputs``) may also define ``check_plan(card, options,
inputs)`` (its rules against the chosen model), ``network_input(normalized, inputs, card, options) -> array`` (what
the network sees) and ``finish(outputs, extras, plan) -> (outputs, extras)`` (called last, on the input's grid). The
shared work (checks, the model's frame, normalisation, inference, provenance) lives in :mod:`MedGANLogic.pipeline`.
This package may import numpy/scipy and the engine's core; never torch at module level, Slicer or Qt.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import MedGANError
from ..registry import Registry
from ..volume import Volume


@dataclass(frozen=True)
class TaskSpec:
    """One task: its ``name`` (what cards and the CLI say), the ``module`` in this package that makes its
    outputs, the panel's ``label``, the ``output_label`` used in output names ("CT denoised (MedGAN synthetic)"),
    the ``primary`` output's key in ``RunResult.outputs``, the task's own ``options`` (beyond the common ones
    of :func:`MedGANLogic.pipeline.plan`) and the second volumes it needs, ``inputs`` (the lesion task's ``mask``:
    checked against the image's grid by :func:`MedGANLogic.masks.mask_for`, in ``RunPlan.inputs``)."""

    name: str
    module: str
    label: str
    output_label: str
    primary: str
    options: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()


#: Fitting a network to the scan itself (:mod:`MedGANLogic.adapt`): denoising and super-resolution only.
ADAPT_OPTIONS = ("adapt", "adapt_budget_s", "adapt_steps", "adapt_seed")
#: The task table: name -> :class:`TaskSpec`, in the order the CLI and the panel list them.
TASKS: Registry[TaskSpec] = Registry("task", error=MedGANError)
for _spec in (
    TaskSpec("synthesize", "synthesis", "Synthesize", "synthetic", "image", ("ensemble", "planes")),
    TaskSpec("denoise", "denoise", "Denoise", "denoised", "image", ADAPT_OPTIONS + ("ensemble",)),
    TaskSpec("superres", "superres", "Super-resolve", "super-resolved", "image",
             ADAPT_OPTIONS + ("ensemble", "input_detail", "consistency")),
    TaskSpec("anomaly", "anomaly", "Anomaly map", "anomaly map", "anomaly_map",
             ("threshold", "smoothing_mm", "edge_mm", "detrend", "residual", "ensemble")),
    TaskSpec("segment", "segment", "Segment", "segmentation", "labels", ("min_probability",)),
    TaskSpec("lesion", "lesion", "Insert lesion", "with synthetic lesion", "image", ("lesion_type",), ("mask",)),
):
    TASKS.add(_spec.name, _spec)


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
    inputs: dict[str, Volume] = field(default_factory=dict)  # second inputs (the lesion mask) in the model's frame
    device: Any = "cpu"  # where the network ran (a task that runs a second model runs it there)
    cancel: Any = None  # the run's cancel (a callable or threading.Event), for a second model's run


def get_task(name: str) -> ModuleType:
    """The module that makes task ``name``'s outputs (unknown name: an error listing the tasks)."""
    return importlib.import_module(f"{__name__}.{TASKS.get(name).module}")


def slice_axis_of(card: Any, options: dict[str, Any]) -> int:
    """The array axis ``card``'s 2D model slices along in this run: its ``slice_axis`` option, else the card's."""
    return int(options.get("slice_axis", card.slice_axis))


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
    from ..normalization import denormalize  # brings scipy: imported here so that `medgan --help` stays quick

    spec = ctx.card.output["normalization"]
    raw = ctx.raw[0]  # the raw output is ours alone: transform it in place, no whole-volume copies
    if spec["kind"] != "none":  # stay inside the intensity range the model was trained to produce
        norm = ctx.card.input["normalization"] if spec["kind"] == "same_as_input" else spec
        low, high = norm.get("range", [-1.0, 1.0])
        if norm.get("zero_based", False):  # an unclipped MR scale: only kept at or above the zero it starts from
            np.maximum(raw, np.float32(low), out=raw)
        else:
            np.clip(raw, low, high, out=raw)
    image = denormalize(raw, spec, ctx.stats, ctx.card.input["normalization"], inplace=True)
    return ctx.volume.with_array(image, metadata=output_metadata(ctx), **geometry)
