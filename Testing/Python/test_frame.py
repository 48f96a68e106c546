"""The model's frame: reorientation and resampling into what the model was trained on, and back exactly."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import tiny_card
from scipy.spatial.transform import Rotation

from MedGANLogic.frame import decide, to_input, to_model
from MedGANLogic.models import register_architecture
from MedGANLogic.orientation import TRAINING_DIRECTION, orientation_to, reorient, restore
from MedGANLogic.pipeline import plan, run
from MedGANLogic.resampling import block_mean_2x2, grid_with_spacing, resample
from MedGANLogic.volume import Volume

CORONAL = np.array([[-1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # i -> right, j -> feet, k -> back: coronal slices
RAW = {"kind": "none"}
# the shipped MR cards' scale (not clipped above, so an SR output keeps the input's intensities)
MR_SCALE = {"kind": "mr_percentile", "percentiles": [0.5, 99.5], "range": [-1, 1], "zero_based": True}


@register_architecture("test_frame_identity")
class Identity(nn.Module):
    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x + self.dummy


@register_architecture("test_frame_blur")
class Blur(Identity):
    """Reconstruction = local mean: an anomaly 'model' whose residual is high on texture and edges."""

    def forward(self, x):
        return nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False) + self.dummy


@register_architecture("test_frame_upsample_y2")
class UpsampleY2(Identity):
    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=(2, 1), mode="nearest") + self.dummy


@register_architecture("test_frame_upsample_y2_offset")
class UpsampleY2Offset(UpsampleY2):
    """Nearest x2 along y plus a bump: each refined pair off its input voxel by 0.1 in the mean, 0.1 apart."""

    def forward(self, x):
        out = super().forward(x)
        bump = torch.zeros_like(out)
        bump[..., 0::2, :], bump[..., 1::2, :] = 0.05, 0.15
        return out + bump


def _identity_card(**overrides):
    spec = {"modality": "MR", "contrast": "T1w", "normalization": RAW, **overrides.pop("input", {})}
    overrides.setdefault("tile_size", None)
    return tiny_card("test-identity", architecture={"name": "test_frame_identity", "params": {}}, input=spec,
                     output={"modality": "MR", "contrast": "T1w", "normalization": RAW}, **overrides)


def _head(shape=(20, 48, 44), spacing=(1.0, 1.0, 1.0), direction=TRAINING_DIRECTION, seed=0):
    """A smooth MR-like head (an ellipsoid with a soft texture), on any grid."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    inside = (x ** 2 + y ** 2 + z ** 2) < 0.8
    array = np.where(inside, 300 + 80 * np.sin(3 * x) * np.cos(2 * y) + 40 * z, 0) + rng.normal(0, 1, shape)
    return Volume(np.abs(array).astype(np.float32), spacing=spacing, origin=(12.0, -30.0, 7.5),
                  direction=direction, metadata={"modality": "MR", "contrast": "T1w"})


# --- orientation ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", [np.eye(3), TRAINING_DIRECTION, CORONAL,
                                       Rotation.from_euler("xyz", [12, -7, 25], degrees=True).as_matrix()])
def test_reorientation_keeps_every_voxel_where_it_is(direction):
    volume = _head(shape=(5, 6, 7), spacing=(0.8, 1.1, 3.0), direction=direction)
    order, flip = orientation_to(volume.direction)
    moved = reorient(volume, order, flip)
    assert np.all(np.sum(moved.direction * TRAINING_DIRECTION, axis=0) > 0.85)  # each axis as in training
    for ijk in ([0, 0, 0], [4, 4, 4], [3, 1, 2]):  # the same physical point holds the same value
        point = moved.ijk_to_lps() @ np.array(ijk + [1.0])
        i, j, k = np.round(np.linalg.solve(volume.ijk_to_lps(), point)[:3]).astype(int)
        assert moved.array[ijk[2], ijk[1], ijk[0]] == volume.array[k, j, i]
    assert np.array_equal(restore(moved.array, order, flip), volume.array)


# --- resampling ----------------------------------------------------------------------------------------------------
def test_grid_with_spacing_keeps_the_field_of_view_and_its_edges():
    volume = _head(shape=(10, 40, 30), spacing=(0.7, 0.7, 2.0))
    grid = grid_with_spacing(volume, (1.4, 1.4, 2.0))
    assert grid["shape"] == (10, 20, 15) and grid["spacing"] == (1.4, 1.4, 2.0)
    corner = volume.ijk_to_lps() @ [-0.5, -0.5, -0.5, 1]
    coarse = Volume(np.zeros(grid["shape"]), grid["spacing"], grid["origin"], grid["direction"])
    assert np.allclose(coarse.ijk_to_lps() @ [-0.5, -0.5, -0.5, 1], corner)


def test_block_mean_2x2_averages_each_block_over_the_last_two_axes():
    a = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    out = block_mean_2x2(a)
    assert out.shape == (2, 2, 3)  # the odd last row and column dropped
    assert out[1, 1, 2] == a[1, 2:4, 4:6].mean()
    assert block_mean_2x2(a[0]).shape == (2, 3) and block_mean_2x2(a[0])[0, 0] == a[0, :2, :2].mean()
    assert block_mean_2x2(a, np.float64).dtype == np.float64


def test_downsampling_does_not_alias_and_labels_stay_labels():
    stripes = np.zeros((4, 32, 32), np.float32)
    stripes[:, :, ::2] = 100.0  # the finest pattern the grid holds: a coarser grid must see its mean, not stripes
    volume = Volume(stripes, spacing=(1.0, 1.0, 1.0))
    coarse = resample(volume, grid_with_spacing(volume, (3.0, 1.0, 1.0)), "linear")
    assert coarse.shape == (4, 32, 11) and np.ptp(coarse[:, 4:-4, 2:-2]) < 20 and abs(coarse.mean() - 50) < 5
    labels = Volume((stripes > 0).astype(np.uint8) * 3, spacing=(1.0, 1.0, 1.0))
    back = resample(labels, grid_with_spacing(labels, (0.5, 0.5, 1.0)), "nearest")
    assert back.dtype == np.uint8 and set(np.unique(back)) == {0, 3}


# --- deciding the frame -------------------------------------------------------------------------------------------
def test_decide_resamples_only_what_the_model_sees_and_only_outside_its_range():
    from MedGANLogic.models.card import ModelCard

    card = ModelCard(_identity_card(input={"spacing_mm": [1.5, 2.5]}))
    assert decide(_head(spacing=(2.0, 2.0, 5.0)), card).identity  # in range; the slice axis is free
    frame = decide(_head(spacing=(0.7, 0.7, 5.0)), card)
    assert frame.spacing == (1.5, 1.5, 5.0) and frame.resampled_from == (0.7, 0.7, 5.0) and not frame.reorients
    assert decide(_head(spacing=(0.7, 0.7, 5.0)), card, native=True).identity
    card3d = ModelCard(_identity_card(dims="3d", tile_size=[8, 8, 8], input={"spacing_mm": [1.5, 2.5]}))
    assert decide(_head(spacing=(2.0, 2.0, 5.0)), card3d).spacing == (2.0, 2.0, 2.5)
    coronal = decide(_head(direction=CORONAL), card)
    assert coronal.order == (1, 0, 2) and coronal.reoriented.startswith("coronal slices -> axial")
    assert decide(_head(direction=CORONAL), card, slice_axis=1).order == (0, 1, 2)  # the caller chose the slicing
    tilted = Rotation.from_euler("x", 35, degrees=True).as_matrix() @ TRAINING_DIRECTION
    oblique = decide(_head(spacing=(2.0, 2.0, 2.0), direction=tilted), card)
    assert oblique.axis_aligned and oblique.spacing == (2.0, 2.0, 2.0)
    # through-plane super-resolution on coronal slices: x is brought into range, y is the slice axis, and z, the
    # axis it refines, keeps its 13 mm (resampled first, the model would only sharpen an interpolation)
    sr = ModelCard(_identity_card(task="superres", slice_axis=1, scale_factor=[2, 1, 1],
                                  input={"spacing_mm": [1.5, 4.5]}))
    assert decide(_head(spacing=(0.8, 0.8, 13.0)), sr).spacing == (1.5, 0.8, 13.0)
    from MedGANLogic.fit import outside_spacing

    assert outside_spacing(_head(spacing=(0.8, 0.8, 13.0)), sr) == ["x 0.80 mm"]  # not the z it refines


# --- back onto the input's exact grid ------------------------------------------------------------------------------
def test_reoriented_run_is_lossless_and_on_the_input_grid(make_model):
    make_model(_identity_card())
    coronal = _head(direction=CORONAL, spacing=(0.9, 2.5, 1.1))
    result = run("synthesize", coronal, model="test-identity")
    assert result.provenance["reoriented"].startswith("coronal slices -> axial")
    assert result.volume.same_geometry(coronal, atol=0)
    assert np.array_equal(result.volume.array, coronal.array)  # whole-axis moves only: nothing interpolated


@pytest.mark.parametrize("spacing, direction", [
    ((0.7, 0.7, 0.7), TRAINING_DIRECTION),
    ((0.7, 0.8, 3.0), CORONAL),
    ((2.0, 2.0, 2.0), Rotation.from_euler("y", 30, degrees=True).as_matrix() @ TRAINING_DIRECTION),
])
def test_resampled_run_comes_back_exactly_onto_the_input_grid(make_model, spacing, direction):
    make_model(_identity_card(input={"spacing_mm": [1.5, 2.5]}))
    volume = _head(shape=(24, 48, 44), spacing=spacing, direction=direction)
    before = volume.array.copy()
    result = run("synthesize", volume, model="test-identity")
    out = result.volume
    assert out.same_geometry(volume, atol=0) and out.array.shape == volume.shape
    assert result.provenance["resampled_from"] == list(spacing)
    assert np.array_equal(volume.array, before)
    inner = volume.array > 200  # an identity model resampled there and back: close to the input inside the head
    assert np.median(np.abs(out.array - volume.array)[inner]) < 15


def test_superres_resampled_lands_on_the_finer_input_grid(make_model):
    card = tiny_card("test-frame-sr", task="superres", tile_size=None,
                     architecture={"name": "test_frame_upsample_y2", "params": {}}, scale_factor=[1, 2, 1],
                     input={"modality": "MR", "spacing_mm": [1.5, 4.5], "normalization": RAW},
                     output={"modality": "MR", "normalization": {"kind": "same_as_input"}})
    make_model(card)
    volume = _head(shape=(8, 30, 40), spacing=(0.8, 0.8, 3.0))
    result = run("superres", volume, model="test-frame-sr")
    grid = volume.resampled_grid((1, 2, 1))
    out = result.volume
    assert out.shape == grid["shape"] and out.spacing == grid["spacing"] and out.origin == grid["origin"]
    assert np.array_equal(out.direction, volume.direction)
    assert result.provenance["resampled_from"] == [0.8, 0.8, 3.0]
    assert "0.8, 0.8, 3.0] -> [0.8, 0.4, 3.0]" in out.metadata["geometry_changed"]


def test_superres_resampled_keeps_the_detail_of_the_input_grid(make_model, tmp_path):
    """Brought from 0.8 mm to the model's 1.5 mm along x and back, a 1.6 mm stripe pattern is gone; the output adds
    back what that round trip took from a spline of the input (input_detail, the default), so pairs of its refined
    y voxels average back to the input. Inside the card's range nothing is resampled and nothing is added."""
    make_model(tiny_card("test-frame-sr", task="superres", tile_size=None,
                         architecture={"name": "test_frame_upsample_y2", "params": {}}, scale_factor=[1, 2, 1],
                         input={"modality": "MR", "spacing_mm": [1.5, 4.5], "normalization": MR_SCALE},
                         output={"modality": "MR", "normalization": {"kind": "same_as_input"}}))
    volume = _head(shape=(8, 30, 40), spacing=(0.8, 0.8, 3.0))
    stripes = np.where(np.arange(40) % 2 == 0, 40.0, -40.0).astype(np.float32)  # 1.6 mm period along x
    volume = volume.with_array(np.where(volume.array > 100, volume.array + stripes, volume.array))
    before = volume.array.copy()
    kept, plain = (run("superres", volume, model="test-frame-sr", input_detail=flag) for flag in (True, False))
    assert np.array_equal(volume.array, before)
    assert kept.volume.same_geometry(plain.volume, atol=0)
    assert "restored from a cubic B-spline" in kept.provenance["input_detail"]
    assert "input_detail" not in plain.provenance and "input_detail" not in plain.volume.metadata
    inner = np.zeros(volume.shape, bool)
    inner[:, 3:-3, 3:-3] = volume.array[:, 3:-3, 3:-3] > 100

    def error(result):  # the refined y voxels averaged in pairs against the input
        out = result.volume.array
        return float(np.abs(0.5 * (out[:, 0::2] + out[:, 1::2]) - volume.array)[inner].mean())

    assert error(plain) > 25  # the stripes were lost on the way through 1.5 mm
    assert error(kept) < 0.25 * error(plain)
    from MedGANLogic.cli import main
    from MedGANLogic.io import read_volume, write_volume

    src = write_volume(volume, tmp_path / "thick.nrrd")
    for flags, expected in (([], kept), (["--no-input-detail"], plain)):
        assert main(["run", "--task", "superres", "--model", "test-frame-sr", "--input", str(src), "--output",
                     str(tmp_path / "sr.nrrd"), "--quiet", *flags]) == 0
        back = read_volume(tmp_path / "sr.nrrd")
        assert np.allclose(back.array, expected.volume.array, atol=1e-3)
        assert ("input_detail" in back.metadata["provenance"]) == (not flags)
    inside = volume.with_array(volume.array, spacing=(2.0, 2.0, 3.0))  # in range: the model's own grid
    a, b = (run("superres", inside, model="test-frame-sr", input_detail=flag) for flag in (True, False))
    assert a.provenance["resampled_from"] is None and "input_detail" not in a.provenance
    assert np.array_equal(a.volume.array, b.volume.array)


def test_labels_and_masks_come_back_as_labels(make_model):
    make_model(tiny_card("test-frame-seg", task="segment", tile_size=None,
                         architecture={"name": "test_frame_identity", "params": {}},
                         input={"modality": "MR", "spacing_mm": [1.5, 2.5],
                                "normalization": {"kind": "mr_percentile"}}, output={"modality": "mask"}))
    make_model(tiny_card("test-frame-anomaly", task="anomaly", tile_size=None,
                         architecture={"name": "test_frame_blur", "params": {}},
                         input={"modality": "MR", "spacing_mm": [1.5, 2.5],
                                "normalization": {"kind": "mr_percentile"}}, output={"modality": "anomaly"},
                         extras={"threshold": 0.02, "smoothing_mm": 0.0}))
    volume = _head(spacing=(0.8, 0.8, 0.8))
    labels = run("segment", volume, model="test-frame-seg").volume
    assert labels.array.dtype == np.uint8 and set(np.unique(labels.array)) == {0, 1}
    assert labels.same_geometry(volume, atol=0)
    result = run("anomaly", volume, model="test-frame-anomaly")
    amap, mask = result.outputs["anomaly_map"], result.outputs["mask"]
    assert mask.same_geometry(volume, atol=0) and amap.same_geometry(volume, atol=0)
    assert np.array_equal(mask.array, (amap.array > result.extras["threshold"]).astype(np.uint8))
    assert 0 < result.extras["candidate_voxels"] == int(mask.array.sum()) < mask.array.size // 2


def test_native_keeps_the_input_grid_and_warns(make_model):
    make_model(_identity_card(input={"spacing_mm": [1.5, 2.5]}))
    volume = _head(spacing=(0.7, 0.7, 0.7))
    p = plan("synthesize", volume, model="test-identity", native=True)
    assert p.frame.identity and any("voxel size x 0.70 mm, y 0.70 mm" in w for w in p.warnings)
    assert np.array_equal(run("synthesize", volume, model="test-identity", native=True).volume.array, volume.array)


def test_frame_round_trip_without_a_model():
    from MedGANLogic.models.card import ModelCard

    card = ModelCard(_identity_card(input={"spacing_mm": [1.5, 2.5]}))
    volume = _head(spacing=(0.7, 0.9, 0.7), direction=CORONAL)
    frame = decide(volume, card)
    seen = to_model(volume, frame)
    assert seen.spacing[0] == 1.5 and abs(seen.spacing[1] - 1.5) < 1e-9 and frame.reorients
    back = to_input(seen.with_array(seen.array, metadata={"kind": "image"}), volume, frame, (1, 1, 1))
    assert back.same_geometry(volume, atol=0)


def test_superres_keeps_the_data_the_input_measured(make_model, tmp_path):
    """A card that names its acquisition (extras.degradation) gets an output that gives the input back when degraded
    that way (consistency, the default): a model whose refined y pairs are off their input voxel has them shifted to
    average to the input, keeping their own difference; consistency=False and --no-consistency leave the model's
    output; the plan says so; the input is untouched; a card naming an acquisition its scale cannot have is
    refused."""
    from MedGANLogic.cli import main
    from MedGANLogic.errors import ModelError
    from MedGANLogic.io import read_volume, write_volume

    card = tiny_card("test-frame-sr-dc", task="superres", tile_size=None,
                     architecture={"name": "test_frame_upsample_y2_offset", "params": {}},
                     scale_factor=[1, 2, 1], input={"modality": "MR", "normalization": MR_SCALE},
                     output={"modality": "MR", "normalization": {"kind": "same_as_input"}},
                     extras={"degradation": "thick_slices"})
    make_model(card)
    volume = _head(shape=(6, 20, 24), spacing=(2.0, 2.0, 3.0))
    before = volume.array.copy()
    kept, plain = (run("superres", volume, model="test-frame-sr-dc", consistency=flag) for flag in (True, False))
    assert np.array_equal(volume.array, before)
    pairs = kept.volume.array.reshape(6, 20, 2, 24)  # the refined y voxels in pairs, each pair one input voxel
    made = plain.volume.array.reshape(6, 20, 2, 24)
    floor = min(volume.array.min(), made.min())
    assert kept.volume.array.min() >= floor  # never below the input and the model (magnitude MR)
    free = pairs.min(axis=2) > floor + 1e-3  # where that floor did not bite: the head
    assert free.mean() > 0.2
    assert np.allclose(pairs.mean(axis=2)[free], volume.array[free], atol=1e-3 * np.abs(volume.array).max())
    assert np.abs(made.mean(axis=2) - volume.array).min() > 1.0  # the model alone does not give it back
    assert np.allclose(np.diff(pairs, axis=2)[:, :, 0][free], np.diff(made, axis=2)[:, :, 0][free], atol=1e-3)
    assert "the output keeps the data the input measured" in kept.provenance["consistency"]
    assert "consistency" not in plain.provenance and "consistency" not in plain.volume.metadata
    assert any("keeps the data the input measured" in n for n in plan("superres", volume,
                                                                       model="test-frame-sr-dc").notes)
    assert not any("keeps the data the input measured" in n for n in plain.provenance["notes"])  # it does not
    src = write_volume(volume, tmp_path / "low.nrrd")
    for flags, expected in (([], kept), (["--no-consistency"], plain)):
        assert main(["run", "--task", "superres", "--model", "test-frame-sr-dc", "--input", str(src), "--output",
                     str(tmp_path / "sr.nrrd"), "--quiet", *flags]) == 0
        assert np.allclose(read_volume(tmp_path / "sr.nrrd").array, expected.volume.array, atol=1e-3)
    bad = dict(card, id="test-frame-sr-bad", scale_factor=[1, 2, 2], extras={"degradation": "thick_slices"})
    with pytest.raises(ModelError, match="thick_slices scales one axis"):
        make_model(bad)
    with pytest.raises(ModelError, match="must be one of"):
        make_model(dict(card, id="test-frame-sr-bad2", extras={"degradation": "blur"}))
