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
# Models the bridge runs on the oblique sample only when forced (none: the oblique grid tilts the coronal slices
# of mr-sr-x2-throughplane by 29 degrees, which super-resolution, working on the acquired grid, takes as it is).
FORCED: dict[str, str] = {}


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


def test_a_thin_coronal_ct_runs_without_asking_and_lands_on_its_own_grid(setup):
    """A 0.8 mm CT stored as a coronal acquisition (what a scanner's coronal reformat gives): the bridge runs the
    built-in CT denoiser without "Run anyway" (resampled to the model's voxel size and reoriented by the engine),
    and the output node has the input's IJK->RAS and voxel grid exactly, in Hounsfield units."""
    from MedGANLogic.resampling import grid_with_spacing, resample
    from MedGANLogic.volume import Volume

    ct = sample_volume("CT_lowdose_25", z_step=1, oblique=False)
    first = ct.shape[0] // 2 - 3
    origin = ct.ijk_to_lps() @ np.array([0.0, 0.0, first, 1.0])
    slab = Volume(np.ascontiguousarray(ct.array[first:first + 6]), ct.spacing, tuple(origin[:3]), ct.direction,
                  ct.metadata)
    grid = grid_with_spacing(slab, (0.8, 0.8, slab.spacing[2]))
    thin = resample(slab, grid, "bspline")
    coronal = Volume(np.ascontiguousarray(np.transpose(thin, (1, 0, 2))),
                     (grid["spacing"][0], grid["spacing"][2], grid["spacing"][1]), grid["origin"],
                     np.asarray(grid["direction"])[:, [0, 2, 1]], slab.metadata)
    node = add_volume_node(setup.scene, coronal, "coronal thin CT")
    request = slicer_bridge.prepare_run(setup.scene, node, "denoise", model="ldct-denoise", device="cpu")
    assert request.warnings == []
    assert any(n.startswith("resampled from 0.80 x") for n in request.notes)
    assert any(n.startswith("reoriented") and "coronal slices -> axial" in n for n in request.notes)
    out = slicer_bridge.run_on_node(setup.scene, node, "denoise", model="ldct-denoise", device="cpu", show=False)[0]
    assert np.array_equal(node_matrix(out), node_matrix(node))
    values = slicer_bridge.array_from_node(out)
    assert values.shape == coronal.shape and np.isfinite(values).all()
    assert -1100 < float(np.median(values)) < 100  # Hounsfield units: air and soft tissue
