"""``MedGANLogic.run``: one call for every task. File or Volume in, Volumes out, with provenance.

Two steps, so every caller (Python, the CLI, the Slicer panel) gets the same decisions and the same warnings::

    plan = plan("denoise", "ct.nii.gz")        # read, check, choose the model and its frame: no network
    plan.notes, plan.warnings                  # e.g. ["resampled from 0.78 x 0.78 x 1 mm voxels to 1.5 ..."]
    result = execute(plan, progress, cancel)   # model frame -> normalise -> infer -> outputs -> input grid

:func:`run` is the two in one and emits each warning as a :class:`~MedGANLogic.errors.MedGANWarning`.
Data flows one way: input -> checks -> model card -> the model's frame (:mod:`MedGANLogic.frame`: orientation
and voxel size the model was trained on) -> normalisation -> :func:`~MedGANLogic.inference.infer` -> task
post-processing -> back onto the input's exact grid -> output Volumes labelled synthetic with provenance.
The input is never modified.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .errors import InputError, MedGANWarning, ModalityMismatchError, ModelError
from .fit import OBLIQUE_DEGREES, is_superres, on_acquisition_grid, outside_spacing, slice_plane
from .frame import ModelFrame, decide, model_header, remaining_problems, to_input, to_model
from .inference import InferenceLayout, infer, resolve_device
from .io import check_orthonormal, read_volume
from .masks import mask_for
from .modality import declare, describe_modality, estimate_contrast, is_ct, modality_problem
from .models import registry
from .models.card import ModelCard, ensemble_limit, plane_weights, self_ensemble
from .models.ensemble import SelfEnsemble
from .normalization import bias_correct, normalize
from .options import requested_precision, validate_options
from .tasks import TASKS, TaskContext, TaskSpec, get_task, slice_axis_of
from .volume import Volume

if TYPE_CHECKING:
    from .adapt.engine import AdaptPlan

log = logging.getLogger(__name__)


PREPARING = "preparing the input"  # the progress message of a pass before its first batch


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


@dataclass(frozen=True)
class RunPlan:
    """Every decision of a run, made by :func:`plan` before any network runs.

    Attributes:
        task: the task's name; ``spec``: its :class:`~MedGANLogic.tasks.TaskSpec`.
        volume: the input (never modified), with declared modality/contrast and the CT guess in its metadata.
        card: the chosen model's card (None when fitting to the scan: see ``adapt``).
        options: the validated options, typed (see :mod:`MedGANLogic.options`); unset options are absent.
        device: the resolved device ("cpu", "cuda", "cuda:1", "mps").
        precision: the precision asked for ("auto", "fp32", "bf16"); the device settles "auto" at run time.
        layout: how the network walks the volume (dims, slice axis, context, tile, scale).
        frame: the model's frame (reorientation, resampling; see :mod:`MedGANLogic.frame`).
        bias_correction: N4 bias-field correction of the (MR) input before the model sees it.
        contrast_estimated: the MR contrast estimated from tissue statistics when the input does not say.
        problems: why the volume's geometry does not suit the model (voxel size, field of view, plane) in the
            model's frame, i.e. what resampling and reorientation could not fix (all of it with ``native``).
        forced_despite: the modality/contrast mismatch a ``force=True`` run goes ahead despite, else None.
        warnings: what the user should be warned about, one sentence each (``problems``, ``forced_despite``, a
            contrast that looks unlike the model's).
        notes: what the engine does to meet the model (resampled, reoriented, contrast estimated), one sentence
            each; the CLI prints them as ``note: ...``.
        adapt: with ``adapt=True``, what the fit to the scan will do (:class:`MedGANLogic.adapt.engine.AdaptPlan`);
            :func:`execute` then fits and applies a network instead of running a trained one.
        inputs: the task's second volumes (``TaskSpec.inputs``: the lesion task's ``mask``), each a uint8 0/1 mask
            on the input's exact grid (:func:`MedGANLogic.masks.mask_for`).
        planes: with a card's ``extras.planes`` (and no ``slice_axis``, ``planes=False``), one
            :class:`PlanePass` per axis of the model's frame the 2D network slices along; :func:`execute` averages
            their outputs on the input grid with the passes' weights. Empty: one pass, ``frame`` and ``layout``.
        memo: what a task derives from the input once per run and uses more than once (the CT body mask of CT ->
            MR: the network's source in every pass and the background on the input's grid); emptied when a run
            starts. Not part of the plan's decisions (not compared, not shown).
    """

    task: str
    spec: TaskSpec
    volume: Volume
    card: ModelCard | None
    options: dict[str, Any]
    device: str
    precision: str
    layout: InferenceLayout
    frame: ModelFrame = field(default_factory=ModelFrame)
    bias_correction: bool = False
    contrast_estimated: str | None = None
    problems: list[str] = field(default_factory=list)
    forced_despite: str | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    adapt: AdaptPlan | None = None
    inputs: dict[str, Volume] = field(default_factory=dict)
    planes: list[PlanePass] = field(default_factory=list)
    memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class PlanePass:
    """One plane of a multi-plane run: the 2D network slices along ``axis`` of the model's frame (``frame``,
    resampled for that plane's pixels; ``layout``), and its output counts with ``weight`` in the average."""

    axis: int
    weight: float
    frame: ModelFrame
    layout: InferenceLayout


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
    check_orthonormal(volume.direction, f"The {name} volume")  # outputs would copy a sheared grid


def choose_model(task: str, volume: Volume, model: str | os.PathLike | None,
                 likely_contrast: str | None = None) -> ModelCard:
    """The named model (checked to do ``task``), else the first installed one for ``task`` that fits the volume's
    modality: one for its likely modality first (recorded; else CT when it looks like CT, MR otherwise), then one
    for ``likely_contrast`` (estimated)."""
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
    problems = {c.id: modality_problem(c, volume) for c in cards}
    fitting = [c for c in cards if problems[c.id] is None]
    likely = "CT" if is_ct(volume) else (volume.modality or "MR")
    if not fitting:
        known = ", ".join(f"{c.id} ({describe_modality(c.input)})" for c in cards)
        # a model of the volume's own modality was refused for something else (body part, contrast): say what
        why = "".join(f" {problems[c.id][0].upper()}{problems[c.id][1:].rstrip('.')}." for c in cards
                      if c.input.get("modality") == likely)
        raise ModalityMismatchError(f"No {task!r} model fits this volume ({describe_modality(volume)}); installed: "
                                    f"{known}.{why} Name one with model=... and force=True to run anyway.")

    def rank(card: ModelCard) -> tuple[bool, bool]:  # a model for any contrast fits a T1w better than a FLAIR one
        return (card.input.get("modality") not in (likely, None, "any"),
                likely_contrast is not None and card.input.get("contrast") not in (likely_contrast, None, "any"))

    return sorted(fitting, key=rank)[0]


def ensemble_count(card: ModelCard, options: dict[str, Any], device: Any = "cpu") -> int:
    """How many flips and transpositions of each slice the network is averaged over (:mod:`.models.ensemble`):
    the ``ensemble`` option, else the card's ``extras.self_ensemble`` on ``device`` (checked with the card:
    :func:`.models.card.self_ensemble`)."""
    return int(options["ensemble"]) if "ensemble" in options else int(self_ensemble(card.extras, device))


def _network(card: ModelCard, device: Any, count: int) -> Any:
    """The card's network on ``device``, self-ensembled over ``count`` variants when ``count`` > 1."""
    net = registry.load_network(card, device)
    return SelfEnsemble(net, count) if count > 1 else net


def _check_card_options(card: ModelCard, options: dict[str, Any]) -> None:
    """The option rules that depend on the chosen model."""
    count = options.get("ensemble", 1)  # the card's own default was checked with the card
    limit = ensemble_limit(count, card.dims, card.scale_factor, slice_axis_of(card, options))
    if limit == "3d":
        raise InputError(f"ensemble={count} needs a 2D model (it flips each slice); model {card.id} is 3d: pass "
                         f"ensemble=1.")
    if limit == "transpose":
        raise InputError(f"ensemble={count} also transposes each slice, which needs a model that zooms both of the "
                         f"slice's axes alike; model {card.id} has scale {list(card.scale_factor)}: pass ensemble "
                         f"2 or 4 (the flips).")
    axis = options.get("slice_axis")
    if options.get("planes") and axis is not None:
        raise InputError(f"planes=True averages over the slices of every plane, slice_axis={axis} slices along one: "
                         f"pass one of them.")
    if options.get("planes") and not plane_weights(card.extras):
        raise InputError(f"planes=True averages a model's outputs over the slices of each plane, which its card asks "
                         f"for in extras.planes; model {card.id}'s does not: leave planes out.")
    if axis is None:
        return
    if card.dims == "3d":
        raise InputError(f"slice_axis does not apply to the 3d model {card.id}.")
    if card.scale_factor[axis] != 1:
        raise InputError(f"slice_axis={axis} is the axis model {card.id} super-resolves; it cannot slice along it.")


def _contrast_fit(card: ModelCard, volume: Volume, estimate: tuple[str | None, str] | None
                  ) -> tuple[list[str], list[str]]:
    """(warnings, notes) about an MR contrast the input does not record, against what ``card`` expects."""
    want = card.input.get("contrast")
    if estimate is None or card.input.get("modality") != "MR" or not want:
        return [], []
    guess, why = estimate
    if guess is None:
        return [f"the MR contrast is not recorded and could not be estimated ({why}); model {card.id} expects "
                f"{want}: declare the contrast (contrast=..., --contrast) if it is not {want}"], []
    if guess != want:
        return [f"the MR contrast is not recorded and looks like {guess} ({why}), but model {card.id} expects "
                f"{want}: pick a {guess} model, or declare the contrast (contrast=..., --contrast)"], []
    return [], [f"the MR contrast is not recorded; estimated {guess} from tissue statistics ({why})"]


def _frame_notes(card: ModelCard, volume: Volume, frame: ModelFrame) -> list[str]:
    notes = []
    if frame.reoriented:
        notes.append(f"reoriented into the orientation model {card.id} was trained in ({frame.reoriented}) and "
                     f"put back")
    if frame.resamples:
        target = " x ".join(f"{s:.2f}" for s in (frame.spacing or volume.spacing)) + " mm"
        source = " x ".join(f"{s:.2f}" for s in volume.spacing)
        how = "onto an axis-aligned grid (the volume is oblique) with" if frame.axis_aligned else "to"
        if frame.order != (0, 1, 2):
            target += " (x, y, z after reorientation)"
        bounds = card.input.get("spacing_mm")
        trained = f" (model {card.id} was trained on {bounds[0]:g}-{bounds[1]:g} mm)" if bounds else ""
        notes.append(f"resampled from {source} mm voxels {how} {target}{trained} and back onto the input grid; "
                     f"native=True (--native) runs on the input grid instead")
    if on_acquisition_grid(card) and (outside := outside_spacing(model_header(volume, frame), card)):
        bounds = card.input["spacing_mm"]
        notes.append(f"runs on the scan's own voxels ({', '.join(outside)}; model {card.id} was trained on "
                     f"{bounds[0]:g}-{bounds[1]:g} mm): resampling would blur the image and correlate the noise a "
                     f"denoiser removes")
    if is_superres(card) and card.dims != "3d":
        plane, tilt = slice_plane(volume, card.slice_axis)
        if tilt > OBLIQUE_DEGREES:
            notes.append(f"the {plane} slices model {card.id} sees are tilted {tilt:.0f} degrees (an oblique "
                         f"acquisition); super-resolution refines the acquisition's own slice axis, on its own grid")
    return notes


def _read_input(volume_or_path: Volume | str | os.PathLike) -> Volume:
    if isinstance(volume_or_path, Volume):
        return volume_or_path
    if isinstance(volume_or_path, (str, os.PathLike)):
        return read_volume(volume_or_path)
    raise InputError(f"Input must be a Volume or a file path, not {type(volume_or_path).__name__}.")


def plan(task: str, volume_or_path: Volume | str | os.PathLike, model: str | os.PathLike | None = None,
         device: str = "auto", **options: Any) -> RunPlan:
    """Make every decision and every check of a run, once, without running a network.

    Reads the input, applies the declared modality/contrast, refuses unusable voxels, checks the options' types
    and ranges, estimates an unrecorded MR contrast, chooses the model, checks the modality/contrast fit (refused
    unless ``force=True``), decides the model's frame (reorientation, resampling: :func:`MedGANLogic.frame.decide`)
    and checks what it leaves (field of view; voxel size and plane with ``native=True``). Same arguments as
    :func:`run`.

    Returns:
        A :class:`RunPlan` for :func:`execute`; ``plan.warnings`` and ``plan.notes`` say what to tell the user.

    Raises:
        InputError, ModelError, ModalityMismatchError (all :class:`~MedGANLogic.errors.MedGANError`).
    """
    spec = TASKS.get(task)
    given = {name: options.pop(name) for name in spec.inputs if name in options}
    options = validate_options(task, spec.options, options)
    dev = str(resolve_device(device))
    volume = declare(_read_input(volume_or_path), options.get("modality"), options.get("contrast"))
    check_volume(volume)
    inputs, input_notes = {}, []
    for name in spec.inputs:  # every second input so far is a mask of the image
        if given.get(name) is None:
            raise InputError(f"Task {task!r} needs a {name}: pass {name}=... (a Volume or a file; --{name} on the "
                             f"command line).")
        inputs[name], said = mask_for(given[name], volume, name)
        input_notes += said
    if options.get("adapt"):  # fit a network to this scan (MedGANLogic.adapt): no trained model, no frame
        if "ensemble" in options:
            raise InputError("ensemble applies to a trained model; a fit to the scan (adapt=True) sets its own "
                             "(CT's averages eight flips and transpositions, the blind spot's four flips): leave "
                             "ensemble out, or adapt=False.")
        from .adapt.engine import plan_adapt

        fit = plan_adapt(task, volume, model, options)
        told = []
        if fit.inplane:  # a trained model fine-tuned on the scan runs as the trained model: its plan
            declared = {k: options[k] for k in ("modality", "contrast") if k in options}
            trained = plan(task, volume, model=fit.start, device=dev, precision="fp32", **declared)
            fit = dataclasses.replace(fit, trained=trained, notes=fit.notes + trained.notes)
            told = list(trained.warnings)
        return RunPlan(task=task, spec=spec, volume=volume, card=None, options=options, device=dev,
                       precision="fp32", layout=InferenceLayout(), notes=list(fit.notes), adapt=fit, warnings=told)
    mr = not is_ct(volume) and volume.modality in (None, "MR")
    if options.get("bias_correction") and not mr:
        raise InputError(f"bias_correction applies to MR volumes; this one is {describe_modality(volume)}.")
    estimate = estimate_contrast(volume) if mr and not volume.metadata.get("contrast") else None
    card = choose_model(task, volume, model, estimate[0] if estimate else None)
    _check_card_options(card, options)
    task_module = get_task(task)
    if hasattr(task_module, "check_plan"):  # the task's own rules against the model (e.g. its lesion types)
        task_module.check_plan(card, options, inputs)
    # a model chosen here was chosen among those that fit (choose_model); one the caller named is checked now
    mismatch = modality_problem(card, volume) if model is not None else None
    if mismatch and not options.get("force"):
        raise ModalityMismatchError(f"{mismatch}. Choose a model for this input, or pass force=True "
                                    f"(--force) to run anyway.")
    slice_axis = options.get("slice_axis")
    frame = decide(volume, card, slice_axis, native=bool(options.get("native")))
    problems = remaining_problems(volume, card, frame, slice_axis)
    contrast_warnings, notes = _contrast_fit(card, volume, estimate)
    notes = input_notes + _frame_notes(card, volume, frame) + notes
    if hasattr(task_module, "plan_notes"):  # what the task adapts to this input (e.g. an anomaly calibration set)
        notes += task_module.plan_notes(card, model_header(volume, frame), options)
    if options.get("bias_correction"):
        notes.append("N4 bias-field correction of the input inside the head mask")
    planes, left_out = _plane_passes(card, volume, options, frame)
    if planes or left_out:
        notes.append(_planes_note(card, planes, left_out))
    told = problems + contrast_warnings + ([f"{mismatch}; running anyway (forced)"] if mismatch else [])
    return RunPlan(task=task, spec=spec, volume=volume, card=card, options=options, device=dev,
                   precision=requested_precision(options), layout=InferenceLayout.from_card(card, slice_axis),
                   frame=frame, bias_correction=bool(options.get("bias_correction")),
                   contrast_estimated=estimate[0] if estimate else None, problems=problems,
                   forced_despite=mismatch, warnings=told, notes=notes, inputs=inputs, planes=planes)


_AXIS_PLANES = ("axial", "coronal", "sagittal")  # the slices along z, y, x of a model's (RAS-ordered) frame


def _plane_passes(card: ModelCard, volume: Volume, options: dict[str, Any],
                  own_frame: ModelFrame) -> tuple[list[PlanePass], list[str]]:
    """The passes of a multi-plane run (card ``extras.planes``) and the planes left out, or none: the card asks
    for one plane, the caller chose a ``slice_axis`` or ``planes=False``. The card's own plane always runs; the
    others only on a scan whose voxels are nowhere coarser than the card's ``input.spacing_mm`` (thick slices seen
    edge-on are an interpolated axis, and the slices of that plane disagree along it as stripes: seen on the
    real 6.5 mm brains), and only where their slices span the card's ``input.fov_mm`` minimum (not a slab of a few
    slices seen edge-on). A plane left out shares its weight with the others. ``own_frame``: the plan's frame,
    the card's own plane's."""
    weights = plane_weights(card.extras)
    if not weights or options.get("slice_axis") is not None or not options.get("planes", True):
        return [], []
    native = bool(options.get("native"))
    smallest = float(card.input["fov_mm"][0]) if card.input.get("fov_mm") else 0.0
    coarsest = float(card.input["spacing_mm"][1]) if card.input.get("spacing_mm") else float("inf")
    voxels = max(volume.spacing)
    passes: list[PlanePass] = []
    why: dict[str, list[str]] = {}  # reason -> the planes it leaves out
    for axis, weight in enumerate(weights):
        if weight <= 0:
            continue
        if axis == card.slice_axis:
            passes.append(PlanePass(axis, weight, own_frame, InferenceLayout.from_card(card, axis)))
            continue
        if voxels > coarsest:
            why.setdefault(f"the scan's {voxels:.1f} mm voxels are coarser than the {coarsest:g} mm it was trained "
                           f"on: those slices would disagree along them as stripes", []).append(_AXIS_PLANES[axis])
            continue
        frame = decide(volume, card, native=native, plane=axis)
        extent = model_header(volume, frame, False).physical_extent()  # x, y, z of the model's frame
        sides = [extent[2 - a] for a in range(3) if a != axis]
        if min(sides) < smallest:
            why.setdefault(f"those slices would be {min(sides):.0f} mm across, under the {smallest:g} mm the model "
                           f"needs", []).append(_AXIS_PLANES[axis])
        else:
            passes.append(PlanePass(axis, weight, frame, InferenceLayout.from_card(card, axis)))
    left_out = [f"{' and '.join(planes)} ({reason})" for reason, planes in why.items()]
    if len(passes) < 2:
        return [], left_out
    total = sum(p.weight for p in passes)
    return [PlanePass(p.axis, p.weight / total, p.frame, p.layout) for p in passes], left_out


def _planes_note(card: ModelCard, planes: list[PlanePass], left_out: list[str]) -> str:
    """What a multi-plane run does (or, when every other plane was left out, why it runs on one)."""
    own = _AXIS_PLANES[card.slice_axis]
    if not planes:
        return (f"model {card.id} averages the slices of several planes, but runs on its {own} slices only here: "
                f"left out {'; '.join(left_out)}")
    said = ", ".join(f"{_AXIS_PLANES[p.axis]} {p.weight:g}" for p in planes)
    return (f"model {card.id} runs on the slices of each plane of its frame, each resampled to the pixels it was "
            f"trained on, and the results are averaged ({said})"
            + (f"; left out {'; '.join(left_out)}" if left_out else "")
            + f"; planes=False (--no-planes) runs on its {own} slices only")


def execute(plan: RunPlan, progress=None, cancel=None) -> RunResult:
    """Run a :class:`RunPlan`: load the network, normalise, infer, make the task's outputs, record provenance.

    Args:
        plan: from :func:`plan`.
        progress: ``progress(fraction, message)``, called at least once per batch, and first with
            :data:`PREPARING` before the work on the input.
        cancel: a callable returning True, or a ``threading.Event``; checked between batches.

    Returns:
        :class:`RunResult` with the output volume(s), extras and provenance.

    Raises:
        ModelError (weights fail their check), CancelledError, MedGANError.
    """
    plan.memo.clear()  # derived from the input by the last run of this plan: the input may have changed since
    if plan.adapt is not None:
        from .adapt.engine import execute_adapt

        return execute_adapt(plan, progress=progress, cancel=cancel)
    started = time.perf_counter()
    card, volume, options = plan.card, plan.volume, plan.options
    count = ensemble_count(card, options, plan.device)
    outputs, extras, info, stats = network_outputs(plan, _network(card, plan.device, count), count, progress, cancel)

    provenance = {
        "software": f"MedGAN {__version__}", "task": plan.task, "model": card.id, "model_name": card.name,
        "model_version": card.version, "weights_sha256": card.sha256, "options": dict(options),
        "device": info["device"], "batch_size": info["batch_size"], "precision": info["precision"],
        "self_ensemble": count,
        "planes": {_AXIS_PLANES[p.axis]: p.weight for p in plan.planes} or None,
        "seconds": round(time.perf_counter() - started, 3),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": str(volume.metadata.get("source", volume.metadata.get("name", "volume"))),
        "input_window": stats, "synthetic": True, "intended_use": card.data["intended_use"],
        "forced_despite": plan.forced_despite, "warnings": list(plan.warnings), "notes": list(plan.notes),
        "resampled_from": list(plan.frame.resampled_from) if plan.frame.resampled_from else None,
        "reoriented": plan.frame.reoriented, "bias_corrected": plan.bias_correction,
        "contrast_estimated": plan.contrast_estimated,
        "inputs": {name: str(v.metadata.get("source", v.metadata.get("name", name)))
                   for name, v in plan.inputs.items()},
    }
    for key, value in extras.items():
        if isinstance(value, (int, float, str)):
            provenance[key] = value
    for out in outputs.values():
        # what this output is travels with it (a file read back says it is, e.g., a synthetic CT in HU)
        described = {k: out.metadata[k] for k in ("modality", "contrast", "units", "kind") if out.metadata.get(k)}
        out.metadata["provenance"] = dict(provenance, output=described)
        out.metadata["synthetic"] = True
    return RunResult(outputs=outputs, extras=extras, provenance=provenance, primary=plan.spec.primary)


def network_outputs(plan: RunPlan, net: Any, count: int, progress=None, cancel=None,
                    cpu_network: Any = None) -> tuple[dict[str, Volume], dict[str, Any], dict[str, Any],
                                                      dict[str, float]]:
    """The task's outputs of ``net`` (the plan's card's network, self-ensembled over ``count`` variants) on the
    plan's input, on the input's grid: one pass, or one per plane averaged, then the task's ``finish``. Returns
    (outputs, extras, inference info, the input's intensity window). ``cpu_network`` returns a CPU copy of ``net``
    if CUDA runs out of memory (default: the card's weights again; a fit to the scan passes its own)."""
    task_module = get_task(plan.task)
    passes = plan.planes or [PlanePass(plan.layout.slice_axis, 1.0, plan.frame, plan.layout)]
    outputs: dict[str, Volume] = {}
    for i, one in enumerate(passes):  # one pass, or one per plane of the model's frame (averaged)
        part = _progress_part(progress, i, len(passes)) if len(passes) > 1 else progress
        made, made_extras, made_info, made_stats = _run_in_frame(plan, task_module, net, count, one, part, cancel,
                                                                 cpu_network)
        if i == 0:
            extras, info, stats = made_extras, made_info, made_stats
            outputs = made if len(passes) == 1 else {
                name: out.with_array(np.float32(one.weight) * out.array.astype(np.float32))
                for name, out in made.items()}
        else:
            for name, out in made.items():
                outputs[name].array += np.float32(one.weight) * out.array.astype(np.float32)
    if hasattr(task_module, "finish"):  # what a task does on the input's own grid (the lesion's compositing)
        outputs, extras = task_module.finish(outputs, extras, plan)
    return outputs, extras, info, stats


def _progress_part(progress: Any, index: int, count: int) -> Any:
    """``progress`` for pass ``index`` of ``count``: its fractions mapped into that pass's share."""
    if progress is None:
        return None
    return lambda fraction, message="": progress((index + float(fraction)) / count, message)


def _run_in_frame(plan: RunPlan, task_module: Any, net: Any, count: int, one: PlanePass, progress: Any,
                  cancel: Any, cpu_network: Any = None
                  ) -> tuple[dict[str, Volume], dict[str, Any], dict[str, Any], dict[str, float]]:
    """The network over the input seen in one frame (``one.frame``, walked as ``one.layout``) and the task's
    outputs put back on the input's grid: (outputs, extras, inference info, the input's intensity window)."""
    card, volume, options = plan.card, plan.volume, plan.options
    if progress is not None:  # before the work on the input (a CT's body mask: seconds on a large CT), so the
        progress(0.0, PREPARING)  # caller hears from the run at once
    source = volume  # what the network is shown of the input: a task may leave out what is not the patient
    if hasattr(task_module, "network_source"):
        source = task_module.network_source(plan)
    seen = to_model(source, one.frame)  # the input in the model's orientation and voxel size
    seen_as_given = seen
    if plan.bias_correction:
        seen = seen.with_array(bias_correct(seen.array, seen.spacing))
    normalized, stats = normalize(seen.array, card.input["normalization"])
    seen_inputs = {name: to_model(v, one.frame) for name, v in plan.inputs.items()}
    net_input = normalized  # a task with second inputs (the lesion mask) may mark them in the network's input
    if hasattr(task_module, "network_input"):
        net_input = task_module.network_input(normalized, seen_inputs, card, options)
    raw, info = infer(net, net_input, one.layout, device=plan.device, batch_size=options.get("batch_size"),
                      overlap=options.get("overlap", 0.25), progress=progress, cancel=cancel,
                      precision=plan.precision,
                      cpu_fallback=cpu_network or (lambda: _network(card, "cpu", count)))
    ctx = TaskContext(card=card, volume=seen, normalized=normalized, stats=stats, raw=raw,
                      options=options, net=net, inputs=seen_inputs, device=plan.device, cancel=cancel)
    outputs, extras = task_module.make_outputs(ctx)
    if not one.frame.identity:  # back onto the input's exact grid
        outputs = {name: to_input(out, volume, one.frame, card.scale_factor) for name, out in outputs.items()}
        if hasattr(task_module, "on_input_grid"):
            extras = task_module.on_input_grid(outputs, extras, volume, card)
        if hasattr(task_module, "keep_input_detail"):  # what resampling into the model's voxel size took away
            outputs, extras = task_module.keep_input_detail(outputs, extras, source, seen_as_given, one.frame, card,
                                                            options)
    return outputs, extras, info, stats


def run(task: str, volume_or_path: Volume | str | os.PathLike, model: str | os.PathLike | None = None,
        device: str = "auto", progress=None, cancel=None, **options: Any) -> RunResult:
    """Run a MedGAN task on one volume: :func:`plan`, each warning emitted as a ``MedGANWarning``, :func:`execute`.

    Args:
        task: a name of the task table :data:`MedGANLogic.tasks.TASKS` ("synthesize", "denoise", "superres",
            "anomaly", "segment", "lesion").
        volume_or_path: a :class:`Volume` or a file/DICOM-folder path. It is never modified.
        model: a model id (see ``medgan models``) or a model folder; None picks the first installed model for the
            task that fits the volume's modality.
        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda" or "cuda:N".
        progress: ``progress(fraction, message)``, called at least once per batch, and first with
            :data:`PREPARING` before the work on the input.
        cancel: a callable returning True, or a ``threading.Event``; checked between batches.
        **options: batch_size (a positive int), overlap (in [0, 1)), slice_axis (0, 1 or 2; 2d models), force
            (run despite a modality mismatch), precision ("auto": bf16 where the model's card allows it and the
            device computes bf16 natively, else fp32; "fp32"; "bf16"; ``amp=False`` is the older spelling of
            "fp32"), modality/contrast (declare the input's when the file does not say), and per task: threshold
            (>= 0), smoothing_mm (0-50 mm), edge_mm (0-20 mm: the brain's rim left out of the map), detrend (0-3: the
            degree of the smooth field taken out of the residual; the card's by default) for anomaly;
            native (True: run on the input's own grid, no resampling or reorientation into the model's frame),
            bias_correction (True: N4 on MR inputs);
            for denoise and superres: adapt (True: fit a network to this scan instead, :mod:`MedGANLogic.adapt`;
            denoising needs the modality, MR, CT, PT or US), adapt_budget_s (seconds of fitting), adapt_steps
            (at most this many steps), adapt_seed; for lesion: mask (required: a Volume or file, 0 outside and 1
            or one label inside, on the input's grid or overlapping it) and lesion_type ("wmh", "tumour",
            "ischaemic"); for synthesize: planes (False: only the card's slice axis where the card averages the
            slices of three planes, ``extras.planes``). See :mod:`MedGANLogic.options`.

    Returns:
        :class:`RunResult` with the output volume(s), extras and provenance.

    Raises:
        InputError, ModelError, ModalityMismatchError, CancelledError (all :class:`MedGANError`).
    """
    the_plan = plan(task, volume_or_path, model=model, device=device, **options)
    for message in the_plan.warnings:
        warnings.warn(message, MedGANWarning, stacklevel=2)
    for message in the_plan.notes:
        log.info(message)
    return execute(the_plan, progress=progress, cancel=cancel)
