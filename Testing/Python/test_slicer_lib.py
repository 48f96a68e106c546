"""The module's own library (``MedGANExtension/MedGANLib``), where it runs without the Slicer application: the
panel's background job on a real MRML scene (the same ``slicer_bridge.Batch`` path as ``run_on_nodes``), and the
words the panel shows. The Qt parts (dialogs, parameter node) are checked statically in test_slicer_module.py.
"""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import tiny_card
from MedGANLib import panel_text
from MedGANLib.job import MedGANJob
from slicer_testing import add_volume_node, make_scene, sample_volume

from MedGANLogic import slicer_bridge
from MedGANLogic.errors import CancelledError


@pytest.fixture
def setup():
    scene_setup = make_scene()
    yield scene_setup
    scene_setup.close()


@pytest.fixture
def two_volumes(setup, make_model):
    make_model(tiny_card(tile_size=None))
    volume = sample_volume("T1w")
    return [add_volume_node(setup.scene, volume, "T1 a"),
            add_volume_node(setup.scene, volume.with_array(volume.array * 2), "T1 b")]


def _wait(job: MedGANJob) -> None:
    assert job.done.wait(120), "the worker did not finish"
    job.thread.join(5)


def test_job_runs_the_batch_in_the_background_and_the_main_thread_makes_the_nodes(setup, two_volumes):
    scene = setup.scene
    batch = slicer_bridge.prepare_batch(scene, two_volumes, "synthesize", show=False)
    count = scene.GetNumberOfNodes()
    job = MedGANJob(batch).start()
    _wait(job)
    assert job.error is None, job.trace
    assert scene.GetNumberOfNodes() == count  # the worker made no node
    fraction, message = job.latestProgress()  # the newest message: the end of the batch
    assert fraction == 1.0 and message.startswith("[2/2] synthesize of T1 b with test-t1-to-t2: ")
    assert job.latestProgress() is None
    made = batch.finish(scene)
    assert [nodes[0].GetName() for nodes in made.values()] == ["T1 a T2w (MedGAN synthetic)",
                                                                "T1 b T2w (MedGAN synthetic)"]
    assert batch.status().startswith("2 volumes done; last: synthesize with test-t1-to-t2 on cpu")


def test_cancelled_job_reports_the_cancel_and_nothing_can_be_finished(setup, two_volumes):
    scene = setup.scene
    batch = slicer_bridge.prepare_batch(scene, two_volumes, "synthesize", batch_size=1, show=False)
    job = MedGANJob(batch)
    job.cancel.set()
    job.start()
    _wait(job)
    assert isinstance(job.error, CancelledError) and "CancelledError" in job.trace
    count = scene.GetNumberOfNodes()
    with pytest.raises(RuntimeError, match="has not completed"):
        batch.finish(scene)
    assert scene.GetNumberOfNodes() == count


def test_job_progress_is_read_on_another_thread_than_it_is_made():
    class SlowBatch:  # the smallest batch: two progress steps, the second after the main thread has read one
        def __init__(self):
            self.read = threading.Event()

        def execute(self, progress, cancel):
            progress(0.5, "half")
            assert self.read.wait(30)
            progress(1.0, "done")

    batch = SlowBatch()
    job = MedGANJob(batch).start()
    latest, pause = None, threading.Event()
    while latest is None and not job.done.is_set():
        pause.wait(0.01)
        latest = job.latestProgress()
    assert latest == (0.5, "half")
    batch.read.set()
    _wait(job)
    assert job.error is None and job.latestProgress() == (1.0, "done") and job.latestProgress() is None


def test_device_choices_offer_auto_and_cpu_first():
    choices = panel_text.device_choices()
    assert choices[:2] == [("Auto (GPU if available)", "auto"), ("CPU", "cpu")]
    if torch.cuda.is_available():
        assert any(device == "cuda:0" for _, device in choices)


def test_input_description_says_modality_voxels_spacing_and_field_of_view(setup):
    volume = sample_volume("T1w")
    node = add_volume_node(setup.scene, volume, "T1")
    z, y, x = volume.shape
    text = panel_text.describe_input(node)
    assert text.startswith(f"MR T1w; ({x}, {y}, {z}) voxels of 2.00 x 2.00 x 4.00 mm; field of view ")
    node.RemoveAttribute("MedGAN.contrast")
    node.RemoveAttribute("MedGAN.modality")
    assert panel_text.describe_input(node).startswith("modality not recorded (not CT: no negative values);")
    assert panel_text.describe_input(node, modality="MR", contrast="T2w").startswith("MR T2w;")
    assert panel_text.describe_input(None).startswith("No input volume")
    ct = add_volume_node(setup.scene, sample_volume("CT"), "unlabelled CT")
    ct.RemoveAttribute("MedGAN.modality")
    assert panel_text.describe_input(ct).startswith("looks like CT (not recorded);")  # the engine's one CT rule
    empty = setup.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    assert "has no voxels" in panel_text.describe_input(empty)
    card = type("Card", (), {"name": "T1 to T2", "id": "t1t2"})()
    assert panel_text.model_label(card) == "T1 to T2 (t1t2)"
    assert panel_text.model_label(card, "expects CT").endswith("[does not fit the input]")


# --- Slicer as a user installs it (issue 14): versions compared, a core left to the GUI ---------------------------
def test_dependency_check_compares_versions_not_just_presence():
    from MedGANLib.dependencies import _release, unmet

    assert _release("2.13.0+cpu") == (2, 13, 0) and _release("1.4.0rc1") == (1, 4, 0)
    assert unmet("monai>=1.3", None) == "monai>=1.3 (not installed)"
    assert unmet("monai>=1.3", "1.2.0") == "monai>=1.3 (installed 1.2.0)"
    assert unmet("monai>=1.3", "1.3") is None and unmet("monai>=1.3", "1.10.1") is None
    assert unmet("torch>=2.1", "2.0.1+cu118") == "torch>=2.1 (installed 2.0.1+cu118)"


def test_an_installed_but_too_old_package_is_reported_with_its_version(monkeypatch):
    import importlib.metadata

    from MedGANLib import dependencies

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.0.0" if name == "monai" else real(name))
    assert dependencies.dependency_problems() == ["monai>=1.3 (installed 1.0.0)"]
    assert dependencies.missing_dependencies() == ["monai>=1.3"]


def test_a_run_leaves_cores_to_the_gui_and_restores_torch_threads(monkeypatch, setup, two_volumes):
    from MedGANLib.job import compute_threads

    assert compute_threads(cpu_count=8, gui_cores=1) == 7
    assert compute_threads(cpu_count=1, gui_cores=1) == 1  # never below one thread
    monkeypatch.setenv("MEDGAN_GUI_CORES", "3")
    assert compute_threads(cpu_count=8) == 5

    seen = []
    batch = slicer_bridge.prepare_batch(setup.scene, two_volumes[:1], "synthesize", device="cpu")
    execute = batch.execute
    monkeypatch.setattr(batch, "execute", lambda **kw: (seen.append(torch.get_num_threads()), execute(**kw)))
    before = torch.get_num_threads()
    job = MedGANJob(batch, gui_cores=1).start()
    _wait(job)
    assert job.error is None, job.trace
    assert seen == [compute_threads(gui_cores=1)]
    assert torch.get_num_threads() == before
