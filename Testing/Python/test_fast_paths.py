"""Every fast path of the engine gives the plain path's answer (issue 7; the timings live in benchmarks/).

The engine batches slices, converts networks and inputs to channels-last, pads to the network's size multiple,
builds 2.5D slabs from strided views, stitches 3D patches in batches and transforms outputs in place. The plain
path each is checked against is what a first script does: one slice at a time, fp32, NCHW, stacked at the end.
The architectures are those of the shipped models' recipes, small and with random weights.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from reference import naive_loop

import MedGANLogic
from MedGANLogic.inference import InferenceLayout, infer
from MedGANLogic.models import build_network
from MedGANLogic.normalization import denormalize, normalize

# (architecture, params, layout): one per family the shipped models use, small enough for a test.
FAMILIES = {
    "unet2d (pix2pix, instance norm)": ("unet2d", {"features": 4, "depth": 3, "norm": "instance",
                                                   "upsample": "resize"}, InferenceLayout()),
    "resnet2d (CycleGAN)": ("resnet2d", {"features": 4, "n_blocks": 2, "n_down": 2, "norm": "instance",
                                         "upsample": "resize"}, InferenceLayout()),
    "red_cnn2d (LDCT), slices along y": ("red_cnn2d", {"features": 4, "levels": 2}, InferenceLayout(slice_axis=1)),
    "srresnet2d 2.5d, x2 along the slice plane's rows": (
        "srresnet2d", {"in_channels": 3, "features": 8, "n_blocks": 2, "scale": [2, 1], "global_skip": "bilinear"},
        InferenceLayout(dims="2.5d", slice_axis=1, context_slices=1, scale=(2, 1, 1))),
    "seg_unet2d (segmentation logits)": ("seg_unet2d", {"features": [4, 4, 8, 8, 16, 4]}, InferenceLayout()),
    "fanogan2d (anomaly, batch norm)": ("fanogan2d", {"generator": {"features": 4, "latent_channels": 4,
                                                                   "levels": 2},
                                                     "encoder": {"features": 4, "latent_channels": 4, "levels": 2},
                                                     "critic": {"channels": 4, "layers": 2}}, InferenceLayout()),
}


def _volume(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.tanh(rng.normal(size=shape)).astype(np.float32)


def _network(name: str, params: dict) -> nn.Module:
    torch.manual_seed(0)
    return build_network(name, params).eval()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_engine_equals_the_naive_slice_loop(family):
    name, params, layout = FAMILIES[family]
    net = _network(name, params)
    plain = copy.deepcopy(net)
    vol = _volume((5, 22, 19))  # no side a multiple of 4: the engine pads, batches of 2 leave a partial last one
    engine, info = infer(net, vol, layout, batch_size=2)
    expected = naive_loop(plain, vol, layout)
    assert engine.shape == expected.shape
    assert np.abs(engine - expected).max() < 1e-4
    assert info["batch_size"] == 2


@pytest.mark.parametrize("family", list(FAMILIES))
def test_channels_last_equals_contiguous(family):
    name, params, layout = FAMILIES[family]
    net = _network(name, params)
    fast = copy.deepcopy(net).to(memory_format=torch.channels_last)
    x = torch.from_numpy(_volume((3, 1 + 2 * layout.context_slices, 32, 48), seed=1))  # multiples of 16
    with torch.inference_mode():
        plain = net(x)
        last = fast(x.contiguous(memory_format=torch.channels_last))
    assert last.shape == plain.shape
    assert torch.allclose(last.float(), plain, atol=1e-5, rtol=1e-4)


def test_batch_size_does_not_change_the_result():
    name, params, layout = FAMILIES["unet2d (pix2pix, instance norm)"]
    net = _network(name, params)
    vol = _volume((7, 16, 24), seed=2)
    one, _ = infer(net, vol, layout, batch_size=1)
    for batch in (3, 7, None):
        out, _ = infer(net, vol, layout, batch_size=batch)
        assert np.abs(out - one).max() < 1e-5



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the bf16 path)")
def test_cuda_bf16_stays_close_to_cpu_fp32():
    name, params, layout = FAMILIES["unet2d (pix2pix, instance norm)"]
    net = _network(name, params)
    vol = _volume((6, 32, 32), seed=4)
    expected = naive_loop(copy.deepcopy(net), vol, layout)
    out, info = infer(net.to("cuda"), vol, layout, device="cuda", precision="bf16")
    assert info["device"].startswith("cuda")
    assert np.abs(out - expected).max() < 0.05  # bf16 keeps 8 bits of mantissa; outputs are in [-1, 1]


def test_3d_batched_patches_equal_one_patch_at_a_time():
    torch.manual_seed(0)
    net = build_network("conv3d", {"features": 4, "depth": 2}).eval()
    vol = _volume((14, 20, 18), seed=5)
    layout = InferenceLayout(dims="3d", tile_size=(8, 8, 8))
    batched, _ = infer(net, vol, layout, batch_size=4, overlap=0.5)
    single, _ = infer(copy.deepcopy(net), vol, layout, batch_size=1, overlap=0.5)
    assert np.abs(batched - single).max() < 1e-5
    with torch.no_grad():  # and both equal the whole volume in one pass, where patches saw the whole neighbourhood
        whole = net.to(memory_format=torch.contiguous_format)(torch.from_numpy(vol)[None, None]).numpy()[0]
    assert np.abs(batched - whole)[:, 2:-2, 2:-2, 2:-2].max() < 1e-4


def test_run_equals_normalise_naive_loop_denormalise(make_model):
    """MedGANLogic.run (in-place output transforms, batching, channels-last) == the plain steps one by one."""
    from conftest import tiny_card

    card = tiny_card("test-ldct-fast", task="denoise", dims="2d", slice_axis=0,
                     architecture={"name": "red_cnn2d", "params": {"features": 4, "levels": 2}},
                     input={"modality": "CT", "units": "HU",
                            "normalization": {"kind": "ct_window", "window": [-1000, 2000], "range": [-1, 1]}},
                     output={"modality": "CT", "units": "HU", "normalization": {"kind": "same_as_input"}})
    del card["tile_size"]  # whole slices: the engine's batched path, not MONAI's tiles
    model = make_model(card)
    rng = np.random.default_rng(6)
    array = np.where(rng.random((6, 20, 28)) < 0.5, -1000.0, 40.0) + rng.normal(0, 30, (6, 20, 28))
    volume = MedGANLogic.Volume(array.astype(np.float32), spacing=(0.8, 0.8, 2.5), metadata={"modality": "CT"})
    before = volume.array.copy()
    result = MedGANLogic.run("denoise", volume, model=model.id, batch_size=4)

    from MedGANLogic.models.registry import load_network

    plain = copy.deepcopy(load_network(model, "cpu")).to(memory_format=torch.contiguous_format)
    spec = card["input"]["normalization"]
    normalized, stats = normalize(before, spec)
    raw = np.clip(naive_loop(plain, normalized, InferenceLayout(pad_value=-1.0))[0], -1, 1)
    expected = denormalize(raw, card["output"]["normalization"], stats, spec)
    assert np.array_equal(volume.array, before)  # the input is never modified
    assert np.abs(result.volume.array - expected).max() < 1e-4 * 3000  # 1e-4 of the normalised range, in HU
