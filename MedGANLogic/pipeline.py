"""``MedGANLogic.run``: one call for every task. File or Volume in, Volumes out, with provenance.

Data flows one way: input -> checks -> model card -> normalisation -> :func:`~MedGANLogic.inference.infer`
-> task post-processing -> output Volumes labelled synthetic with provenance. The input is never modified.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__
from .errors import InputError, ModalityMismatchError, ModelError
from .inference import PRECISIONS, InferenceLayout, infer, resolve_device
from .io import read_volume
from .models import registry
from .models.card import ModelCard
from .normalization import normalize
from .tasks import TASK_OPTIONS, TaskContext, get_task
from .volume import Volume

COMMON_OPTIONS = ("batch_size", "overlap", "slice_axis", "force", "precision", "amp", "modality", "contrast")


@dataclass
class RunResult:
    """What :func:`run` returns.

    Attributes:
        outputs: output volumes by name ("image"; "anomaly_map" and "mask"; "labels").
        extras: task results that are not volumes, e.g. ``{"case_score": 0.8, "threshold": 0.2}``.
        provenance: model id, version, weights SHA-256, options, device, timing; also on every output's metadata.
        primary: the name of the main output.
    """

    outputs: dict[str, Volume]
    extras: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    primary: str = "image"

    @property
    def volume(self) -> Volume:
        return self.outputs[self.primary]


def guess_modality(volume: Volume) -> str | None:
    """``CT`` when the intensities look like Hounsfield units (air near -1000 HU), else None (unknown)."""
    a = volume.array
    sample = a[:: max(1, a.shape[0] // 16)]
    if float(np.mean(sample < -800)) > 0.02 and float(sample.max()) > 100:
        return "CT"
    return None


def check_volume(volume: Volume, name: str = "input") -> None:
    """Refuse what no model can use, saying what is wrong and how to fix it."""
    a = volume.array
    if a.size == 0:
        raise InputError(f"The {name} volume is empty (shape {volume.shape}).")
    bad = ~np.isfinite(a)
    if bad.any():
        raise InputError(f"The {name} volume has {int(bad.sum())} NaN or infinite voxels; replace them (e.g. with "
                         f"the background value) or crop them away before running.")
    lo, hi = float(a.min()), float(a.max())
    if lo == hi:
        raise InputError(f"The {name} volume is constant (every voxel = {lo:g}): there is no image to work on. "
                         f"Check that the right series was loaded.")


def choose_model(task: str, volume: Volume, model: str | os.PathLike | None) -> ModelCard:
    if model is not None:
        card = registry.get_model(model)
        if card.task != task:
            raise ModelError(f"Model {card.id} is a {card.task!r} model, not {task!r}; run "
                             f"`medgan models` to see the models for each task.")
        return card
    cards = registry.list_models(task)
    if not cards:
        raise ModelError(f"No model for task {task!r} is installed. Train one with `medgan train` or import one "
                         f"with `medgan import`.")
    fitting = [c for c in cards if _modality_problem(c, volume) is None]
    if not fitting:
        known = ", ".join(f"{c.id} ({c.input.get('modality')} {c.input.get('contrast', '')})".strip() for c in cards)
        raise ModalityMismatchError(f"No {task!r} model fits a {_describe(volume)} volume; installed: {known}. "
                                    f"Name one with model=... and force=True to run anyway.")
    return fitting[0]


def _describe(volume: Volume) -> str:
    return " ".join(str(v) for v in (volume.metadata.get("modality"), volume.metadata.get("contrast")) if v) or "?"


def _modality_problem(card: ModelCard, volume: Volume) -> str | None:
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


def _check_options(task: str, card: ModelCard, options: dict[str, Any]) -> None:
    allowed = COMMON_OPTIONS + TASK_OPTIONS.get(task, ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(f"Unknown option(s) {', '.join(unknown)} for task {task!r}; allowed: {', '.join(allowed)}.")
    _precision(options)
    axis = options.get("slice_axis")
    if axis is not None:
        if card.dims == "3d":
            raise InputError(f"slice_axis does not apply to the 3d model {card.id}.")
        if axis not in (0, 1, 2):
            raise InputError(f"slice_axis must be 0 (z), 1 (y) or 2 (x); got {axis!r}.")
        if card.scale_factor[int(axis)] != 1:
            raise InputError(f"slice_axis={axis} is the axis model {card.id} super-resolves; it cannot slice along it.")


def _precision(options: dict[str, Any]) -> str:
    precision = options.get("precision")
    if precision is None:
        return "auto" if options.get("amp", True) else "fp32"
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    return str(precision)


def run(task: str, volume_or_path: Volume | str | os.PathLike, model: str | os.PathLike | None = None,
        device: str = "auto", progress=None, cancel=None, **options: Any) -> RunResult:
    """Run a MedGAN task on one volume.

    Args:
        task: "synthesize", "denoise", "superres", "anomaly" or "segment".
        volume_or_path: a :class:`Volume` or a file/DICOM-folder path. It is never modified.
        model: a model id (see ``medgan models``) or a model folder; None picks the first installed model for the
            task that fits the volume's modality.
        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda" or "cuda:N".
        progress: ``progress(fraction, message)``, called at least once per batch.
        cancel: a callable returning True, or a ``threading.Event``; checked between batches.
        **options: batch_size, overlap (0-1), slice_axis (2d models), force (run despite a modality mismatch),
            precision ("auto": bf16 where the model's card allows it and the device computes bf16 natively, else
            fp32; "fp32"; "bf16"; ``amp=False`` is the older spelling of "fp32"), modality/contrast (declare the
            input's when the file does not say), and per task: threshold, smoothing_mm (anomaly).

    Returns:
        :class:`RunResult` with the output volume(s), extras and provenance.

    Raises:
        InputError, ModelError, ModalityMismatchError, CancelledError (all :class:`MedGANError`).
    """
    started = time.perf_counter()
    task_module = get_task(task)
    if isinstance(volume_or_path, Volume):
        volume = volume_or_path
    elif isinstance(volume_or_path, (str, os.PathLike)):
        volume = read_volume(volume_or_path)
    else:
        raise InputError(f"Input must be a Volume or a file path, not {type(volume_or_path).__name__}.")
    declared = {k: options[k] for k in ("modality", "contrast") if options.get(k)}
    if declared or "modality" not in volume.metadata:
        meta = dict(volume.metadata, **declared)
        if "modality" not in meta and guess_modality(volume):
            meta["guessed_modality"] = "CT"
        volume = Volume(volume.array, volume.spacing, volume.origin, volume.direction, meta)  # shares voxels
    check_volume(volume)

    card = choose_model(task, volume, model)
    _check_options(task, card, options)
    problem = _modality_problem(card, volume)
    if problem and not options.get("force"):
        raise ModalityMismatchError(f"{problem}. Choose a model for this input, or pass force=True "
                                    f"(--force) to run anyway.")

    dev = resolve_device(device)
    net = registry.load_network(card, dev)
    layout = InferenceLayout.from_card(card, options.get("slice_axis"))
    normalized, stats = normalize(volume.array, card.input["normalization"])
    raw, info = infer(net, normalized, layout, device=dev, batch_size=options.get("batch_size"),
                      overlap=float(options.get("overlap", 0.25)), progress=progress, cancel=cancel,
                      precision=_precision(options),
                      cpu_fallback=lambda: registry.load_network(card, "cpu"))
    ctx = TaskContext(card=card, volume=volume, normalized=normalized, stats=stats, raw=raw,
                      options=options, net=net)
    outputs, extras = task_module.make_outputs(ctx)

    provenance = {
        "software": f"MedGAN {__version__}", "task": task, "model": card.id, "model_name": card.name,
        "model_version": card.version, "weights_sha256": card.sha256, "options": {k: v for k, v in options.items()},
        "device": info["device"], "batch_size": info["batch_size"], "precision": info["precision"],
        "seconds": round(time.perf_counter() - started, 3),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": str(volume.metadata.get("source", volume.metadata.get("name", "volume"))),
        "input_window": stats, "synthetic": True, "intended_use": card.data["intended_use"],
        "forced_despite": problem if problem else None,
    }
    for key, value in extras.items():
        if isinstance(value, (int, float, str)):
            provenance[key] = value
    for out in outputs.values():
        # what this output is travels with it (a file read back says it is, e.g., a synthetic CT in HU)
        described = {k: out.metadata[k] for k in ("modality", "contrast", "units", "kind") if out.metadata.get(k)}
        out.metadata["provenance"] = dict(provenance, output=described)
        out.metadata["synthetic"] = True
    return RunResult(outputs=outputs, extras=extras, provenance=provenance, primary=task_module.PRIMARY)
