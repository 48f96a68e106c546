"""MRML node <-> :class:`~MedGANLogic.volume.Volume`: voxels, geometry (IJK->RAS, parent transforms), recorded
modality, and the subject hierarchy (studies). Imports ``slicer``/``vtk`` inside functions only.

Geometry is exact: a Volume made from a node has the node's world IJK->RAS (a linear parent transform multiplied
in, a non-linear one refused), and arrays are (z, y, x) = (k, j, i), as VTK stores them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..modality import guess_modality
from ..volume import Volume

ATTRIBUTE_PREFIX = "MedGAN."
#: Node reference role from every output to the volume it was made from (saved with the scene, kept on reload).
INPUT_REFERENCE = "MedGAN.input"


def matrix_to_numpy(matrix: Any) -> np.ndarray:
    """A vtkMatrix4x4 as a (4, 4) float64 array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def numpy_to_matrix(array: np.ndarray) -> Any:
    """A (4, 4) array as a vtkMatrix4x4."""
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def image_data_from_array(array: np.ndarray) -> Any:
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


def oriented_labelmap(mask: np.ndarray, ijk_to_ras: np.ndarray) -> Any:
    """A binary (z, y, x) mask as the vtkOrientedImageData a segment is made from, placed by ``ijk_to_ras``."""
    import slicer

    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(image_data_from_array(mask.astype(np.uint8)))
    image.SetImageToWorldMatrix(numpy_to_matrix(ijk_to_ras))
    return image


def array_from_node(node: Any) -> np.ndarray:
    """A copy of a volume node's voxels as a (z, y, x) array (the node keeps its own memory untouched)."""
    return _voxels(node).copy()


def _voxels(node: Any) -> np.ndarray:
    """The node's voxels, (z, y, x), as a view of its own memory: read it, never write it."""
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
    view = numpy_support.vtk_to_numpy(scalars).reshape(dims[2], dims[1], dims[0])
    view.flags.writeable = False
    return view


def node_ijk_to_ras(node: Any, harden_transform: bool = True) -> tuple[np.ndarray, str | None]:
    """The node's IJK->RAS matrix in world coordinates, and the name of a hardened parent transform (or None).

    A linear parent transform is multiplied in (``harden_transform=True``) or refused; a non-linear one (grid,
    B-spline, thin-plate) is always refused: it cannot be expressed on a regular voxel grid.
    """
    matrix = local_ijk_to_ras(node)
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
    return matrix_to_numpy(to_world) @ matrix, name


def local_ijk_to_ras(node: Any) -> np.ndarray:
    """The node's own IJK->RAS matrix (4, 4), mm, without any parent transform."""
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix_to_numpy(matrix)


def input_of(output_node: Any) -> Any:
    """The volume node an output was made from (its :data:`INPUT_REFERENCE`), or None."""
    return output_node.GetNodeReference(INPUT_REFERENCE) if output_node is not None else None


def node_modality(node: Any) -> tuple[str | None, str | None]:
    """(modality, contrast) of a volume node, from what is recorded, never guessed from the name.

    Sources, first found wins: the node attributes ``MedGAN.modality`` / ``MedGAN.contrast`` (set by MedGAN on its
    outputs, by the sample data, or by the user), then the DICOM ``Modality`` of the node's subject-hierarchy item.
    """
    modality = node.GetAttribute(ATTRIBUTE_PREFIX + "modality") or None
    contrast = node.GetAttribute(ATTRIBUTE_PREFIX + "contrast") or None
    if modality is None:
        scene = node.GetScene()
        sh = subject_hierarchy(scene) if scene is not None else None
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
    shape; ``metadata["guessed_modality"]`` is what the voxels say when no modality is recorded
    (:func:`MedGANLogic.modality.guess_modality`: "CT" when they look like Hounsfield units, sampling every 16th
    slice; "not CT" when none is negative).
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
    if not modality and (guess := guess_modality(_voxels(node))):  # the engine's one rule, on a view: no copy
        meta["guessed_modality"] = guess
    if hardened:
        meta["transform_hardened"] = hardened
    placeholder = np.broadcast_to(np.float32(0), (dims[2], dims[1], dims[0]))
    return Volume.from_ijk_to_ras(placeholder, matrix, metadata=meta)



def subject_hierarchy(scene: Any) -> Any:
    """The scene's subject hierarchy node if it has one (never creates it)."""
    if scene is None:
        return None
    node = scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")
    if node is None:
        return None
    import slicer

    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)



def study_volume_nodes(scene: Any, node: Any) -> list[Any]:
    """Every scalar volume (not label maps, not MedGAN outputs) in the same subject-hierarchy study as ``node``.

    Without a study (no subject hierarchy item, or the node directly under the scene), every such volume in
    the scene.
    """
    sh = subject_hierarchy(scene)
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

