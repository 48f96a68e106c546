"""MRML <-> :class:`~MedGANLogic.volume.Volume`: run MedGAN tasks on 3D Slicer nodes, results as new nodes.

Everything here takes the MRML scene as an argument and imports ``slicer`` (the MRML library: the Slicer
application or the ``slicer-core`` wheel) lazily, inside functions, so the engine package keeps importing without
Slicer, and this file is tested outside the application on a real ``vtkMRMLScene``.

Data flow, split so that a GUI can run inference off its main thread and touch the scene only on it::

    request = prepare_run(scene, input_node, task, model)      # main thread: node -> Volume, input checks
    result = execute(request, progress, cancel)                # any thread: MedGANLogic.run, no MRML
    nodes = finish_run(scene, request, result)                 # main thread: Volume(s) -> new nodes, display

:func:`run_on_node` composes the three for console use::

    import slicer
    from MedGANLogic import slicer_bridge
    nodes = slicer_bridge.run_on_node(slicer.mrmlScene, slicer.util.getNode("MRHead"), "anomaly",
                                      model="mr-t2-anomaly", opacity=0.6, make_segmentation=True)

Guarantees: the input node's voxels, IJK->RAS matrix and attributes are never modified; overwriting the input is
refused; nodes are created only after inference succeeded, and if anything fails while they are being made every
node added since is removed again, so a failed or cancelled run leaves the scene's node count unchanged.

Geometry: an output on the input's grid gets the input's IJK->RAS matrix bit for bit (after hardening a linear
parent transform into it); a super-resolved output gets the finer grid of the engine's output Volume (same field
of view). A non-linear parent transform is refused with an explanation.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, ModalityMismatchError
from .volume import Volume

log = logging.getLogger(__name__)

TASK_OUTPUT_LABELS = {"synthesize": "synthetic", "denoise": "denoised", "superres": "super-resolved",
                      "anomaly": "anomaly map", "segment": "segmentation"}
#: Options this module consumes (display of the results); every other keyword goes to ``MedGANLogic.run``.
DISPLAY_OPTIONS = ("colormap", "opacity", "display_threshold", "make_segmentation", "show")
#: CT window/level presets (name, window, level) in HU, added to every CT output's display node.
CT_WINDOW_PRESETS = (("Soft tissue", 400.0, 40.0), ("Brain", 80.0, 40.0), ("Bone", 2000.0, 400.0),
                     ("Lung", 1500.0, -600.0))
COLORMAPS = ("Inferno", "Viridis", "Magma", "Plasma")
ATTRIBUTE_PREFIX = "MedGAN."
MAX_CANDIDATE_SEGMENTS = 20

# Anchors of matplotlib's perceptually uniform colour maps (17 evenly spaced samples, CC0), used only when the
# scene has no colour node of that name (3D Slicer ships Inferno/Viridis/Magma/Plasma; the MRML wheel does not).
_COLORMAP_ANCHORS = {
    "Inferno": [(0.001, 0.0, 0.014), (0.042, 0.028, 0.141), (0.129, 0.047, 0.291), (0.238, 0.037, 0.396),
                (0.342, 0.062, 0.429), (0.441, 0.099, 0.432), (0.541, 0.135, 0.415), (0.64, 0.171, 0.381),
                (0.736, 0.216, 0.33), (0.822, 0.275, 0.266), (0.894, 0.353, 0.194), (0.947, 0.449, 0.115),
                (0.978, 0.558, 0.035), (0.988, 0.675, 0.065), (0.975, 0.798, 0.206), (0.948, 0.917, 0.411),
                (0.988, 0.998, 0.645)],
    "Viridis": [(0.267, 0.005, 0.329), (0.282, 0.095, 0.417), (0.279, 0.175, 0.483), (0.259, 0.252, 0.525),
                (0.23, 0.322, 0.546), (0.199, 0.388, 0.555), (0.173, 0.449, 0.558), (0.149, 0.508, 0.557),
                (0.128, 0.567, 0.551), (0.121, 0.626, 0.533), (0.158, 0.684, 0.502), (0.246, 0.739, 0.452),
                (0.369, 0.789, 0.383), (0.516, 0.831, 0.294), (0.678, 0.864, 0.19), (0.846, 0.887, 0.1),
                (0.993, 0.906, 0.144)],
    "Magma": [(0.001, 0.0, 0.014), (0.04, 0.031, 0.135), (0.113, 0.065, 0.277), (0.212, 0.061, 0.418),
              (0.316, 0.071, 0.485), (0.414, 0.103, 0.506), (0.513, 0.136, 0.507), (0.613, 0.165, 0.496),
              (0.716, 0.215, 0.475), (0.816, 0.264, 0.44), (0.904, 0.318, 0.406), (0.96, 0.408, 0.38),
              (0.987, 0.52, 0.39), (0.996, 0.631, 0.43), (0.997, 0.741, 0.5), (0.993, 0.851, 0.583),
              (0.987, 0.991, 0.75)],
    "Plasma": [(0.05, 0.03, 0.528), (0.163, 0.02, 0.587), (0.258, 0.014, 0.615), (0.349, 0.004, 0.631),
               (0.44, 0.007, 0.628), (0.526, 0.05, 0.601), (0.604, 0.119, 0.555), (0.674, 0.183, 0.498),
               (0.736, 0.247, 0.445), (0.794, 0.309, 0.394), (0.847, 0.37, 0.344), (0.896, 0.435, 0.295),
               (0.938, 0.506, 0.245), (0.971, 0.583, 0.195), (0.991, 0.669, 0.145), (0.993, 0.761, 0.114),
               (0.94, 0.975, 0.131)],
}
# Distinct segment colours (RGB 0-1) for label maps without a colour of their own.
_SEGMENT_COLORS = [(0.90, 0.35, 0.25), (0.30, 0.70, 0.95), (0.40, 0.85, 0.35), (0.95, 0.80, 0.25),
                   (0.75, 0.45, 0.90), (0.35, 0.90, 0.85), (0.95, 0.55, 0.75), (0.65, 0.65, 0.35)]


class UnsuitableInputError(InputError):
    """The volume does not suit the chosen model (modality, voxel size or field of view); ``force=True`` runs
    anyway. The panel answers it with a "Run anyway?" question; other input errors are just reported."""


class UnsuitableModalityError(UnsuitableInputError, ModalityMismatchError):
    """:class:`UnsuitableInputError` whose problems include the modality or contrast."""


# --- small MRML/VTK helpers ----------------------------------------------------------------------------------------
def _matrix_to_numpy(matrix: Any) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _numpy_to_matrix(array: np.ndarray) -> Any:
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _image_data_from_array(array: np.ndarray) -> Any:
    """A vtkImageData (origin 0, spacing 1: Slicer keeps geometry in IJK->RAS) holding a deep copy of ``array``.

    ``array`` is (z, y, x) = (k, j, i); VTK's x index runs fastest, as in C order.
    """
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonDataModel import vtkImageData

    array = np.ascontiguousarray(array)
    image = vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    return image


def _oriented_labelmap(mask: np.ndarray, ijk_to_ras: np.ndarray) -> Any:
    import slicer

    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(_image_data_from_array(mask.astype(np.uint8)))
    image.SetImageToWorldMatrix(_numpy_to_matrix(ijk_to_ras))
    return image


def array_from_node(node: Any) -> np.ndarray:
    """A copy of a volume node's voxels as a (z, y, x) array (the node keeps its own memory untouched)."""
    from vtkmodules.util import numpy_support

    image = node.GetImageData() if node is not None else None
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        name = node.GetName() if node is not None else "None"
        raise InputError(f"Volume node {name!r} has no voxels (no image data). Load a volume first.")
    scalars = image.GetPointData().GetScalars()
    if scalars.GetNumberOfComponents() != 1:
        raise InputError(f"Volume node {node.GetName()!r} has {scalars.GetNumberOfComponents()} components per "
                         f"voxel (an RGB or vector volume); MedGAN needs a scalar volume. Convert it to a scalar "
                         f"volume first (Vector to Scalar Volume module).")
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(scalars).reshape(dims[2], dims[1], dims[0]).copy()


def node_ijk_to_ras(node: Any, harden_transform: bool = True) -> tuple[np.ndarray, str | None]:
    """The node's IJK->RAS matrix in world coordinates, and the name of a hardened parent transform (or None).

    A linear parent transform is multiplied in (``harden_transform=True``) or refused; a non-linear one (grid,
    B-spline, thin-plate) is always refused: it cannot be expressed on a regular voxel grid.
    """
    matrix = _matrix_to_numpy(_get_ijk_to_ras(node))
    parent = node.GetParentTransformNode()
    if parent is None:
        return matrix, None
    name = parent.GetName()
    if not parent.IsTransformToWorldLinear():
        raise InputError(f"Volume {node.GetName()!r} is under the non-linear transform {name!r}, which a voxel grid "
                         f"cannot represent. Harden it first (Data module: right-click the volume -> Harden "
                         f"transform, which resamples it) or remove the volume from the transform.")
    if not harden_transform:
        raise InputError(f"Volume {node.GetName()!r} is under the transform {name!r}. Remove it from the transform, "
                         f"or allow hardening (harden_transform=True) so the outputs are placed in world "
                         f"coordinates.")
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    to_world = vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(to_world)
    return _matrix_to_numpy(to_world) @ matrix, name


def _get_ijk_to_ras(node: Any) -> Any:
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def node_modality(node: Any) -> tuple[str | None, str | None]:
    """(modality, contrast) of a volume node, from what is recorded, never guessed from the name.

    Sources, first found wins: the node attributes ``MedGAN.modality`` / ``MedGAN.contrast`` (set by MedGAN on its
    outputs, by the sample data, or by the user), then the DICOM ``Modality`` of the node's subject-hierarchy item.
    """
    modality = node.GetAttribute(ATTRIBUTE_PREFIX + "modality") or None
    contrast = node.GetAttribute(ATTRIBUTE_PREFIX + "contrast") or None
    if modality is None:
        scene = node.GetScene()
        sh = _subject_hierarchy(scene) if scene is not None else None
        if sh is not None:
            item = sh.GetItemByDataNode(node)
            if item:
                dicom = sh.GetItemAttribute(item, "DICOM.Modality")
                modality = (dicom.strip().upper() or None) if dicom else None
    if modality == "MRI":
        modality = "MR"
    return modality, contrast


def volume_from_node(node: Any, *, harden_transform: bool = True, modality: str | None = None,
                     contrast: str | None = None) -> Volume:
    """Convert a ``vtkMRMLScalarVolumeNode`` to a :class:`Volume` (call on the main thread).

    Args:
        node: a scalar volume node (not a label map, not a vector/RGB volume) of a 3D image.
        harden_transform: multiply a linear parent transform into the geometry (else refuse it).
        modality, contrast: declare what the volume is (e.g. "MR", "T1w"); default: :func:`node_modality`.

    Returns:
        A Volume with a copy of the voxels (float32, (z, y, x)), the node's world geometry, and metadata
        ``{"name", "node_id", "source", "modality", "contrast", "units", "transform_hardened"}``.
    """
    if node is None:
        raise InputError("No input volume selected. Choose a volume node (load one with File > Add Data).")
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        kind = node.GetClassName()
        raise InputError(f"Node {node.GetName()!r} is a {kind}, not a scalar volume. Choose a scalar volume "
                         f"(a segmentation or label map cannot be the input).")
    array = array_from_node(node)
    if sum(n > 1 for n in array.shape) < 3:
        raise InputError(f"Volume {node.GetName()!r} has {array.shape[::-1]} voxels (x, y, z): it is a 2D image or a "
                         f"single line, not a 3D volume. Load the whole series.")
    matrix, hardened = node_ijk_to_ras(node, harden_transform=harden_transform)
    found_modality, found_contrast = node_modality(node)
    meta: dict[str, Any] = {"name": node.GetName(), "node_id": node.GetID(),
                            "source": f"3D Slicer volume node {node.GetName()!r} ({node.GetID()})"}
    modality = modality or found_modality
    contrast = contrast or found_contrast
    if modality:
        meta["modality"] = modality
    if contrast:
        meta["contrast"] = contrast
    if modality == "CT":
        meta["units"] = "HU"
    if hardened:
        meta["transform_hardened"] = hardened
    return Volume.from_ijk_to_ras(array.astype(np.float32, copy=False), matrix, metadata=meta)


def header_volume(node: Any, harden_transform: bool = True, modality: str | None = None,
                  contrast: str | None = None) -> Volume:
    """The node's geometry and recorded modality without copying its voxels (cheap: for listing models and
    describing the input as the panel changes). The array is a read-only zero-stride placeholder of the right
    shape; ``metadata["guessed_modality"]`` is "CT" when the scalar range looks like Hounsfield units.
    ``modality``/``contrast`` declare what the node does not record, as in :func:`volume_from_node`."""
    image = node.GetImageData() if node is not None else None
    if image is None:
        raise InputError(f"Volume node {node.GetName() if node is not None else 'None'!r} has no voxels.")
    dims = image.GetDimensions()
    matrix, hardened = node_ijk_to_ras(node, harden_transform=harden_transform)
    found_modality, found_contrast = node_modality(node)
    modality, contrast = modality or found_modality, contrast or found_contrast
    meta: dict[str, Any] = {"name": node.GetName(), "node_id": node.GetID(), "header_only": True}
    if modality:
        meta["modality"] = modality
    if contrast:
        meta["contrast"] = contrast
    low, high = image.GetScalarRange()
    if not modality and low < -800 and high > 100:
        meta["guessed_modality"] = "CT"
    if hardened:
        meta["transform_hardened"] = hardened
    placeholder = np.broadcast_to(np.float32(0), (dims[2], dims[1], dims[0]))
    return Volume.from_ijk_to_ras(placeholder, matrix, metadata=meta)


# --- input checks --------------------------------------------------------------------------------------------------
def check_input(volume: Volume, card: Any, slice_axis: int | None = None) -> list[str]:
    """Problems of this volume for this model, as sentences; empty when it suits the model.

    Checks the modality/contrast (as ``MedGANLogic.run`` does) and, when the card declares them,
    ``input.spacing_mm: [min, max]`` (every voxel size, mm) and ``input.fov_mm: [min, max]`` (the field of view
    along every axis the model sees in full: the in-plane axes of a 2D model, all axes of a 3D model).
    ``slice_axis`` overrides the card's for 2D models (array axis: 0 = z).
    """
    from .pipeline import _modality_problem

    problems = []
    axis = card.slice_axis if slice_axis is None else int(slice_axis)
    modality = _modality_problem(card, volume)
    if modality:
        problems.append(modality)
    spec = card.input
    spacing_range = spec.get("spacing_mm")
    if spacing_range:
        lo, hi = float(spacing_range[0]), float(spacing_range[1])
        bad = [f"{axis} {s:.2f} mm" for axis, s in zip("xyz", volume.spacing) if not lo <= s <= hi]
        if card.dims != "3d":  # the slice axis of a 2d model may be coarser: only in-plane spacing matters
            sliced = "zyx"[axis]
            bad = [b for b in bad if not b.startswith(sliced)]
        if bad:
            problems.append(f"voxel size {', '.join(bad)} is outside the {lo:g}-{hi:g} mm model {card.id} was "
                            f"trained on; resample the volume (Resample Scalar Volume module) or pick another model")
    fov_range = spec.get("fov_mm")
    if fov_range:
        lo, hi = float(fov_range[0]), float(fov_range[1])
        extent = volume.physical_extent()
        axes = [0, 1, 2] if card.dims == "3d" else [a for a in range(3) if a != 2 - axis]
        small = [f"{'xyz'[a]} {extent[a]:.0f} mm" for a in axes if extent[a] < lo]
        large = [f"{'xyz'[a]} {extent[a]:.0f} mm" for a in axes if extent[a] > hi]
        if small:
            problems.append(f"field of view {', '.join(small)} is smaller than the {lo:g}-{hi:g} mm model {card.id} "
                            f"expects (a partial scan?); load the whole scan or pick another model")
        if large:
            problems.append(f"field of view {', '.join(large)} is larger than the {lo:g}-{hi:g} mm model {card.id} "
                            f"expects; crop the volume (Crop Volume module) or pick another model")
    return problems


def check_output_node(input_node: Any, output_node: Any, task: str) -> None:
    """Refuse an output node that is the input, or of the wrong class for the task."""
    if output_node is None:
        return
    if input_node is not None and (output_node is input_node or output_node.GetID() == input_node.GetID()):
        raise InputError(f"The output node {output_node.GetName()!r} is the input volume; MedGAN never overwrites "
                         f"its input. Choose 'Create new volume' or another output node.")
    want = "vtkMRMLSegmentationNode" if task == "segment" else "vtkMRMLScalarVolumeNode"
    if not output_node.IsA(want) or output_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"The output node {output_node.GetName()!r} is a {output_node.GetClassName()}; the "
                         f"{task!r} task writes a {want}. Choose another output or create a new one.")


# --- what the panel offers: models, devices, model import ---------------------------------------------------------
def models_for(task: str, volume: Volume | None = None) -> list[tuple[Any, str | None]]:
    """Installed models for ``task`` as ``(card, problem)``, those that fit ``volume`` first (problem None).

    ``problem`` says why a model does not fit the volume (e.g. "model mr-to-ct expects MR input but the volume
    is CT"); the panel lists such models only with "run anyway".
    """
    from .models import registry
    from .pipeline import _modality_problem

    entries = []
    for card in registry.list_models(task):
        problem = None
        if volume is not None:
            problems = check_input(volume, card)
            problem = "; ".join(problems) if problems else _modality_problem(card, volume)
        entries.append((card, problem))
    return sorted(entries, key=lambda entry: entry[1] is not None)


def device_choices() -> list[tuple[str, str]]:
    """``(label, device)`` pairs for the device selector: Auto, CPU, then every CUDA GPU by index and name."""
    choices = [("Auto (GPU if available)", "auto"), ("CPU", "cpu")]
    try:
        import torch
    except ImportError:  # torch not installed yet: it is installed on first use
        return choices
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            choices.append((f"CUDA {index}: {props.name} ({props.total_memory / 2**30:.0f} GB)", f"cuda:{index}"))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        choices.append(("Apple GPU (MPS)", "mps"))
    return choices


def card_summary_html(card: Any, problem: str | None = None) -> str:
    """The model card as the panel shows it: what it does, what it was trained on, its intended use."""
    from html import escape

    info = card.summary()
    rows = [("Model", f"{info['name']} ({info['id']} v{info['version']})"),
            ("Does", f"{info['task']}: {info['modality_in'] or 'any'} &rarr; {info['modality_out'] or 'map'}"
                     f" ({info['dims']}{', x' + str(info['scale_factor']) if card.task == 'superres' else ''})"),
            ("Trained on", info["training_data"]), ("Intended use", info["intended_use"]),
            ("License", card.data.get("license", "")), ("Source", f"{info['source']}: {info['folder']}")]
    html = "".join(f"<tr><td><b>{escape(k)}</b>&nbsp;</td><td>{v if k == 'Does' else escape(str(v))}</td></tr>"
                   for k, v in rows)
    warning = (f"<p style='color:#c0392b'><b>Does not fit the input:</b> {escape(problem)}. Tick \"Run even if the "
               f"input does not fit\" to run anyway.</p>" if problem else "")
    return f"<table>{html}</table>{warning}"


def import_model(source: str | Any, *, replace: bool = False, **pix2pix_options: Any) -> Any:
    """Validate a model and add it to the user model folder; returns its card ("Import model..." in the panel).

    ``source`` is a MedGAN model folder (card.json + weights.safetensors: SHA-256 checked, network built, then
    copied) or a pytorch-CycleGAN-and-pix2pix generator checkpoint (.pth; ``pix2pix_options`` as
    :func:`MedGANLogic.models.importer.import_pix2pix` takes them: model_id, task, input_modality, ...).
    """
    from pathlib import Path

    from .models import registry

    path = Path(source)
    if path.is_dir():
        from .models.card import load_card

        # Checked here too: install_model's network check may be answered from the loaded-network cache, which
        # is keyed by the card's SHA-256 and so cannot see a changed file.
        registry.verify_weights(load_card(path))
        return registry.install_model(path, replace=replace)
    if path.is_file() and path.suffix.lower() in (".pth", ".pt"):
        from .models.importer import import_pix2pix

        model_id = pix2pix_options.pop("model_id", None)
        if not model_id:
            raise InputError("Importing a .pth checkpoint needs an id for the new model (model_id), e.g. my-t1-to-t2.")
        target = registry.user_models_dir()
        if (target / model_id).exists() and not replace:
            raise InputError(f"A model {model_id!r} is already installed in {target}; choose another id or replace it.")
        card = import_pix2pix(path, target, model_id=model_id, **pix2pix_options)
        registry.load_network(card, "cpu")  # proves it loads before the panel lists it
        return card
    raise InputError(f"{path} is neither a model folder (card.json + weights.safetensors) nor a .pth generator "
                     f"checkpoint of pytorch-CycleGAN-and-pix2pix.")


# --- run request: prepared on the main thread, executed anywhere ---------------------------------------------------
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


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(engine options, display options) from one keyword dict; see :data:`DISPLAY_OPTIONS`."""
    engine = {k: v for k, v in options.items() if k not in DISPLAY_OPTIONS}
    display = {k: v for k, v in options.items() if k in DISPLAY_OPTIONS}
    return engine, display


def prepare_run(scene: Any, input_node: Any, task: str, model: str | None = None, device: str = "auto",
                output_node: Any = None, harden_transform: bool = True, **options: Any) -> RunRequest:
    """Main thread: convert the node, choose and check the model, validate the output node. No scene changes.

    Raises :class:`~MedGANLogic.errors.ModalityMismatchError` (modality) or :class:`InputError` (spacing,
    field of view, bad node) unless ``force=True``; with force the problems are kept in ``request.warnings``.
    """
    from .pipeline import _modality_problem, choose_model
    from .tasks import get_task

    get_task(task)  # unknown task: a clear error before any conversion
    check_output_node(input_node, output_node, task)
    engine, display = split_options(options)
    volume = volume_from_node(input_node, harden_transform=harden_transform,
                              modality=engine.pop("modality", None), contrast=engine.pop("contrast", None))
    card = choose_model(task, volume, model)
    problems = check_input(volume, card, engine.get("slice_axis"))
    if problems and not engine.get("force"):
        kind = UnsuitableModalityError if _modality_problem(card, volume) else UnsuitableInputError
        raise kind(f"Volume {input_node.GetName()!r} does not suit model {card.id}: {'; '.join(problems)}. "
                   f"Run anyway with force=True ('Run anyway' in the panel).")
    matrix = _matrix_to_numpy(_get_ijk_to_ras(input_node))
    model_ref = model if model is not None else card.id
    return RunRequest(input_node=input_node, volume=volume, task=task, model=model_ref, device=device,
                      options=engine, display=display, output_node=output_node, input_matrix=matrix,
                      warnings=problems)


def execute(request: RunRequest, progress: Callable[[float, str], None] | None = None, cancel: Any = None):
    """Any thread: run the engine on the prepared Volume. Touches no MRML node. Returns a ``RunResult``."""
    from . import pipeline

    return pipeline.run(request.task, request.volume, model=request.model, device=request.device,
                        progress=progress, cancel=cancel, **request.options)


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
        task: "synthesize", "denoise", "superres", "anomaly" or "segment".
        model: model id or model folder; None picks the first installed model for the task that fits.
        device: "auto", "cpu", "cuda" or "cuda:N".
        progress: ``progress(fraction 0-1, message)``; cancel: a callable or ``threading.Event``.
        output_node: overwrite this node instead of creating one (a scalar volume, or a segmentation for
            "segment"); never the input.
        **options: engine options (batch_size, overlap, slice_axis, force, threshold, modality, contrast, ...),
            ``harden_transform`` (default True), and display options: colormap ("Inferno"), opacity (0-1,
            default 0.5), display_threshold (anomaly map values shown from here up; default: the mask threshold),
            make_segmentation (anomaly: also a segmentation of the candidate regions), show (default True: set
            the slice views).

    Returns:
        The primary output node first (synthetic/denoised/super-resolved volume, anomaly map, or segmentation),
        then any others (the candidate-region segmentation).
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
    the error is raised. ``progress`` covers the whole batch.
    """
    harden = bool(options.pop("harden_transform", True))
    requests = [prepare_run(scene, node, task, model=model, device=device, harden_transform=harden, **options)
                for node in input_nodes]
    results = []
    for i, request in enumerate(requests):
        def part(fraction: float, message: str, i=i) -> None:
            if progress:
                progress((i + fraction) / len(requests), f"[{i + 1}/{len(requests)}] {message}")

        results.append(execute(request, progress=part, cancel=cancel))
    with SceneTransaction(scene):
        return {request.input_node.GetID(): finish_run(scene, request, result)
                for request, result in zip(requests, results)}


def study_volume_nodes(scene: Any, node: Any) -> list[Any]:
    """Every scalar volume (not label maps, not MedGAN outputs) in the same subject-hierarchy study as ``node``.

    Without a study (no subject hierarchy item, or the node directly under the scene), every such volume in
    the scene.
    """
    sh = _subject_hierarchy(scene)
    study = None
    if sh is not None and node is not None:
        item = sh.GetItemByDataNode(node)
        parent = sh.GetItemParent(item) if item else 0
        study = parent if parent and parent != sh.GetSceneItemID() else None
    found = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        candidate = scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
        if candidate.IsA("vtkMRMLLabelMapVolumeNode") or candidate.GetAttribute(ATTRIBUTE_PREFIX + "synthetic"):
            continue
        if study is not None:
            item = sh.GetItemByDataNode(candidate)
            if not item or sh.GetItemParent(item) != study:
                continue
        found.append(candidate)
    return found


# --- scene transaction ---------------------------------------------------------------------------------------------
class SceneTransaction:
    """Context manager: on an exception, remove every node added to the scene inside the block."""

    def __init__(self, scene: Any):
        self.scene = scene
        self.before: set[str] = set()

    def __enter__(self) -> SceneTransaction:
        self.before = {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            return False
        added = [self.scene.GetNthNode(i) for i in range(self.scene.GetNumberOfNodes())]
        added = [n for n in added if n is not None and n.GetID() not in self.before]
        # Display/storage nodes first, then their data nodes: removing a data node removes its display nodes too.
        for node in sorted(added, key=lambda n: n.IsA("vtkMRMLDisplayableNode")):
            if self.scene.IsNodePresent(node):
                self.scene.RemoveNode(node)
        return False


# --- output nodes ---------------------------------------------------------------------------------------------------
def output_name(input_name: str, task: str, volume: Volume, kind: str) -> str:
    """E.g. "MRHead T2w (MedGAN synthetic)", "CT denoised (MedGAN synthetic)", "MRHead anomaly map (MedGAN)"."""
    if kind == "anomaly_map":
        return f"{input_name} anomaly map (MedGAN)"
    if kind == "mask":
        return f"{input_name} anomaly candidates (MedGAN)"
    if kind == "labels":
        return f"{input_name} segmentation (MedGAN)"
    if task == "synthesize":
        what = " ".join(str(v) for v in (volume.metadata.get("modality") if volume.metadata.get("modality") != "MR"
                                         else None, volume.metadata.get("contrast")) if v) or "synthetic"
        return f"{input_name} {what} (MedGAN synthetic)"
    if task == "superres":
        return f"{input_name} super-resolved (MedGAN synthetic)"
    return f"{input_name} {TASK_OUTPUT_LABELS.get(task, task)} (MedGAN synthetic)"


def _unique_name(scene: Any, name: str) -> str:
    if scene.GetFirstNodeByName(name) is None:
        return name
    n = 2
    while scene.GetFirstNodeByName(f"{name} ({n})") is not None:
        n += 1
    return f"{name} ({n})"


def provenance_attributes(volume: Volume, provenance: dict[str, Any]) -> dict[str, str]:
    """Node attributes (all strings) recording what made an output: ``MedGAN.<key>``."""
    options = provenance.get("options", {})
    attrs = {
        "synthetic": "true",
        "task": str(provenance.get("task", "")),
        "kind": str(volume.metadata.get("kind", "image")),
        "model": str(provenance.get("model", "")),
        "model_name": str(provenance.get("model_name", "")),
        "version": str(provenance.get("model_version", "")),
        "software": str(provenance.get("software", "")),
        "sha256": str(provenance.get("weights_sha256", "")),
        "options": json.dumps(options, sort_keys=True, default=str),
        "device": str(provenance.get("device", "")),
        "time": str(provenance.get("time") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")),
        "seconds": str(provenance.get("seconds", "")),
        "input": str(provenance.get("input", "")),
        "intended_use": str(provenance.get("intended_use", "")),
        "provenance": json.dumps(provenance, sort_keys=True, default=str),
    }
    for key in ("modality", "contrast", "units", "case_score", "threshold", "geometry_changed",
                "transform_hardened"):
        if volume.metadata.get(key) is not None:
            attrs[key] = str(volume.metadata[key])
    if provenance.get("forced_despite"):
        attrs["forced_despite"] = str(provenance["forced_despite"])
    return {ATTRIBUTE_PREFIX + k: v for k, v in attrs.items()}


def _output_matrix(out: Volume, volume: Volume | None, input_matrix: np.ndarray | None) -> np.ndarray:
    """The input's own matrix when the output lies on the input's grid (bit-exact), else the output's."""
    if volume is not None and out.same_geometry(volume, atol=1e-9):
        if input_matrix is not None and "transform_hardened" not in volume.metadata:
            return input_matrix.copy()
        return volume.ijk_to_ras()
    return out.ijk_to_ras()


def _scalar_volume_node(scene: Any, out: Volume, name: str, matrix: np.ndarray, target: Any = None) -> Any:
    node = target if target is not None else scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                                                        _unique_name(scene, name))
    array = out.array if out.array.dtype == np.float32 else out.array.astype(np.float32)
    node.SetIJKToRASMatrix(_numpy_to_matrix(matrix))
    node.SetAndObserveImageData(_image_data_from_array(array))
    node.SetAndObserveTransformNodeID(None)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def _set_attributes(node: Any, attributes: dict[str, str]) -> None:
    for key in [k for k in (node.GetAttributeNames() or ()) if k.startswith(ATTRIBUTE_PREFIX)]:
        node.RemoveAttribute(key)
    for key, value in attributes.items():
        node.SetAttribute(key, value)


def _display_image(node: Any, out: Volume, input_node: Any) -> None:
    """CT (HU): window/level presets, starting from the input's window if it is CT too; MR: auto window."""
    display = node.GetDisplayNode()
    scene = node.GetScene()
    grey = scene.GetNodeByID("vtkMRMLColorTableNodeGrey") if scene else None
    if grey is not None:
        display.SetAndObserveColorNodeID(grey.GetID())
    if out.metadata.get("modality") == "CT" or out.metadata.get("units") == "HU":
        display.AutoWindowLevelOff()
        display.ResetWindowLevelPresets()
        for _name, window, level in CT_WINDOW_PRESETS:
            display.AddWindowLevelPreset(window, level)
        source = input_node.GetDisplayNode() if input_node is not None else None
        input_is_ct = input_node is not None and node_modality(input_node)[0] == "CT"
        if source is not None and input_is_ct and source.IsA("vtkMRMLScalarVolumeDisplayNode"):
            display.SetWindowLevel(source.GetWindow(), source.GetLevel())
        else:
            display.SetWindowLevelFromPreset(0)
    else:
        display.AutoWindowLevelOn()


def colormap_node(scene: Any, name: str = "Inferno") -> Any:
    """The scene's colour node called ``name`` (3D Slicer has Inferno, Viridis, Magma, Plasma); if the scene has
    none, a 256-entry ``vtkMRMLColorTableNode`` "MedGAN <name>" made (once) from the map's anchors."""
    if name not in _COLORMAP_ANCHORS:
        raise InputError(f"Unknown colour map {name!r}; choose one of {', '.join(COLORMAPS)}.")
    for candidate in (name, f"MedGAN {name}"):
        nodes = scene.GetNodesByName(candidate)
        for i in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(i)
            if node.IsA("vtkMRMLColorNode"):
                return node
    import slicer

    anchors = np.array(_COLORMAP_ANCHORS[name])
    positions = np.linspace(0.0, 1.0, len(anchors))
    samples = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([np.interp(samples, positions, anchors[:, c]) for c in range(3)], axis=1)
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(f"MedGAN {name}")
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    node.SetNamesFromColors()
    for i, (r, g, b) in enumerate(rgb):
        node.SetColor(i, float(r), float(g), float(b), 1.0)
    node.SetAttribute("Category", "MedGAN")
    scene.AddNode(node)
    return node


def display_anomaly_map(node: Any, colormap: str = "Inferno", display_threshold: float | None = None,
                        upper: float | None = None) -> Any:
    """Show an anomaly map in colour: ``colormap`` over [0, upper], values below ``display_threshold`` transparent,
    and a colour legend. Returns the legend display node (or None where the colour logic is unavailable)."""
    import slicer

    scene = node.GetScene()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(colormap_node(scene, colormap).GetID())
    values = array_from_node(node)
    if upper is None:
        upper = float(np.percentile(values[values > 0], 99.9)) if (values > 0).any() else 1.0
    upper = max(float(upper), 1e-6)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, upper)
    if display_threshold is None:
        stored = node.GetAttribute(ATTRIBUTE_PREFIX + "threshold")
        display_threshold = float(stored) if stored else 0.0
    display.AutoThresholdOff()
    display.SetThreshold(float(display_threshold), float(max(values.max(), upper)) + 1.0)
    display.ApplyThresholdOn()
    display.SetInterpolate(1)
    legend = None
    try:
        legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(node)
    except (AttributeError, TypeError):  # older MRML without colour legends
        legend = None
    if legend is not None:
        legend.SetTitleText("Anomaly (residual)")
        legend.SetLabelFormat("%.2f")
        legend.SetVisibility(True)
    return legend


def _subject_hierarchy(scene: Any) -> Any:
    """The scene's subject hierarchy node if it has one (never creates it)."""
    if scene is None:
        return None
    node = scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")
    if node is None:
        return None
    import slicer

    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def place_beside(scene: Any, input_node: Any, nodes: Sequence[Any]) -> None:
    """Put ``nodes`` under the input's parent (its study) in the subject hierarchy, when the input has an item."""
    sh = _subject_hierarchy(scene)
    if sh is None or input_node is None:
        return
    item = sh.GetItemByDataNode(input_node)
    if not item:
        return
    parent = sh.GetItemParent(item)
    for node in nodes:
        out_item = sh.GetItemByDataNode(node)
        if out_item:
            sh.SetItemParent(out_item, parent)
        else:
            sh.CreateItem(parent, node)


def _segmentation_from_labels(scene: Any, labels: np.ndarray, names: dict[int, str], matrix: np.ndarray,
                              name: str, target: Any = None, reference_node: Any = None) -> Any:
    """A segmentation node with one named segment per label value (empty segments included)."""
    node = target if target is not None else scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                        _unique_name(scene, name))
    segmentation = node.GetSegmentation()
    segmentation.RemoveAllSegments()
    if reference_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    for i, (value, segment_name) in enumerate(sorted(names.items())):
        color = _SEGMENT_COLORS[i % len(_SEGMENT_COLORS)]
        segment_id = node.AddSegmentFromBinaryLabelmapRepresentation(
            _oriented_labelmap(labels == value, matrix), str(segment_name), list(color))
        segment = segmentation.GetSegment(segment_id)
        segment.SetTag(ATTRIBUTE_PREFIX + "label", str(value))
        segment.SetTag(ATTRIBUTE_PREFIX + "voxels", str(int((labels == value).sum())))
    return node


def candidate_regions(mask: np.ndarray, spacing: tuple[float, float, float],
                      max_regions: int = MAX_CANDIDATE_SEGMENTS) -> tuple[np.ndarray, dict[int, str]]:
    """Connected regions of a binary mask, largest first: (label map, {label: "Candidate 1 (0.42 mL)"})."""
    from scipy import ndimage

    labels, count = ndimage.label(mask > 0)
    if count == 0:
        return labels.astype(np.uint8), {}
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1))
    order = np.argsort(-sizes)[:max_regions]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    relabelled = np.zeros(labels.shape, np.uint8)
    names = {}
    for rank, index in enumerate(order, start=1):
        relabelled[labels == index + 1] = rank
        names[rank] = f"Candidate {rank} ({sizes[index] * voxel_ml:.2f} mL)"
    return relabelled, names


def nodes_from_result(scene: Any, input_node: Any, result: Any, *, volume: Volume | None = None,
                      output_node: Any = None, input_matrix: np.ndarray | None = None, colormap: str = "Inferno",
                      opacity: float = 0.5, display_threshold: float | None = None, make_segmentation: bool = False,
                      show: bool = True) -> list[Any]:
    """Main thread: turn a ``RunResult`` into MRML nodes beside the input; returns them, primary first.

    All or nothing: a failure while the nodes are made removes every node added (a :class:`SceneTransaction`).
    An ``output_node`` is overwritten (voxels, geometry, provenance attributes) instead of creating the primary
    node; it is checked first (never the input, right class).
    """
    task = str(result.provenance.get("task", ""))
    check_output_node(input_node, output_node, task)
    if not 0.0 <= float(opacity) <= 1.0:
        raise InputError(f"opacity must be between 0 and 1; got {opacity}.")
    input_name = input_node.GetName() if input_node is not None else "volume"
    if input_matrix is None and input_node is not None:
        input_matrix = _matrix_to_numpy(_get_ijk_to_ras(input_node))
    reference = input_node if input_node is not None and input_node.GetParentTransformNode() is None else None
    created: list[Any] = []
    with SceneTransaction(scene):
        primary = result.volume
        kind = primary.metadata.get("kind", "image")
        matrix = _output_matrix(primary, volume, input_matrix)
        attributes = provenance_attributes(primary, result.provenance)
        if kind == "labels":
            names = {int(k): str(v) for k, v in primary.metadata.get("segment_names", {1: "segment"}).items()}
            node = _segmentation_from_labels(scene, primary.array, names, matrix,
                                             output_name(input_name, task, primary, kind), target=output_node,
                                             reference_node=reference)
        else:
            node = _scalar_volume_node(scene, primary, output_name(input_name, task, primary, kind), matrix,
                                       target=output_node)
        _set_attributes(node, attributes)
        node.SetDescription(f"MedGAN {task} output of {input_name} by model {attributes[ATTRIBUTE_PREFIX + 'model']}"
                            f" - research use, not for diagnosis")
        created.append(node)
        if kind == "anomaly_map":
            display_anomaly_map(node, colormap=colormap, display_threshold=display_threshold)
            mask = result.outputs.get("mask")
            if make_segmentation and mask is not None:
                regions, names = candidate_regions(mask.array, mask.spacing)
                seg = _segmentation_from_labels(scene, regions, names, _output_matrix(mask, volume, input_matrix),
                                                output_name(input_name, task, mask, "mask"),
                                                reference_node=reference)
                _set_attributes(seg, provenance_attributes(mask, result.provenance))
                created.append(seg)
        elif kind != "labels":
            _display_image(node, primary, input_node)
        place_beside(scene, input_node, created)
        if show:
            show_in_slice_views(scene, input_node, created[0], opacity=opacity)
    return created


# --- slice views ----------------------------------------------------------------------------------------------------
def _nodes_of_class(scene: Any, class_name: str) -> list[Any]:
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


def show_in_slice_views(scene: Any, input_node: Any, output_node: Any, opacity: float = 0.5) -> None:
    """Show a result next to its input in the scene's slice views (no views: nothing to do).

    * anomaly map: input as background and the map as a coloured foreground at ``opacity`` in every view;
    * segmentation: input as background in every view (the segments draw themselves);
    * image: side-by-side layout (where the scene has a layout node) with the input in Red and the output in
      Yellow, same orientation, views linked; without that layout, the output as background everywhere.
    """
    composites = {c.GetLayoutName(): c for c in _nodes_of_class(scene, "vtkMRMLSliceCompositeNode")}
    if not composites:
        return
    kind = output_node.GetAttribute(ATTRIBUTE_PREFIX + "kind") or "image"
    input_id = input_node.GetID() if input_node is not None else None
    if kind == "anomaly_map":
        for composite in composites.values():
            composite.SetBackgroundVolumeID(input_id)
            composite.SetForegroundVolumeID(output_node.GetID())
            composite.SetForegroundOpacity(float(opacity))
        return
    if output_node.IsA("vtkMRMLSegmentationNode"):
        for composite in composites.values():
            composite.SetBackgroundVolumeID(input_id)
        return
    layouts = _nodes_of_class(scene, "vtkMRMLLayoutNode")
    if layouts and "Red" in composites and "Yellow" in composites:
        import slicer

        layouts[0].SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        slices = {s.GetLayoutName(): s for s in _nodes_of_class(scene, "vtkMRMLSliceNode")}
        if "Red" in slices and "Yellow" in slices:
            slices["Yellow"].SetOrientation(slices["Red"].GetOrientation())
        composites["Red"].SetBackgroundVolumeID(input_id)
        composites["Yellow"].SetBackgroundVolumeID(output_node.GetID())
        for name in ("Red", "Yellow"):
            composites[name].SetForegroundVolumeID(None)
            composites[name].SetLinkedControl(1)
        return
    for composite in composites.values():
        composite.SetBackgroundVolumeID(output_node.GetID())
        composite.SetForegroundVolumeID(None)


def update_anomaly_display(node: Any, scene: Any = None, *, opacity: float | None = None,
                           display_threshold: float | None = None, colormap: str | None = None) -> None:
    """Change an anomaly map's look after the run (the panel's opacity/threshold/colour map controls)."""
    scene = scene or node.GetScene()
    display = node.GetDisplayNode()
    if colormap is not None:
        display.SetAndObserveColorNodeID(colormap_node(scene, colormap).GetID())
    if display_threshold is not None:
        display.SetLowerThreshold(float(display_threshold))
    if opacity is not None:
        for composite in _nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
            if composite.GetForegroundVolumeID() == node.GetID():
                composite.SetForegroundOpacity(float(opacity))


def describe_result(result: Any) -> str:
    """One status line: model, device, time, and the case score for anomaly maps."""
    p = result.provenance
    text = f"{p.get('task')} with {p.get('model')} on {p.get('device')} in {p.get('seconds')} s"
    if "case_score" in result.extras:
        text += (f"; case score {result.extras['case_score']:.3f} (threshold {result.extras.get('threshold', 0):.3f},"
                 f" {result.extras.get('candidate_voxels', 0)} candidate voxels)")
    return text


__all__ = ["RunRequest", "SceneTransaction", "UnsuitableInputError", "UnsuitableModalityError", "array_from_node",
           "candidate_regions", "card_summary_html", "check_input", "check_output_node", "colormap_node",
           "describe_result", "device_choices", "display_anomaly_map", "execute", "finish_run", "header_volume",
           "import_model", "models_for", "node_ijk_to_ras", "node_modality", "nodes_from_result", "output_name",
           "place_beside", "prepare_run", "provenance_attributes", "run_on_node", "run_on_nodes",
           "show_in_slice_views", "split_options", "study_volume_nodes", "update_anomaly_display",
           "volume_from_node"]
