"""The panel's state: the parameter node (saved with the scene), its choice lists (the tasks from the engine's
task table), and the run options it makes.

Slicer binds the widgets of Resources/UI/MedGAN.ui to these fields by their ``SlicerParameterName``.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Union

from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Decimals, WithinRange, parameterNodeWrapper

from MedGANLogic.lesion_types import LESION_TYPE_LABELS, LESION_TYPES
from MedGANLogic.tasks import TASKS

from .fit_to_scan import DEFAULT_BUDGET_S, fit_options, fitting


class _TaskChoice(enum.Enum):
    def label(self) -> str:  # what the task list shows (parameterNodeWrapper calls it)
        return TASKS.get(self.value).label


#: The task list, from the engine's task table: Task.SYNTHESIZE.value == "synthesize", label "Synthesize", ...
Task = _TaskChoice("Task", [(name.upper(), name) for name in TASKS.names()], module=__name__)


#: The tasks that take the ensemble option (the engine's task table says which): the panel's passes box is theirs.
ENSEMBLE_TASKS = tuple(t for t in Task if "ensemble" in TASKS.get(t.value).options)


class _LesionChoice(enum.Enum):
    def label(self) -> str:
        return LESION_TYPE_LABELS[self.value]


#: The lesion types of the lesion task: LesionType.WMH.value == "wmh", ...
LesionType = _LesionChoice("LesionType", [(name.upper(), name) for name in LESION_TYPES], module=__name__)


class SliceAxis(enum.Enum):
    MODEL = -1
    AXIAL = 0
    CORONAL = 1
    SAGITTAL = 2

    def label(self) -> str:
        return {-1: "As the model card says", 0: "k (axial)", 1: "j (coronal)", 2: "i (sagittal)"}[self.value]


class Ensemble(enum.Enum):
    """ENSEMBLE_TASKS (denoising, synthesis, super-resolution, anomaly maps): the network averaged over this many
    flips and transpositions of each slice (0: the card's)."""

    CARD = 0
    ONE = 1
    TWO = 2
    FOUR = 4
    EIGHT = 8

    def label(self) -> str:
        return ENSEMBLE_LABELS[self.value]


#: What the panel's ensemble list shows (the .ui's items, in this order).
ENSEMBLE_LABELS = {0: "As the model card says", 1: "1 pass (fastest)", 2: "2 passes", 4: "4 passes", 8: "8 passes"}


class Colormap(enum.Enum):
    INFERNO = "Inferno"
    VIRIDIS = "Viridis"
    MAGMA = "Magma"
    PLASMA = "Plasma"

    def label(self) -> str:
        return self.value


@parameterNodeWrapper
class MedGANParameterNode:
    """The panel's state, saved with the scene.

    inputVolume: the scan; batchMode: run on the ticked volumes too; task; modelId / device: set by the panel's
    model and device lists; overlap, batchSize (0 = auto), sliceAxis, force, native (keep the input's voxel grid),
    ensemble (denoising passes; CARD: the card's): advanced; adapt, adaptBudget, keepFit: "Fit to this scan"
    (denoise, superres) for that many seconds, the fitted network kept as a model or not; outputNode: overwrite
    this node instead of creating one; anomalyMap (the map shown), colormap, opacity, useCardThreshold,
    threshold, makeSegmentation: anomaly display; lesionMask (a segmentation or label map), lesionType: the lesion
    task (the segment is chosen in the panel's list of the mask's segments).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    batchMode: bool = False
    task: Task = Task.SYNTHESIZE
    modelId: str = ""
    device: str = "auto"
    overlap: Annotated[float, WithinRange(0.0, 0.9), Decimals(2)] = 0.25
    batchSize: Annotated[int, WithinRange(0, 256)] = 0
    sliceAxis: SliceAxis = SliceAxis.MODEL
    force: bool = False
    native: bool = False  # keep the input's voxel grid (no resampling into the model's frame)
    ensemble: Ensemble = Ensemble.CARD  # ENSEMBLE_TASKS: passes over flips and transpositions of each slice
    adapt: bool = False  # "Fit to this scan" (denoise, superres): no trained model
    adaptBudget: Annotated[int, WithinRange(0, 3600)] = DEFAULT_BUDGET_S  # seconds of fitting; 0: the default
    keepFit: bool = False  # keep the fitted network as a model in the user's model folder
    outputNode: Union[vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode]  # noqa: UP007  (typing the wrapper reads)
    anomalyMap: vtkMRMLScalarVolumeNode  # the map the display controls act on (MedGAN.kind = anomaly_map)
    colormap: Colormap = Colormap.INFERNO
    opacity: Annotated[float, WithinRange(0.0, 1.0), Decimals(2)] = 0.5
    useCardThreshold: bool = True
    # the map is |x - reconstruction| of intensities normalised to [-1, 1]: it lies in [0, 2]
    threshold: Annotated[float, WithinRange(0.0, 2.0), Decimals(3)] = 0.1
    makeSegmentation: bool = False
    lesionMask: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]  # noqa: UP007
    lesionType: LesionType = LesionType.WMH


def run_options(p: MedGANParameterNode, model_is_2d: bool, segment: str | None = None) -> dict[str, Any]:
    """The keyword options of a run (``slicer_bridge.run_on_node``'s) as the parameter node ``p`` sets them;
    ``model_is_2d``: the chosen model slices the volume (only then does the slice axis apply); ``segment``: the
    lesion mask's segment chosen in the panel. Fitting to the scan takes its own options only
    (:mod:`.fit_to_scan`)."""
    if fitting(p.task.value, p.adapt):
        return fit_options(p.task.value, p.adaptBudget, float(p.opacity))
    options: dict[str, Any] = {"overlap": float(p.overlap), "opacity": float(p.opacity)}
    if p.batchSize > 0:
        options["batch_size"] = int(p.batchSize)
    if p.sliceAxis != SliceAxis.MODEL and model_is_2d:
        options["slice_axis"] = int(p.sliceAxis.value)
    if p.force:
        options["force"] = True
    if p.native:
        options["native"] = True
    if p.task in ENSEMBLE_TASKS and p.ensemble != Ensemble.CARD:
        options["ensemble"] = int(p.ensemble.value)
    if p.task == Task.ANOMALY:
        options.update(colormap=p.colormap.value, make_segmentation=bool(p.makeSegmentation))
        if not p.useCardThreshold:
            options["threshold"] = float(p.threshold)
    if p.task == Task.LESION:  # the mask node; the bridge reads its segment (mask_from_node)
        options.update(mask=p.lesionMask, lesion_type=p.lesionType.value)
        if segment:
            options["mask_segment"] = segment
    return options


def segment_names(node: Any) -> list[str]:
    """The segment names of a segmentation node, for the panel's segment list (none for a label map)."""
    if node is None or not node.IsA("vtkMRMLSegmentationNode"):
        return []
    segmentation = node.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
