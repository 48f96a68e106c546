"""What the Slicer self-test (``MedGANTest.test_EveryTask``) does, on a real MRML scene outside the application:
every task with its built-in model (``Resources/Models``) on the bundled sample data, on an oblique grid, through
``slicer_bridge.run_on_node``. Outputs keep the input's IJK->RAS (super-resolution: finer slices, the same
field of view), carry provenance, and the input node is untouched.
"""

from __future__ import annotations

import json

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
    assert builtin == {"synthesize", "denoise", "superres", "anomaly", "segment", "lesion"}


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



def _thin_slab(sample: str, mm: float, coronal: bool):
    """Six central slices of sample volume ``sample`` resampled to ``mm`` in-plane (cubic B-spline), stored as a
    coronal acquisition (slices along the front-back axis) when ``coronal``."""
    from MedGANLogic.resampling import grid_with_spacing, resample
    from MedGANLogic.volume import Volume

    volume = sample_volume(sample, z_step=1, oblique=False)
    first = volume.shape[0] // 2 - 3
    origin = volume.ijk_to_lps() @ np.array([0.0, 0.0, first, 1.0])
    slab = Volume(np.ascontiguousarray(volume.array[first:first + 6]), volume.spacing, tuple(origin[:3]),
                  volume.direction, volume.metadata)
    grid = grid_with_spacing(slab, (mm, mm, slab.spacing[2]))
    thin = Volume(resample(slab, grid, "bspline"), grid["spacing"], grid["origin"], grid["direction"], slab.metadata)
    if not coronal:
        return thin
    return Volume(np.ascontiguousarray(np.transpose(thin.array, (1, 0, 2))),
                  (thin.spacing[0], thin.spacing[2], thin.spacing[1]), thin.origin, thin.direction[:, [0, 2, 1]],
                  thin.metadata)


THIN = [  # what a clinic sends: a 1 mm T1w, a 0.8 mm CT stored as a coronal acquisition (0.4 mm for the denoiser,
    # whose card takes 0.5-2.5 mm)
    ("synthesize", "mr-t1-to-t2", "T1w", 1.0, False),
    ("synthesize", "mr-to-ct", "T1w", 1.0, False),
    ("denoise", "ldct-denoise", "CT_lowdose_25", 0.4, True),
    ("synthesize", "ct-to-mr", "CT", 0.8, True),
]


@pytest.mark.parametrize("task, model, sample, mm, coronal", THIN, ids=[f"{c[1]}-{c[3]}mm" for c in THIN])
def test_thin_and_coronal_inputs_run_without_asking_onto_their_own_grid(setup, task, model, sample, mm, coronal):
    """The bridge runs them without "Run anyway": the engine resamples into the model's voxel size (and reorients
    the coronal CT), says so in the run's notes and the provenance, and the output node has the input's IJK->RAS
    and voxel grid exactly. A denoiser is reoriented but not resampled: it works on the scan's own voxels, and the
    notes say so."""
    volume = _thin_slab(sample, mm, coronal)
    node = add_volume_node(setup.scene, volume, f"{sample} {mm} mm")
    request = slicer_bridge.prepare_run(setup.scene, node, task, model=model, device="cpu")
    assert request.warnings == []
    denoiser = task == "denoise"
    said = f"runs on the scan's own voxels (x {mm:.2f} mm, y {mm:.2f} mm" if denoiser else f"resampled from {mm:.2f} x"
    assert any(n.startswith(said) for n in request.notes), request.notes
    assert not any(n.startswith("resampled") for n in request.notes) or not denoiser
    assert any(n.startswith("reoriented") and "coronal slices -> axial" in n for n in request.notes) == coronal
    out = slicer_bridge.run_on_node(setup.scene, node, task, model=model, device="cpu", show=False)[0]
    assert np.array_equal(node_matrix(out), node_matrix(node))
    values = slicer_bridge.array_from_node(out)
    assert values.shape == volume.shape and np.isfinite(values).all()
    provenance = json.loads(out.GetAttribute("MedGAN.provenance"))
    assert provenance["resampled_from"] == (None if denoiser else list(volume.spacing))
    assert (provenance["reoriented"] is not None) == coronal
    if registry.get_model(model).output.get("units") == "HU":
        assert -1100 < float(np.median(values)) < 100  # Hounsfield units: air and soft tissue
