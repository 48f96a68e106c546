"""Precision: when the engine runs a model in bf16, and that bf16 stays close to fp32 where it is allowed.

bf16 keeps 8 bits of mantissa. Convolutions tolerate that, but instance norm over a nearly empty slice (the top
of the head) divides rounding noise by a tiny standard deviation: the shipped CycleGAN then drifts by up to
1800 HU there. So ``auto`` runs bf16 only for models whose card says ``"mixed_precision": "bf16"``, and this
file checks every such shipped model on the bundled sample, in the output's own units, with bf16 forced (on a
CPU without native bf16 it is emulated: slower, same numbers).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import REPO, assert_runs_agree

import MedGANLogic
from MedGANLogic.cli import main
from MedGANLogic.demo import load_manifest, pick_sample
from MedGANLogic.errors import InputError, MedGANError
from MedGANLogic.inference import InferenceLayout, choose_precision, infer, native_bf16
from MedGANLogic.io import read_volume
from MedGANLogic.models import build_network
from MedGANLogic.models.registry import list_models
from MedGANLogic.volume import Volume

CPU = torch.device("cpu")
BUILTIN = {card.id: card for card in list_models() if card.source == "builtin"}
BF16_MODELS = sorted(m for m, card in BUILTIN.items() if card.data.get("mixed_precision") == "bf16")


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network("unet2d", {"features": 4, "depth": 2, "norm": "batch", "upsample": "resize"}).eval()


def _volume(shape=(4, 24, 32), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def test_auto_runs_fp32_unless_the_card_allows_bf16():
    plain, allowed = InferenceLayout(), InferenceLayout(mixed_precision="bf16")
    assert choose_precision("auto", CPU, plain) == "fp32"
    assert choose_precision("fp32", CPU, allowed) == "fp32"
    assert choose_precision("auto", CPU, allowed) == ("bf16" if native_bf16(CPU) else "fp32")
    with pytest.warns(RuntimeWarning, match="does not say its outputs were checked in bf16"):
        assert choose_precision("bf16", CPU, plain) == "bf16"
    with pytest.raises(MedGANError, match="precision must be one of auto, fp32, bf16"):
        choose_precision("fp16", CPU, allowed)


def test_auto_without_the_card_flag_is_bit_identical_to_fp32():
    net, vol = _net(), _volume()
    auto, info = infer(net, vol, InferenceLayout(), precision="auto")
    fp32, _ = infer(net, vol, InferenceLayout(), precision="fp32")
    assert info["precision"] == "fp32" and auto.dtype == np.float32 and np.array_equal(auto, fp32)


def test_forced_bf16_really_runs_bf16_and_stays_close():
    net, vol = _net(), _volume(seed=1)
    layout = InferenceLayout(mixed_precision="bf16")
    fp32, _ = infer(copy.deepcopy(net), vol, layout, precision="fp32")
    bf16, info = infer(net, vol, layout, precision="bf16")
    diff = np.abs(bf16 - fp32)
    assert info["precision"] == "bf16" and bf16.dtype == np.float32
    assert diff.max() > 0  # rounded somewhere: bf16 did run
    assert diff.max() < 0.05 * (fp32.max() - fp32.min())


def test_precision_is_recorded_in_the_provenance_and_bad_values_are_refused(tmp_path):
    sample = REPO / "Resources" / "SampleData" / "sample_T2w_thick.nrrd"
    out = tmp_path / "sr.nrrd"
    assert main(["run", "--task", "superres", "--model", "mr-sr-x2-throughplane", "--input", str(sample),
                 "--output", str(out), "--device", "cpu", "--precision", "fp32", "--quiet"]) == 0
    provenance = read_volume(out).metadata["provenance"]
    assert provenance["precision"] == "fp32" and provenance["options"]["precision"] == "fp32"
    volume = read_volume(sample)
    legacy = MedGANLogic.run("superres", volume, "mr-sr-x2-throughplane", device="cpu", amp=False)
    assert legacy.provenance["precision"] == "fp32"
    with pytest.raises(InputError, match="precision must be one of auto, fp32, bf16; got 'half'"):
        MedGANLogic.run("superres", volume, "mr-sr-x2-throughplane", device="cpu", precision="half")


def test_the_shipped_models_that_allow_bf16_are_those_expected():
    """Instance-norm generators with large empty regions (CycleGAN, the segmentation U-Net) stay fp32."""
    # the restoration GANs brain-anomaly-t2 and -t1 (3.0.0) have not been checked in bf16: their cards leave it out;
    # mr-t2-to-t1 2.0.0 (domain-randomised) failed the check below (99.9th percentile 1.05 % of the range): fp32
    assert set(BF16_MODELS) == {"ldct-denoise", "mr-denoise", "mr-sr-x2-inplane",
                                "mr-sr-x2-throughplane", "mr-t1-to-t2"}
    for model_id in set(BUILTIN) - set(BF16_MODELS):
        assert choose_precision("auto", CPU, InferenceLayout.from_card(BUILTIN[model_id])) == "fp32"


@pytest.mark.parametrize("model_id", BF16_MODELS)
def test_bf16_stays_close_to_fp32_on_the_sample(model_id):
    """Over the whole sample, including its nearly empty top and bottom slices: 99.9 % of voxels within 1 % of
    the output's range and every voxel within 5 %; masks agree to Dice 0.97; the case score within 2 %."""
    card = BUILTIN[model_id]
    volume = read_volume(pick_sample(card, load_manifest())["path"])
    if card.dims == "2d" and card.slice_axis == 0:  # every other slice, the nearly empty ones included: half the time
        sx, sy, sz = volume.spacing
        volume = Volume(np.ascontiguousarray(volume.array[::2]), (sx, sy, 2 * sz), volume.origin, volume.direction,
                        dict(volume.metadata))
    fp32 = MedGANLogic.run(card.task, volume, model_id, device="cpu", precision="fp32")
    bf16 = MedGANLogic.run(card.task, volume, model_id, device="cpu", precision="bf16")
    assert fp32.provenance["precision"] == "fp32" and bf16.provenance["precision"] == "bf16"
    assert_runs_agree(fp32, bf16)


def test_fp32_on_cuda_turns_tf32_off_while_the_network_runs_and_restores_it():
    """TF32 (cuDNN's default on CUDA) keeps 10 bits of mantissa: fp32 must mean IEEE fp32 (on an H200, batch sizes
    and ct-to-mr's output differed otherwise). The flags are process-wide; the context puts back what it found, also
    on error. And fp32 is fp32 under a caller's autocast too."""
    from MedGANLogic.inference import _amp_context

    cuda = torch.device("cuda")  # only the flags are touched: no GPU needed
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with _amp_context(cuda, "fp32"):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32
        with pytest.raises(ValueError), _amp_context(cuda, "fp32"):
            raise ValueError("a failing network")
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32 == before[0]
        with _amp_context(CPU, "fp32"):
            assert torch.backends.cuda.matmul.allow_tf32  # the CPU has no TF32 to turn off
        with torch.autocast("cpu", dtype=torch.bfloat16), _amp_context(CPU, "fp32"):
            assert not torch.is_autocast_enabled("cpu")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
