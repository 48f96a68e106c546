"""Running a task on volume nodes, split so that a GUI can run inference off its main thread::

    request = prepare_run(scene, input_node, task, model)      # main thread: node -> Volume, the engine's plan
    result = execute(request, progress, cancel)                # any thread: the plan executed, no MRML
    nodes = finish_run(scene, request, result)                 # main thread: Volume(s) -> new nodes, display

:func:`run_on_node` composes the three; :func:`run_on_nodes` does the same for a batch, all or nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModalityMismatchError
from ..volume import Volume
from .display import check_display_options
from .masks import mask_from_node
from .model_choice import UnsuitableInputError, UnsuitableModalityError
from .nodes import local_ijk_to_ras, volume_from_node
from .outputs import SceneTransaction, check_output_node, nodes_from_result

#: Options this package consumes (display of the results); every other keyword goes to ``MedGANLogic.run``.
DISPLAY_OPTIONS = ("colormap", "opacity", "display_threshold", "make_segmentation", "show", "show_3d")
#: How a ``mask`` given as a node is read (:func:`.masks.mask_from_node`): which segment, or which label value.
MASK_OPTIONS = ("mask_segment", "mask_label")


@dataclass
class RunRequest:
    """Everything a worker thread needs to run one task on one volume, and what ``finish_run`` needs after."""

    input_node: Any
    volume: Volume
    task: str
    model: str | None
    device: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    display: dict[str, Any] = field(default_factory=dict)
    output_node: Any = None
    input_matrix: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the engine does to meet the model (resampled, ...)
    plan: Any = None  # the engine's RunPlan: every decision of the run, made once


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(engine options, display options) from one keyword dict; see :data:`DISPLAY_OPTIONS`."""
    engine = {k: v for k, v in options.items() if k not in DISPLAY_OPTIONS}
    display = {k: v for k, v in options.items() if k in DISPLAY_OPTIONS}
    return engine, display


def prepare_run(scene: Any, input_node: Any, task: str, model: str | None = None, device: str = "auto",
                output_node: Any = None, harden_transform: bool = True, **options: Any) -> RunRequest:
    """Main thread: convert the node and plan the run (``MedGANLogic.pipeline.plan``: the model chosen, the
    options and the input checked, once), validate the output node and the display options. No scene changes.

    Stricter than the plan for an interactive user: a volume that does not suit the model (modality or contrast:
    :class:`UnsuitableModalityError`; voxel size, field of view or slice plane: :class:`UnsuitableInputError`)
    is refused unless ``force=True``; with force, what it runs despite is kept in ``request.warnings``.
    """
    from .. import pipeline

    check_output_node(input_node, output_node, task)
    engine, display = split_options(options)
    check_display_options(**display)  # now, not after minutes of inference
    segment, label = (engine.pop(name, None) for name in MASK_OPTIONS)
    if hasattr(engine.get("mask"), "IsA"):  # a segmentation or label map node: its mask as a Volume
        engine["mask"] = mask_from_node(engine["mask"], segment=segment, label=label)
    volume = volume_from_node(input_node, harden_transform=harden_transform,
                              modality=engine.pop("modality", None), contrast=engine.pop("contrast", None))
    try:
        plan = pipeline.plan(task, volume, model=model, device=device, **engine)
    except ModalityMismatchError:
        if engine.get("force"):
            raise
        # planned again, forced, only to name every problem at once (and a model the volume does not suit)
        forced = pipeline.plan(task, volume, model=model, device=device, **{**engine, "force": True})
        raise UnsuitableModalityError(_unsuitable(input_node, forced)) from None
    if plan.problems and not engine.get("force"):
        raise UnsuitableInputError(_unsuitable(input_node, plan))
    if model is None:  # a fit to the scan (adapt=True) has no card: the request names the fit instead
        model = plan.card.id if plan.card is not None else fit_label(plan.adapt)
    return RunRequest(input_node=input_node, volume=plan.volume, task=task, model=model, device=plan.device,
                      options=plan.options, display=display, output_node=output_node,
                      input_matrix=local_ijk_to_ras(input_node), warnings=list(plan.warnings), notes=list(plan.notes),
                      plan=plan)


def fit_label(fit: Any) -> str:
    """What a run that fits to the scan uses instead of a model, in words (``fit``: the plan's ``adapt``)."""
    start = fit.start if isinstance(fit.start, str) and fit.start not in ("auto", "scratch") else None
    return "a network fitted to this scan" + (f" (starting from {start})" if start else "")


def _unsuitable(input_node: Any, plan: Any) -> str:
    problems = [problem for problem in (plan.forced_despite, *plan.problems) if problem]
    return (f"Volume {input_node.GetName()!r} does not suit model {plan.card.id}: {'; '.join(problems)}. "
            f"Run anyway with force=True ('Run anyway' in the panel).")


def execute(request: RunRequest, progress: Callable[[float, str], None] | None = None, cancel: Any = None):
    """Any thread: run the request's plan (``MedGANLogic.pipeline.execute``). Touches no MRML node. Returns a
    ``RunResult``."""
    from .. import pipeline

    return pipeline.execute(request.plan, progress=progress, cancel=cancel)


def finish_run(scene: Any, request: RunRequest, result: Any) -> list[Any]:
    """Main thread: make the output nodes of a finished run (see :func:`nodes_from_result`)."""
    return nodes_from_result(scene, request.input_node, result, volume=request.volume,
                             output_node=request.output_node, input_matrix=request.input_matrix, **request.display)


def run_on_node(scene: Any, input_node: Any, task: str, model: str | None = None, device: str = "auto",
                progress: Callable[[float, str], None] | None = None, cancel: Any = None, output_node: Any = None,
                **options: Any) -> list[Any]:
    """Run a MedGAN task on a volume node; return the nodes created (or the overwritten ``output_node``).

    Args:
        scene: the ``vtkMRMLScene`` (``slicer.mrmlScene`` in the application).
        input_node: a ``vtkMRMLScalarVolumeNode``; never modified.
        task: "synthesize", "denoise", "superres", "anomaly", "segment" or "lesion".
        model: model id or model folder; None picks the first installed model for the task that fits.
        device: "auto", "cpu", "cuda" or "cuda:N".
        progress: ``progress(fraction 0-1, message)``; cancel: a callable or ``threading.Event``.
        output_node: overwrite this node instead of creating one (a scalar volume, or a segmentation for
            "segment"); never the input.
        **options: engine options (batch_size, overlap, slice_axis, force, threshold, modality, contrast, ...),
            ``harden_transform`` (default True), and display options: colormap ("Inferno"), opacity (0-1,
            default 0.5), display_threshold (anomaly map values shown from here up; default: the mask threshold),
            make_segmentation (anomaly: also a segmentation of the candidate regions), show (default True: set
            the slice views), show_3d (default False: segmentations also as 3D surfaces). For "lesion": mask (a
            segmentation node, with mask_segment its segment id or name when it has several, or a label map node,
            with mask_label the value inside) and lesion_type ("wmh", "tumour", "ischaemic").

    Returns:
        The primary output node first (synthetic/denoised/super-resolved volume, anomaly map, or segmentation),
        then any others (the candidate-region segmentation; the inserted lesion's segmentation).
    """
    harden = bool(options.pop("harden_transform", True))
    request = prepare_run(scene, input_node, task, model=model, device=device, output_node=output_node,
                          harden_transform=harden, **options)
    result = execute(request, progress=progress, cancel=cancel)
    return finish_run(scene, request, result)


def run_on_nodes(scene: Any, input_nodes: Sequence[Any], task: str, model: str | None = None, device: str = "auto",
                 progress: Callable[[float, str], None] | None = None, cancel: Any = None,
                 **options: Any) -> dict[str, list[Any]]:
    """Batch: the same task on several volumes; ``{input node ID: created nodes}``.

    All or nothing: if one volume fails or the batch is cancelled, every node the batch created is removed and
    the error is raised. ``progress`` covers the whole batch (see :class:`Batch`).
    """
    batch = prepare_batch(scene, input_nodes, task, model=model, device=device, **options)
    batch.execute(progress=progress, cancel=cancel)
    return batch.finish(scene)


def prepare_batch(scene: Any, input_nodes: Sequence[Any], task: str, model: str | None = None, device: str = "auto",
                  output_node: Any = None, run_anyway: Callable[[str], bool] | None = None,
                  node_options: Callable[[Any], dict[str, Any]] | None = None, **options: Any) -> Batch:
    """Main thread: a :class:`Batch` of one request per input node (options as :func:`run_on_node` takes them).

    Args:
        output_node: overwrite this node; only for a single input.
        run_anyway: asked ``run_anyway(reason) -> bool`` when an input does not suit the model (modality, voxel
            size, field of view); True prepares every input again with ``force=True``, False (or no callable)
            raises the :class:`UnsuitableInputError`.
        node_options: ``node_options(node) -> dict`` of options for one node (e.g. its declared modality), under
            the common ``options``.
    """
    nodes = list(input_nodes)
    if output_node is not None and len(nodes) > 1:
        raise InputError("An output node can be overwritten by a single run only; choose 'Create new node' for a "
                         "batch.")

    def prepare_all(common: dict[str, Any]) -> Batch:
        return Batch([prepare_run(scene, node, task, model=model, device=device, output_node=output_node,
                                  **{**(node_options(node) if node_options else {}), **common}) for node in nodes])

    try:
        return prepare_all(options)
    except UnsuitableInputError as exc:
        if options.get("force") or run_anyway is None or not run_anyway(str(exc)):
            raise
    return prepare_all({**options, "force": True})


class Batch:
    """Prepared requests run one after the other: the batch path of :func:`run_on_nodes` and of the panel.

    Make it on the main thread (the labels read node names), call :meth:`execute` on any thread (it touches no
    MRML node), then :meth:`finish` on the main thread: every output node, or none.
    """

    def __init__(self, requests: Sequence[RunRequest]) -> None:
        if not requests:
            raise InputError("Nothing to run: choose at least one input volume.")
        self.requests = list(requests)
        self.labels = [f"{r.task} of {r.input_node.GetName()} with {r.model}" for r in self.requests]
        self.results: list[Any] = []

    def execute(self, progress: Callable[[float, str], None] | None = None, cancel: Any = None) -> list[Any]:
        """Run every request; ``progress(fraction 0-1 of the whole batch, "[i/n] <label>: <message>")``."""
        count = len(self.requests)
        results = []
        for index, request in enumerate(self.requests):
            def part(fraction: float, message: str, index: int = index) -> None:
                if progress is not None:
                    prefix = f"[{index + 1}/{count}] " if count > 1 else ""
                    progress((index + fraction) / count, f"{prefix}{self.labels[index]}: {message}")

            results.append(execute(request, progress=part, cancel=cancel))
        self.results = results
        return results

    def finish(self, scene: Any) -> dict[str, list[Any]]:
        """Main thread: ``{input node ID: its output nodes}``; a failure removes every node the batch made."""
        if len(self.results) != len(self.requests):
            raise RuntimeError("Batch.finish needs the results of Batch.execute, which has not completed.")
        with SceneTransaction(scene):
            return {request.input_node.GetID(): finish_run(scene, request, result)
                    for request, result in zip(self.requests, self.results)}

    def save_fits(self, models_dir: str | os.PathLike | None = None) -> list[Any]:
        """Keep the networks this batch fitted to its scans as models (:func:`save_fits`); their cards."""
        return save_fits(self.results, models_dir)

    @property
    def warnings(self) -> list[str]:
        """What the inputs were run despite (``force=True``), every request's."""
        return [warning for request in self.requests for warning in request.warnings]

    def status(self) -> str:
        """One status line for the panel: the last run's, the batch size, and what was overridden."""
        text = describe_result(self.results[-1])
        if len(self.results) > 1:
            text = f"{len(self.results)} volumes done; last: {text}"
        if self.warnings:
            text += " Ran despite: " + "; ".join(self.warnings) + "."
        notes = list(dict.fromkeys(note for request in self.requests for note in request.notes))
        if notes:
            text += " Note: " + "; ".join(notes) + "."
        return text


def save_fits(results: Sequence[Any], models_dir: str | os.PathLike | None = None) -> list[Any]:
    """Keep every network fitted to a scan among ``results`` (RunResults of ``adapt=True`` runs) as a model folder
    in ``models_dir`` (default: the user's model folder, ``$MEDGAN_MODELS_DIR`` or ``~/.medgan/models``), where the
    model list finds it; returns their cards. The card names the scan it was fitted on (its voxels' SHA-256); the id
    is made of the task, modality, that SHA-256 and the seed, so a second fit of the same scan with the same seed
    replaces the first. Results that were not fits are skipped."""
    from ..adapt import save_fitted_model
    from ..models.registry import user_models_dir

    folder = Path(models_dir) if models_dir is not None else user_models_dir()
    cards = []
    for result in results:
        fitted = result.extras.get("fitted")
        if fitted is not None:
            cards.append(save_fitted_model(fitted, folder / fitted.card["id"]))
    return cards


def describe_result(result: Any) -> str:
    """One status line: model (or the fit to the scan), device, time, and the case score for anomaly maps (and why
    an anomaly map is empty, when it is)."""
    p = result.provenance
    text = f"{p.get('task')} with {p.get('model')} on {p.get('device')} in {p.get('seconds')} s"
    if p.get("adapt"):  # fitted to this scan: what the fit did, not a model id
        fit = p["adapt"]
        text = (f"{p.get('task')} by a network fitted to this scan ({fit.get('steps')} steps, "
                f"{float(fit.get('seconds', 0)):.0f} s of fitting) on {p.get('device')} in {p.get('seconds')} s")
    if "case_score" in result.extras:
        text += (f"; case score {result.extras['case_score']:.3f} (threshold {result.extras.get('threshold', 0):.3f},"
                 f" {result.extras.get('candidate_voxels', 0)} candidate voxels)")
    if result.extras.get("empty_map"):
        text += f"; warning: {result.extras['empty_map']}"
    return text
