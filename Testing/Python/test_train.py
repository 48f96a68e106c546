"""The training framework: every family trains, losses move the right way, resume is bit-exact, export loads,
Ctrl-C saves, configs and data folders fail with clear errors."""

from __future__ import annotations

import argparse
import copy
import csv
import os
import signal

import numpy as np
import pytest
import torch
from conftest import exported_exactly, fixed_batch_losses, states_equal, train_card

from MedGANLogic.errors import InputError
from MedGANLogic.orientation import TRAINING_DIRECTION
from MedGANLogic.train import trainer_class
from MedGANLogic.train.config import list_recipes, load_config, resolve_config


@pytest.mark.parametrize("family", ["pix2pix", "cyclegan", "ldct"])
def test_losses_move_as_expected_on_a_fixed_batch(tiny_config, family):
    """D alone learns to separate real from fake; then G alone learns to fool the frozen D and fit its task."""
    trainer = trainer_class(family)(tiny_config(family, optim__lr_d=1e-3, optim__lr_g=1e-3), progress=False)
    d_losses, g_losses = fixed_batch_losses(trainer, 12, 12)
    d_key = "D" if family != "cyclegan" else "D_B"
    first, last = d_losses[0][d_key], d_losses[-1][d_key]
    assert all(np.isfinite(v) for logs in d_losses for v in logs.values())
    assert last < first, f"discriminator loss did not fall: {first} -> {last}"

    task = {"pix2pix": "G_pixel", "ldct": "G_pixel", "cyclegan": "G_cycle"}[family]
    assert all(np.isfinite(v) for logs in g_losses for v in logs.values())
    assert g_losses[-1]["G_adv"] < g_losses[0]["G_adv"], "generator did not learn to fool the frozen discriminator"
    assert g_losses[-1][task] < 0.9 * g_losses[0][task], f"{task} did not fall"


def test_full_alternating_training_improves_the_translation(tiny_config, tmp_path):
    config = tiny_config("pix2pix", steps=40, optim__lr_g=1e-3)
    trainer = trainer_class("pix2pix")(config, tmp_path / "run", progress=False)
    batch = trainer.data.sample_batch(4)
    before = torch.nn.functional.l1_loss(trainer.net("G").eval()(batch["source"]), batch["target"]).item()
    trainer.net("G").train()
    summary = trainer.fit()
    after = torch.nn.functional.l1_loss(trainer.net("G").eval()(batch["source"]), batch["target"]).item()
    assert summary["step"] == 40 and not summary["interrupted"]
    assert after < 0.7 * before
    rows = list(csv.DictReader(open(tmp_path / "run" / "losses.csv")))
    assert [int(r["step"]) for r in rows] == list(range(2, 41, 2))
    assert {"D", "G", "G_adv", "G_pixel", "lr"} <= set(rows[0])
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())[-1] == "step_000040.png"
    assert (tmp_path / "run" / "config.yaml").is_file()


RESUME_OVERRIDES = {"ldct": {"loss__critic_steps": 2}, "fanogan": {"anomaly__gan_steps": 6}}


@pytest.mark.parametrize("family", ["pix2pix", "cyclegan", "ldct", "srgan", "fanogan", "segmentation", "restore"])
def test_resume_continues_bit_exactly(tiny_config, tmp_path, family):
    config = tiny_config(family, **RESUME_OVERRIDES.get(family, {}))
    cls = trainer_class(family)
    straight = cls(config, tmp_path / "a", progress=False)
    straight.fit()
    first = cls(config, tmp_path / "b", progress=False)
    first.fit(steps=4)
    del first
    resumed = cls.from_checkpoint(tmp_path / "b" / "checkpoints" / "step_000004.safetensors", tmp_path / "b",
                                  progress=False)
    assert resumed.step == 4
    resumed.fit()
    for name in straight.nets:
        assert states_equal(straight.nets[name], resumed.nets[name]), f"{name} differs after resume"
    for name in straight.optimizers:
        sa, sb = straight.optimizers[name].state_dict()["state"], resumed.optimizers[name].state_dict()["state"]
        assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    if family == "cyclegan":
        assert torch.equal(straight.pool_A.state_tensor(), resumed.pool_A.state_tensor())


def test_restart_at_reproduces_a_run_extended_by_resume(tiny_config, tmp_path):
    """optim.restart_at N: one run gives what a run planned for N steps and then extended to M gives (medgan train
    --resume RUN --steps M): its learning rate decays to 0 at N, then starts again from the base rate."""
    config = tiny_config("ldct", **RESUME_OVERRIDES["ldct"])
    config["steps"] = 8
    cls = trainer_class("ldct")
    planned = cls(dict(config, steps=4), tmp_path / "b", progress=False)
    planned.fit()
    del planned
    extended = cls.from_checkpoint(tmp_path / "b" / "checkpoints" / "step_000004.safetensors", tmp_path / "b",
                                   steps=8, progress=False)
    extended.fit()
    straight = cls(dict(config, optim=dict(config["optim"], restart_at=4)), tmp_path / "a", progress=False)
    assert [straight.lr_factor(k) for k in range(8)] == [1.0, 1.0, 1.0, 0.5, 1.0, 0.75, 0.5, 0.25]
    straight.fit()
    for name in straight.nets:
        assert states_equal(straight.nets[name], extended.nets[name]), f"{name} differs from the extended run"
    plain = cls(config, tmp_path / "c", progress=False)
    assert [plain.lr_factor(k) for k in range(8)] != [straight.lr_factor(k) for k in range(8)]
    from MedGANLogic.train.config import validate_config

    validate_config(straight.config)
    with pytest.raises(InputError, match="restart_at"):
        validate_config(dict(straight.config, optim=dict(config["optim"], restart_at=8)))  # not before the end


def test_export_load_gives_the_same_output(tiny_config, tmp_path, model_dir):
    from MedGANLogic import run
    from MedGANLogic.models.registry import get_model, load_network
    from MedGANLogic.volume import Volume

    trainer = trainer_class("pix2pix")(tiny_config("pix2pix"), progress=False)
    trainer.fit()
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2, 1, 32, 40)).astype(np.float32))
    _, expected = exported_exactly(trainer, tmp_path / "fp32", x)
    card = trainer.export(model_dir)[0]  # fp16, into the user model folder: usable by id at once
    assert card.data["weights"]["dtype"] == "float16"
    assert card.data["training"]["steps"] == 8 and card.data["architecture"]["name"] == "unet2d"
    assert get_model("tiny-pix2pix").sha256 == card.sha256
    with torch.no_grad():
        half = load_network(card, "cpu")(x)
    assert torch.allclose(half, expected, atol=2e-2)
    # in the orientation the models are trained in, so that the engine's slices are the network's input as given
    vol = Volume(x[:, 0].numpy().copy(), spacing=(1.0, 1.0, 2.0), direction=TRAINING_DIRECTION,
                 metadata={"modality": "MR", "contrast": "T1w"})
    result = run("synthesize", vol, model="tiny-pix2pix", device="cpu")
    assert np.allclose(result.volume.array, half[:, 0].numpy(), atol=1e-5)


def test_ctrl_c_saves_a_checkpoint_and_stops(tiny_config, tmp_path):
    cls = trainer_class("pix2pix")
    trainer = cls(tiny_config("pix2pix", steps=20), tmp_path / "run", progress=False)
    original = trainer.train_step

    def step_then_interrupt():
        logs = original()
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return logs

    trainer.train_step = step_then_interrupt
    summary = trainer.fit()
    assert summary["interrupted"] and summary["step"] == 3
    assert (tmp_path / "run" / "checkpoints" / "step_000003.safetensors").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_config_errors_name_the_key(tiny_config):
    with pytest.raises(InputError, match="loss.gan_mode"):
        tiny_config("pix2pix", loss__gan_mode="hinge2")
    with pytest.raises(InputError, match="Unknown recipe"):
        load_config(recipe="no-such-recipe")
    with pytest.raises(InputError, match="loss.vgg_weights"):
        tiny_config("ldct", loss__vgg=0.1)
    with pytest.raises(InputError, match="WGAN-GP"):
        trainer_class("ldct")(tiny_config("ldct", discriminator__norm="batch"), progress=False)
    with pytest.raises(InputError, match="Unknown training family"):
        resolve_config({"family": "stylegan"})


def test_a_config_extends_another_and_states_only_what_it_changes(tmp_path):
    """``extends``: mappings merge key by key, lists are replaced, export entries merge one by one, the name is the
    child's own; a bundled recipe can be the base, and the staged recipes resolve to their full configs."""
    import yaml

    base = {"name": "stage1", "family": "pix2pix", "seed": 3, "steps": 100,
            "data": {"source": "phantom", "augment": {"flip": True, "shift": 4}, "crop": [32, 32]},
            "optim": {"lr_g": 1.0e-4, "restart_at": 50},
            "export": [{"generator": "G", "card": {"id": "one", "version": "1.0.0", "task": "denoise", "dims": "2d",
                                                    "input": {"modality": "MR", "spacing_mm": [1, 3]},
                                                    "output": {"modality": "MR"}}}]}
    (tmp_path / "stage1.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "stage2.yaml").write_text(
        "extends: stage1.yaml\nsteps: 40\ninit: {G: some-model}\ndata: {augment: {shift: 0}, crop: [16, 24]}\n"
        "optim: {restart_at: null}\nexport:\n  - card: {id: two, input: {spacing_mm: [1, 5]}}\n")
    from MedGANLogic.train.config import read_config_file

    got = read_config_file(tmp_path / "stage2.yaml")
    assert "extends" not in got and "name" not in got  # the base's name is not inherited
    assert got["seed"] == 3 and got["steps"] == 40 and got["init"] == {"G": "some-model"}
    assert got["data"] == {"source": "phantom", "augment": {"flip": True, "shift": 0}, "crop": [16, 24]}
    assert got["optim"] == {"lr_g": 1.0e-4, "restart_at": None}
    card = {**base["export"][0]["card"], "id": "two", "input": {"modality": "MR", "spacing_mm": [1, 5]}}
    assert got["export"] == [{"generator": "G", "card": card}]
    assert read_config_file(tmp_path / "stage1.yaml") == base  # the base file is read, not changed
    assert load_config(path=tmp_path / "stage2.yaml")["name"] == "run"  # DEFAULTS, as any unnamed config

    # a bundled recipe as the base, by name; a stage of a stage
    (tmp_path / "mine.yaml").write_text("extends: mr-sr-x2-inplane-photos\nname: mine\nsteps: 10\n")
    mine, shipped = load_config(path=tmp_path / "mine.yaml"), load_config(recipe="mr-sr-x2-inplane-photos")
    assert mine["steps"] == 10 and {**mine, "steps": shipped["steps"], "name": shipped["name"]} == shipped
    assert shipped["generator"] == load_config(recipe="mr-sr-x2-inplane-base")["generator"]
    assert shipped["data"]["ranges"]["inplane_mm"] == [1.0, 4.5] and shipped["data"]["natural_images"] == 0.25
    assert shipped["init"] == {"G": "mr-sr-x2-inplane-coarse"} and shipped["loss"]["pretrain_steps"] == 6000
    deeper = load_config(recipe="mr-sr-x2-inplane")  # stage 5 of stage 4 of stage 3: 16 blocks, grown on init
    assert deeper["generator"]["params"] == {**shipped["generator"]["params"], "n_blocks": 16}
    assert deeper["init_grow"] is True and deeper["data"] == shipped["data"]

    for text, match in (("extends: stage3.yaml\n", "names no file"),
                        ("extends: loop.yaml\n", "makes a loop"),
                        ("extends: 3\n", "must name a bundled recipe"),
                        ("extends: no-such-recipe\n", "Unknown recipe"),
                        ("extends: stage1.yaml\nexport: [{card: {id: a}}, {card: {id: b}}]\n", "entry by entry")):
        (tmp_path / "loop.yaml").write_text(text)
        with pytest.raises(InputError, match=match):
            read_config_file(tmp_path / "loop.yaml")


def test_noisy_photographs_join_mr_denoising_pairs():
    """data.natural_noisy_copies: each photograph (four orientations) as N (Rician-noisy, clean) one-slice pairs after
    the heads, at SNRs drawn in ranges.snr, the same bytes every time; 0 changes nothing; bad values and other
    tasks are refused naming the key."""
    from MedGANLogic.train.data.natural import natural_images
    from MedGANLogic.train.data.slices import with_noisy_photographs
    from MedGANLogic.train.data.sources import VolumeSet

    heads = [np.full((3, 10, 12), 200.0, np.float32), np.full((3, 10, 12), 300.0, np.float32)]
    vset = VolumeSet({"source": list(heads), "target": list(heads)}, {"source": ["a", "b"], "target": ["a", "b"]})
    data = {"task": "denoise", "options": {"modality": "MR"}, "ranges": {"snr": [5.0, 40.0]}}
    assert with_noisy_photographs(vset, {**data, "natural_noisy_copies": 0}, True) is vset
    out = with_noisy_photographs(vset, {**data, "natural_noisy_copies": 2}, True)
    photos = natural_images()
    src, tgt = out.volumes["source"], out.volumes["target"]
    assert len(src) == len(tgt) == 2 + 2 * len(photos) and src[0] is heads[0] and tgt[1] is heads[1]
    assert out.names["source"][2:4] == ["photo0-0", "photo0-1"] and out.names["target"] == out.names["source"]
    assert np.array_equal(tgt[2], tgt[3]) and not np.array_equal(src[2], src[3])  # one photograph, two noise draws
    assert np.allclose(tgt[2][0], photos[0] * 1000.0) and src[2].shape == (1, *photos[0].shape)
    snrs = []
    for s_, t_ in zip(src[2:], tgt[2:]):
        bright = t_ > 0.5 * t_.max()  # Rician noise is about Gaussian where the signal is high
        signal = float(np.mean(t_[t_ > 0.1 * t_.max()]))
        snrs.append(signal / float(np.std((s_ - t_)[bright])))
    assert 5.0 * 0.8 < min(snrs) and max(snrs) < 40.0 * 1.25 and max(snrs) / min(snrs) > 2.0
    again = with_noisy_photographs(vset, {**data, "natural_noisy_copies": 2}, True)
    assert all(np.array_equal(a, b) for a, b in zip(src, again.volumes["source"]))
    for bad in (-1, True, 1.5, "some"):
        with pytest.raises(InputError, match="natural_noisy_copies must be a whole number"):
            with_noisy_photographs(vset, {**data, "natural_noisy_copies": bad}, True)
    for other in ({"task": "synthesize"}, {"options": {"modality": "PET"}}):
        with pytest.raises(InputError, match="serves denoising"):
            with_noisy_photographs(vset, {**data, **other, "natural_noisy_copies": 1}, True)
    with pytest.raises(InputError, match="natural_noisy_copies"):
        with_noisy_photographs(vset, {**data, "natural_images": 0.25}, True)


def test_noisy_photographs_join_ct_denoising_pairs_scanned_as_the_heads(monkeypatch):
    """data.natural_noisy_copies with modality CT: each photograph becomes a CT slice inside an ellipse of air,
    scanned at low and full dose in the projection domain; noise from data.ranges' CT ranges; the same bytes with
    one worker or two."""
    from MedGANLogic.train.data import natural
    from MedGANLogic.train.data.slices import with_noisy_photographs
    from MedGANLogic.train.data.sources import VolumeSet

    yy, xx = np.mgrid[:96, :96]
    photos = ((0.5 + 0.4 * np.sin(yy / 5.0) * np.cos(xx / 7.0)).astype(np.float32),
              ((yy // 12 + xx // 12) % 2 * 0.8 + 0.1).astype(np.float32))
    monkeypatch.setattr(natural, "_photographs", lambda: photos)
    head = [np.full((2, 40, 40), 40.0, np.float32)]
    vset = VolumeSet({"source": list(head), "target": list(head)}, {"source": ["h"], "target": ["h"]})
    data = {"task": "denoise", "options": {"modality": "CT"},
            "ranges": {"ct_inplane_mm": [1.5, 2.0], "ct_noise_hu": [20.0, 60.0], "ct_dose_fraction": [0.2, 0.3]}}
    monkeypatch.setenv("MEDGAN_SAMPLE_WORKERS", "1")
    out = with_noisy_photographs(vset, {**data, "natural_noisy_copies": 2}, True)
    src, tgt = out.volumes["source"], out.volumes["target"]
    assert len(src) == 1 + 2 * 2 and out.names["source"][1:] == ["photo0-0", "photo0-1", "photo1-0", "photo1-1"]
    for low, full in zip(src[1:], tgt[1:]):
        assert low.shape == full.shape and low.shape[0] == 1 and low.dtype == np.float32
        side = low.shape[1]
        assert low.shape[2] == side and side <= 96
        assert np.all(full[0, 0, :] < -900) and np.all(full[0, side // 2 - 2:side // 2 + 2, side // 2] > -950)
        body = full[0] > -500
        noise = float(np.std((low - full)[0][body]))
        assert 5.0 < noise < 300.0  # the low-dose image is noisier than its full-dose target
        assert float(np.std(full[0][body])) > 20.0  # the photograph's structure is there
    assert not np.array_equal(src[1], src[2])  # two copies of one photograph: another draw
    monkeypatch.setenv("MEDGAN_SAMPLE_WORKERS", "2")
    again = with_noisy_photographs(vset, {**data, "natural_noisy_copies": 2}, True)
    assert all(np.array_equal(a, b) for a, b in zip(src + tgt, again.volumes["source"] + again.volumes["target"]))
    # data.ranges.ct_image_noise: the photograph slices too get image-domain noise (here every one), targets unchanged
    textured = with_noisy_photographs(vset, {**data, "ranges": {**data["ranges"], "ct_image_noise": 1.0},
                                             "natural_noisy_copies": 2}, True)
    for low, full, plain in zip(textured.volumes["source"][1:], textured.volumes["target"][1:], src[1:]):
        assert not np.array_equal(low, plain) and 20.0 - 1e-3 <= float(np.std(low - full)) <= 60.0 + 1e-3
    assert all(np.array_equal(a, b) for a, b in zip(textured.volumes["target"], tgt))


def test_a_recipe_naming_another_generator_drops_the_family_default_params():
    """The ldct family's default generator is red_cnn2d with levels 2: a recipe that names residual_unet2d gets
    only its own params (red_cnn2d's would not fit it); naming the default keeps its defaults."""
    other = resolve_config({"family": "ldct", "generator": {"name": "residual_unet2d", "params": {"depth": 3}}})
    assert other["generator"]["params"] == {"depth": 3}
    same = resolve_config({"family": "ldct", "generator": {"name": "red_cnn2d", "params": {"features": 16}}})
    assert same["generator"]["params"] == {"features": 16, "levels": 2}
    assert resolve_config({"family": "ldct"})["generator"]["params"] == {"features": 32, "levels": 2}


def test_every_family_module_registers_its_trainer():
    from MedGANLogic.train import TRAINERS

    families = {"pix2pix", "cyclegan", "ldct", "srgan", "fanogan", "segmentation", "lesion_inpaint", "restore"}
    assert set(TRAINERS.names()) == families
    assert all(TRAINERS.get(name).FAMILY == name for name in TRAINERS)
    with pytest.raises(InputError, match="Unknown training family 'stylegan'; known: ") as err:
        trainer_class("stylegan")
    assert set(str(err.value).split("known: ")[1].rstrip(".").split(", ")) == families


def test_recipes_are_valid_configs_with_valid_cards():
    from MedGANLogic.models.card import validate_card

    names = list_recipes()
    assert {"mr-t1-to-t2", "mr-t2-to-t1", "mr-ct-cyclegan", "ldct-denoise"} <= set(names)
    for name in names:
        config = load_config(recipe=name)
        assert config["export"], name
        for entry in config["export"]:
            card = copy.deepcopy(entry["card"])
            for side in ("input", "output"):
                if card[side]["normalization"].get("window") == "auto":
                    card[side]["normalization"]["window"] = [0, 1]
            card["architecture"] = config["generator"]
            card["weights"] = {"file": "weights.safetensors", "sha256": "0" * 64}
            validate_card(card, where=name)


def test_user_folders_are_paired_by_file_name(tiny_config, tmp_path):
    from MedGANLogic.io import write_volume
    from MedGANLogic.train.data import build_batches
    from MedGANLogic.volume import Volume

    rng = np.random.default_rng(1)
    src, tgt = tmp_path / "t1", tmp_path / "t2"
    src.mkdir()
    tgt.mkdir()
    for name in ("sub-01", "sub-02", "sub-03"):
        a = rng.uniform(100, 900, (4, 24, 20)).astype(np.float32)
        write_volume(Volume(a), src / f"{name}.nii.gz")
        write_volume(Volume(1000 - a), tgt / f"{name}.nrrd")  # another format, same name
    card = train_card("folder-model", input={"modality": "MR", "normalization": {"kind": "fixed", "window": [0, 1000]}},
                     output={"modality": "MR", "normalization": {"kind": "fixed", "window": [0, 1000]}})
    config = tiny_config("pix2pix", data={"source": "folders", "source_dir": str(src), "target_dir": str(tgt),
                                          "val_fraction": 0.34, "min_foreground": 0.0, "augment": {"flip": True}},
                         export=[{"generator": "G", "card": card}])
    batches = build_batches(config, paired=True, size_multiple=8, domains={"G": ("source", "target")})
    assert batches.describe()["slices"] == {"source": 8, "target": 8}  # 2 volumes x 4 slices; 1 held out
    assert batches.hw == (24, 24)  # 24 x 20 padded to a multiple of 8
    b = batches.batch(3)
    inside = b["source"] > -1  # the padding is background in both
    assert torch.allclose(b["target"][inside], -b["source"][inside], atol=1e-5)  # pairs stay pairs after flips
    (tgt / "sub-03.nrrd").unlink()
    with pytest.raises(InputError, match="no partner.*sub-03"):
        build_batches(config, paired=True, size_multiple=8, domains={"G": ("source", "target")})


def test_batches_are_deterministic_and_differ_per_rank_and_step(tiny_config):
    trainer = trainer_class("pix2pix")(tiny_config("pix2pix"), progress=False)
    data = trainer.data
    assert torch.equal(data.batch(5)["source"], data.batch(5)["source"])
    assert not torch.equal(data.batch(5, rank=0, world=2)["source"], data.batch(5, rank=1, world=2)["source"])
    assert not torch.equal(data.batch(5)["source"], data.batch(6)["source"])


def test_vgg_perceptual_loss_from_user_safetensors(tiny_config, tmp_path):
    from safetensors.torch import save_file

    from MedGANLogic.train.losses import VGGPerceptualLoss, vgg19_features

    torch.manual_seed(0)
    feats = vgg19_features(9)  # up to relu2_2: small enough for a test file
    path = tmp_path / "vgg19.safetensors"
    save_file({f"features.{k}": v for k, v in feats.state_dict().items()}, str(path))
    loss = VGGPerceptualLoss(path, layers=9)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert loss(x, x).item() == 0.0
    assert loss(x, -x).item() > 0
    config = tiny_config("ldct", loss__vgg=0.1, loss__vgg_weights=str(path), loss__vgg_layer=9)
    trainer = trainer_class("ldct")(config, progress=False)
    trainer.set_input(trainer.data.batch(0))
    trainer.forward()
    assert np.isfinite(trainer.optimize_generator()["G_vgg"])
    with pytest.raises(InputError, match="not a VGG19"):
        VGGPerceptualLoss(path, layers=12)


def test_cli_trains_exports_and_resumes(tiny_config, tmp_path, capsys):
    import yaml

    from MedGANLogic.models.card import load_card
    from MedGANLogic.train.cli import _standalone

    cfg = tiny_config("pix2pix")
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run_dir, export = tmp_path / "run", tmp_path / "models"
    assert _standalone(["--config", str(cfg_path), "--run-dir", str(run_dir), "--steps", "4", "--quiet",
                        "--export", str(export)]) == 0
    assert load_card(export / "tiny-pix2pix").data["training"]["steps"] == 4
    assert _standalone(["--config", str(cfg_path), "--run-dir", str(run_dir), "--quiet"]) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert _standalone(["--resume", str(run_dir), "--steps", "6", "--quiet", "--export", str(export)]) == 0
    assert load_card(export / "tiny-pix2pix").data["training"]["steps"] == 6
    assert _standalone(["--list-recipes"]) == 0
    assert "mr-t1-to-t2" in capsys.readouterr().out


def test_phantom_adapter_pairs_subjects_and_dose_realisations(tmp_path, monkeypatch):
    """The phantom source: paired slices of one subject, unpaired domains from different subjects, one volume per
    low-dose noise realisation, all cached (here with a stand-in simulator: the real one is tested elsewhere)."""
    import sys
    import types

    import MedGANLogic
    from MedGANLogic.train.data import phantom_volumes
    from MedGANLogic.volume import Volume

    calls = []

    def make_subject(seed, spacing_mm=2.0, contrasts=(), **kw):
        calls.append(seed)
        base = np.full((3, 8, 8), float(seed), dtype=np.float32)
        vols = {"T1w": Volume(base + 0.1), "T2w": Volume(base + 0.2), "CT": Volume(base * 10)}
        return types.SimpleNamespace(volumes=vols, head_mask=base > -1, healthy=None)

    def low_dose_volume(ct, dose, seed):
        return ct.with_array(ct.array + 1000 + seed), ct.with_array(ct.array + 2000 + seed)

    fake = types.SimpleNamespace(SPLITS={"train": (5, 6, 7, 8), "val": (50,), "test": (90,)},
                                 ALL_CONTRASTS=("T1w", "T2w", "PD", "FLAIR", "CT"), make_subject=make_subject,
                                 low_dose_volume=low_dose_volume, __file__=__file__)
    monkeypatch.setitem(sys.modules, "MedGANLogic.simulate", fake)
    monkeypatch.setattr(MedGANLogic, "simulate", fake, raising=False)
    monkeypatch.setenv("MEDGAN_CACHE_DIR", str(tmp_path))

    paired = phantom_volumes({"input": "T1w", "target": "T2w", "subjects": {"train": 3}}, "train", paired=True)
    assert [float(v.flat[0]) for v in paired.volumes["source"]] == pytest.approx([5.1, 6.1, 7.1])
    assert [float(v.flat[0]) for v in paired.volumes["target"]] == pytest.approx([5.2, 6.2, 7.2])
    unpaired = phantom_volumes({"input": "T1w", "target": "CT"}, "train", paired=False)
    assert unpaired.names["source"] == ["5/T1w", "6/T1w"] and unpaired.names["target"] == ["7/CT", "8/CT"]
    ldct = phantom_volumes({"input": "CT_low_dose", "target": "CT_full_dose", "subjects": {"val": 1},
                            "low_dose": {"dose_fraction": 0.25, "realisations": 2}}, "val", paired=True)
    assert ldct.names["source"] == ["50/CT_low_dose_0", "50/CT_low_dose_1"]
    assert [float(v.flat[0]) for v in ldct.volumes["source"]] == [1500 + 800, 1500 + 801]  # noise seed 16*seed + r
    assert [float(v.flat[0]) for v in ldct.volumes["target"]] == [2500 + 800, 2500 + 801]
    n = len(calls)
    phantom_volumes({"input": "T1w", "target": "T2w", "subjects": {"train": 3}}, "train", paired=True)
    assert len(calls) == n  # served from the cache
    with pytest.raises(InputError, match="need data.low_dose"):
        phantom_volumes({"input": "CT_low_dose", "target": "CT"}, "train", paired=True)


def test_init_fine_tunes_from_an_exported_model(tiny_config, tmp_path, capsys):
    """``init`` (``--init``): the generator starts from a model's weights (not the seed's), the exported card
    records what it started from, a model of another architecture is refused naming both, and a resume keeps the
    checkpoint's weights."""
    import yaml

    from MedGANLogic.models.card import load_card
    from MedGANLogic.models.registry import read_weights
    from MedGANLogic.train.cli import _standalone

    first = trainer_class("pix2pix")(tiny_config("pix2pix"), progress=False)
    first.fit()
    base = first.export(tmp_path / "models", dtype=torch.float32)[0]
    start = read_weights(base)

    cfg = tiny_config("pix2pix", seed=7)
    cfg["init"] = {"G": str(base.folder)}
    tuned = trainer_class("pix2pix")(cfg, tmp_path / "run", progress=False)
    def same(a, b):
        return a.keys() == b.keys() and all(torch.equal(a[k].float(), b[k].float()) for k in a)

    assert same(tuned.net("G").state_dict(), start)  # not seed 7's random weights
    assert tuned.init_record["G"] == {"model": "tiny-pix2pix", "version": base.version,
                                      "weights_sha256": base.sha256}
    tuned.fit()
    assert not same(tuned.net("G").state_dict(), start)  # it trained on
    card = tuned.export(tmp_path / "tuned")[0]
    assert card.data["training"]["init"]["G"]["weights_sha256"] == base.sha256

    # a checkpoint's weights win over init, and a resume does not need the model any more
    ckpt = sorted((tmp_path / "run" / "checkpoints").glob("*.safetensors"))[-1]
    resumed = trainer_class("pix2pix").from_checkpoint(ckpt, progress=False)
    assert states_equal(resumed.net("G"), tuned.net("G"))

    wider = tiny_config("pix2pix")
    wider["generator"] = copy.deepcopy(wider["generator"])
    wider["generator"]["params"]["features"] = 16
    wider["init"] = {"G": str(base.folder)}
    with pytest.raises(InputError, match="init.G.*tiny-pix2pix is a unet2d"):
        trainer_class("pix2pix")(wider, progress=False)
    with pytest.raises(InputError, match="no network 'D2'"):
        trainer_class("pix2pix")(dict(cfg, init={"D2": str(base.folder)}), progress=False)
    with pytest.raises(InputError, match="only generators"):
        trainer_class("pix2pix")(dict(cfg, init={"D": str(base.folder)}), progress=False)
    with pytest.raises(InputError, match="'init'"):
        tiny_config("pix2pix", init={"G": 3})

    # the CLI: --init MODEL sets init.G; with --resume it is refused
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config("pix2pix")))
    assert _standalone(["--config", str(cfg_path), "--run-dir", str(tmp_path / "cli"), "--steps", "2", "--quiet",
                        "--init", str(base.folder), "--export", str(tmp_path / "cli-models")]) == 0
    exported = load_card(tmp_path / "cli-models" / "tiny-pix2pix").data["training"]
    assert exported["init"]["G"]["model"] == "tiny-pix2pix" and "--init" in exported["command"]
    assert _standalone(["--resume", str(tmp_path / "cli"), "--init", str(base.folder), "--quiet"]) == 1
    assert "--init starts a new run" in capsys.readouterr().err


def test_an_average_recipe_exports_the_mean_of_its_models_weights(tiny_config, tmp_path):
    """A config with ``average`` trains nothing: it exports its card with the mean of the listed models' weights and
    a record of what was averaged; models of another architecture, or fine-tuned from other weights, are refused;
    --init or your own folders train instead (fine-tuning the averaged model)."""
    import yaml

    from MedGANLogic.models.card import load_card
    from MedGANLogic.models.registry import read_weights
    from MedGANLogic.train import train
    from MedGANLogic.train.cli import _standalone

    start = trainer_class("pix2pix")(tiny_config("pix2pix"), progress=False)
    start.fit()
    base = start.export(tmp_path / "base", dtype=torch.float32)[0]
    models = []
    for seed in (1, 2):  # two fine-tunes of one start
        run = trainer_class("pix2pix")(tiny_config("pix2pix", seed=seed, init={"G": str(base.folder)}),
                                       progress=False)
        run.fit()
        models.append(run.export(tmp_path / f"m{seed}", dtype=torch.float32)[0])
    cfg = tiny_config("pix2pix")
    cfg["average"] = [str(m.folder) for m in models]
    cfg["export"] = [{"card": dict(cfg["export"][0]["card"], id="tiny-mean", version="9.9.9")}]
    summary = train(cfg, tmp_path / "run", export_dir=tmp_path / "out")
    assert summary["exported"] == [str(tmp_path / "out" / "tiny-mean")] and summary["step"] == 0
    mean = load_card(tmp_path / "out" / "tiny-mean")
    got, a, b = read_weights(mean), read_weights(models[0]), read_weights(models[1])
    for k in got:  # float16 on disk: the mean to its precision
        assert torch.allclose(got[k], (a[k] + b[k]) / 2, rtol=1e-3, atol=1e-3), k
    record = mean.data["training"]
    assert [r["weights_sha256"] for r in record["average_of"]] == [m.sha256 for m in models]
    assert record["method"] == "uniform weight average" and mean.version == "9.9.9"
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained
    with pytest.raises(InputError, match="only exports: give export_dir"):  # nowhere to write: refused, not ./export
        train(cfg)
    assert train(cfg, tmp_path / "run2")["exported"] == [str(tmp_path / "run2" / "export" / "tiny-mean")]

    wider = tiny_config("pix2pix")
    wider["generator"] = copy.deepcopy(wider["generator"])
    wider["generator"]["params"]["features"] = 16
    run = trainer_class("pix2pix")(wider, progress=False)
    run.fit()
    other = run.export(tmp_path / "wide")[0]
    with pytest.raises(InputError, match="differ in architecture"):
        train(dict(cfg, average=[str(models[0].folder), str(other.folder)]), export_dir=tmp_path / "x")
    with pytest.raises(InputError, match="two or more"):
        train(dict(cfg, average=[str(models[0].folder)]), export_dir=tmp_path / "x")
    # the start itself (trained from scratch: no recorded start) or a fine-tune of another start: refused
    again = trainer_class("pix2pix")(tiny_config("pix2pix", init={"G": str(models[0].folder)}), progress=False)
    again.fit()
    of_another = again.export(tmp_path / "again")[0]
    for odd in (base, of_another):
        with pytest.raises(InputError, match="fine-tunes of one start"):
            train(dict(cfg, average=[str(models[1].folder), str(odd.folder)]), export_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing written for a refused average

    # --init: the same recipe trains (a fine-tune of the averaged model), and says so in its card
    path = tmp_path / "mean.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert _standalone(["--config", str(path), "--run-dir", str(tmp_path / "cli"), "--steps", "2", "--quiet",
                        "--init", str(mean.folder), "--export", str(tmp_path / "cli-models")]) == 0
    trained = load_card(tmp_path / "cli-models" / "tiny-mean").data["training"]
    assert trained["steps"] == 2 and trained["init"]["G"]["model"] == "tiny-mean" and "average_of" not in trained


def test_your_folders_replace_the_recipes_photographs_unless_set_back():
    """--source-dir/--target-dir train on the user's volumes alone: the recipe's photographs (data.natural_images,
    data.natural_noisy_copies) are switched off, and a --set puts them back."""
    from MedGANLogic.train.cli import _overrides, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    folders = ["--recipe", "mr-denoise", "--source-dir", "a/", "--target-dir", "b/"]
    config = load_config(recipe="mr-denoise", overrides=_overrides(parser.parse_args(folders)))
    assert config["data"]["source"] == "folders" and config["data"]["natural_noisy_copies"] == 0
    assert not config["data"]["natural_images"]
    again = load_config(recipe="mr-denoise", overrides=_overrides(parser.parse_args(
        [*folders, "--set", "data.natural_noisy_copies=4"])))
    assert again["data"]["natural_noisy_copies"] == 4
    assert load_config(recipe="mr-denoise", overrides=_overrides(parser.parse_args(
        ["--recipe", "mr-denoise"])))["data"]["natural_noisy_copies"] == 36
