"""Voxel size, field of view and slice plane against a model card: one check for the CLI, Python and Slicer."""

from types import SimpleNamespace

import numpy as np
from scipy.spatial.transform import Rotation

from MedGANLogic.fit import fit_problems, slice_plane
from MedGANLogic.volume import Volume


def _card(dims="2d", slice_axis=0, scale_factor=(1.0, 1.0, 1.0), **spec):
    return SimpleNamespace(id="m", dims=dims, slice_axis=slice_axis, scale_factor=scale_factor,
                           input=dict(modality="MR", **spec))


def _volume(shape=(40, 100, 100), spacing=(2.0, 2.0, 2.0), direction=None):
    return Volume(np.zeros(shape, np.float32), spacing=spacing, direction=np.eye(3) if direction is None else direction)


def test_spacing_of_2d_models_counts_in_plane_only():
    card = _card(spacing_mm=[1.5, 2.5])
    assert fit_problems(_volume(spacing=(2.0, 2.0, 6.0)), card) == []  # thick slices: the slice axis is free
    (problem,) = fit_problems(_volume(spacing=(0.8, 2.0, 2.0)), card)
    assert problem.startswith("voxel size x 0.80 mm is outside the 1.5-2.5 mm model m was trained on")
    (problem,) = fit_problems(_volume(spacing=(2.0, 2.0, 6.0)), _card("3d", spacing_mm=[1.5, 2.5]))
    assert "voxel size z 6.00 mm" in problem


def test_field_of_view_small_and_large():
    card = _card(fov_mm=[150, 300])
    assert fit_problems(_volume(), card) == []  # 200 x 200 mm in plane
    small, = fit_problems(_volume(shape=(40, 50, 100)), card)
    assert small.startswith("field of view y 100 mm is smaller than the 150-300 mm")
    large, = fit_problems(_volume(shape=(40, 200, 100)), card)
    assert large.startswith("field of view y 400 mm is larger than the 150-300 mm")


def test_slice_plane_from_direction_cosines():
    assert slice_plane(_volume(), 0) == ("axial", 0.0)
    assert slice_plane(_volume(), 1)[0] == "coronal" and slice_plane(_volume(), 2)[0] == "sagittal"
    sagittal = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float)  # k runs left-right: sagittal slices along k
    assert slice_plane(_volume(direction=sagittal), 0)[0] == "sagittal"
    tilted = Rotation.from_euler("x", 30, degrees=True).as_matrix()
    plane, tilt = slice_plane(_volume(direction=tilted), 0)
    assert plane == "axial" and abs(tilt - 30) < 1e-6


def test_plane_problems_of_2d_models():
    card = _card()
    coronal = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float)
    (problem,) = fit_problems(_volume(direction=coronal), card)
    assert "trained on axial slices but slicing this volume along k gives coronal slices" in problem
    (problem,) = fit_problems(_volume(direction=Rotation.from_euler("x", 30, degrees=True).as_matrix()), card)
    assert "tilted 30 degrees" in problem
    assert fit_problems(_volume(direction=Rotation.from_euler("x", 10, degrees=True).as_matrix()), card) == []
    assert fit_problems(_volume(direction=coronal), _card("3d")) == []  # 3d models see no slices
    superres = _card(scale_factor=(2.0, 1.0, 1.0))
    tilted = _volume(direction=Rotation.from_euler("x", 30, degrees=True).as_matrix())
    assert fit_problems(tilted, superres) == []  # SR refines the acquisition's own slice axis: tilt is no problem


def test_a_denoiser_runs_on_the_scans_own_voxels_whatever_their_size_or_tilt():
    """Its noise lives on the acquisition's voxels: a voxel size outside the card's range or an oblique grid is
    no problem for a denoising model, and its frame reorients (whole axes) but never resamples; any other task
    still gets both."""
    from MedGANLogic.frame import decide
    from MedGANLogic.orientation import TRAINING_DIRECTION

    tilted = Rotation.from_euler("x", 30, degrees=True).as_matrix() @ TRAINING_DIRECTION
    fine = _volume(spacing=(0.6, 0.6, 5.0), direction=tilted)
    denoiser = SimpleNamespace(**vars(_card(spacing_mm=[1.5, 2.5])), task="denoise")
    other = SimpleNamespace(**vars(_card(spacing_mm=[1.5, 2.5])), task="synthesize")
    assert fit_problems(fine, denoiser) == []
    assert any("voxel size" in p for p in fit_problems(fine, other))
    assert any("tilted" in p for p in fit_problems(_volume(direction=tilted), other))
    frame = decide(fine, denoiser)
    assert frame.spacing is None and not frame.axis_aligned and not frame.resamples
    other_frame = decide(fine, other)
    assert other_frame.resamples and other_frame.axis_aligned
