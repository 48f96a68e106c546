"""MedGANLogic.slicer_bridge on a real MRML scene (the slicer-core wheel): every task from a volume node to new
nodes, exact geometry, provenance, display, subject hierarchy, slice views, and nothing left behind on failure.

The inputs are the bundled sample subject (Resources/SampleData), every other slice (anisotropic spacing) on an
oblique grid (rotated IJK->RAS), so an axis or spacing mix-up would show. The models are small: random conv nets
where only geometry and bookkeeping matter, analytically defined ones where the values are checked.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import slicer  # the real MRML library (the slicer-core wheel), never a stand-in
import torch
import torch.nn as nn
from conftest import tiny_card
from MedGANLib import panel_text  # the module's own library (conftest puts it on the path, as Slicer does)
from slicer_testing import (
    VIEWS,
    add_volume_node,
    anomaly_card,
    local_mean_anomaly_state,
    make_scene,
    node_matrix,
    sample_volume,
    save_and_reload,
)

from MedGANLogic import slicer_bridge
from MedGANLogic.errors import CancelledError, InputError, ModalityMismatchError, ModelError
from MedGANLogic.models import build_network, register_architecture


@register_architecture("slicer_test_nearest_y2")
class NearestY2(nn.Module):
    """Nearest-neighbour x2 along rows: an analytically defined super-resolution model for geometry tests."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=(2, 1), mode="nearest") * self.gain


def _net(card: dict, state: dict | None = None) -> nn.Module:
    net = build_network(card["architecture"]["name"], card["architecture"].get("params", {}))
    if state is not None:
        net.load_state_dict(state)
    return net


def _t1_card(model_id: str = "test-t1-to-t2") -> dict:
    # whole slices at once (no tiles): the engine's tiling is tested elsewhere, and this keeps the tests quick
    return tiny_card(model_id, tile_size=None)


def _segment_card() -> dict:
    # conv2d with one layer: logits [0, x] -> label 1 where the normalised intensity is above the middle
    return tiny_card("test-bright-tissue", task="segment", tile_size=None,
                     architecture={"name": "conv2d", "params": {"out_channels": 2, "depth": 1, "residual": False}},
                     output={"modality": "mask"}, extras={"labels": {"1": "bright tissue"}})


def _segment_state() -> dict:
    weight = torch.zeros(2, 1, 3, 3)
    weight[1, 0, 1, 1] = 1.0
    return {"body.0.weight": weight, "body.0.bias": torch.zeros(2)}


def _ct_card(model_id="test-ldct") -> dict:
    return tiny_card(model_id, task="denoise", tile_size=None,
                     input={"modality": "CT", "normalization": {"kind": "ct_window", "window": [-1000, 2000]}},
                     output={"modality": "CT", "units": "HU", "normalization": {"kind": "same_as_input"}})


def _sr_card() -> dict:
    # coronal slices (z, x): the network's rows are z, so it doubles the through-plane resolution
    return tiny_card("test-sr-z2", task="superres", architecture={"name": "slicer_test_nearest_y2", "params": {}},
                     tile_size=None,
                     slice_axis=1, scale_factor=[2, 1, 1],
                     input={"modality": "MR", "contrast": "T2w", "normalization": {"kind": "mr_percentile"}},
                     output={"modality": "MR", "normalization": {"kind": "same_as_input"}})


@pytest.fixture
def setup():
    scene_setup = make_scene()
    yield scene_setup
    scene_setup.close()


@pytest.fixture(scope="module")
def t1_volume():
    return sample_volume("T1w")


@pytest.fixture
def t1_node(setup, t1_volume):
    return add_volume_node(setup.scene, t1_volume, "Sample T1")


@pytest.fixture(scope="module")
def ct_volume():
    return sample_volume("CT_lowdose_25")


def _snapshot(node) -> tuple[np.ndarray, np.ndarray, dict]:
    attributes = {k: node.GetAttribute(k) for k in (node.GetAttributeNames() or ())}
    return slicer_bridge.array_from_node(node), node_matrix(node), attributes


def _assert_unchanged(node, snapshot) -> None:
    voxels, matrix, attributes = _snapshot(node)
    assert np.array_equal(voxels, snapshot[0])
    assert np.array_equal(matrix, snapshot[1])
    assert attributes == snapshot[2]


def _sh_parent(scene, node) -> int:
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    return sh.GetItemParent(sh.GetItemByDataNode(node))


def _node_ids(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def _composite(scene, layout_name):
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        if node.GetLayoutName() == layout_name:
            return node
    raise AssertionError(f"no composite node {layout_name}")


# --- conversion ---------------------------------------------------------------------------------------------------
def test_volume_from_node_round_trips_voxels_and_oblique_geometry(setup):
    volume = sample_volume("T2w")
    assert len(set(volume.spacing)) > 1 and not np.allclose(np.abs(volume.direction), np.eye(3))
    node = add_volume_node(setup.scene, volume, "Sample T2")
    back = slicer_bridge.volume_from_node(node)
    assert np.array_equal(back.array, volume.array)
    assert np.allclose(back.spacing, volume.spacing, atol=1e-9) and np.allclose(back.origin, volume.origin, atol=1e-9)
    assert np.allclose(back.direction, volume.direction, atol=1e-9)
    assert np.allclose(back.ijk_to_ras(), node_matrix(node), atol=1e-9)
    assert back.metadata["modality"] == "MR" and back.metadata["contrast"] == "T2w"
    assert back.metadata["node_id"] == node.GetID()
    back.array[0, 0, 0] = 1e6  # the Volume holds a copy: the node's voxels stay as they were
    assert slicer_bridge.array_from_node(node)[0, 0, 0] != 1e6


def test_dicom_modality_is_read_from_the_subject_hierarchy(setup, ct_volume):
    node = add_volume_node(setup.scene, ct_volume.with_array(ct_volume.array, metadata={"modality": None}), "CT")
    node.RemoveAttribute("MedGAN.modality")
    assert slicer_bridge.node_modality(node) == (None, None)
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(setup.scene)
    sh.SetItemAttribute(sh.GetItemByDataNode(node), "DICOM.Modality", "CT")
    assert slicer_bridge.node_modality(node)[0] == "CT"
    assert slicer_bridge.volume_from_node(node).metadata["units"] == "HU"


@pytest.mark.parametrize("kind", ["labelmap", "vector", "2d", "empty", "none"])
def test_unsuitable_inputs_are_refused_with_a_reason(setup, kind):
    scene = setup.scene
    if kind == "labelmap":
        node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
        node.SetAndObserveImageData(slicer_bridge.image_data_from_array(np.ones((3, 4, 5), np.uint8)))
        message = "not a scalar volume"
    elif kind == "vector":
        node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
        image = slicer_bridge.image_data_from_array(np.ones((3, 4, 5), np.float32))
        from vtkmodules.util import numpy_support

        image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ones((60, 3), np.float32), deep=True))
        node.SetAndObserveImageData(image)
        message = "3 components"
    elif kind == "2d":
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "xray")
        node.SetAndObserveImageData(slicer_bridge.image_data_from_array(np.ones((1, 30, 30), np.float32)))
        message = "2D image"
    elif kind == "empty":
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
        message = "no voxels"
    else:
        node, message = None, "No input volume"
    with pytest.raises(InputError, match=message):
        slicer_bridge.volume_from_node(node)


# --- every task, end to end ---------------------------------------------------------------------------------------
def test_synthesize_new_node_exact_geometry_provenance_and_side_by_side(setup, t1_node, make_model):
    make_model(_t1_card())
    scene = setup.scene
    before = _snapshot(t1_node)
    count = scene.GetNumberOfNodes()
    fractions = []
    nodes = slicer_bridge.run_on_node(scene, t1_node, "synthesize", progress=lambda f, m: fractions.append(f))
    assert len(nodes) == 1
    out = nodes[0]
    assert out.GetName() == "Sample T1 T2w (MedGAN synthetic)"
    assert out.IsA("vtkMRMLScalarVolumeNode") and out.GetParentTransformNode() is None
    assert np.array_equal(node_matrix(out), node_matrix(t1_node))  # bit for bit
    assert slicer_bridge.array_from_node(out).shape == before[0].shape
    _assert_unchanged(t1_node, before)
    assert fractions and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert scene.GetNumberOfNodes() == count + 2  # the volume and its display node
    # provenance
    attr = out.GetAttribute
    assert attr("MedGAN.synthetic") == "true" and attr("MedGAN.model") == "test-t1-to-t2"
    assert attr("MedGAN.version") == "0.0.1" and len(attr("MedGAN.sha256")) == 64
    assert json.loads(attr("MedGAN.options")) == {}
    assert attr("MedGAN.time").startswith("20") and attr("MedGAN.device") == "cpu"
    assert attr("MedGAN.modality") == "MR" and attr("MedGAN.contrast") == "T2w"
    assert json.loads(attr("MedGAN.provenance"))["task"] == "synthesize"
    assert "not for diagnosis" in out.GetDescription()
    # beside the input in the subject hierarchy; MR display: automatic window/level
    assert _sh_parent(scene, out) == _sh_parent(scene, t1_node) != 0
    assert out.GetDisplayNode().GetAutoWindowLevel()
    # side by side, linked: input in Red, output in Yellow, same orientation
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    red, yellow = _composite(scene, "Red"), _composite(scene, "Yellow")
    assert red.GetBackgroundVolumeID() == t1_node.GetID() and yellow.GetBackgroundVolumeID() == out.GetID()
    assert red.GetLinkedControl() and yellow.GetLinkedControl()
    assert setup.slice_logics["Yellow"].GetSliceNode().GetOrientation() == \
        setup.slice_logics["Red"].GetSliceNode().GetOrientation()
    # a second run gets a unique name
    again = slicer_bridge.run_on_node(scene, t1_node, "synthesize", show=False)
    assert again[0].GetName() == "Sample T1 T2w (MedGAN synthetic) (2)"


def test_denoise_ct_keeps_hounsfield_units_and_gets_ct_presets(setup, ct_volume, make_model):
    make_model(_ct_card())
    node = add_volume_node(setup.scene, ct_volume, "Low-dose CT")
    node.GetDisplayNode().AutoWindowLevelOff()
    node.GetDisplayNode().SetWindowLevel(350, 50)
    before = _snapshot(node)
    out = slicer_bridge.run_on_node(setup.scene, node, "denoise", batch_size=2)[0]
    _assert_unchanged(node, before)
    assert out.GetName() == "Low-dose CT denoised (MedGAN synthetic)"
    assert np.array_equal(node_matrix(out), node_matrix(node))
    assert out.GetAttribute("MedGAN.units") == "HU"
    assert json.loads(out.GetAttribute("MedGAN.options")) == {"batch_size": 2}
    display = out.GetDisplayNode()
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindow(), display.GetLevel()) == (350, 50)  # same window as the input, to compare
    assert display.GetNumberOfWindowLevelPresets() == len(slicer_bridge.CT_WINDOW_PRESETS)
    values = slicer_bridge.array_from_node(out)
    assert -1000 <= values.min() and values.max() <= 2000


def test_superres_has_finer_spacing_same_field_of_view(setup, make_model):
    make_model(_sr_card())
    thick = sample_volume("T2w_thick", z_step=1)  # 2 x 2 x 4 mm, oblique
    node = add_volume_node(setup.scene, thick, "Sample T2 thick")
    before = _snapshot(node)
    # the oblique grid tilts the coronal slices this model sees: super-resolution refines the acquisition's own
    # slice axis, so it runs on the acquired grid without asking, and says so
    out = slicer_bridge.run_on_node(setup.scene, node, "superres")[0]
    provenance = json.loads(out.GetAttribute("MedGAN.provenance"))
    assert provenance["warnings"] == [] and provenance.get("forced_despite") is None
    assert any("tilted 29 degrees" in note for note in slicer_bridge.prepare_run(setup.scene, node, "superres").notes)
    _assert_unchanged(node, before)
    m_in, m_out = node_matrix(node), node_matrix(out)
    z, y, x = before[0].shape
    assert slicer_bridge.array_from_node(out).shape == (2 * z, y, x)
    # k (slice) axis: half the step (4 -> 2 mm), same direction; i and j axes unchanged
    assert np.allclose(m_out[:3, 2], m_in[:3, 2] / 2, atol=1e-9)
    assert np.allclose(np.linalg.norm(m_out[:3, :3], axis=0), [2.0, 2.0, 2.0])
    assert np.allclose(m_out[:3, :2], m_in[:3, :2], atol=1e-9)
    # the outer voxel edges stay where they were: same field of view
    for corner in ([-0.5, -0.5, -0.5], [x - 0.5, y - 0.5, z - 0.5]):
        scaled = [corner[0], corner[1], (corner[2] + 0.5) * 2 - 0.5]
        assert np.allclose(m_out @ [*scaled, 1], m_in @ [*corner, 1], atol=1e-6)
    assert "super-resolution" in out.GetAttribute("MedGAN.geometry_changed")
    # nearest-neighbour x2: each thick slice appears twice
    values = slicer_bridge.array_from_node(out)
    assert np.allclose(values[0::2], values[1::2])
    assert out.GetName() == "Sample T2 thick super-resolved (MedGAN synthetic)"


def test_anomaly_map_overlay_legend_and_candidate_segmentation(setup, make_model):
    make_model(anomaly_card(), net=_net(anomaly_card(), local_mean_anomaly_state()))
    volume = sample_volume("T2w")
    lesion = sample_volume("lesion_mask").array > 0
    scene = setup.scene
    node = add_volume_node(scene, volume, "Sample T2")
    before = _snapshot(node)
    nodes = slicer_bridge.run_on_node(scene, node, "anomaly", make_segmentation=True, opacity=0.7)
    _assert_unchanged(node, before)
    amap, seg = nodes
    assert amap.GetName() == "Sample T2 anomaly map (MedGAN)" and amap.GetAttribute("MedGAN.kind") == "anomaly_map"
    assert np.array_equal(node_matrix(amap), node_matrix(node))
    values = slicer_bridge.array_from_node(amap)
    assert values[lesion].mean() > 5 * values[~lesion].mean()  # the local-mean model also flags sharp edges
    threshold = float(amap.GetAttribute("MedGAN.threshold"))
    assert threshold == pytest.approx(0.095) and float(amap.GetAttribute("MedGAN.case_score")) > 0
    display = amap.GetDisplayNode()
    assert display.GetColorNode().GetName() in ("Inferno", "MedGAN Inferno")
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(threshold)
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(amap)
    assert legend is not None and legend.GetVisibility()
    for view in ("Red", "Yellow", "Green"):  # the map over the scan in every view
        composite = _composite(scene, view)
        assert composite.GetBackgroundVolumeID() == node.GetID()
        assert composite.GetForegroundVolumeID() == amap.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.7)
    # the candidate regions: a segmentation with named segments, largest first, the lesion among them
    assert seg.IsA("vtkMRMLSegmentationNode") and seg.GetName() == "Sample T2 anomaly candidates (MedGAN)"
    segmentation = seg.GetSegmentation()
    count = segmentation.GetNumberOfSegments()
    assert 1 <= count <= slicer_bridge.MAX_CANDIDATE_SEGMENTS
    names = [segmentation.GetNthSegment(i).GetName() for i in range(count)]
    assert names[0].startswith("Candidate 1 (") and names[0].endswith(" mL)")
    volumes = [float(n.split("(")[1].split(" mL")[0]) for n in names]
    assert volumes == sorted(volumes, reverse=True)
    found = np.zeros_like(lesion)
    for i in range(count):
        labelmap = slicer.vtkOrientedImageData()
        seg.GetBinaryLabelmapRepresentation(segmentation.GetNthSegmentID(i), labelmap)
        found |= _labelmap_in_grid(labelmap, node)
    assert (found & lesion).sum() > 0.5 * lesion.sum()
    assert _sh_parent(scene, seg) == _sh_parent(scene, node)
    # the panel's controls change the display afterwards
    slicer_bridge.update_anomaly_display(amap, opacity=0.3, display_threshold=0.2, colormap="Viridis")
    assert _composite(scene, "Red").GetForegroundOpacity() == pytest.approx(0.3)
    assert display.GetLowerThreshold() == pytest.approx(0.2)
    assert "Viridis" in display.GetColorNode().GetName()


def test_anomaly_display_acts_on_any_map_found_by_its_attributes_also_after_reload(setup, make_model, tmp_path):
    make_model(anomaly_card(), net=_net(anomaly_card(), local_mean_anomaly_state()))
    scene = setup.scene
    node = add_volume_node(scene, sample_volume("T2w"), "Sample T2")
    first = slicer_bridge.run_on_node(scene, node, "anomaly")[0]
    last = slicer_bridge.run_on_node(scene, node, "anomaly")[0]
    assert [m.GetID() for m in slicer_bridge.anomaly_map_nodes(scene)] == [first.GetID(), last.GetID()]
    assert _composite(scene, "Red").GetForegroundVolumeID() == last.GetID()
    # the panel's controls act on the selected map, not only on the last one made
    slicer_bridge.update_anomaly_display(first, opacity=0.3, colormap="Viridis", display_threshold=0.2, show=True)
    for view in VIEWS:
        composite = _composite(scene, view)
        assert composite.GetForegroundVolumeID() == first.GetID() and composite.GetBackgroundVolumeID() == node.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.3)
    assert "Viridis" in first.GetDisplayNode().GetColorNode().GetName()
    assert first.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.2)
    with pytest.raises(InputError, match="not a MedGAN anomaly map"):
        slicer_bridge.update_anomaly_display(node, opacity=0.3)
    with pytest.raises(InputError, match="opacity must be between 0 and 1"):
        slicer_bridge.update_anomaly_display(first, opacity=2.0)
    # saved and loaded again (no Python object survives): the maps are found by their attributes, each knows its
    # input through a node reference, and the controls act on whichever is selected
    reloaded = save_and_reload(setup, tmp_path / "saved scene")
    try:
        again = reloaded.scene
        maps = slicer_bridge.anomaly_map_nodes(again)
        assert [m.GetName() for m in maps] == [first.GetName(), last.GetName()]
        scan = slicer_bridge.input_of(maps[0])
        assert scan is not None and scan.GetName() == "Sample T2" and not slicer_bridge.is_anomaly_map(scan)
        slicer_bridge.update_anomaly_display(maps[0], opacity=0.6, colormap="Magma", display_threshold=0.15, show=True)
        red = _composite(again, "Red")
        assert red.GetForegroundVolumeID() == maps[0].GetID() and red.GetBackgroundVolumeID() == scan.GetID()
        assert red.GetForegroundOpacity() == pytest.approx(0.6)
        assert "Magma" in maps[0].GetDisplayNode().GetColorNode().GetName()
        assert maps[0].GetDisplayNode().GetLowerThreshold() == pytest.approx(0.15)
    finally:
        reloaded.close()


def test_segmentations_use_standard_terminology_and_can_show_in_3d(setup, t1_node, make_model):
    from vtkmodules.vtkCommonCore import reference

    make_model(_segment_card(), net=_net(_segment_card(), _segment_state()))
    seg = slicer_bridge.run_on_node(setup.scene, t1_node, "segment", force=True, show=False)[0]
    assert not seg.GetSegmentation().ContainsRepresentation("Closed surface")  # 3D only when asked
    entry = reference("")
    assert seg.GetSegmentation().GetNthSegment(0).GetTag("TerminologyEntry", entry)
    assert str(entry) == ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^85756007^Tissue"
                          "~SCT^85756007^Tissue~^^~Anatomic codes - DICOM master list~^^~^^")  # "bright tissue"
    seg3d = slicer_bridge.run_on_node(setup.scene, t1_node, "segment", force=True, show=False, show_3d=True)[0]
    assert seg3d.GetSegmentation().ContainsRepresentation("Closed surface")
    for name, kind in (("lesion", "SCT^52988006^Lesion"), ("Candidate 1 (0.42 mL)", "SCT^52988006^Lesion"),
                       ("anomaly candidate", "SCT^52988006^Lesion"), ("enhancing tumour", "SCT^4147007^Mass")):
        assert f"~SCT^49755003^Morphologically Altered Structure~{kind}~" in slicer_bridge.terminology_entry(name)
    assert "~SCT^123037004^Anatomical Structure~SCT^12738006^Brain~" in slicer_bridge.terminology_entry("brain")
    assert "~SCT^52988006^Lesion~" in slicer_bridge.terminology_entry("brain lesion")  # the lesion, not the organ
    with pytest.raises(InputError, match="show_3d must be True or False"):
        slicer_bridge.run_on_node(setup.scene, t1_node, "segment", force=True, show_3d="yes")


def _labelmap_in_grid(labelmap, reference_node) -> np.ndarray:
    """A segment's (possibly cropped) binary labelmap placed on the reference volume's voxel grid."""
    from vtkmodules.util import numpy_support

    extent = labelmap.GetExtent()
    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    full = np.zeros(slicer_bridge.array_from_node(reference_node).shape, bool)
    if min(dims) <= 0:
        return full
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    m = vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(m)
    assert np.allclose(slicer_bridge.matrix_to_numpy(m), node_matrix(reference_node), atol=1e-6)
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    full[extent[4]:extent[5] + 1, extent[2]:extent[3] + 1, extent[0]:extent[1] + 1] = values > 0
    return full


def test_segment_makes_a_segmentation_with_named_segments(setup, t1_node, make_model):
    make_model(_segment_card(), net=_net(_segment_card(), _segment_state()))
    scene = setup.scene
    before = _snapshot(t1_node)
    nodes = slicer_bridge.run_on_node(scene, t1_node, "segment", force=True)
    _assert_unchanged(t1_node, before)
    assert len(nodes) == 1 and nodes[0].IsA("vtkMRMLSegmentationNode")
    seg = nodes[0]
    assert seg.GetName() == "Sample T1 segmentation (MedGAN)"
    segmentation = seg.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == \
        ["bright tissue"]
    labelmap = slicer.vtkOrientedImageData()
    seg.GetBinaryLabelmapRepresentation(segmentation.GetNthSegmentID(0), labelmap)
    mask = _labelmap_in_grid(labelmap, t1_node)
    # where the normalised intensity is above the middle of the input's window
    import MedGANLogic

    expected = MedGANLogic.run("segment", slicer_bridge.volume_from_node(t1_node), force=True).volume.array == 1
    assert np.array_equal(mask, expected) and 0 < mask.sum() < mask.size
    from vtkmodules.vtkCommonCore import reference

    voxels = reference("")
    assert segmentation.GetNthSegment(0).GetTag("MedGAN.voxels", voxels) and int(str(voxels)) == int(expected.sum())
    assert seg.GetAttribute("MedGAN.kind") == "labels"
    assert _composite(scene, "Red").GetBackgroundVolumeID() == t1_node.GetID()


# --- nothing lost ---------------------------------------------------------------------------------------------------
def test_cancelled_run_leaves_the_scene_as_it_was(setup, t1_node, make_model):
    make_model(_t1_card())
    scene = setup.scene
    before, count = _snapshot(t1_node), scene.GetNumberOfNodes()
    stop = threading.Event()
    stop.set()
    with pytest.raises(CancelledError):
        slicer_bridge.run_on_node(scene, t1_node, "synthesize", cancel=stop)
    calls = []

    def cancel_after_first_batch():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(CancelledError):
        slicer_bridge.run_on_node(scene, t1_node, "synthesize", cancel=cancel_after_first_batch, batch_size=1)
    assert len(calls) == 2  # stopped at the next batch
    assert scene.GetNumberOfNodes() == count
    _assert_unchanged(t1_node, before)


def test_failing_model_and_failing_node_creation_leave_nothing(setup, t1_node, make_model, monkeypatch):
    card = make_model(_t1_card())
    scene = setup.scene
    count = scene.GetNumberOfNodes()
    data = bytearray(card.weights_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    card.weights_path.write_bytes(bytes(data))
    from MedGANLogic.models import registry

    registry.clear_cache()
    with pytest.raises(ModelError, match="SHA-256"):
        slicer_bridge.run_on_node(scene, t1_node, "synthesize")
    assert scene.GetNumberOfNodes() == count
    # a failure half-way through making the nodes removes the ones already made
    make_model(_t1_card())
    registry.clear_cache()

    def broken_place_beside(*args, **kwargs):
        raise RuntimeError("subject hierarchy exploded")

    monkeypatch.setattr(slicer_bridge.outputs, "place_beside", broken_place_beside)
    with pytest.raises(RuntimeError, match="exploded"):
        slicer_bridge.run_on_node(scene, t1_node, "synthesize")
    assert scene.GetNumberOfNodes() == count
    assert scene.GetFirstNodeByName("Sample T1 T2w (MedGAN synthetic)") is None


def test_a_rolled_back_batch_leaves_no_display_node_of_an_output_already_shown(setup, t1_node, make_model):
    make_model(_t1_card())
    scene = setup.scene
    before = _node_ids(scene)
    # a batch whose second volume fails after the first one's output was made and shown in the slice views
    with pytest.raises(RuntimeError, match="second volume failed"), slicer_bridge.SceneTransaction(scene):
        shown = slicer_bridge.run_on_node(scene, t1_node, "synthesize", show=True)[0]
        assert _composite(scene, "Yellow").GetBackgroundVolumeID() == shown.GetID()
        raise RuntimeError("second volume failed")
    assert _node_ids(scene) == before


@pytest.mark.parametrize("option, value, message", [("opacity", 1.5, "opacity must be between 0 and 1"),
                                                    ("opacity", "half", "opacity must be between 0 and 1"),
                                                    ("colormap", "Jet", "Unknown colour map 'Jet'"),
                                                    ("display_threshold", float("nan"), "display_threshold")])
def test_display_options_are_refused_before_inference(setup, make_model, option, value, message):
    make_model(anomaly_card(), net=_net(anomaly_card(), local_mean_anomaly_state()))
    scene = setup.scene
    node = add_volume_node(scene, sample_volume("T2w"), "Sample T2")
    count, fractions = scene.GetNumberOfNodes(), []
    with pytest.raises(InputError, match=message):
        slicer_bridge.run_on_node(scene, node, "anomaly", progress=lambda f, m: fractions.append(f), **{option: value})
    assert fractions == []  # refused before the engine ran, not after minutes of inference
    assert scene.GetNumberOfNodes() == count
    with pytest.raises(InputError, match=message):  # the panel's path, on the main thread, before the worker
        slicer_bridge.prepare_batch(scene, [node], "anomaly", **{option: value})


def test_an_input_removed_during_the_run_gets_no_output(setup, t1_volume, make_model):
    make_model(_t1_card())
    scene = setup.scene
    node = add_volume_node(scene, t1_volume, "Sample T1")
    request = slicer_bridge.prepare_run(scene, node, "synthesize")
    result = slicer_bridge.execute(request)  # what the worker thread does
    scene.RemoveNode(node)  # meanwhile, on the main thread, the user deletes the input
    count = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="'Sample T1' was removed from the scene while MedGAN was running"):
        slicer_bridge.finish_run(scene, request, result)
    assert scene.GetNumberOfNodes() == count
    assert scene.GetFirstNodeByName("Sample T1 T2w (MedGAN synthetic)") is None
    # a batch: one of its inputs removed during the run -> no output for any (all or nothing)
    a = add_volume_node(scene, t1_volume, "T1 a")
    b = add_volume_node(scene, t1_volume, "T1 b")
    before, b_ids = _node_ids(scene), {b.GetID(), b.GetDisplayNodeID()}

    def remove_b_midway(fraction, message):
        if scene.IsNodePresent(b):
            scene.RemoveNode(b)

    with pytest.raises(InputError, match="'T1 b' was removed"):
        slicer_bridge.run_on_nodes(scene, [a, b], "synthesize", progress=remove_b_midway)
    after = _node_ids(scene)
    assert after <= before and before - after <= b_ids  # only b (and its display node) went; nothing was added
    assert scene.GetFirstNodeByName("T1 a T2w (MedGAN synthetic)") is None
    # an output node removed during the run is not written into (the result would be lost out of the scene)
    target = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my output")
    request = slicer_bridge.prepare_run(scene, a, "synthesize", output_node=target)
    result = slicer_bridge.execute(request)
    scene.RemoveNode(target)
    count = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="output node 'my output' was removed"):
        slicer_bridge.finish_run(scene, request, result)
    assert scene.GetNumberOfNodes() == count and target.GetImageData() is None


def test_overwriting_the_input_is_refused_and_a_chosen_output_node_is_reused(setup, t1_node, make_model):
    make_model(_t1_card())
    scene = setup.scene
    with pytest.raises(InputError, match="never overwrites its input"):
        slicer_bridge.run_on_node(scene, t1_node, "synthesize", output_node=t1_node)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "wrong kind")
    with pytest.raises(InputError, match="writes a vtkMRMLScalarVolumeNode"):
        slicer_bridge.run_on_node(scene, t1_node, "synthesize", output_node=seg)
    target = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my output")
    target.SetAttribute("MedGAN.stale", "old")
    count = scene.GetNumberOfNodes()
    nodes = slicer_bridge.run_on_node(scene, t1_node, "synthesize", output_node=target)
    assert nodes == [target] or nodes[0].GetID() == target.GetID()
    assert scene.GetNumberOfNodes() == count + 1  # only its display node is new
    assert np.array_equal(node_matrix(target), node_matrix(t1_node))
    assert target.GetAttribute("MedGAN.model") == "test-t1-to-t2" and target.GetAttribute("MedGAN.stale") is None
    assert target.GetName() == "my output"


# --- input checks ---------------------------------------------------------------------------------------------------
def test_modality_mismatch_is_refused_unless_forced(setup, ct_volume, make_model):
    make_model(_t1_card())
    node = add_volume_node(setup.scene, ct_volume, "CT")
    count = setup.scene.GetNumberOfNodes()
    with pytest.raises(slicer_bridge.UnsuitableModalityError, match="expects MR.*force=True") as refused:
        slicer_bridge.run_on_node(setup.scene, node, "synthesize", model="test-t1-to-t2")
    assert isinstance(refused.value, ModalityMismatchError)  # what the engine raises for the same problem
    assert setup.scene.GetNumberOfNodes() == count
    out = slicer_bridge.run_on_node(setup.scene, node, "synthesize", model="test-t1-to-t2", force=True)[0]
    assert "expects MR" in out.GetAttribute("MedGAN.forced_despite")


def test_spacing_and_field_of_view_outside_the_card_are_refused(setup, t1_node, make_model):
    card = tiny_card(tile_size=None, input={"modality": "MR", "contrast": "T1w", "spacing_mm": [0.5, 1.2],
                                            "fov_mm": [250, 300], "normalization": {"kind": "mr_percentile"}})
    make_model(card)
    # on the input's own grid (native=True) both are refused
    with pytest.raises(slicer_bridge.UnsuitableInputError,
                       match=r"voxel size x 2.00 mm, y 2.00 mm.*field of view x 196 mm, y 232 mm is smaller"):
        slicer_bridge.run_on_node(setup.scene, t1_node, "synthesize", native=True)
    request = slicer_bridge.prepare_run(setup.scene, t1_node, "synthesize", force=True, native=True)
    assert len(request.warnings) == 2  # kept for the panel to show
    # z (4 mm, the slice axis of this 2d model) is not held against it
    assert not any("z 4.00" in w for w in request.warnings)
    # by default the engine resamples into the model's 1.2 mm (a note): only the field of view is left to refuse
    with pytest.raises(slicer_bridge.UnsuitableInputError,
                       match=r"model test-t1-to-t2: field of view x 196 mm") as refused:
        slicer_bridge.run_on_node(setup.scene, t1_node, "synthesize")
    assert "voxel size" not in str(refused.value)
    request = slicer_bridge.prepare_run(setup.scene, t1_node, "synthesize", force=True)
    assert [w for w in request.warnings if "voxel size" in w] == [] and request.plan.frame.spacing[:2] == (1.2, 1.2)
    assert len(request.warnings) == 1 and any(note.startswith("resampled from") for note in request.notes)


def test_linear_parent_transform_is_hardened_into_the_output(setup, t1_node, make_model):
    make_model(_t1_card())
    scene = setup.scene
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    shift = np.eye(4)
    shift[:3, :3] = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    shift[:3, 3] = [5.0, -3.0, 12.0]
    transform.SetMatrixTransformToParent(slicer_bridge.numpy_to_matrix(shift))
    t1_node.SetAndObserveTransformNodeID(transform.GetID())
    before = _snapshot(t1_node)
    out = slicer_bridge.run_on_node(scene, t1_node, "synthesize")[0]
    _assert_unchanged(t1_node, before)
    assert t1_node.GetParentTransformNode() is transform  # the input keeps its transform
    assert out.GetParentTransformNode() is None
    assert np.allclose(node_matrix(out), shift @ node_matrix(t1_node), atol=1e-9)
    assert out.GetAttribute("MedGAN.transform_hardened") == "registration"
    with pytest.raises(InputError, match="Remove it from the transform"):
        slicer_bridge.run_on_node(scene, t1_node, "synthesize", harden_transform=False)


def test_non_linear_parent_transform_is_refused(setup, t1_node, make_model):
    make_model(_t1_card())
    scene = setup.scene
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    t1_node.SetAndObserveTransformNodeID(grid.GetID())
    count = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="non-linear transform 'warp'.*Harden"):
        slicer_bridge.run_on_node(scene, t1_node, "synthesize")
    assert scene.GetNumberOfNodes() == count


# --- threads, batch -------------------------------------------------------------------------------------------------
def test_worker_thread_split_touches_the_scene_only_in_finish(setup, t1_node, make_model):
    make_model(_t1_card())
    scene = setup.scene
    request = slicer_bridge.prepare_run(scene, t1_node, "synthesize", opacity=0.4)
    assert request.display == {"opacity": 0.4} and "opacity" not in request.options
    count, mtime = scene.GetNumberOfNodes(), scene.GetMTime()
    box = {}
    worker = threading.Thread(target=lambda: box.update(result=slicer_bridge.execute(request)))
    worker.start()
    worker.join(60)
    assert scene.GetNumberOfNodes() == count and scene.GetMTime() == mtime
    nodes = slicer_bridge.finish_run(scene, request, box["result"])
    assert nodes[0].GetAttribute("MedGAN.task") == "synthesize"


def test_batch_runs_every_volume_of_the_study_all_or_nothing(setup, t1_volume, make_model):
    make_model(_t1_card())
    scene = setup.scene
    volume = t1_volume
    a = add_volume_node(scene, volume, "T1 a", contrast="T1w")
    b = add_volume_node(scene, volume.with_array(volume.array * 2), "T1 b", contrast="T1w")
    add_volume_node(scene, volume, "elsewhere", study="Study 2", contrast="T1w")
    study = slicer_bridge.study_volume_nodes(scene, a)
    assert [n.GetName() for n in study] == ["T1 a", "T1 b"]
    fractions = []
    made = slicer_bridge.run_on_nodes(scene, study, "synthesize", progress=lambda f, m: fractions.append((f, m)),
                                      show=False)
    assert set(made) == {a.GetID(), b.GetID()}
    assert made[b.GetID()][0].GetName() == "T1 b T2w (MedGAN synthetic)"
    assert fractions[-1][0] == 1.0 and fractions[0][1].startswith("[1/2]")
    assert [n.GetName() for n in slicer_bridge.study_volume_nodes(scene, a)] == ["T1 a", "T1 b"]  # outputs excluded
    count = scene.GetNumberOfNodes()
    calls = []
    with pytest.raises(CancelledError):  # cancelled during the second volume: no node of the batch is made
        slicer_bridge.run_on_nodes(scene, study, "synthesize", batch_size=1,
                                   cancel=lambda: calls.append(1) or len(calls) > 10)
    assert scene.GetNumberOfNodes() == count


def test_prepare_batch_asks_before_running_an_unsuitable_input_and_refuses_one_output_for_many(setup, ct_volume,
                                                                                                 t1_node, make_model):
    make_model(_t1_card())
    scene = setup.scene
    ct = add_volume_node(scene, ct_volume, "CT")
    asked = []

    def decline(reason):
        asked.append(reason)
        return False

    with pytest.raises(slicer_bridge.UnsuitableModalityError, match="expects MR"):
        slicer_bridge.prepare_batch(scene, [t1_node, ct], "synthesize", "test-t1-to-t2", run_anyway=decline)
    assert len(asked) == 1 and "expects MR" in asked[0]
    batch = slicer_bridge.prepare_batch(scene, [t1_node, ct], "synthesize", "test-t1-to-t2",
                                        run_anyway=lambda reason: True)
    assert [r.options.get("force") for r in batch.requests] == [True, True]
    assert len(batch.warnings) == 1 and "expects MR" in batch.warnings[0]
    assert batch.labels == ["synthesize of Sample T1 with test-t1-to-t2", "synthesize of CT with test-t1-to-t2"]
    # per-node options (the module passes each sample volume's declared modality) under the common ones
    declared = slicer_bridge.prepare_batch(scene, [ct], "synthesize", force=True,
                                           node_options=lambda node: {"modality": "MR", "contrast": "T1w"})
    assert declared.warnings == [] and declared.requests[0].volume.metadata["contrast"] == "T1w"
    target = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "target")
    with pytest.raises(InputError, match="single run only"):
        slicer_bridge.prepare_batch(scene, [t1_node, ct], "synthesize", output_node=target, force=True)
    with pytest.raises(InputError, match="Nothing to run"):
        slicer_bridge.prepare_batch(scene, [], "synthesize")


# --- what the panel lists ------------------------------------------------------------------------------------------
def test_header_volume_describes_without_copying_voxels(setup, t1_node, ct_volume):
    header = slicer_bridge.header_volume(t1_node)
    full = slicer_bridge.volume_from_node(t1_node)
    assert header.shape == full.shape and header.array.strides == (0, 0, 0)
    assert np.allclose(header.ijk_to_ras(), full.ijk_to_ras()) and header.metadata["contrast"] == "T1w"
    ct = add_volume_node(setup.scene, ct_volume, "unlabelled CT")
    ct.RemoveAttribute("MedGAN.modality")
    assert slicer_bridge.header_volume(ct).metadata["guessed_modality"] == "CT"


def test_models_for_lists_fitting_models_first_with_the_reason_for_the_others(setup, t1_node, make_model):
    make_model(_ct_card("test-ct-synth") | {"task": "synthesize", "output": tiny_card()["output"]})
    make_model(_t1_card())
    entries = slicer_bridge.models_for("synthesize", slicer_bridge.header_volume(t1_node))
    assert [(card.id, problem is None) for card, problem in entries] == [("test-t1-to-t2", True),
                                                                         ("test-ct-synth", False)]
    assert "expects CT" in entries[1][1]
    assert [card.id for card, _ in slicer_bridge.models_for("denoise")] == []
    # from the node itself (its header): the same list; without a usable node, every model without a problem
    assert slicer_bridge.models_for_node("synthesize", t1_node) == entries
    assert [problem for _, problem in slicer_bridge.models_for_node("synthesize", None)] == [None, None]
    html = panel_text.card_summary_html(*entries[1])
    assert "none (test model)" in html and "research, not for diagnosis" in html and "Does not fit" in html
    assert "<script" not in panel_text.card_summary_html(entries[0][0]) and "&rarr;" in html


def test_proposed_model_keeps_the_choice_else_the_first_that_fits(setup, t1_node, make_model):
    make_model(_ct_card("test-ct-synth") | {"task": "synthesize", "output": tiny_card()["output"]})
    entries = slicer_bridge.models_for("synthesize", slicer_bridge.header_volume(t1_node))
    assert slicer_bridge.proposed_model(entries) == "test-ct-synth"  # none fits: the first listed, to run anyway
    make_model(_t1_card())
    entries = slicer_bridge.models_for("synthesize", slicer_bridge.header_volume(t1_node))
    assert slicer_bridge.proposed_model(entries) == "test-t1-to-t2"
    assert slicer_bridge.proposed_model(entries, "test-ct-synth") == "test-ct-synth"  # the user's choice stays
    assert slicer_bridge.proposed_model(entries, "uninstalled") == "test-t1-to-t2"
    assert slicer_bridge.proposed_model([], "test-t1-to-t2") == ""
    assert slicer_bridge.model_is_2d("test-t1-to-t2") and not slicer_bridge.model_is_2d("uninstalled")


def test_import_model_validates_before_adding_to_the_user_folder(model_dir, tmp_path):
    from MedGANLogic.models import registry
    from MedGANLogic.models.registry import save_model

    source = save_model(tmp_path / "incoming" / "my-model", tiny_card("my-model"), _net(tiny_card()).state_dict())
    card = slicer_bridge.import_model(source.folder)
    assert card.folder == model_dir / "my-model" and [c.id for c in registry.list_models()] == ["my-model"]
    with pytest.raises(ModelError, match="already installed"):
        slicer_bridge.import_model(source.folder)
    data = bytearray(source.weights_path.read_bytes())
    data[-5] ^= 0xFF
    source.weights_path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        slicer_bridge.import_model(source.folder, replace=True)
    with pytest.raises(InputError, match="neither a model folder"):
        slicer_bridge.import_model(tmp_path / "incoming" / "my-model" / "card.json")
    with pytest.raises(InputError, match="needs an id"):
        (tmp_path / "G.pth").write_bytes(b"not read")
        slicer_bridge.import_model(tmp_path / "G.pth")


def test_import_model_converts_a_pix2pix_checkpoint(model_dir, tmp_path):
    from test_import import pix2pix_resnet_state  # the import tests' pix2pix-layout state dicts

    # a pytorch-CycleGAN-and-pix2pix ResNet generator state dict, saved as their code saves it
    checkpoint = tmp_path / "latest_net_G.pth"
    torch.save(pix2pix_resnet_state(2, 8, "instance"), checkpoint)
    card = slicer_bridge.import_model(checkpoint, model_id="my-pix2pix", input_contrast="T1w",
                                      output_contrast="T2w", output_window=[0, 1000])
    assert card.folder == model_dir / "my-pix2pix" and card.input["contrast"] == "T1w"


def test_declared_modality_fills_what_the_node_does_not_record(setup, ct_volume, make_model):
    make_model(_t1_card())
    node = add_volume_node(setup.scene, ct_volume.with_array(ct_volume.array + 1500.0, metadata={"modality": None}),
                           "unlabelled")
    assert slicer_bridge.header_volume(node, modality="MR", contrast="T1w").metadata["contrast"] == "T1w"
    before = _snapshot(node)
    out = slicer_bridge.run_on_node(setup.scene, node, "synthesize", modality="MR", contrast="T1w", show=False)[0]
    _assert_unchanged(node, before)  # declared for the run, not written to the input
    assert out.GetAttribute("MedGAN.forced_despite") is None
