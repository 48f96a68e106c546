"""MedGAN's outputs as MRML nodes: scalar volumes and segmentations on the right grid, named beside their input,
with provenance attributes (``MedGAN.*``), and the all-or-nothing :class:`SceneTransaction` that removes every node
made when something fails. Imports ``slicer`` inside functions only.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..tasks import TASKS
from ..volume import Volume
from .display import check_display_options, display_anomaly_map, display_image, show_in_slice_views
from .nodes import (
    ATTRIBUTE_PREFIX,
    INPUT_REFERENCE,
    image_data_from_array,
    local_ijk_to_ras,
    numpy_to_matrix,
    oriented_labelmap,
    subject_hierarchy,
)

MAX_CANDIDATE_SEGMENTS = 20
#: Standard terminology of a segment by the words in its name: (words, category, type), SNOMED CT codes as DICOM
#: and 3D Slicer's terminology lists use them; anything else is "Tissue".
_TERMINOLOGY = ((("lesion", "candidate", "anomal", "hyperintens"), ("49755003", "Morphologically Altered Structure"),
                 ("52988006", "Lesion")),
                (("tumour", "tumor", "mass"), ("49755003", "Morphologically Altered Structure"), ("4147007", "Mass")),
                (("brain",), ("123037004", "Anatomical Structure"), ("12738006", "Brain")))
_TISSUE = (("85756007", "Tissue"), ("85756007", "Tissue"))
# Distinct segment colours (RGB 0-1) for label maps without a colour of their own.
_SEGMENT_COLORS = [(0.90, 0.35, 0.25), (0.30, 0.70, 0.95), (0.40, 0.85, 0.35), (0.95, 0.80, 0.25),
                   (0.75, 0.45, 0.90), (0.35, 0.90, 0.85), (0.95, 0.55, 0.75), (0.65, 0.65, 0.35)]


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



def check_still_in_scene(scene: Any, input_node: Any, output_node: Any = None) -> None:
    """Refuse to make outputs for an input (or into an output node) that was removed from the scene during the
    run: its outputs would be orphans of a deleted scan (or lost outside the scene)."""
    for role, node in (("input volume", input_node), ("output node", output_node)):
        if node is not None and not scene.IsNodePresent(node):
            raise InputError(f"The {role} {node.GetName()!r} was removed from the scene while MedGAN was running, "
                             f"so no output was made. Load it again (or choose another) and run again.")


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
        # Data nodes first, then their display/storage nodes: a volume shown in a slice view whose display node
        # went first would get a new default display node, left behind.
        for node in sorted(added, key=lambda n: not n.IsA("vtkMRMLDisplayableNode")):
            if self.scene.IsNodePresent(node):
                self.scene.RemoveNode(node)
        return False


def output_name(input_name: str, task: str, volume: Volume, kind: str) -> str:
    """E.g. "MRHead T2w (MedGAN synthetic)", "CT denoised (MedGAN synthetic)", "MRHead anomaly map (MedGAN)"."""
    if kind == "mask" and task == "lesion":
        return f"{input_name} synthetic lesion (MedGAN)"
    if kind == "mask":
        return f"{input_name} anomaly candidates (MedGAN)"
    label = TASKS.get(task).output_label if task in TASKS else task  # the task table's words
    if kind in ("anomaly_map", "labels"):  # not images: no "synthetic" in the name
        return f"{input_name} {label} (MedGAN)"
    if task == "synthesize":  # the contrast made says more than "synthetic"
        what = " ".join(str(v) for v in (volume.metadata.get("modality") if volume.metadata.get("modality") != "MR"
                                         else None, volume.metadata.get("contrast")) if v) or label
        return f"{input_name} {what} (MedGAN synthetic)"
    return f"{input_name} {label} (MedGAN synthetic)"


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
    if provenance.get("adapt"):  # fitted to this scan: the fit at a glance (the whole record is in provenance)
        fit = provenance["adapt"]
        attrs["fit"] = json.dumps({k: fit.get(k) for k in ("steps", "seconds", "seed", "stopped_by", "loss_first",
                                                          "loss_last", "init")}, sort_keys=True, default=str)
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
    node.SetIJKToRASMatrix(numpy_to_matrix(matrix))
    node.SetAndObserveImageData(image_data_from_array(array))
    node.SetAndObserveTransformNodeID(None)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def _set_attributes(node: Any, attributes: dict[str, str]) -> None:
    for key in [k for k in (node.GetAttributeNames() or ()) if k.startswith(ATTRIBUTE_PREFIX)]:
        node.RemoveAttribute(key)
    for key, value in attributes.items():
        node.SetAttribute(key, value)



def place_beside(scene: Any, input_node: Any, nodes: Sequence[Any]) -> None:
    """Put ``nodes`` under the input's parent (its study) in the subject hierarchy, when the input has an item."""
    sh = subject_hierarchy(scene)
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


def terminology_entry(segment_name: str) -> str:
    """The segment's standard terminology (Slicer's ``TerminologyEntry`` tag): a lesion or anomaly candidate is
    "Morphologically Altered Structure / Lesion", a tumour "... / Mass", the brain (brain extraction) "Anatomical
    Structure / Brain", anything else "Tissue / Tissue"."""
    words = segment_name.lower()
    category, kind = next(((c, t) for names, c, t in _TERMINOLOGY if any(w in words for w in names)), _TISSUE)
    return (f"Segmentation category and type - 3D Slicer General Anatomy list~SCT^{category[0]}^{category[1]}"
            f"~SCT^{kind[0]}^{kind[1]}~^^~Anatomic codes - DICOM master list~^^~^^")


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
            oriented_labelmap(labels == value, matrix), str(segment_name), list(color))
        segment = segmentation.GetSegment(segment_id)
        segment.SetTag(ATTRIBUTE_PREFIX + "label", str(value))
        segment.SetTag(ATTRIBUTE_PREFIX + "voxels", str(int((labels == value).sum())))
        segment.SetTag(segment.GetTerminologyEntryTagName(), terminology_entry(str(segment_name)))
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
                      show: bool = True, show_3d: bool = False) -> list[Any]:
    """Main thread: turn a ``RunResult`` into MRML nodes beside the input; returns them, primary first.

    All or nothing: a failure while the nodes are made removes every node added (a :class:`SceneTransaction`).
    An ``output_node`` is overwritten (voxels, geometry, provenance attributes) instead of creating the primary
    node; it is checked first (never the input, right class). An input or output node no longer in the scene
    (deleted while the engine ran) is refused and nothing is made.
    """
    task = str(result.provenance.get("task", ""))
    check_output_node(input_node, output_node, task)
    check_still_in_scene(scene, input_node, output_node)
    check_display_options(colormap, opacity, display_threshold, make_segmentation, show, show_3d)
    input_name = input_node.GetName() if input_node is not None else "volume"
    if input_matrix is None and input_node is not None:
        input_matrix = local_ijk_to_ras(input_node)
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
            display_image(node, primary, input_node)
        lesion = result.outputs.get("mask") if task == "lesion" else None
        if lesion is not None:  # the inserted lesion, as a segmentation (its name says synthetic and the type)
            names = {int(k): str(v) for k, v in lesion.metadata.get("segment_names", {1: "synthetic lesion"}).items()}
            seg = _segmentation_from_labels(scene, lesion.array, names, _output_matrix(lesion, volume, input_matrix),
                                            output_name(input_name, task, lesion, "mask"), reference_node=reference)
            _set_attributes(seg, provenance_attributes(lesion, result.provenance))
            created.append(seg)
        for made in created:
            if input_node is not None:
                made.SetNodeReferenceID(INPUT_REFERENCE, input_node.GetID())
            if show_3d and made.IsA("vtkMRMLSegmentationNode"):
                made.CreateClosedSurfaceRepresentation()  # what the panel's "Show 3D" button does
        place_beside(scene, input_node, created)
        if show:
            show_in_slice_views(scene, input_node, created[0], opacity=opacity)
    return created

