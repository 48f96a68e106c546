"""Shared pytest fixtures. Every test runs on the CPU with small volumes."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[2]
# The Slicer module's own library (MedGANExtension/MedGANLib) imports as in Slicer, which puts the module's folder
# on the path.
sys.path.insert(0, str(REPO / "MedGANExtension"))


def tiny_card(model_id: str = "test-t1-to-t2", task: str = "synthesize", **overrides) -> dict:
    """A valid model card for the small conv nets of MedGANLogic.models.simple."""
    card = {
        "id": model_id, "version": "0.0.1", "task": task, "name": f"test model {model_id}",
        "architecture": {"name": "conv2d", "params": {"features": 4, "depth": 2}},
        "dims": "2d", "slice_axis": 0, "context_slices": 0, "tile_size": [32, 32],
        "scale_factor": [1, 1, 1],
        "input": {"modality": "MR", "contrast": "T1w",
                  "normalization": {"kind": "mr_percentile", "percentiles": [0.5, 99.5], "range": [-1, 1]}},
        "output": {"modality": "MR", "contrast": "T2w", "units": "a.u.",
                   "normalization": {"kind": "fixed", "window": [0, 1000], "range": [-1, 1]}},
        "weights": {"file": "weights.safetensors", "sha256": "0" * 64},
        "training_data": "none (test model)", "license": "Apache-2.0",
        "intended_use": "research, not for diagnosis",
    }
    for key, value in overrides.items():
        card[key] = copy.deepcopy(value)
    return card


def tiny_inplane_card(model_id: str = "test-sr-inplane") -> dict:
    """A valid card of a tiny untrained in-plane x2 super-resolution model (2.5D SRResNet, one neighbour slice on each
    side, trained to invert the central half of k-space), as the shipped mr-sr-x2-inplane is laid out."""
    return tiny_card(model_id, task="superres", dims="2.5d", context_slices=1, scale_factor=[1, 2, 2],
                     tile_size=None, extras={"degradation": "kspace_truncate"},
                     architecture={"name": "srresnet2d", "params": {"in_channels": 3, "scale": [2, 2], "features": 4,
                                                                    "n_blocks": 1, "global_skip": "bilinear"}},
                     input={"modality": "MR", "normalization": {"kind": "mr_percentile", "percentiles": [0.5, 99.5],
                                                                "range": [-1, 1], "zero_based": True}},
                     output={"modality": "MR", "units": "a.u.", "normalization": {"kind": "same_as_input"}})


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    """An empty user model folder, with the built-in models hidden so tests see only what they install."""
    user = tmp_path / "models"
    user.mkdir()
    monkeypatch.setenv("MEDGAN_MODELS_DIR", str(user))
    monkeypatch.setenv("MEDGAN_BUILTIN_MODELS", str(tmp_path / "no-builtin-models"))
    from MedGANLogic.models import registry

    registry.clear_cache()
    yield user
    registry.clear_cache()


@pytest.fixture
def make_model(model_dir):
    """Install a small untrained model: make_model(card_dict, net=None) -> ModelCard."""
    from MedGANLogic.models import build_network
    from MedGANLogic.models.registry import save_model

    def _make(card: dict, net: torch.nn.Module | None = None, dtype=torch.float32):
        torch.manual_seed(0)
        net = net or build_network(card["architecture"]["name"], card["architecture"].get("params", {}))
        return save_model(model_dir / card["id"], card, net.state_dict(), dtype=dtype)

    return _make


@pytest.fixture
def oblique_volume():
    """A small MR-like volume with an oblique direction and anisotropic spacing."""
    from scipy.spatial.transform import Rotation

    from MedGANLogic.volume import Volume

    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:12, 0:40, 0:36]
    head = ((y - 20) ** 2 / 15 ** 2 + (x - 18) ** 2 / 14 ** 2 + (z - 6) ** 2 / 8 ** 2) < 1
    array = np.where(head, 400 + 200 * np.sin(x / 4.0) + 100 * np.cos(y / 5.0), 0) + rng.normal(0, 5, head.shape)
    direction = Rotation.from_euler("xyz", [12, -7, 25], degrees=True).as_matrix()
    return Volume(np.abs(array).astype(np.float32), spacing=(0.9, 1.1, 3.5), origin=(-12.5, 30.25, 7.0),
                  direction=direction, metadata={"modality": "MR", "contrast": "T1w"})


# --- the bundled sample data and the built-in models --------------------------------------------------------------
SAMPLE_DATA = REPO / "Resources" / "SampleData"


def run_shipped_model(tmp_path: Path, task: str, model: str, sample: str, *extra: str, quiet: bool = True):
    """`medgan run` a built-in model on a file of the bundled sample subject, as a user runs it; returns the output
    Volume read back from disk after checking the command succeeded and the file names the model and its weights."""
    from MedGANLogic.cli import main
    from MedGANLogic.io import read_volume
    from MedGANLogic.models.registry import get_model

    out = tmp_path / f"{model}.nrrd"
    code = main(["run", "--task", task, "--model", model, "--input", str(SAMPLE_DATA / sample), "--output", str(out),
                 "--device", "cpu", *(["--quiet"] if quiet else []), *extra])
    assert code == 0
    volume = read_volume(out)
    provenance = volume.metadata["provenance"]
    assert provenance["model"] == model and provenance["synthetic"] in (True, "true")
    assert provenance["weights_sha256"] == get_model(model).sha256
    return volume


# --- training: a tiny config of every family ----------------------------------------------------------------------
def train_card(model_id: str, task: str = "synthesize", **overrides) -> dict:
    """An export card of a tiny training run: MR T1w -> T2w, no normalisation (synthetic slices are in [-1, 1])."""
    card = {"id": model_id, "version": "0.0.1", "task": task, "dims": "2d",
            "input": {"modality": "MR", "contrast": "T1w", "normalization": {"kind": "none"}},
            "output": {"modality": "MR", "contrast": "T2w", "normalization": {"kind": "none"}},
            "license": "Apache-2.0", "intended_use": "research, not for diagnosis", "training_data": "synthetic"}
    card.update(copy.deepcopy(overrides))
    return card


def _family_user_config(family: str) -> dict:
    data = {"source": "synthetic", "size": [32, 32], "count": 8, "volumes": 2}
    t2 = {"modality": "MR", "contrast": "T2w", "normalization": {"kind": "none"}}
    same = {"modality": "MR", "contrast": "T2w", "normalization": {"kind": "same_as_input"}}
    gan = {"discriminator": {"channels": 8, "layers": 2}, "data": data}
    if family == "pix2pix":
        return dict(gan, generator={"name": "unet2d", "params": {"features": 8, "depth": 3, "dropout": 0.5}},
                    export=[{"generator": "G", "card": train_card("tiny-pix2pix")}])
    if family == "ldct":
        return dict(gan, generator={"name": "red_cnn2d", "params": {"features": 8, "levels": 2}},
                    export=[{"generator": "G", "card": train_card("tiny-ldct")}])
    if family == "cyclegan":
        return dict(gan, generator={"name": "resnet2d", "params": {"features": 8, "n_blocks": 1}},
                    export=[{"generator": "G_AB", "card": train_card("tiny-ab")},
                            {"generator": "G_BA", "card": train_card("tiny-ba")}])
    small_d = {"discriminator": {"channels": 4, "layers": 2}}
    if family == "srgan":
        return dict(small_d, generator={"name": "srresnet2d",
                                        "params": {"scale": [2, 1], "features": 4, "n_blocks": 1}},
                    data=dict(data, count=16, slice_axis=1, degrade="thick_slices", crop=[8, 16]),
                    loss={"pretrain_steps": 4},
                    export=[{"generator": "G", "card": train_card("tiny-sr", "superres", input=t2, output=same,
                                                                  slice_axis=1, scale_factor=[2, 1, 1])}])
    if family == "fanogan":
        return dict(small_d, generator={"name": "fanogan_generator2d",
                                        "params": {"latent_channels": 4, "features": 4, "levels": 3}},
                    encoder={"features": 4}, data=dict(data, input="x", count=32), loss={"critic_steps": 2},
                    anomaly={"gan_steps": 4},
                    export=[{"generator": "fanogan", "card": train_card(
                        "tiny-anomaly", "anomaly", input=t2, output={"modality": "anomaly",
                                                                     "normalization": {"kind": "same_as_input"}})}])
    if family == "restore":
        return dict(gan, generator={"name": "unet2d", "params": {"features": 4, "depth": 3, "norm": "instance",
                                                                 "upsample": "bilinear", "final_activation": "none"}},
                    data=dict(data, input="x", count=32),
                    export=[{"generator": "G", "card": train_card(
                        "tiny-restore", "anomaly", input=t2, output={"modality": "anomaly",
                                                                     "normalization": {"kind": "same_as_input"}})}])
    if family == "segmentation":
        return dict(small_d, generator={"name": "seg_unet2d", "params": {"features": [4, 4, 8, 8, 16, 4]}}, data=data,
                    export=[{"generator": "G", "card": train_card(
                        "tiny-seg", "segment", input=t2, extras={"labels": {"1": "lesion"}},
                        output={"modality": "mask", "normalization": {"kind": "none"}})}])
    raise ValueError(f"no tiny config for family {family!r}")


def tiny_train_config(family: str, **overrides) -> dict:
    """A resolved config of ``family`` that trains in a fraction of a second per step on small synthetic slices.

    ``overrides`` set nested keys with ``__``: ``tiny_train_config("srgan", loss__pretrain_steps=0)``.
    """
    from MedGANLogic.train.config import resolve_config

    user = _family_user_config(family)
    user.update({"family": family, "name": f"tiny-{family}", "steps": 8, "batch_size": 4, "device": "cpu",
                 "log": {"every": 2, "sample_every": 4, "checkpoint_every": 4, "tensorboard": False}})
    for key, value in overrides.items():
        node = user
        parts = key.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return resolve_config(user)


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two networks hold the same tensors, bit for bit."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def fixed_batch_losses(trainer, d_steps: int, g_steps: int) -> tuple[list[dict], list[dict]]:
    """The logged losses of ``d_steps`` discriminator updates against the generator's (fixed) outputs, then of
    ``g_steps`` generator updates against the discriminator as it then is, all on the trainer's first batch."""
    trainer.set_input(trainer.data.batch(0))
    torch.manual_seed(0)
    d_losses = []
    for _ in range(d_steps):
        with torch.no_grad():
            trainer.forward()
        d_losses.append(trainer.optimize_discriminator())
    g_losses = []
    for _ in range(g_steps):
        trainer.forward()
        g_losses.append(trainer.optimize_generator())
    return d_losses, g_losses


def exported_exactly(trainer, folder: Path, x: torch.Tensor):
    """Export ``trainer``'s models in float32 into ``folder``; the first, loaded back, gives G's output on ``x`` bit
    for bit. Returns (its card, G's output)."""
    from MedGANLogic.models.registry import load_network

    with torch.no_grad():
        expected = trainer.net("G").eval()(x)
    exact = trainer.export(folder, dtype=torch.float32)[0]
    with torch.no_grad():
        assert torch.equal(load_network(exact, "cpu")(x), expected)
    return exact, expected


@pytest.fixture
def tiny_config():
    """:func:`tiny_train_config`, for the training tests: ``tiny_config("pix2pix", steps=4)``."""
    return tiny_train_config


def robust_range(a: np.ndarray) -> float:
    """The 0.5-99.5 percentile range of ``a`` (never below 1e-6): the scale of an output, outliers aside."""
    lo, hi = np.percentile(a, [0.5, 99.5])
    return float(max(hi - lo, 1e-6))


def assert_runs_agree(reference, other) -> None:
    """Two ``MedGANLogic.run`` results of one model on one input (fp32 and bf16, or the CPU and a GPU) agree: the
    same output grids exactly; 99.9 % of voxels within 1 % of the output's range and every voxel within 5 %; masks
    to Dice 0.97; the case score within 2 %."""
    from MedGANLogic.evaluation.metrics import dice

    for name, out in reference.outputs.items():
        theirs = other.outputs[name]
        assert all(np.array_equal(getattr(theirs, g), getattr(out, g)) for g in ("spacing", "origin", "direction"))
        a, b = out.array.astype(np.float64), theirs.array.astype(np.float64)
        if out.metadata.get("kind") == "mask" or name in ("mask", "labels"):
            assert dice(a > 0, b > 0) >= 0.97, name
            continue
        diff, scale = np.abs(a - b), robust_range(a)
        assert np.percentile(diff, 99.9) <= 0.01 * scale, (name, np.percentile(diff, 99.9), scale)
        assert diff.max() <= 0.05 * scale, (name, diff.max(), scale)
    if "case_score" in reference.extras:
        score = reference.extras["case_score"]
        assert abs(other.extras["case_score"] - score) <= 0.02 * abs(score)
