"""MedGANLogic.run end to end with small models: outputs, geometry, provenance and every bad input."""

import threading

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import tiny_card

import MedGANLogic
from MedGANLogic.errors import CancelledError, InputError, ModalityMismatchError, ModelError
from MedGANLogic.io import read_volume, write_volume
from MedGANLogic.models import register_architecture
from MedGANLogic.pipeline import PREPARING
from MedGANLogic.volume import Volume


@register_architecture("test_upsample_y2")
class UpsampleY2(nn.Module):
    """Nearest-neighbour x2 along the slice's rows: an analytically defined super-resolution 'model'."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=(2, 1), mode="nearest") + self.dummy


@register_architecture("test_box_blur")
class BoxBlur(nn.Module):
    """Reconstruction = local mean (7x7): a fixed 'healthy anatomy' model under which small bright spots stand out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 7, padding=3, bias=False, padding_mode="replicate")
        nn.init.constant_(self.conv.weight, 1 / 49)

    def forward(self, x):
        return self.conv(x)


@register_architecture("test_sign_logits")
class SignLogits(nn.Module):
    """Two-class logits [0, x]: foreground where the normalised intensity is above 0."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.cat([torch.zeros_like(x) + self.dummy, x], dim=1)


def _ct_card(model_id="test-ldct", task="denoise", **overrides):
    return tiny_card(model_id, task=task,
                     input={"modality": "CT", "normalization": {"kind": "ct_window", "window": [-1000, 2000]}},
                     output={"modality": "CT", "units": "HU", "normalization": {"kind": "same_as_input"}},
                     **overrides)


def test_synthesize_keeps_geometry_and_labels_output(make_model, oblique_volume):
    make_model(tiny_card())
    before = oblique_volume.array.copy()
    calls, messages = [], []
    result = MedGANLogic.run("synthesize", oblique_volume,
                             progress=lambda f, m: (calls.append(f), messages.append(m)))
    out = result.volume
    assert out.same_geometry(oblique_volume, atol=0)
    assert out.metadata["contrast"] == "T2w" and out.metadata["synthetic"] is True
    prov = out.metadata["provenance"]
    assert prov["model"] == "test-t1-to-t2" and len(prov["weights_sha256"]) == 64
    assert prov["device"] == "cpu" and prov["task"] == "synthesize"
    assert np.array_equal(oblique_volume.array, before) and oblique_volume.metadata["contrast"] == "T1w"
    assert calls[-1] == 1.0
    # the caller hears from the run before the work on the input (a CT body mask takes seconds), then per batch
    assert (calls[0], messages[0]) == (0.0, PREPARING) and messages[1].endswith("slices") and calls == sorted(calls)
    assert 0 <= out.array.min() and out.array.max() <= 1000  # the output window of the card


def test_run_from_file_and_write(make_model, oblique_volume, tmp_path):
    make_model(tiny_card())
    src = write_volume(oblique_volume, tmp_path / "t1.nrrd")
    result = MedGANLogic.run("synthesize", src, model="test-t1-to-t2", force=True)
    back = read_volume(write_volume(result.volume, tmp_path / "t2.nrrd"))
    assert back.metadata["provenance"]["model"] == "test-t1-to-t2"
    assert np.allclose(back.direction, oblique_volume.direction, atol=1e-6)


def test_denoise_returns_hounsfield_units(make_model):
    make_model(_ct_card())
    ct = np.full((3, 40, 40), -1000, np.float32)
    ct[:, 10:30, 10:30] = 40
    vol = Volume(ct, spacing=(0.7, 0.7, 2.0), metadata={"modality": "CT", "units": "HU"})
    out = MedGANLogic.run("denoise", vol).volume
    assert out.metadata["units"] == "HU" and out.same_geometry(vol)
    assert -1000 <= out.array.min() and out.array.max() <= 2000


def test_superres_changes_spacing_keeps_field_of_view(make_model, oblique_volume):
    card = tiny_card("test-sr", task="superres", architecture={"name": "test_upsample_y2", "params": {}},
                     scale_factor=[1, 2, 1], output={"modality": "MR", "normalization": {"kind": "same_as_input"}})
    make_model(card)
    out = MedGANLogic.run("superres", oblique_volume).volume
    assert out.shape == (12, 80, 36)
    assert np.allclose(out.spacing, (0.9, 0.55, 3.5))
    assert np.allclose(out.physical_extent(), oblique_volume.physical_extent())
    assert np.allclose(out.direction, oblique_volume.direction)
    # the outer voxel edge stays where it was
    assert np.allclose(out.ijk_to_lps() @ [-0.5, -0.5, -0.5, 1], oblique_volume.ijk_to_lps() @ [-0.5, -0.5, -0.5, 1])
    assert "super-resolution" in out.metadata["geometry_changed"]


def test_anomaly_map_is_high_on_a_bright_spot(make_model):
    card = tiny_card("test-anomaly", task="anomaly", architecture={"name": "test_box_blur", "params": {}},
                     output={"modality": "anomaly"}, extras={"threshold": 0.08})
    make_model(card)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:48]
    head = ((y - 24) ** 2 + (x - 24) ** 2) < 20 ** 2
    # smooth anatomy (a linear ramp, which a local mean reproduces) plus noise
    img = np.where(head, 300.0 + 10 * x, 0.0)[None].repeat(6, 0) + rng.normal(0, 3, (6, 48, 48))
    lesion = np.zeros_like(img, bool)
    lesion[2:4, 20:24, 26:30] = True
    img[lesion] += 400
    vol = Volume(np.abs(img), metadata={"modality": "MR", "contrast": "T1w"})
    result = MedGANLogic.run("anomaly", vol)
    amap, mask = result.outputs["anomaly_map"].array, result.outputs["mask"].array
    inner = ((y - 24) ** 2 + (x - 24) ** 2) < 14 ** 2  # away from the head's edge, which a blur also misses
    background = inner[None].repeat(6, 0) & ~np.pad(lesion, 0)
    background[1:5, 16:28, 22:34] = False  # and away from the lesion's own halo
    assert amap[lesion].mean() > 5 * amap[background].mean()
    assert mask[lesion].mean() > 0.5 and not mask[background].any()
    assert result.extras["threshold"] == 0.08 and result.provenance["case_score"] == result.extras["case_score"]
    assert result.volume is result.outputs["anomaly_map"]


def test_segment_returns_named_labels(make_model, oblique_volume):
    make_model(tiny_card("test-seg", task="segment", architecture={"name": "test_sign_logits", "params": {}},
                         output={"modality": "mask"}, extras={"labels": {"1": "bright tissue"}}))
    labels = MedGANLogic.run("segment", oblique_volume).volume
    assert labels.array.dtype == np.uint8 and set(np.unique(labels.array)) == {0, 1}
    assert labels.metadata["segment_names"] == {1: "bright tissue"}


def test_unknown_task_and_model(make_model, oblique_volume):
    make_model(tiny_card())
    with pytest.raises(Exception, match="Unknown task 'colorize'"):
        MedGANLogic.run("colorize", oblique_volume)
    with pytest.raises(ModelError, match="Unknown model 'nope'"):
        MedGANLogic.run("synthesize", oblique_volume, model="nope")
    with pytest.raises(ModelError, match="No model for task 'segment'"):
        MedGANLogic.run("segment", oblique_volume)


def test_modality_mismatch_is_refused_unless_forced(make_model, oblique_volume):
    make_model(_ct_card())
    with pytest.raises(ModalityMismatchError, match="expects CT input but the volume is MR.*force"):
        MedGANLogic.run("denoise", oblique_volume, model="test-ldct")
    out = MedGANLogic.run("denoise", oblique_volume, model="test-ldct", force=True).volume
    assert "expects CT" in out.metadata["provenance"]["forced_despite"]


def test_ct_looking_volume_is_refused_by_an_mr_model(make_model):
    make_model(tiny_card())
    ct = np.full((3, 30, 30), -1000, np.float32)
    ct[:, 5:25, 5:25] = 300
    with pytest.raises(ModalityMismatchError, match="looks like CT"):
        MedGANLogic.run("synthesize", Volume(ct), model="test-t1-to-t2")


def test_contrast_mismatch(make_model, oblique_volume):
    make_model(tiny_card())
    flair = oblique_volume.with_array(oblique_volume.array, metadata={"contrast": "FLAIR"})
    with pytest.raises(ModalityMismatchError, match="T1w"):
        MedGANLogic.run("synthesize", flair, model="test-t1-to-t2")


@pytest.mark.parametrize("corrupt, message", [
    (lambda a: a.__setitem__((0, 0, 0), np.nan), "NaN or infinite"),
    (lambda a: a.__setitem__((1, 2, 3), np.inf), "NaN or infinite"),
    (lambda a: a.fill(7.0), "constant"),
])
def test_bad_voxels_are_refused(make_model, oblique_volume, corrupt, message):
    make_model(tiny_card())
    array = oblique_volume.array.copy()
    corrupt(array)
    with pytest.raises(InputError, match=message):
        MedGANLogic.run("synthesize", oblique_volume.with_array(array))


def test_a_sheared_volume_is_refused_before_the_network_runs(make_model, oblique_volume):
    make_model(tiny_card())
    sheared = oblique_volume.with_array(oblique_volume.array, direction=np.array([[1, 0.3, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(InputError, match="input volume has a direction matrix that is not orthonormal"):
        MedGANLogic.plan("synthesize", sheared)


def test_empty_volume_is_refused(make_model):
    make_model(tiny_card())
    with pytest.raises(InputError, match="empty"):
        MedGANLogic.run("synthesize", Volume(np.zeros((0, 4, 4)), metadata={"modality": "MR"}))


def test_volume_smaller_than_tile_runs(make_model):
    make_model(tiny_card(tile_size=[64, 64]))
    small = Volume(np.random.default_rng(0).random((2, 9, 7)) * 100, metadata={"modality": "MR", "contrast": "T1w"})
    assert MedGANLogic.run("synthesize", small).volume.shape == (2, 9, 7)


def test_tampered_weights_are_refused_by_run(make_model, oblique_volume):
    card = make_model(tiny_card())
    data = bytearray(card.weights_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    card.weights_path.write_bytes(bytes(data))
    from MedGANLogic.models import registry

    registry.clear_cache()
    with pytest.raises(ModelError, match="SHA-256"):
        MedGANLogic.run("synthesize", oblique_volume)


def test_unknown_option_is_named(make_model, oblique_volume):
    make_model(tiny_card())
    with pytest.raises(InputError, match="Unknown option.*colour"):
        MedGANLogic.run("synthesize", oblique_volume, colour="red")


def test_cancel_raises_and_returns_nothing(make_model, oblique_volume):
    make_model(tiny_card())
    stop = threading.Event()
    stop.set()
    with pytest.raises(CancelledError):
        MedGANLogic.run("synthesize", oblique_volume, cancel=stop)


def test_2d_file_is_refused_with_a_clear_message(make_model, tmp_path):
    import SimpleITK as sitk

    make_model(tiny_card())
    sitk.WriteImage(sitk.Image(30, 30, sitk.sitkFloat32), str(tmp_path / "xray.nrrd"))
    with pytest.raises(InputError, match="2D image"):
        MedGANLogic.run("synthesize", tmp_path / "xray.nrrd")


def _flipped_runs(vol, count):
    """The denoiser run once on each of ``count`` flips / transpositions of ``vol``'s slices, each undone."""
    from MedGANLogic.models.ensemble import VARIANTS

    outs = []
    for transposed, dims in VARIANTS[:count]:
        a = np.swapaxes(vol.array, 1, 2) if transposed else vol.array
        a = np.flip(a, tuple(d + 3 for d in dims)) if dims else a  # (-1, -2) of a slice -> array axes 2, 1
        y = MedGANLogic.run("denoise", vol.with_array(np.ascontiguousarray(a)), ensemble=1).volume.array
        y = np.flip(y, tuple(d + 3 for d in dims)) if dims else y
        outs.append(np.swapaxes(y, 1, 2) if transposed else y)
    return np.mean(outs, axis=0)


def test_the_self_ensemble_averages_the_network_over_flips_and_transpositions(make_model):
    make_model(_ct_card(tile_size=[64, 64]))  # one tile holds a whole slice: a flip of the slice is one of the tile
    rng = np.random.default_rng(0)
    ct = rng.normal(40, 30, (3, 24, 24)).astype(np.float32)
    vol = Volume(ct, spacing=(0.8, 0.8, 2.0), metadata={"modality": "CT", "units": "HU"})
    once = MedGANLogic.run("denoise", vol)
    assert once.provenance["self_ensemble"] == 1  # the card sets none: one pass
    for count in (2, 8):
        result = MedGANLogic.run("denoise", vol, ensemble=count)
        assert result.provenance["self_ensemble"] == count and result.volume.same_geometry(vol, atol=0)
        assert not np.allclose(result.volume.array, once.volume.array, atol=1e-3)  # the random net is orientation-bound
        assert np.allclose(result.volume.array, _flipped_runs(vol, count), atol=1e-3)


def test_a_card_sets_the_default_self_ensemble_and_an_option_overrides_it(make_model, tmp_path):
    from MedGANLogic.cli import main
    from MedGANLogic.pipeline import ensemble_count

    card = make_model(_ct_card(tile_size=[64, 64], extras={"self_ensemble": {"cpu": 4, "cuda": 8}}))
    assert [ensemble_count(card, {}, d) for d in ("cpu", "cuda:0")] == [4, 8]  # a card's per-device defaults
    assert ensemble_count(card, {"ensemble": 2}, "cuda") == 2
    ct = np.random.default_rng(1).normal(40, 30, (2, 16, 20)).astype(np.float32)
    vol = Volume(ct, spacing=(0.8, 0.8, 2.0), metadata={"modality": "CT", "units": "HU"})
    default = MedGANLogic.run("denoise", vol, device="cpu")
    assert default.provenance["self_ensemble"] == 4
    assert np.allclose(default.volume.array, _flipped_runs(vol, 4), atol=1e-3)
    src = write_volume(vol, tmp_path / "ct.nrrd")
    assert main(["run", "--task", "denoise", "--input", str(src), "--output", str(tmp_path / "o.nrrd"),
                 "--ensemble", "1", "--device", "cpu", "--quiet"]) == 0
    back = read_volume(tmp_path / "o.nrrd")
    assert back.metadata["provenance"]["self_ensemble"] == 1
    assert np.allclose(back.array, MedGANLogic.run("denoise", vol, ensemble=1).volume.array, atol=1e-3)


def test_one_rule_says_which_self_ensembles_suit_a_model():
    """The card check and the run's option check share ensemble_limit: flips suit any 2D model, transpositions
    only one that zooms both of the slice's axes alike, and a 3D model takes none."""
    from MedGANLogic.models.card import ensemble_limit

    assert ensemble_limit(1, "3d", [1, 1, 1], 0) is None
    assert ensemble_limit(2, "3d", [1, 1, 1], 0) == "3d"
    assert ensemble_limit(8, "2d", [1, 1, 1], 0) is None
    assert ensemble_limit(8, "2.5d", [1, 2, 2], 0) is None  # in-plane SR: both slice axes x2
    assert ensemble_limit(4, "2.5d", [2, 1, 1], 1) is None  # through-plane SR: flips only
    assert ensemble_limit(8, "2.5d", [2, 1, 1], 1) == "transpose"
    assert ensemble_limit(8, "2.5d", [2, 1, 1], 0) is None  # sliced along z, its slices are zoomed alike (not at all)


def test_the_self_ensemble_is_refused_where_it_cannot_apply(make_model):
    ct = np.random.default_rng(2).normal(40, 30, (8, 16, 16)).astype(np.float32)
    vol = Volume(ct, spacing=(0.8, 0.8, 0.8), metadata={"modality": "CT", "units": "HU"})
    make_model(_ct_card())
    with pytest.raises(InputError, match="ensemble must be 1, 2, 4 or 8"):
        MedGANLogic.run("denoise", vol, ensemble=3)
    with pytest.raises(InputError, match="ensemble applies to a trained model"):
        MedGANLogic.run("denoise", vol, adapt=True, ensemble=2)
    with pytest.raises(InputError, match="Unknown option"):  # denoising, synthesis, super-resolution, anomaly only
        MedGANLogic.run("segment", vol, ensemble=2, force=True)
    make_model(_ct_card("test-ldct-3d", architecture={"name": "conv3d", "params": {"features": 4, "depth": 2}},
                        dims="3d", tile_size=[8, 8, 8]))
    with pytest.raises(InputError, match="needs a 2D model"):
        MedGANLogic.run("denoise", vol, model="test-ldct-3d", ensemble=2)
    for bad in (3, {"cpu": 1, "cuda": 16}, "8"):  # refused with the card, before any run
        with pytest.raises(ModelError, match="extras.self_ensemble' must be one of"):
            make_model(_ct_card("test-ldct-bad", extras={"self_ensemble": bad}))
    with pytest.raises(ModelError, match="extras.self_ensemble' needs a 2D model"):  # a card's default, as the option
        make_model(_ct_card("test-ldct-3d-bad", architecture={"name": "conv3d", "params": {"features": 4, "depth": 2}},
                            dims="3d", tile_size=[8, 8, 8], extras={"self_ensemble": {"cpu": 1, "cuda": 2}}))
