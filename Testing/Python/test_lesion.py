"""The lesion task: masks checked and put on the image grid, far voxels bit-identical, CLI and augment reproducible."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_card
from scipy import ndimage

import MedGANLogic
from MedGANLogic.errors import InputError
from MedGANLogic.io import read_volume, write_volume
from MedGANLogic.lesion_types import LESION_TYPES
from MedGANLogic.volume import Volume


def lesion_card(model_id: str = "test-lesion", **overrides) -> dict:
    card = tiny_card(model_id, "lesion", architecture={"name": "lesion_inpaint2d",
                                                       "params": {"features": 4, "depth": 2}},
                     input={"modality": "MR", "normalization": {"kind": "mr_percentile", "percentiles": [0.5, 99.5],
                                                                "range": [-1, 1]}},
                     output={"modality": "MR", "normalization": {"kind": "same_as_input"}},
                     extras={"lesion_types": list(LESION_TYPES), "margin_mm": 2.0, "feather_mm": 2.0})
    card.pop("tile_size")
    card.update(overrides)
    return card


@pytest.fixture
def lesion_model(make_model):
    return make_model(lesion_card())


def head(dtype=np.int16, shape=(12, 40, 36), spacing=(1.5, 1.5, 2.0)) -> Volume:
    """A small ellipsoidal 'head' with a brighter core and noise, in ``dtype``."""
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    r = np.sqrt(((zz - shape[0] / 2) / (shape[0] / 2.2)) ** 2 + ((yy - shape[1] / 2) / (shape[1] / 2.4)) ** 2
                + ((xx - shape[2] / 2) / (shape[2] / 2.4)) ** 2)
    rng = np.random.default_rng(0)
    a = np.where(r < 1, 300 + 200 * (r < 0.6) + rng.normal(0, 10, shape), 0).astype(dtype)
    return Volume(a, spacing=spacing, origin=(-20.0, 5.0, 3.0), metadata={"modality": "MR", "contrast": "T2w"})


def ball_mask(volume: Volume, centre=(6, 20, 18), radius=3) -> Volume:
    zz, yy, xx = np.indices(volume.shape)
    inside = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius ** 2
    return volume.with_array(inside.astype(np.uint8), metadata={"modality": "mask"})


def distance_mm(mask: np.ndarray, volume: Volume) -> np.ndarray:
    return ndimage.distance_transform_edt(mask == 0, sampling=volume.spacing[::-1])


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_far_voxels_are_bit_identical_and_geometry_exact(lesion_model, dtype):
    vol = head(dtype)
    mask = ball_mask(vol)
    before = vol.array.copy()
    result = MedGANLogic.run("lesion", vol, device="cpu", mask=mask, lesion_type="tumour")
    out = result.volume
    assert np.array_equal(vol.array, before)  # the input is never modified
    assert out.array.dtype == vol.array.dtype and out.shape == vol.shape
    assert out.spacing == vol.spacing and out.origin == vol.origin and np.array_equal(out.direction, vol.direction)
    far = distance_mm(mask.array, vol) > result.extras["unchanged_beyond_mm"]
    assert far.sum() > 0.8 * vol.array.size
    assert out.array[far].tobytes() == vol.array[far].tobytes()
    assert (out.array[mask.array > 0] != vol.array[mask.array > 0]).any()  # the lesion changed something
    label = result.outputs["mask"]
    assert np.array_equal(label.array, mask.array) and label.array.dtype == np.uint8
    assert label.metadata["segment_names"] == {1: "synthetic tumour-like lesion with oedema"}
    assert out.metadata["synthetic"] and out.metadata["provenance"]["task"] == "lesion"


def test_mask_on_another_grid_is_resampled_with_a_note(lesion_model):
    vol = head(np.float32)
    fine = Volume(np.zeros((24, 80, 72), np.uint8), spacing=(0.75, 0.75, 1.0),
                  origin=tuple(o - s / 4 for o, s in zip(vol.origin, vol.spacing)))
    fine.array[10:14, 38:44, 34:40] = 7  # one label value, not 1: still a mask
    plan = MedGANLogic.plan("lesion", vol, device="cpu", mask=fine)
    assert any("resampled onto the image's grid" in n for n in plan.notes)
    assert plan.inputs["mask"].shape == vol.shape and set(np.unique(plan.inputs["mask"].array)) == {0, 1}


@pytest.mark.parametrize("make_bad, message", [
    (lambda v: v.with_array(np.zeros(v.shape, np.uint8)), "is empty"),
    (lambda v: v.with_array((np.indices(v.shape)[2] % 3).astype(np.uint8)), "not binary"),
    (lambda v: Volume(np.ones((4, 4, 4), np.uint8), spacing=(1.0, 1.0, 1.0), origin=(500.0, 500.0, 500.0)),
     "does not overlap"),
])
def test_bad_masks_are_refused_in_one_sentence(lesion_model, make_bad, message):
    vol = head(np.float32)
    with pytest.raises(InputError, match=message):
        MedGANLogic.plan("lesion", vol, device="cpu", mask=make_bad(vol))


def test_lesion_needs_a_mask_and_a_known_type(lesion_model, make_model):
    vol = head(np.float32)
    with pytest.raises(InputError, match="needs a mask"):
        MedGANLogic.plan("lesion", vol, device="cpu")
    with pytest.raises(InputError, match="lesion_type must be one of"):
        MedGANLogic.plan("lesion", vol, device="cpu", mask=ball_mask(vol), lesion_type="cyst")
    with pytest.raises(InputError, match="Unknown option"):
        MedGANLogic.plan("segment", vol, device="cpu", mask=ball_mask(vol))
    make_model(lesion_card("test-lesion-wmh-only", extras={"lesion_types": ["wmh"]}))
    with pytest.raises(InputError, match="does not make 'ischaemic'"):
        MedGANLogic.plan("lesion", vol, model="test-lesion-wmh-only", device="cpu", mask=ball_mask(vol),
                         lesion_type="ischaemic")


def test_marker_round_trip_and_pass_through():
    from MedGANLogic.models.inpaint import LesionInpaintNet, hide, reveal

    torch.manual_seed(0)
    image = torch.rand(3, 1, 16, 16) * 2 - 1
    hidden = torch.zeros(3, 1, 16, 16)
    hidden[:2, :, 4:9, 5:10] = 1
    marked = hide(image, hidden, torch.tensor([2, 0, 1]))
    shown, mask, one_hot = reveal(marked)
    assert torch.equal(mask, hidden) and torch.equal(shown, image * (1 - hidden))
    assert one_hot.tolist() == [[0, 0, 1], [1, 0, 0], [0, 0, 0]]  # no hidden voxel: no type
    out = LesionInpaintNet(features=4, depth=2).eval()(marked)
    assert torch.equal(out[hidden == 0], image[hidden == 0])
    assert out.min() >= -1 and out.max() <= 1


def test_cli_writes_image_and_label_or_nothing(lesion_model, tmp_path):
    vol = head(np.int16)
    write_volume(vol, tmp_path / "t2.nrrd")
    write_volume(ball_mask(vol), tmp_path / "mask.nrrd")
    write_volume(vol.with_array(np.zeros(vol.shape, np.uint8)), tmp_path / "empty.nrrd")
    base = [sys.executable, "-m", "MedGANLogic.cli", "run", "--task", "lesion", "--input", str(tmp_path / "t2.nrrd"),
            "--device", "cpu", "--quiet", "--lesion-type", "ischaemic"]
    env = {"PYTHONPATH": str(REPO), "MEDGAN_MODELS_DIR": str(lesion_model.folder.parent),
           "MEDGAN_BUILTIN_MODELS": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"}
    bad = subprocess.run(base + ["--mask", str(tmp_path / "empty.nrrd"), "--output", str(tmp_path / "o.nrrd"),
                                "--mask-output", str(tmp_path / "l.nrrd")], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "mask is empty" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.nrrd").exists() and not (tmp_path / "l.nrrd").exists()
    ok = subprocess.run(base + ["--mask", str(tmp_path / "mask.nrrd"), "--output", str(tmp_path / "o.nrrd"),
                               "--mask-output", str(tmp_path / "l.nrrd")], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    out, label = read_volume(tmp_path / "o.nrrd"), read_volume(tmp_path / "l.nrrd")
    far = distance_mm(ball_mask(vol).array, vol) > 4.0
    assert np.array_equal(out.array[far], read_volume(tmp_path / "t2.nrrd").array[far])
    assert np.array_equal(label.array > 0, ball_mask(vol).array > 0)


def test_augment_is_reproducible_and_seeded(lesion_model, tmp_path):
    from MedGANLogic.augment import augment

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i, shape in enumerate([(20, 56, 52), (18, 52, 48)]):
        vol = head(np.int16, shape=shape)
        write_volume(vol, images / f"sub-{i}.nrrd")
        write_volume(ball_mask(vol, centre=(9, 20, 20), radius=2), labels / f"sub-{i}.nrrd")
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        manifest = augment(images, 3, tmp_path / name, labels=labels, seed=seed, device="cpu")
        runs[name] = [(read_volume(tmp_path / name / m["image"]).array, read_volume(tmp_path / name / m["label"]).array)
                      for m in manifest]
        assert [m["source"] for m in manifest] == ["sub-0", "sub-1", "sub-0"]
        assert json.loads((tmp_path / name / "manifest.json").read_text())["seed"] == seed
    for (ia, la), (ib, lb) in zip(runs["a"], runs["b"]):
        assert np.array_equal(ia, ib) and np.array_equal(la, lb)
    assert any(not np.array_equal(la, lc) for (_, la), (_, lc) in zip(runs["a"], runs["c"]))
    old = int(ball_mask(head(shape=(20, 56, 52)), (9, 20, 20), 2).array.sum())
    for _, label in runs["a"]:
        assert label.max() == 1 and int(label.sum()) > old  # the labelled lesion and the new one


@pytest.mark.parametrize("lesion_type", LESION_TYPES)
def test_random_masks_follow_their_location_priors(lesion_type):
    from MedGANLogic.simulate.lesions import LesionPriors, random_lesion_mask

    shape = (24, 48, 48)
    zz, yy, xx = np.indices(shape)
    r = np.sqrt(((zz - 12) / 11.0) ** 2 + ((yy - 24) / 22.0) ** 2 + ((xx - 24) / 22.0) ** 2)
    priors = LesionPriors.from_masks(r < 1, r < 0.75, (2.0, 2.0, 2.0))
    a, da = random_lesion_mask(lesion_type, priors, np.random.default_rng(5))
    b, _ = random_lesion_mask(lesion_type, priors, np.random.default_rng(5))
    c, _ = random_lesion_mask(lesion_type, priors, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    lesion = a > 0
    assert lesion.sum() >= 8 and not (lesion & ~priors.brain).any()
    if lesion_type == "wmh":
        assert not (lesion & ~priors.white_matter).any()
    if lesion_type == "tumour":
        assert (a == 2).any() and (a == 1).any()  # a core inside oedema
    if lesion_type == "ischaemic":
        assert priors.depth_mm[lesion].min() <= 2.0  # the wedge reaches the brain's surface


@pytest.mark.slow
def test_inpainting_trainer_batches_are_deterministic_and_the_export_runs(model_dir):
    from MedGANLogic.train import load_config, train
    from MedGANLogic.train.data.lesion import InpaintingBatches

    bank = InpaintingBatches(3, volumes=2, batch_size=3, shape=(12, 112, 96), slices_per_volume=2, crop=32)
    a, b, c = bank.batch(5), bank.batch(5), bank.batch(6)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["image"], c["image"])
    assert a["image"].shape == (3, 1, 32, 32) and set(a["hidden"].unique().tolist()) <= {0.0, 1.0}
    assert (a["hidden"].sum(dim=(1, 2, 3)) > 0).all()  # every crop holds its lesion's hidden region
    outside = a["hidden"] == 0
    assert not torch.equal(a["image"][~outside], a["healthy"][~outside])  # the lesion is what differs
    assert bank.describe()["slices"] == len(bank) == 4
    config = load_config(recipe="brain-lesion-inpaint", overrides=[
        "steps=2", "batch_size=2", "device=cpu", "data.volumes=2", "data.shape=[12,112,96]", "data.crop=[32,32]",
        "generator.params.features=4", "generator.params.depth=2", "discriminator.channels=4",
        "discriminator.layers=2", "log.tensorboard=false"])
    summary = train(config, run_dir=None, export_dir=model_dir, progress=False)
    assert summary["step"] == 2 and summary["exported"]
    vol = head(np.float32)
    result = MedGANLogic.run("lesion", vol, model="brain-lesion-inpaint", device="cpu", mask=ball_mask(vol))
    assert result.provenance["model"] == "brain-lesion-inpaint" and result.volume.shape == vol.shape
