""""Fit to this scan" on a real MRML scene (the slicer-core wheel): the bridge and the panel's options.

A fit (``adapt=True``) uses no trained model: the network is fitted to the input node's own voxels, then applied.
These check what the user gets in the scene: the output on the input's exact grid (denoising) or on the finer grid
over the same field of view (super-resolution), the fit recorded in the node's provenance, progress that covers
the fit and then the pass over the volume, and a cancel during the fit that leaves the scene as it was. The
inputs are the bundled sample subject on an oblique grid (see ``slicer_testing.sample_volume``); the fits run a
few steps only (``adapt_steps``): quality is measured by ``make eval``, not here.
"""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import slicer  # noqa: F401  (the real MRML library, never a stand-in)
import torch
from MedGANLib import fit_to_scan
from MedGANLib.job import MedGANJob
from slicer_testing import add_volume_node, make_scene, node_matrix, sample_volume

from MedGANLogic import slicer_bridge
from MedGANLogic.errors import CancelledError, InputError


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def setup(model_dir):  # no installed model: a super-resolution fit starts from scratch
    scene_setup = make_scene()
    yield scene_setup
    scene_setup.close()


def _small(name: str, z_step: int) -> object:
    volume = sample_volume(name, z_step=z_step)
    return volume.with_array(np.ascontiguousarray(volume.array[:, 20:84, 16:80]))  # 64 x 64 in-plane


def _fit(scene, node, task: str, steps: int = 3, **options):
    calls = []
    nodes = slicer_bridge.run_on_node(scene, node, task, adapt=True, adapt_steps=steps, adapt_budget_s=600,
                                      progress=lambda f, m: calls.append((f, m)), show=False, **options)
    return nodes, calls


def test_denoising_fit_keeps_the_exact_grid_and_records_the_fit(setup):
    scene = setup.scene
    volume = _small("T1w", 2)
    rng = np.random.default_rng(0)
    noisy = np.hypot(volume.array + rng.normal(0, 30, volume.shape), rng.normal(0, 30, volume.shape))
    node = add_volume_node(scene, volume.with_array(noisy.astype(np.float32)), "T1 noisy")
    before, matrix = slicer_bridge.array_from_node(node).copy(), node_matrix(node).copy()
    count = scene.GetNumberOfNodes()
    (out,), calls = _fit(scene, node, "denoise", steps=4)
    assert scene.GetNumberOfNodes() > count
    assert np.array_equal(node_matrix(out), matrix)  # bit for bit: the input's grid
    values = slicer_bridge.array_from_node(out)
    assert values.shape == before.shape and np.isfinite(values).all()
    assert not np.array_equal(values, before)
    assert np.array_equal(slicer_bridge.array_from_node(node), before)  # the input is never modified
    fit = json.loads(out.GetAttribute("MedGAN.fit"))
    assert fit["steps"] == 4 and fit["seed"] == 0 and fit["stopped_by"] == "max_steps"
    assert fit["init"] == "fit-start-mr"  # the shipped MR starting point (MedGANLogic.adapt.starts)
    provenance = json.loads(out.GetAttribute("MedGAN.provenance"))
    assert provenance["model"] == "fitted to this scan" and provenance["adapt"]["details"]["modality"] == "MR"
    assert len(provenance["adapt"]["loss_curve"]) == 4
    assert json.loads(out.GetAttribute("MedGAN.options"))["adapt_steps"] == 4
    # progress: the fit first (its messages name the steps), then the pass over the volume, up to the end
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    fitting = [i for i, (_, m) in enumerate(calls) if "fitting" in m and "step" in m]
    assert len(fitting) == 4 and max(fitting) < len(calls) - 1
    assert all(f <= 0.85 + 1e-9 for f, m in calls if "fitting" in m)


def test_superres_fit_gives_the_finer_grid_over_the_same_field_of_view(setup):
    scene = setup.scene
    thick = _small("T2w_thick", 1)  # 2 x 2 x 4 mm on an oblique grid
    node = add_volume_node(scene, thick, "T2 thick")
    (out,), calls = _fit(scene, node, "superres", steps=2)
    m_in, m_out = node_matrix(node), node_matrix(out)
    z, y, x = thick.shape
    assert slicer_bridge.array_from_node(out).shape == (2 * z, y, x)
    assert np.allclose(m_out[:3, 2], m_in[:3, 2] / 2, atol=1e-9)  # slice step halved, same direction
    assert np.allclose(m_out[:3, :2], m_in[:3, :2], atol=1e-9)
    for corner in ([-0.5, -0.5, -0.5], [x - 0.5, y - 0.5, z - 0.5]):  # outer voxel edges: same field of view
        scaled = [corner[0], corner[1], (corner[2] + 0.5) * 2 - 0.5]
        assert np.allclose(m_out @ [*scaled, 1], m_in @ [*corner, 1], atol=1e-6)
    fit = json.loads(out.GetAttribute("MedGAN.fit"))
    assert fit["steps"] == 2 and fit["init"] == "scratch"
    assert "super-resolution x2" in out.GetAttribute("MedGAN.geometry_changed")
    assert calls[-1][0] == pytest.approx(1.0)


def test_cancel_during_the_fit_leaves_the_scene_as_it_was(setup):
    scene = setup.scene
    node = add_volume_node(scene, _small("T2w_thick", 1), "T2 thick")
    count = scene.GetNumberOfNodes()
    steps_seen = []

    def progress(fraction, message):
        if "step" in message:
            steps_seen.append(message)

    def cancel():  # once the fit has made two steps: a cancel in the middle of fitting
        return len(steps_seen) >= 2

    with pytest.raises(CancelledError, match="while fitting"):
        slicer_bridge.run_on_node(scene, node, "superres", adapt=True, adapt_steps=50, adapt_budget_s=600,
                                  progress=progress, cancel=cancel)
    assert len(steps_seen) == 2  # stopped before the next step
    assert scene.GetNumberOfNodes() == count


def test_a_fit_refuses_the_options_of_a_trained_model_before_any_work(setup):
    node = add_volume_node(setup.scene, _small("T1w", 2), "T1")
    with pytest.raises(InputError, match="overlap.* do not apply when fitting"):
        slicer_bridge.run_on_node(setup.scene, node, "denoise", adapt=True, overlap=0.5)
    with pytest.raises(InputError, match="Unknown option.* adapt for task .synthesize"):
        slicer_bridge.run_on_node(setup.scene, node, "synthesize", adapt=True)


# --- the panel: "Fit to this scan" and its budget ---------------------------------------------------------------
def test_panel_fit_options_round_trip_through_a_run_into_the_node(setup):
    """The options the panel makes from the checkbox and budget run as they are and come back in the provenance."""
    assert fit_to_scan.fit_tasks() == ("denoise", "superres")
    assert fit_to_scan.fitting("superres", True) and not fit_to_scan.fitting("superres", False)
    assert not fit_to_scan.fitting("synthesize", True)  # the box counts for the tasks that can fit only
    options = fit_to_scan.fit_options("superres", 45, opacity=0.3)
    assert options == {"adapt": True, "adapt_budget_s": 45.0, "opacity": 0.3}
    with pytest.raises(ValueError, match="not 'anomaly'"):
        fit_to_scan.fit_options("anomaly", 45)
    with pytest.raises(ValueError, match="positive number of seconds"):
        fit_to_scan.fit_options("denoise", -5)
    # the box's "default" (0) leaves the budget to the engine: no adapt_budget_s at all
    assert fit_to_scan.fit_options("denoise", fit_to_scan.DEFAULT_BUDGET_S) == {"adapt": True, "opacity": 0.5}
    node = add_volume_node(setup.scene, _small("T2w_thick", 1), "T2 thick")
    # the panel's path: a batch prepared on the main thread, run by the background job, finished on the main thread
    batch = slicer_bridge.prepare_batch(setup.scene, [node], "superres", adapt_steps=2, show=False, **options)
    assert batch.labels == ["superres of T2 thick with a network fitted to this scan"]
    job = MedGANJob(batch).start()
    assert job.done.wait(300), "the worker did not finish"
    assert job.error is None, job.trace
    (out,) = batch.finish(setup.scene)[node.GetID()]
    recorded = json.loads(out.GetAttribute("MedGAN.options"))
    assert recorded["adapt"] is True and recorded["adapt_budget_s"] == 45.0 and recorded["adapt_steps"] == 2
    assert json.loads(out.GetAttribute("MedGAN.provenance"))["adapt"]["budget"] == {"seconds": 45.0,
                                                                                   "max_steps": 2}
    assert batch.status().startswith("superres by a network fitted to this scan (2 steps, ")


def test_panel_keeps_the_fitted_network_as_a_model_that_the_model_list_finds_and_runs(setup, model_dir):
    """"Keep the fitted network as a model": after the batch, the fit is a model folder in the user's model folder
    whose card names the scan; it is listed for the task and runs on the scan like any model. Unticked: nothing."""
    from MedGANLogic.adapt.export import voxel_sha256
    from MedGANLogic.models import registry

    volume = _small("T1w", 2)
    rng = np.random.default_rng(1)
    noisy = volume.with_array(np.hypot(volume.array + rng.normal(0, 30, volume.shape),
                                       rng.normal(0, 30, volume.shape)).astype(np.float32))
    node = add_volume_node(setup.scene, noisy, "T1 noisy")
    batch = slicer_bridge.prepare_batch(setup.scene, [node], "denoise", adapt_steps=2, show=False,
                                        **fit_to_scan.fit_options("denoise", 60))
    job = MedGANJob(batch).start()
    assert job.done.wait(300) and job.error is None, job.trace
    (out,) = batch.finish(setup.scene)[node.GetID()]
    assert fit_to_scan.keep_fits(batch, keep=False) == "" and registry.list_models("denoise") == []
    status = fit_to_scan.keep_fits(batch, keep=True)
    (card,) = registry.list_models("denoise")
    assert f"kept as model {card.id}" in status and card.folder.parent == model_dir
    assert card.data["extras"]["fitted_on"]["voxels_sha256"] == voxel_sha256(slicer_bridge.volume_from_node(node))
    assert card.data["extras"]["fit"]["steps"] == 2
    again = slicer_bridge.run_on_node(setup.scene, node, "denoise", model=card.id, show=False)
    assert np.allclose(slicer_bridge.array_from_node(again[0]), slicer_bridge.array_from_node(out), atol=1e-3)


def test_panel_default_budget_is_the_engines_per_modality_default(setup):
    """The panel starts at "default": an MR denoising fit then runs on the engine's MR budget, and the status line
    says so instead of quoting a number of seconds the engine would not use."""
    from MedGANLogic.adapt.denoise import DEFAULT_SECONDS

    node = add_volume_node(setup.scene, _small("T1w", 2), "T1")
    batch = slicer_bridge.prepare_batch(setup.scene, [node], "denoise", adapt_steps=2, show=False,
                                        **fit_to_scan.fit_options("denoise", fit_to_scan.DEFAULT_BUDGET_S))
    job = MedGANJob(batch).start()
    assert job.done.wait(300) and job.error is None, job.trace
    (out,) = batch.finish(setup.scene)[node.GetID()]
    budget = json.loads(out.GetAttribute("MedGAN.provenance"))["adapt"]["budget"]
    assert budget == {"seconds": DEFAULT_SECONDS["MR"], "max_steps": 2}
    assert "default budget" in fit_to_scan.status_text("Denoise", "", True, 0)
    assert "up to 45 s" in fit_to_scan.status_text("Denoise", "", True, 45)


def test_panel_job_cancelled_during_the_fit_adds_nothing(setup):
    node = add_volume_node(setup.scene, _small("T1w", 2), "T1")
    batch = slicer_bridge.prepare_batch(setup.scene, [node], "denoise", adapt_steps=10_000, show=False,
                                        **fit_to_scan.fit_options("denoise", 600))
    count = setup.scene.GetNumberOfNodes()
    job = MedGANJob(batch).start()
    for _ in range(600):  # wait for the fit to be under way, then press Cancel
        latest = job.latestProgress()
        if latest is not None and "step" in latest[1]:
            break
        job.done.wait(0.5)
    job.cancel.set()
    assert job.done.wait(120), "the worker did not stop"
    assert isinstance(job.error, CancelledError)
    assert setup.scene.GetNumberOfNodes() == count


def test_panel_widgets_follow_the_checkbox():
    ui = SimpleNamespace(**{name: SimpleNamespace(enabled=None) for name in (
        "adaptCheckBox", "adaptBudgetSpinBox", "keepFitCheckBox", "modelComboBox", "advancedCollapsibleButton")})
    fit_to_scan.enable_widgets(ui, "denoise", True)
    assert (ui.adaptCheckBox.enabled, ui.adaptBudgetSpinBox.enabled, ui.keepFitCheckBox.enabled,
            ui.modelComboBox.enabled, ui.advancedCollapsibleButton.enabled) == (True, True, True, False, False)
    fit_to_scan.enable_widgets(ui, "anomaly", True)  # a task that cannot fit: the box is off, the model list on
    assert (ui.adaptCheckBox.enabled, ui.adaptBudgetSpinBox.enabled, ui.keepFitCheckBox.enabled,
            ui.modelComboBox.enabled) == (False, False, False, True)
    assert fit_to_scan.status_text("Denoise", "", True, 90).startswith("Denoise: fitting a network to this scan")


def test_threading_event_cancel_is_honoured_before_the_fit_starts(setup):
    node = add_volume_node(setup.scene, _small("T1w", 2), "T1")
    count = setup.scene.GetNumberOfNodes()
    stop = threading.Event()
    stop.set()
    with pytest.raises(CancelledError):
        slicer_bridge.run_on_node(setup.scene, node, "denoise", adapt=True, cancel=stop)
    assert setup.scene.GetNumberOfNodes() == count


def test_superres_fit_of_a_scan_without_thick_slices_fine_tunes_the_in_plane_model(setup, make_model):
    """An isotropic scan: the panel's fit (no model given) fine-tunes the installed in-plane model and the output
    node lies on the grid the trained model gives (pixels halved in-plane, same field of view)."""
    from conftest import tiny_inplane_card

    card = make_model(tiny_inplane_card())
    scene = setup.scene
    iso = _small("T1w", 1)  # 2 mm isotropic on an oblique grid
    node = add_volume_node(scene, iso.with_array(np.ascontiguousarray(iso.array[40:48])), "T1 iso")
    before = slicer_bridge.array_from_node(node).copy()
    (trained,) = slicer_bridge.run_on_node(scene, node, "superres", model=card.id, show=False)
    (out,), calls = _fit(scene, node, "superres", steps=2)  # as the panel's fit: no model given
    assert np.array_equal(node_matrix(out), node_matrix(trained))  # the trained model's grid, bit for bit
    assert slicer_bridge.array_from_node(out).shape == slicer_bridge.array_from_node(trained).shape
    assert np.array_equal(slicer_bridge.array_from_node(node), before)
    fit = json.loads(out.GetAttribute("MedGAN.fit"))
    assert fit["init"] == card.id and fit["steps"] == 2
    assert "in-plane" in json.loads(out.GetAttribute("MedGAN.provenance"))["adapt"]["method"]
    assert out.GetAttribute("MedGAN.geometry_changed") == trained.GetAttribute("MedGAN.geometry_changed")
    assert calls[-1][0] == pytest.approx(1.0)
