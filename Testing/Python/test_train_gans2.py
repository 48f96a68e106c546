"""Training the GANs II families (SRGAN, f-AnoGAN, adversarial segmentation) on the shared framework: losses
move the right way, stages switch when they should, export -> load gives the same output, and configs fail with
clear errors. Resume is bit-exact for every family: test_train.py. The tiny configs: conftest.tiny_train_config."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import exported_exactly, fixed_batch_losses, states_equal, train_card
from scipy import ndimage

from MedGANLogic.errors import InputError
from MedGANLogic.orientation import TRAINING_DIRECTION
from MedGANLogic.simulate import superres_pair
from MedGANLogic.train import trainer_class
from MedGANLogic.volume import Volume

T2W = {"modality": "MR", "contrast": "T2w", "normalization": {"kind": "none"}}


# --- SRGAN ---------------------------------------------------------------------------------------------------------
def test_sr_batches_are_aligned_crops_of_the_simulated_pairs(tiny_config):
    trainer = trainer_class("srgan")(tiny_config("srgan"), progress=False)
    batch = trainer.data.batch(3)
    x, y = batch["source"], batch["target"]
    assert x.shape == (4, 1, 8, 16) and y.shape == (4, 1, 16, 16)
    # thick slices = the mean of pairs of thin slices: each input row is the mean of two target rows
    inside = (x > -1.0).all(dim=-1).squeeze(1) & (y[:, 0, 0::2] > -1.0).all(-1) & (y[:, 0, 1::2] > -1.0).all(-1)
    pairs = 0.5 * (y[:, 0, 0::2] + y[:, 0, 1::2])
    assert torch.allclose(x[:, 0][inside], pairs[inside], atol=1e-5) and inside.any()
    assert all(torch.equal(a, b) for a, b in zip(batch.values(), trainer.data.batch(3).values()))


def test_init_grow_starts_a_deeper_sr_generator_as_its_init_model(tiny_config, tmp_path):
    """``init_grow``: an SRResNet with more residual blocks than its init model starts as that model (its blocks
    first, each added block the identity), so its output is exactly the model's until it trains; the card records
    the growth; without ``init_grow``, or with another width, the architectures must match."""
    from MedGANLogic.models import build_network
    from MedGANLogic.models.registry import load_network, read_weights

    first = trainer_class("srgan")(tiny_config("srgan"), progress=False)
    first.fit()
    base = first.export(tmp_path / "models", dtype=torch.float32)[0]
    deeper = copy.deepcopy(tiny_config("srgan", seed=3))
    deeper["generator"]["params"]["n_blocks"] = 3
    deeper.update(init={"G": str(base.folder)}, init_grow=True)
    grown = trainer_class("srgan")(deeper, progress=False)
    assert len(grown.net("G").blocks) == 3
    assert grown.init_record["G"]["grown"] == {"n_blocks": [1, 3]}
    assert grown.init_record["G"]["weights_sha256"] == base.sha256
    x = torch.randn(2, 1, 8, 16)
    with torch.no_grad():
        assert torch.equal(grown.net("G")(x), load_network(base, "cpu")(x))
    assert torch.count_nonzero(grown.net("G").blocks[2].conv1.weight) > 0  # the added blocks can learn
    grown.fit()
    assert torch.count_nonzero(grown.net("G").blocks[2].conv2.weight) > 0  # and they did
    assert grown.export(tmp_path / "grown")[0].data["training"]["init"]["G"]["grown"] == {"n_blocks": [1, 3]}

    with pytest.raises(InputError, match="init.G.*srresnet2d"):  # without init_grow: must match
        trainer_class("srgan")(dict(deeper, init_grow=False), progress=False)
    wider = copy.deepcopy(deeper)
    wider["generator"]["params"]["features"] = 8  # growth adds blocks, never channels
    with pytest.raises(InputError, match="init.G.*srresnet2d"):
        trainer_class("srgan")(wider, progress=False)
    with pytest.raises(InputError, match="init_grow"):
        tiny_config("srgan", init_grow="yes")
    shallow = build_network("srresnet2d", {"scale": [2, 1], "features": 4, "n_blocks": 1})
    with pytest.raises(ValueError, match="cannot grow"):  # a shallower network cannot take a deeper one's state
        shallow.grow_from(read_weights(grown.export(tmp_path / "again")[0]))


def test_init_grow_reads_a_parameter_left_out_as_the_architecture_default():
    """Growth compares the run's generator with the init model's with every parameter either leaves out at the
    architecture's default (SRResNet: 8 blocks, scale (2, 2)): 16 blocks named against none named is deeper, 8 named
    against none is not, and a width named differently from the default is another architecture."""
    from MedGANLogic.train.loop import GANTrainer

    def deeper(mine, theirs):
        return GANTrainer._grown_blocks({"name": "srresnet2d", "params": mine},
                                        {"name": "srresnet2d", "params": theirs})

    assert deeper({"n_blocks": 16, "scale": [2, 2]}, {}) == (8, 16) and deeper({}, {"n_blocks": 4}) == (4, 8)
    assert deeper({"n_blocks": 8}, {}) is None and deeper({"n_blocks": 16, "features": 64}, {}) is None
    assert GANTrainer._grown_blocks({"name": "unet2d", "params": {}}, {"name": "unet2d", "params": {}}) is None


def test_sr_noisy_input_degrades_the_noisy_source_and_keeps_the_clean_target(tiny_config):
    """data.noisy_input: the low-resolution input is simulated from each sample's noisy acquisition (source), the
    target is the clean one; data.noisy_target: the target is the noisy acquisition too; without them both come from
    the clean target; mismatched grids and task superres (which has no noisy source on the target's grid) are
    refused."""
    from MedGANLogic.train.data.sources import VolumeSet
    from MedGANLogic.train.data.superres import build_sr_batches

    rng = np.random.default_rng(3)
    clean = [np.tile(np.linspace(0.0, 1.0, 16, dtype=np.float32), (12, 16, 1)) + 0.5 for _ in range(2)]
    noisy = [c + rng.normal(0.0, 0.05, c.shape).astype(np.float32) for c in clean]
    volumes = (VolumeSet({"source": noisy, "target": clean}, {"source": ["n0", "n1"], "target": ["c0", "c1"]}), None)
    plain = build_sr_batches(tiny_config("srgan"), volumes)
    config = tiny_config("srgan", data__noisy_input=True)
    with_noise = build_sr_batches(config, volumes)
    assert all(np.array_equal(a, b) for a, b in zip(plain.high, with_noise.high))  # the same clean targets
    assert not any(np.array_equal(a, b) for a, b in zip(plain.low, with_noise.low))
    from MedGANLogic.train.data.slices import normalize_for_training, volume_slices

    spec = config["export"][0]["card"]["input"]["normalization"]
    low = superres_pair(Volume(noisy[0]), (2, 1, 1), "thick_slices")[0].array  # the tiny card's axis and factor
    assert np.allclose(with_noise.low[0], volume_slices(normalize_for_training(low, spec)[0], 1, 0), atol=1e-6)
    # data.noisy_target: the target is the noisy acquisition too, and the input its degraded copy
    both = build_sr_batches(tiny_config("srgan", data__noisy_target=True), volumes)
    assert all(np.array_equal(a, b) for a, b in zip(with_noise.low, both.low))
    high = superres_pair(Volume(noisy[0]), (2, 1, 1), "thick_slices")[1].array
    stats = normalize_for_training(low, spec)[1]
    assert np.allclose(both.high[0], volume_slices(normalize_for_training(high, spec, stats)[0], 1, 0), atol=1e-6)
    assert not any(np.array_equal(a, b) for a, b in zip(plain.high, both.high))
    bad = (VolumeSet({"source": [n[:, :8] for n in noisy], "target": clean}, {"source": [], "target": []}), None)
    with pytest.raises(InputError, match="one grid"):
        build_sr_batches(config, bad)
    with pytest.raises(InputError, match="noisy_target.*one grid"):
        build_sr_batches(tiny_config("srgan", data__noisy_target=True), bad)
    for key in ("noisy_input", "noisy_target"):
        with pytest.raises(InputError, match="task denoise"):
            build_sr_batches(tiny_config("srgan", **{f"data__{key}": True}, data__source="randomized",
                                         data__task="superres"), volumes)


def test_inplane_sr_pairs_come_from_acquisitions_of_drawn_resolution(tiny_config):
    """The in-plane recipes' data (mr-sr-x2-inplane-base and mr-sr-x2-inplane): each randomised sample's noise-free
    acquisition at its own drawn pixel size and slice thickness is the target, its k-space truncated copy the input;
    every target slice is exactly twice its input slice in-plane, and the samples differ in size (one grid for all
    would not)."""
    from MedGANLogic.train.data.superres import build_sr_batches

    config = _inplane_config(tiny_config, source="randomized", task="denoise",
                             options={"modality": "MR", "ordering": "any"}, samples={"train": 3, "val": 1},
                             shape=[12, 40, 40], spacing_mm=2.0,
                             ranges={"tissue_std": [0.0, 0.02], "slice_axes": [0], "inplane_mm": [2.0, 4.0],
                                     "slice_mm": [2.0, 6.0]})
    batches = build_sr_batches(config)
    sizes = set()
    for low, high in zip(batches.low, batches.high):
        assert low.shape[1] == 3 and high.shape[1] == 1 and low.shape[0] == high.shape[0]
        assert high.shape[2:] == (2 * low.shape[2], 2 * low.shape[3])
        sizes.add(high.shape[2:])
    assert len(sizes) > 1, sizes  # drawn pixel sizes: the acquisitions are not one grid
    batch = batches.batch(0)
    assert batch["source"].shape == (4, 3, 6, 6) and batch["target"].shape == (4, 1, 12, 12)
    assert all(torch.equal(a, b) for a, b in zip(batch.values(), build_sr_batches(config).batch(0).values()))


def _inplane_config(tiny_config, **data):
    mr = {"modality": "MR", "normalization": {"kind": "mr_percentile", "percentiles": [0.5, 99.5],
                                              "range": [-1, 1], "zero_based": True}}
    card = train_card("tiny-sr-inplane", "superres", input=mr, dims="2.5d", context_slices=1, slice_axis=0,
                      scale_factor=[1, 2, 2], output={"modality": "MR", "normalization": {"kind": "same_as_input"}})
    return tiny_config("srgan", data={"slice_axis": 0, "degrade": "kspace_truncate", "crop": [6, 6],
                                      "min_foreground": 0.0, **data},
                       export=[{"generator": "G", "card": card}],
                       generator={"name": "srresnet2d", "params": {"in_channels": 3, "scale": [2, 2], "features": 4,
                                                                   "n_blocks": 1}})


def test_sr_natural_images_take_their_share_of_the_crops(tiny_config):
    """data.natural_images: that share of the crops comes from skimage's photographs (four orientations each),
    degraded as the heads are (through-plane models: as coronal slices, rows along z); 0 leaves the batches exactly as
    without it; bad values are refused with the key named."""
    from MedGANLogic.train.data.natural import NATURAL_IMAGES, natural_images
    from MedGANLogic.train.data.sources import VolumeSet
    from MedGANLogic.train.data.superres import build_sr_batches

    images = natural_images()
    assert len(images) == 4 * len(NATURAL_IMAGES)
    assert all(i.dtype == np.float32 and i.shape[0] % 2 == 0 and i.shape[1] % 2 == 0 for i in images)
    assert all(0.0 <= i.min() and i.max() <= 1.0 for i in images)
    assert np.array_equal(images[1], images[0].T)
    flat = [np.full((4, 16, 16), 300.0, np.float32) for _ in range(2)]  # featureless heads: crops with no detail
    volumes = (VolumeSet({"source": flat, "target": flat}, {"source": ["a", "b"], "target": ["a", "b"]}), None)
    plain = build_sr_batches(_inplane_config(tiny_config), volumes)
    zero = build_sr_batches(_inplane_config(tiny_config, natural_images=0.0), volumes)
    assert all(torch.equal(plain.batch(s)[k], zero.batch(s)[k]) for s in range(3) for k in ("source", "target"))
    mixed = build_sr_batches(_inplane_config(tiny_config, natural_images=0.5), volumes)
    assert mixed.describe()["natural_slices"] == len(images)
    targets = torch.cat([mixed.batch(s)["target"] for s in range(50)])  # 200 crops
    detailed = float((targets.flatten(1).std(dim=1) > 1e-3).float().mean())
    assert 0.35 < detailed < 0.65, detailed  # about half the crops are photographs
    batch = mixed.batch(7)
    assert batch["source"].shape == (4, 3, 6, 6) and batch["target"].shape == (4, 1, 12, 12)
    assert all(torch.equal(batch[k], mixed.batch(7)[k]) for k in batch)  # a pure function of the step
    for bad in (1.0, -0.1, True, "some"):
        with pytest.raises(InputError, match="data.natural_images must be a fraction"):
            build_sr_batches(_inplane_config(tiny_config, natural_images=bad), volumes)
    # through-plane: each photograph is a coronal (or sagittal) slice, its rows along z, degraded as the heads are
    through = build_sr_batches(tiny_config("srgan", data__natural_images=0.5), volumes)
    assert through.describe()["natural_slices"] == len(images)
    batch = through.batch(3)
    assert batch["source"].shape == (4, 1, 8, 16) and batch["target"].shape == (4, 1, 16, 16)
    crops = torch.cat([through.batch(s)["target"] for s in range(50)])
    rows = crops[:, 0, 0::2] + crops[:, 0, 1::2]  # thick slices: each input row is the mean of two target rows
    inputs = torch.cat([through.batch(s)["source"] for s in range(50)])[:, 0]
    detailed = torch.tensor([len(torch.unique(c)) > 3 for c in crops])  # a flat head: its value and background
    assert 0.3 < float(detailed.float().mean()) < 0.7  # about half the crops are photographs
    assert torch.allclose(inputs[detailed], rows[detailed] / 2, atol=1e-5)


def test_degradations_keep_the_field_of_view():
    a = Volume(np.random.default_rng(0).random((9, 12, 10)).astype(np.float32))
    low, high = (v.array for v in superres_pair(a, (2, 1, 1), "thick_slices"))
    assert low.shape == (4, 12, 10) and high.shape == (8, 12, 10)
    assert np.allclose(low, 0.5 * (high[0::2] + high[1::2]), atol=1e-6)
    low, high = (v.array for v in superres_pair(a, (1, 2, 2), "kspace_truncate"))
    assert low.shape == (9, 6, 5) and high.shape == (9, 12, 10)
    assert np.isclose(low.mean(), high.mean(), rtol=0.05)
    with pytest.raises(InputError, match="one factor"):
        superres_pair(a, (1, 2, 4), "kspace_truncate")


def test_sr_pretraining_leaves_the_discriminator_alone_then_fine_tunes(tiny_config, tmp_path):
    trainer = trainer_class("srgan")(tiny_config("srgan", steps=6, optim__lr_g=1e-3), tmp_path / "run",
                                     progress=False)
    d0 = copy.deepcopy(trainer.net("D").state_dict())
    batch = trainer.data.sample_batch(4)
    before = torch.nn.functional.l1_loss(trainer.net("G")(batch["source"]), batch["target"]).item()
    logs = [trainer.train_step() for _ in range(4)]
    assert all(set(lg) == {"G", "G_pixel"} for lg in logs), "pre-training uses the pixel loss only"
    assert all(torch.equal(v, d0[k]) for k, v in trainer.net("D").state_dict().items())
    logs = trainer.train_step()
    assert {"D", "G_adv", "G_fm", "G_pixel"} <= set(logs) and all(np.isfinite(v) for v in logs.values())
    assert not all(torch.equal(v, d0[k]) for k, v in trainer.net("D").state_dict().items())
    after = torch.nn.functional.l1_loss(trainer.net("G")(batch["source"]), batch["target"]).item()
    assert after < before


def test_sr_losses_move_as_expected_on_a_fixed_batch(tiny_config):
    trainer = trainer_class("srgan")(tiny_config("srgan", loss__pretrain_steps=0, optim__lr_d=1e-3,
                                                 optim__lr_g=1e-3, loss__adversarial=0.05), progress=False)
    d, g = fixed_batch_losses(trainer, 12, 12)
    assert d[-1]["D"] < d[0]["D"]
    assert g[-1]["G_adv"] < g[0]["G_adv"] and g[-1]["G_pixel"] < g[0]["G_pixel"]


def test_sr_config_errors_name_the_key(tiny_config):
    with pytest.raises(InputError, match="generator.params.scale"):
        trainer_class("srgan")(tiny_config("srgan", generator__params__scale=[2, 2]), progress=False)
    with pytest.raises(InputError, match="slice axis"):
        trainer_class("srgan")(tiny_config("srgan", data__slice_axis=0), progress=False)
    with pytest.raises(InputError, match="data.crop"):
        trainer_class("srgan")(tiny_config("srgan", data__crop=None), progress=False)
    with pytest.raises(InputError, match="data.degrade"):
        trainer_class("srgan")(tiny_config("srgan", data__degrade="throughplane"), progress=False)


# --- f-AnoGAN ------------------------------------------------------------------------------------------------------
def test_fanogan_stages_wgan_gp_then_encoder_with_g_and_d_frozen(tiny_config, tmp_path):
    config = tiny_config("fanogan", steps=6, anomaly__gan_steps=3)
    trainer = trainer_class("fanogan")(config, tmp_path / "run", progress=False)
    e0 = copy.deepcopy(trainer.net("E").state_dict())
    logs = [trainer.train_step() for _ in range(3)]
    assert all({"D", "D_wdist", "D_gp", "G"} <= set(lg) for lg in logs)
    assert all(torch.equal(v, e0[k]) for k, v in trainer.net("E").state_dict().items()), "E waits for stage 2"
    g1, d1 = copy.deepcopy(trainer.net("G").state_dict()), copy.deepcopy(trainer.net("D").state_dict())
    logs = [trainer.train_step() for _ in range(3)]
    assert all(set(lg) == {"E", "E_image", "E_feature"} for lg in logs)
    assert all(np.isfinite(v) for lg in logs for v in lg.values())
    assert all(torch.equal(v, g1[k]) for k, v in trainer.net("G").state_dict().items()), "G must stay frozen"
    assert all(torch.equal(v, d1[k]) for k, v in trainer.net("D").state_dict().items()), "D must stay frozen"
    assert not all(torch.equal(v, e0[k]) for k, v in trainer.net("E").state_dict().items())


def test_fanogan_losses_move_as_expected_on_a_fixed_batch(tiny_config):
    trainer = trainer_class("fanogan")(tiny_config("fanogan", optim__lr_d=1e-3, optim__lr_g=1e-3,
                                                   optim__lr_e=1e-3), progress=False)
    d, g = fixed_batch_losses(trainer, 10, 10)
    assert d[-1]["D_wdist"] > d[0]["D_wdist"], "the critic should learn to separate real from generated slices"
    assert g[-1]["G"] < g[0]["G"]


def test_fanogan_encoder_learns_to_invert_a_frozen_generator(tiny_config):
    trainer = trainer_class("fanogan")(tiny_config("fanogan", optim__lr_e=3e-3), progress=False)
    torch.manual_seed(0)
    for m in trainer.net("G").modules():  # a generator whose output depends on z (He init), as a trained one does
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, a=0.2)
    trainer.step = trainer.gan_steps  # stage 2
    trainer.set_input(trainer.data.batch(0))
    e = [trainer.optimize_generator()["E"] for _ in range(40)]
    assert np.mean(e[-5:]) < 0.92 * e[0]


def test_fanogan_export_is_one_network_with_a_threshold(tiny_config, tmp_path, model_dir):
    from MedGANLogic import run
    from MedGANLogic.models.registry import get_model, load_network
    from MedGANLogic.volume import Volume

    trainer = trainer_class("fanogan")(tiny_config("fanogan"), progress=False)
    trainer.fit()
    x = torch.rand(2, 1, 32, 24) * 2 - 1
    with torch.no_grad():
        expected = trainer.net("G").eval()(trainer.net("E")(x))
    exact = trainer.export(tmp_path / "fp32", dtype=torch.float32)[0]
    assert exact.architecture == "fanogan2d"
    with torch.no_grad():
        assert torch.equal(load_network(exact, "cpu")(x), expected)
    thr = exact.extras["threshold"]
    assert np.isfinite(thr) and thr > 0 and "percentile" in exact.extras["threshold_selection"]["criterion"]
    exported = trainer.export(model_dir)[0]
    assert get_model("tiny-anomaly").sha256 == exported.sha256 and exported.extras["threshold"] > 0
    vol = Volume(np.random.default_rng(1).random((4, 32, 24)).astype(np.float32) * 100 + 50,
                 metadata={"modality": "MR", "contrast": "T2w"})
    result = run("anomaly", vol, model="tiny-anomaly", device="cpu")
    assert result.extras["threshold"] == exported.extras["threshold"] and np.isfinite(result.extras["case_score"])


def test_fanogan_threshold_maximises_validation_dice():
    from MedGANLogic.evaluation.metrics import dice
    from MedGANLogic.train.fanogan import best_dice_threshold

    rng = np.random.default_rng(0)
    masks = [np.zeros((10, 20, 20), bool) for _ in range(2)]
    masks[0][3:6, 5:9, 5:9] = True
    masks[1][6:8, 10:15, 2:6] = True
    maps = [np.where(m, 0.6, 0.2) + rng.random(m.shape) * 0.1 + 0.01 for m in masks]
    t, best = best_dice_threshold(maps, masks)
    assert 0.3 <= t < 0.6 and best == pytest.approx(1.0)
    assert dice(maps[0] > t, masks[0]) == 1.0


def test_fanogan_config_errors_name_the_key(tiny_config):
    with pytest.raises(InputError, match="anomaly.gan_steps"):
        trainer_class("fanogan")(tiny_config("fanogan", anomaly__gan_steps=8), progress=False)
    with pytest.raises(InputError, match="wgan-gp"):
        trainer_class("fanogan")(tiny_config("fanogan", loss__gan_mode="lsgan"), progress=False)


# --- anomaly detection by restoration (train/restore.py) -----------------------------------------------------------
def _head_slices(n: int = 4, size: int = 32) -> torch.Tensor:
    """Background -1 with a disc of tissue (0) in the middle, shape (n, 1, size, size)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    return torch.where(disc, 0.0, -1.0).expand(n, 1, size, size).clone()


def test_restore_corruptions_stay_in_the_head_and_follow_the_seed():
    from MedGANLogic.train.restore import coarse_noise, random_blobs

    x = _head_slices()
    background = x < -0.9
    torch.manual_seed(3)
    noisy = coarse_noise(x, (0.2, 0.3), [4])
    assert torch.equal(noisy[background], x[background]) and (noisy[~background] != x[~background]).any()
    d = noisy - x  # smooth: neighbouring pixels change together
    inside = ~background[..., 1:, :] & ~background[..., :-1, :]
    assert (d[..., 1:, :] - d[..., :-1, :])[inside].abs().mean() < 0.5 * d[~background].abs().mean()
    torch.manual_seed(3)
    blobs, mask = random_blobs(x, (2, 2), (2.0, 4.0))
    assert mask.shape == x.shape and float(mask.max()) > 0.99 and float(mask[background].max()) == 0.0
    assert torch.equal(blobs[background], x[background])
    changed = (blobs - x).abs() > 0.05
    assert changed.any() and bool((mask[changed] > 0.01).all()), "only pixels under a blob change"
    torch.manual_seed(3)
    again, mask2 = random_blobs(x, (2, 2), (2.0, 4.0))
    assert torch.equal(again, blobs) and torch.equal(mask2, mask)
    assert torch.equal(random_blobs(x, (0, 0), (2.0, 4.0))[0], x)


def test_restore_ring_blobs_have_a_bright_rim_around_a_dark_core():
    """anomaly.ring_fraction: a ring blob is bright (enhancing rim) at its edge and dark (necrotic core) inside; 0
    draws exactly the solid blobs of before (same seed, same corruption)."""
    from MedGANLogic.train.restore import RING_CORE_LEVEL, RING_RIM_LEVEL, random_blobs

    x = torch.full((1, 1, 64, 64), -1.0)
    x[..., 4:60, 4:60] = 0.2  # a flat head: what a blob changes shows alone
    away = torch.zeros(64, 64, dtype=torch.bool)
    away[7:57, 7:57] = True  # not beside the head's edge, which may cut a blob (core and all)
    torch.manual_seed(0)
    solid, _ = random_blobs(x, (1, 1), (10.0, 12.0))
    torch.manual_seed(0)
    assert torch.equal(random_blobs(x, (1, 1), (10.0, 12.0), ring_fraction=0.0)[0], solid)
    rims, cores = [], []
    for seed in range(6):
        torch.manual_seed(seed)
        ring, mask = random_blobs(x, (1, 1), (10.0, 12.0), ring_fraction=1.0)
        inner = torch.from_numpy(ndimage.binary_erosion(mask[0, 0].numpy() > 0.5, iterations=4))
        edge = (mask[0, 0] > 0.5) & ~torch.from_numpy(ndimage.binary_erosion(mask[0, 0].numpy() > 0.5)) & away
        change = ring[0, 0] - x[0, 0]
        rims.append(float(change[edge].median()))
        cores.append(float(change[inner].median()))
    assert RING_RIM_LEVEL[0] > 0.2 > RING_CORE_LEVEL[1]  # the flat head lies between rim and core levels
    assert all(r > 0 for r in rims) and all(c < 0 for c in cores), (rims, cores)


def test_restore_slab_blobs_are_ellipsoids_cut_by_every_slice():
    """2.5D: a blob is an ellipsoid through the slab: the middle channel gets what a 2D call with the same seed
    draws (and the loss's mask is its section there), neighbours far away get nothing, neighbours very near get
    nearly the same section; a slab without the channels' distance is refused."""
    from MedGANLogic.train.restore import random_blobs

    x = torch.full((1, 1, 48, 48), -1.0)
    x[..., 4:44, 4:44] = 0.2
    slab = x.repeat(1, 3, 1, 1)
    for seed in range(4):
        torch.manual_seed(seed)
        flat, flat_mask = random_blobs(x, (1, 1), (4.0, 8.0))
        torch.manual_seed(seed)
        far, far_mask = random_blobs(slab, (1, 1), (4.0, 8.0), step_px=torch.tensor([1000.0]))
        assert torch.equal(far[:, 1:2], flat) and torch.equal(far_mask, flat_mask) and far_mask.shape == x.shape
        assert torch.equal(far[:, 0], x[:, 0]) and torch.equal(far[:, 2], x[:, 0])
        torch.manual_seed(seed)
        near, _ = random_blobs(slab, (1, 1), (4.0, 8.0), step_px=torch.tensor([1e-3]))
        assert (near[:, 0] - near[:, 1]).abs().max() < 0.05 and (near[:, 2] - near[:, 1]).abs().max() < 0.05
        assert (near[:, 1] - x[:, 0]).abs().max() > 0.1  # the blob is there
    with pytest.raises(ValueError, match="step_px"):
        random_blobs(slab, (1, 1), (4.0, 8.0))


def test_thick_slabs_average_thin_slices_around_the_middle():
    from MedGANLogic.train.restore import slab_depth, thick_slabs

    ramp = torch.arange(9.0).view(1, 9, 1, 1).expand(6, 9, 2, 2)  # thin slice k holds k; the middle is 4
    torch.manual_seed(0)
    out, steps = thick_slabs(ramp, [1, 2, 3], 1)
    assert out.shape == (6, 3, 2, 2) and set(steps.tolist()) <= {1.0, 2.0, 3.0}
    expected = {1: [3.0, 4.0, 5.0], 2: [2.5, 4.5, 6.5], 3: [1.0, 4.0, 7.0]}  # f slices, f apart
    for i in range(6):
        assert out[i, :, 0, 0].tolist() == expected[int(steps[i])]
    assert slab_depth([1, 2, 3], 1) == 4 and slab_depth([1], 0) == 0
    with pytest.raises(ValueError, match="cannot give"):
        thick_slabs(ramp[:, 2:7], [3], 1)


def test_restore_2p5d_restores_the_middle_of_thick_slabs_and_exports_a_2p5d_model(tiny_config, tmp_path):
    """A 2.5d card: the data carry data.context_slices thin neighbours, the trainer makes slabs of
    anomaly.slab_factors thin slices, restores their clean middle (one channel), and the export runs in the
    engine with its neighbours; configs that cannot work are refused naming the key."""
    from MedGANLogic import run

    def config(**over):
        keys = {"generator__params__in_channels": 3, "data__context_slices": 4, "anomaly__slab_factors": [1, 3]}
        cfg = tiny_config("restore", **{**keys, **over})
        cfg["export"][0]["card"].update({"dims": "2.5d", "context_slices": 1, "id": "tiny-restore-slab"})
        return cfg

    trainer = trainer_class("restore")(config(), progress=False)
    batch = trainer.data.batch(0)
    assert batch["source"].shape[1] == 9  # the middle thin slice and 4 on each side
    torch.manual_seed(0)
    trainer.set_input(batch)
    assert trainer.real_A.shape[1] == 3 and trainer.real_B.shape[1] == 1
    thin = batch["source"][:, 4:5]
    thick = batch["source"][:, 3:6].mean(dim=1, keepdim=True)
    for i in range(len(thin)):  # the target is the clean middle slab, one or three thin slices thick
        assert torch.allclose(trainer.real_B[i], thin[i]) or torch.allclose(trainer.real_B[i], thick[i], atol=1e-6)
    trainer.fit()
    card = trainer.export(tmp_path, dtype=torch.float32)[0]
    assert card.dims == "2.5d" and card.context_slices == 1
    vol = Volume(np.random.default_rng(1).random((6, 32, 24)).astype(np.float32) * 100 + 50,
                 metadata={"modality": "MR", "contrast": "T2w"})
    result = run("anomaly", vol, model=str(card.folder), device="cpu")
    assert result.outputs["anomaly_map"].shape == vol.shape
    assert np.isfinite(result.outputs["anomaly_map"].array).all()
    with pytest.raises(InputError, match="in_channels"):
        trainer_class("restore")(config(generator__params__in_channels=1), progress=False)
    with pytest.raises(InputError, match="data.context_slices"):
        trainer_class("restore")(config(data__context_slices=2), progress=False)
    with pytest.raises(InputError, match="anomaly.twins"):
        trainer_class("restore")(config(anomaly__twins=True), progress=False)
    with pytest.raises(InputError, match="anomaly.slab_factors"):
        trainer_class("restore")(config(anomaly__slab_factors=[0]), progress=False)
    with pytest.raises(InputError, match="data.context_slices"):  # only the restoration makes slabs from it
        trainer_class("pix2pix")(tiny_config("pix2pix", data__context_slices=2), progress=False)


def test_restore_twins_restore_the_healthy_twin_and_weigh_the_lesions(tiny_config):
    """anomaly.twins: the target is the batch's healthy twin (not the corrupted slice's own clean version), the
    input is made from the lesioned slice, and where the twins differ counts as blob in the loss; off, the
    batch's source is both."""
    trainer = trainer_class("restore")(tiny_config("restore", anomaly__twins=True), progress=False)
    source = _head_slices(2)
    target = source.clone()
    target[..., 10:14, 10:14] = -0.5  # the healthy twin differs from the lesioned slice in one square
    torch.manual_seed(0)
    trainer.set_input({"source": source, "target": target})
    assert torch.equal(trainer.real_B, target)
    assert bool((trainer.blobs[..., 10:14, 10:14] == 1.0).all())
    off = trainer_class("restore")(tiny_config("restore"), progress=False)
    torch.manual_seed(0)
    off.set_input({"source": source, "target": target})
    assert torch.equal(off.real_B, source) and torch.equal(off.real_A, trainer.real_A)
    with pytest.raises(InputError, match="anomaly.twins"):
        trainer_class("restore")(tiny_config("restore", anomaly__twins="yes"), progress=False)


def test_restore_learns_to_remove_blobs_and_its_gan_terms_move(tiny_config):
    trainer = trainer_class("restore")(tiny_config("restore", optim__lr_d=1e-3, optim__lr_g=2e-3), progress=False)
    d, g = fixed_batch_losses(trainer, 10, 30)
    assert {"G_pixel", "G_adv", "G_blob"} <= set(g[0]) and "D" in d[0]
    assert d[-1]["D"] < d[0]["D"], "the PatchGAN should learn to tell restorations from healthy slices"
    assert np.mean([lg["G_blob"] for lg in g[-5:]]) < 0.8 * g[0]["G_blob"], "blobs should be pulled back"


def test_restore_bright_term_marks_the_brightest_head_pixels_and_enters_the_loss(tiny_config):
    from MedGANLogic.train.restore import bright_pixels

    x = _head_slices(2)
    x[0, 0, 16, 8:24] = 0.9  # a bright vessel across the first slice's head: 16 of its ~450 head pixels
    keep = bright_pixels(x, 97.0)
    assert torch.equal(keep[0, 0] > 0, x[0, 0] > 0.5) and float(keep[x < -0.9].max()) == 0.0
    assert torch.equal(keep[1], (x[1] > -0.9).to(x.dtype))  # a flat head: every pixel ties at the top
    assert not bright_pixels(torch.full((1, 1, 8, 8), -1.0), 99.0).any()  # no head, nothing
    trainer = trainer_class("restore")(tiny_config("restore", anomaly__bright_weight=2.0), progress=False)
    logs = trainer.train_step()
    assert "G_bright" in logs and np.isfinite(logs["G_bright"])
    assert "G_bright" not in trainer_class("restore")(tiny_config("restore"), progress=False).train_step()
    for key, bad in (("bright_weight", -1.0), ("bright_percentile", 101.0), ("bright_percentile", "high")):
        with pytest.raises(InputError, match=f"anomaly.{key}"):
            trainer_class("restore")(tiny_config("restore", **{f"anomaly__{key}": bad}), progress=False)


def test_restore_without_adversarial_term_is_the_plain_denoising_autoencoder(tiny_config):
    trainer = trainer_class("restore")(tiny_config("restore", loss__adversarial=0.0), progress=False)
    assert "D" not in trainer.nets
    logs = trainer.train_step()
    assert "G_adv" not in logs and "D" not in logs and np.isfinite(logs["G"])


def test_restore_export_is_an_anomaly_model_with_a_threshold(tiny_config, tmp_path, model_dir):
    from MedGANLogic import run

    trainer = trainer_class("restore")(tiny_config("restore"), progress=False)
    trainer.fit()
    x = torch.rand(2, 1, 32, 24) * 2 - 1
    exact, _ = exported_exactly(trainer, tmp_path / "fp32", x)
    assert exact.task == "anomaly" and exact.architecture == "unet2d"
    assert np.isfinite(exact.extras["threshold"]) and "percentile" in exact.extras["threshold_selection"]["criterion"]
    exported = trainer.export(model_dir)[0]  # float16, chosen again with the weights it ships
    vol = Volume(np.random.default_rng(1).random((4, 32, 24)).astype(np.float32) * 100 + 50,
                 metadata={"modality": "MR", "contrast": "T2w"})
    result = run("anomaly", vol, model="tiny-restore", device="cpu")
    assert result.extras["threshold"] == exported.extras["threshold"]
    assert result.outputs["anomaly_map"].shape == vol.shape


def test_restore_config_errors_name_the_key(tiny_config):
    with pytest.raises(InputError, match="anomaly.noise_sigma"):
        trainer_class("restore")(tiny_config("restore", anomaly__noise_sigma=[0.5, 0.1]), progress=False)
    with pytest.raises(InputError, match="anomaly.noise_scales"):
        trainer_class("restore")(tiny_config("restore", anomaly__noise_scales=[0]), progress=False)


# --- adversarial segmentation ---------------------------------------------------------------------------------------
def test_segmentation_losses_move_and_the_ablation_has_no_discriminator(tiny_config):
    trainer = trainer_class("segmentation")(tiny_config("segmentation", optim__lr_d=1e-3), progress=False)
    d, s = fixed_batch_losses(trainer, 10, 15)
    assert set(torch.unique(trainer.mask).tolist()) == {0.0, 1.0}  # the batch's label map, as set_input made it
    assert d[-1]["D"] < d[0]["D"]
    assert s[-1]["S_dicece"] < s[0]["S_dicece"] and s[-1]["G_adv"] < s[0]["G_adv"]

    plain = trainer_class("segmentation")(tiny_config("segmentation", loss__adversarial=0.0), progress=False)
    adv = trainer_class("segmentation")(tiny_config("segmentation"), progress=False)
    assert set(plain.nets) == {"G"} and set(adv.nets) == {"G", "D"}
    assert states_equal(plain.net("G"), adv.net("G")), "ablation and model start from the same weights"
    assert all(torch.equal(a, b) for a, b in zip(plain.data.batch(5).values(), adv.data.batch(5).values()))
    logs = plain.train_step()
    assert set(logs) == {"G", "S_dicece"}


def test_segmentation_config_errors_name_the_key(tiny_config):
    bad = {"modality": "mask", "normalization": {"kind": "same_as_input"}}
    with pytest.raises(InputError, match="output.normalization"):
        trainer_class("segmentation")(tiny_config("segmentation", export=[
            {"generator": "G", "card": train_card("x-seg", "segment", input=T2W, output=bad)}]), progress=False)
    with pytest.raises(InputError, match="loss.dice"):
        trainer_class("segmentation")(tiny_config("segmentation", loss__dice=0, loss__cross_entropy=0),
                                      progress=False)


# --- SRGAN and segmentation: export --------------------------------------------------------------------------------
@pytest.mark.parametrize("family,task", [("srgan", "superres"), ("segmentation", "segment")])
def test_export_load_gives_the_same_output(tiny_config, tmp_path, model_dir, family, task):
    from MedGANLogic import run
    from MedGANLogic.models.registry import load_network
    from MedGANLogic.volume import Volume

    trainer = trainer_class(family)(tiny_config(family, steps=4), progress=False)
    trainer.fit()
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (3, 1, 16, 32)).astype(np.float32))
    exported_exactly(trainer, tmp_path / "fp32", x)
    half = trainer.export(model_dir)[0]
    assert half.data["training"]["family"] == family and half.data["weights"]["dtype"] == "float16"
    # through the engine: slices along the card's axis, normalisation "none" -> the network's own output
    vol = Volume(np.moveaxis(x[:, 0].numpy(), 0, half.slice_axis).copy(), direction=TRAINING_DIRECTION,
                 metadata={"modality": "MR", "contrast": "T2w"})  # the training orientation: no reorientation
    # the network's own output: a super-resolved one left as the model made it (consistency keeps the input's data)
    result = run(task, vol, model=half.id, device="cpu", **({"consistency": False} if task == "superres" else {}))
    with torch.no_grad():
        ref = load_network(half, "cpu")(x)
    if task == "superres":
        got = np.moveaxis(result.volume.array, half.slice_axis, 0)
        assert np.allclose(got, ref[:, 0].clamp(-1, 1).numpy(), atol=1e-5)
    else:
        got = np.moveaxis(result.volume.array, half.slice_axis, 0)
        assert np.array_equal(got, ref.argmax(1).numpy().astype(np.uint8))


def test_sr_export_names_the_acquisition_its_model_inverts(tiny_config, tmp_path):
    """The exported card's extras.degradation is the data.degrade it was trained on (the engine keeps the input's
    measured data by it, tasks/superres.py), unless the recipe's card names one itself."""
    trainer = trainer_class("srgan")(tiny_config("srgan"), progress=False)
    card = trainer.export(tmp_path / "a", dtype=torch.float32)[0]
    assert card.extras["degradation"] == "thick_slices" == trainer.config["data"]["degrade"]
    config = tiny_config("srgan")
    config["export"][0]["card"]["extras"] = {"degradation": "kspace_truncate"}
    card = trainer_class("srgan")(config, progress=False).export(tmp_path / "b", dtype=torch.float32)[0]
    assert card.extras["degradation"] == "kspace_truncate"
