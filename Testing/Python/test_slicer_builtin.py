"""What the Slicer self-test (``MedGANTest.test_EveryTask``) does, on a real MRML scene outside the application:
every task with its built-in model (``Resources/Models``) on the bundled sample data, on an oblique grid, through
``slicer_bridge.run_on_node``. Outputs keep the input's IJK->RAS (super-resolution: finer slices, the same
field of view), carry provenance, and the input node is untouched.
"""

from __future__ import annotations

import numpy as np
import pytest
from slicer_testing import add_volume_node, make_scene, node_matrix, sample_volume

from MedGANLogic import slicer_bridge
from MedGANLogic.models import registry

CASES = [  # task, built-in model, sample volume, every z_step-th slice
    ("synthesize", "mr-t1-to-t2", "T1w", 2),
    ("synthesize", "mr-to-ct", "T1w", 2),
    ("denoise", "ldct-denoise", "CT_lowdose_25", 2),
    ("superres", "mr-sr-x2-throughplane", "T2w_thick", 1),
    ("superres", "mr-sr-x2-inplane", "T2w_lowres_inplane", 2),
    ("anomaly", "brain-anomaly-t2", "T2w", 2),
    ("segment", "brain-lesion-seg", "FLAIR", 2),
]
# The oblique grid tilts the coronal slices this model sees by 29 degrees: the bridge runs it only when forced.
FORCED = {"mr-sr-x2-throughplane": "coronal slices .* are tilted 29 degrees"}


@pytest.fixture(scope="module")
def setup():
    registry.clear_cache()
    scene_setup = make_scene()
    yield scene_setup
    scene_setup.close()


def test_the_self_test_finds_a_builtin_model_for_every_task():
    builtin = {card.task for card in registry.list_models() if card.source == "builtin"}
    assert builtin == {"synthesize", "denoise", "superres", "anomaly", "segment"}


@pytest.mark.parametrize("task, model, sample, z_step", CASES, ids=[c[1] for c in CASES])
def test_builtin_model_on_the_sample_in_a_real_scene(setup, task, model, sample, z_step):
    volume = sample_volume(sample, z_step=z_step)
    node = add_volume_node(setup.scene, volume, f"Sample {sample}")
    voxels, matrix = slicer_bridge.array_from_node(node).copy(), node_matrix(node).copy()
    count = setup.scene.GetNumberOfNodes()
    if model in FORCED:
        with pytest.raises(slicer_bridge.UnsuitableInputError, match=FORCED[model]):
            slicer_bridge.run_on_node(setup.scene, node, task, model=model, device="cpu", show=False)
        assert setup.scene.GetNumberOfNodes() == count
    nodes = slicer_bridge.run_on_node(setup.scene, node, task, model=model, device="cpu", show=False,
                                      make_segmentation=False, force=model in FORCED)
    assert nodes and setup.scene.GetNumberOfNodes() > count
    out = nodes[0]
    assert np.array_equal(slicer_bridge.array_from_node(node), voxels) and np.array_equal(node_matrix(node), matrix)
    assert out.GetAttribute("MedGAN.model") == model and out.GetAttribute("MedGAN.synthetic") == "true"
    assert out.GetAttribute("MedGAN.sha256") == registry.get_model(model).sha256
    if task == "segment":
        assert out.IsA("vtkMRMLSegmentationNode") and out.GetSegmentation().GetNumberOfSegments() > 0
        return
    m_out = node_matrix(out)
    shape = slicer_bridge.array_from_node(out).shape
    if task == "superres":
        scale = registry.get_model(model).scale_factor  # (z, y, x)
        assert shape == tuple(int(n * s) for n, s in zip(volume.shape, scale))
        # columns i, j, k of IJK->RAS: each step divided by the axis' scale, same directions
        assert np.allclose(m_out[:3, :3], matrix[:3, :3] / np.array(scale[::-1]), atol=1e-9)
        # the outer voxel corner stays put: the same field of view
        z, y, x = volume.shape
        far_in = matrix @ [x - 0.5, y - 0.5, z - 0.5, 1]
        far_out = m_out @ [shape[2] - 0.5, shape[1] - 0.5, shape[0] - 0.5, 1]
        assert np.allclose(far_in, far_out, atol=1e-6)
    else:
        assert np.array_equal(m_out, matrix) and shape == volume.shape
    if task == "anomaly":
        assert np.isfinite(float(out.GetAttribute("MedGAN.case_score")))
