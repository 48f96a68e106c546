"""A mask from a MRML node (the lesion task's ``mask``): a segment of a segmentation node, or a label map volume.

:func:`mask_from_node` returns a :class:`~MedGANLogic.volume.Volume` on the node's own grid (a segment's binary
labelmap keeps its own, possibly cropped, geometry); the engine (:func:`MedGANLogic.masks.mask_for`) then checks
it and puts it on the image's grid. Nothing here modifies the node.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .nodes import array_from_node, matrix_to_numpy, node_ijk_to_ras


def _segment_id(segmentation: Any, node_name: str, segment: str | None) -> str:
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    if not ids:
        raise InputError(f"Segmentation {node_name!r} has no segment; draw the lesion region with the Segment "
                         f"Editor first.")
    if segment is None:
        if len(ids) > 1:
            names = ", ".join(repr(segmentation.GetSegment(i).GetName()) for i in ids)
            raise InputError(f"Segmentation {node_name!r} has {len(ids)} segments ({names}); choose the one to "
                             f"fill with a lesion.")
        return ids[0]
    if segment in ids:
        return segment
    by_name = segmentation.GetSegmentIdBySegmentName(segment)
    if by_name:
        return by_name
    raise InputError(f"Segmentation {node_name!r} has no segment {segment!r}.")


def _world_matrix(node: Any) -> np.ndarray:
    """The node's linear parent transform to world (identity without one); a non-linear one is refused."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise InputError(f"Node {node.GetName()!r} is under a non-linear transform; harden it first.")
    import vtk

    m = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(m)
    return matrix_to_numpy(m)


def _segment_volume(node: Any, segment: str | None) -> Volume:
    import slicer
    import vtk
    from vtkmodules.util import numpy_support

    segmentation = node.GetSegmentation()
    segment_id = _segment_id(segmentation, node.GetName(), segment)
    labelmap = slicer.vtkOrientedImageData()
    node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    extent = labelmap.GetExtent()
    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    name = segmentation.GetSegment(segment_id).GetName()
    if min(dims) <= 0 or labelmap.GetPointData().GetScalars() is None:
        raise InputError(f"Segment {name!r} of {node.GetName()!r} is empty; paint the lesion region first.")
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    m = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(m)
    shift = np.eye(4)
    shift[:3, 3] = extent[0], extent[2], extent[4]  # the array starts at the extent's first index
    matrix = _world_matrix(node) @ matrix_to_numpy(m) @ shift
    meta = {"name": name, "source": f"3D Slicer segment {name!r} of {node.GetName()!r}", "kind": "labels",
            "modality": "mask"}
    return Volume.from_ijk_to_ras((values > 0).astype(np.uint8), matrix, metadata=meta)


def mask_from_node(node: Any, segment: str | None = None, label: int | None = None) -> Volume:
    """The mask held by ``node``: a segment (``segment``: its id or name; may be omitted when there is one) of a
    ``vtkMRMLSegmentationNode``, or a label map / scalar volume node (``label``: the value inside; default any
    non-zero voxel, which must then be a single label). A linear parent transform is applied.

    Raises:
        InputError: no node, a segmentation without (that) segment, an empty segment, another kind of node.
    """
    if node is None:
        raise InputError("No lesion mask selected: choose a segment of a segmentation (draw one with the Segment "
                         "Editor) or a label map.")
    if node.IsA("vtkMRMLSegmentationNode"):
        return _segment_volume(node, segment)
    if node.IsA("vtkMRMLScalarVolumeNode"):  # label maps included
        array = array_from_node(node)
        if label is not None:
            array = (array == label).astype(np.uint8)
        matrix, _ = node_ijk_to_ras(node)
        meta = {"name": node.GetName(), "source": f"3D Slicer label map {node.GetName()!r} ({node.GetID()})",
                "kind": "labels", "modality": "mask"}
        return Volume.from_ijk_to_ras(np.array(array), matrix, metadata=meta)
    raise InputError(f"Node {node.GetName()!r} is a {node.GetClassName()}; a lesion mask is a segmentation or a "
                     f"label map.")
