"""The lesion task on a real MRML scene: the mask from a segment or a label map, the result as a new volume plus a
segmentation of the inserted lesion (standard terminology, Show 3D), far voxels unchanged, nothing left on failure.
"""

from __future__ import annotations

import numpy as np
import pytest
import slicer  # the real MRML library (the slicer-core wheel), never a stand-in
import vtk
from scipy import ndimage
from slicer_testing import add_volume_node, make_scene, node_matrix, sample_volume
from test_lesion import lesion_card

from MedGANLogic import slicer_bridge
from MedGANLogic.errors import InputError
from MedGANLogic.slicer_bridge.nodes import oriented_labelmap


@pytest.fixture
def setup():
    scene_setup = make_scene(views=False)
    yield scene_setup
    scene_setup.close()


@pytest.fixture(scope="module")
def t2_and_lesion():
    return sample_volume("T2w"), sample_volume("lesion_mask").array > 0


def _segment_mask(seg, segment_id: str, reference) -> np.ndarray:
    from vtkmodules.util import numpy_support

    labelmap = slicer.vtkOrientedImageData()
    seg.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    e = labelmap.GetExtent()
    full = np.zeros(slicer_bridge.array_from_node(reference).shape, bool)
    dims = (e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims)
    full[e[4]:e[5] + 1, e[2]:e[3] + 1, e[0]:e[1] + 1] = values > 0
    return full


def test_lesion_from_a_segment_makes_a_volume_and_a_lesion_segmentation(setup, make_model, t2_and_lesion):
    make_model(lesion_card())
    volume, lesion = t2_and_lesion
    scene = setup.scene
    node = add_volume_node(scene, volume, "Sample T2")
    before = slicer_bridge.array_from_node(node).copy()
    drawn = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Drawn")
    drawn.CreateDefaultDisplayNodes()
    drawn.SetReferenceImageGeometryParameterFromVolumeNode(node)
    drawn.AddSegmentFromBinaryLabelmapRepresentation(oriented_labelmap(lesion, node_matrix(node)), "my lesion",
                                                     [1.0, 0.0, 0.0])
    drawn.AddSegmentFromBinaryLabelmapRepresentation(oriented_labelmap(np.roll(lesion, 5, axis=2),
                                                                       node_matrix(node)), "other", [0.0, 1.0, 0.0])
    count = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="has 2 segments"):
        slicer_bridge.run_on_node(scene, node, "lesion", mask=drawn, show=False)
    assert scene.GetNumberOfNodes() == count

    image_node, seg = slicer_bridge.run_on_node(scene, node, "lesion", mask=drawn, mask_segment="my lesion",
                                                lesion_type="wmh", show=False, show_3d=True)
    assert np.array_equal(slicer_bridge.array_from_node(node), before)  # the input is untouched
    assert image_node.IsA("vtkMRMLScalarVolumeNode") and image_node.GetName() == \
        "Sample T2 with synthetic lesion (MedGAN synthetic)"
    assert np.array_equal(node_matrix(image_node), node_matrix(node))
    out = slicer_bridge.array_from_node(image_node)
    far = ndimage.distance_transform_edt(~lesion, sampling=volume.spacing[::-1]) > 4.0
    assert np.array_equal(out[far], before[far]) and not np.array_equal(out[lesion], before[lesion])
    assert seg.IsA("vtkMRMLSegmentationNode") and seg.GetName() == "Sample T2 synthetic lesion (MedGAN)"
    segment = seg.GetSegmentation().GetNthSegment(0)
    assert seg.GetSegmentation().GetNumberOfSegments() == 1
    assert segment.GetName() == "synthetic white-matter hyperintensity (MS-like)"
    tag = vtk.reference("")
    assert segment.GetTag("TerminologyEntry", tag)
    assert "^52988006^Lesion" in str(tag)  # SNOMED CT "Lesion"
    assert seg.GetSegmentation().ContainsRepresentation("Closed surface")  # Show 3D
    assert np.array_equal(_segment_mask(seg, seg.GetSegmentation().GetNthSegmentID(0), node), lesion)
    assert seg.GetNodeReference("MedGAN.input").GetID() == node.GetID()


def test_lesion_from_a_label_map_value_and_an_empty_one_refused(setup, make_model, t2_and_lesion):
    make_model(lesion_card())
    volume, lesion = t2_and_lesion
    scene = setup.scene
    node = add_volume_node(scene, volume, "Sample T2")
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "Labels")
    labels.SetIJKToRASMatrix(slicer_bridge.numpy_to_matrix(node_matrix(node)))
    values = np.where(lesion, 3, 0).astype(np.uint8)
    values[:, :4] = 1  # another label that must not be used
    labels.SetAndObserveImageData(slicer_bridge.image_data_from_array(values))
    count = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="not binary"):
        slicer_bridge.run_on_node(scene, node, "lesion", mask=labels, show=False)
    with pytest.raises(InputError, match="is empty"):
        slicer_bridge.run_on_node(scene, node, "lesion", mask=labels, mask_label=7, show=False)
    assert scene.GetNumberOfNodes() == count
    image_node, seg = slicer_bridge.run_on_node(scene, node, "lesion", mask=labels, mask_label=3,
                                                lesion_type="ischaemic", show=False)
    assert seg.GetSegmentation().GetNthSegment(0).GetName() == "synthetic ischaemic lesion"
    assert np.array_equal(_segment_mask(seg, seg.GetSegmentation().GetNthSegmentID(0), node), lesion)
    assert image_node.GetAttribute("MedGAN.task") == "lesion"
