"""The one inference path: tiling, 2.5D context, 3D patches, progress, cancel, out-of-memory handling."""

import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from MedGANLogic import inference
from MedGANLogic.errors import CancelledError, MedGANError
from MedGANLogic.inference import InferenceLayout, infer, resolve_device
from MedGANLogic.models.simple import SmallConvNet


def _image(shape, seed=0):
    rng = np.random.default_rng(seed)
    return np.tanh(rng.normal(size=shape)).astype(np.float32)


class PickChannel(nn.Module):
    """Returns one input channel: for 2.5D it shows which neighbour slice went where."""

    def __init__(self, channel):
        super().__init__()
        self.channel = channel

    def forward(self, x):
        return x[:, self.channel:self.channel + 1]


class Upsample(nn.Module):
    def __init__(self, factors):
        super().__init__()
        self.factors = factors

    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=self.factors, mode="nearest")


def test_resolve_device():
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(MedGANError, match="Unknown device"):
        resolve_device("tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(MedGANError, match="no CUDA GPU"):
            resolve_device("cuda:0")


def test_tiled_equals_whole_image_away_from_borders():
    torch.manual_seed(0)
    net = SmallConvNet(spatial_dims=2, features=8, depth=3).eval()
    vol = _image((3, 100, 90))
    tiled, _ = infer(net, vol, InferenceLayout(tile_size=(32, 32)), overlap=0.5)
    with torch.inference_mode():
        whole = net(torch.from_numpy(vol)[:, None]).numpy()[:, 0]
    m = 4  # the net's receptive field reaches 3 voxels; borders see padding in both paths, differently
    diff = np.abs(tiled[0] - whole)[:, m:-m, m:-m]
    assert diff.max() < 1e-4, diff.max()


def test_no_seams_on_a_flat_image():
    torch.manual_seed(1)
    net = SmallConvNet(spatial_dims=2, features=8, depth=3).eval()
    flat = np.full((2, 97, 83), 0.3, np.float32)
    out, _ = infer(net, flat, InferenceLayout(tile_size=(32, 32)), overlap=0.25)
    interior = out[0][:, 4:-4, 4:-4]
    assert interior.max() - interior.min() < 1e-5


def test_volume_smaller_than_tile_is_padded_not_refused():
    torch.manual_seed(0)
    net = SmallConvNet(spatial_dims=2, features=4, depth=2).eval()
    vol = _image((2, 10, 12))
    out, _ = infer(net, vol, InferenceLayout(tile_size=(64, 64)))
    assert out.shape == (1, 2, 10, 12)
    with torch.inference_mode():
        whole = net(torch.from_numpy(vol)[:, None]).numpy()[:, 0]
    assert np.abs(out[0] - whole)[:, 2:-2, 2:-2].max() < 1e-5


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_2d_models_slice_along_any_axis(axis):
    vol = _image((6, 7, 8))
    out, _ = infer(PickChannel(0), vol, InferenceLayout(slice_axis=axis), batch_size=4)
    assert np.array_equal(out[0], vol)


def test_25d_context_slices_are_neighbours():
    vol = _image((5, 9, 11))
    layout = InferenceLayout(dims="2.5d", context_slices=2)
    below, _ = infer(PickChannel(0), vol, layout, batch_size=2)  # channel 0 = slice k-2
    above, _ = infer(PickChannel(4), vol, layout, batch_size=3)  # channel 4 = slice k+2
    idx = np.arange(5)
    assert np.array_equal(below[0], vol[np.clip(idx - 2, 0, 4)])
    assert np.array_equal(above[0], vol[np.clip(idx + 2, 0, 4)])


def test_3d_patches_equal_whole_volume_away_from_borders():
    torch.manual_seed(0)
    net = SmallConvNet(spatial_dims=3, features=4, depth=2).eval()
    vol = _image((20, 40, 36))
    seen = []
    out, _ = infer(net, vol, InferenceLayout(dims="3d", tile_size=(12, 16, 16)), overlap=0.5, batch_size=3,
                   progress=lambda f, m: seen.append(f))
    with torch.inference_mode():
        whole = net(torch.from_numpy(vol)[None, None]).numpy()[0, 0]
    assert np.abs(out[0] - whole)[3:-3, 3:-3, 3:-3].max() < 1e-4
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) > 3


def test_super_resolution_output_is_zoomed_with_and_without_tiles():
    vol = _image((4, 20, 30))
    for layout in (InferenceLayout(tile_size=(16, 16), scale=(1, 2, 1)), InferenceLayout(scale=(1, 2, 1))):
        out, _ = infer(Upsample((2, 1)), vol, layout)
        assert out.shape == (1, 4, 40, 30)
        assert np.allclose(out[0][:, ::2], vol) and np.allclose(out[0][:, 1::2], vol)


def test_progress_is_reported_per_batch_and_reaches_one():
    calls = []
    infer(PickChannel(0), _image((10, 8, 8)), InferenceLayout(), batch_size=3,
          progress=lambda f, m: calls.append((f, m)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len(calls) >= 1 + 4  # the start, then one per batch of 3 slices out of 10
    assert "10/10" in calls[-1][1]


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_cancel_stops_between_batches(dims):
    stop = threading.Event()
    calls = []

    def progress(f, m):
        calls.append(f)
        if f > 0:
            stop.set()

    layout = InferenceLayout(dims=dims, tile_size=(4, 8, 8) if dims == "3d" else ())
    net = SmallConvNet(spatial_dims=3 if dims == "3d" else 2, features=2, depth=1).eval()
    with pytest.raises(CancelledError):
        infer(net, _image((12, 16, 16)), layout, batch_size=1, progress=progress, cancel=stop)
    assert len(calls) == 2  # started, one batch done, then stopped before the next
    # a plain callable works too
    with pytest.raises(CancelledError):
        infer(net, _image((12, 16, 16)), layout, batch_size=1, cancel=lambda: True)


class OOMAboveBatch(nn.Module):
    """Raises CUDA's out-of-memory error for batches larger than ``limit`` (a stand-in for a full GPU)."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.batches = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x * 2


def test_out_of_memory_halves_the_batch():
    vol = _image((9, 8, 8))
    net = OOMAboveBatch(limit=2)
    out, info = infer(net, vol, InferenceLayout(), batch_size=8)
    assert np.allclose(out[0], vol * 2)
    assert net.batches[:3] == [8, 4, 2] and max(net.batches[3:]) <= 2


def test_out_of_memory_at_batch_one_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(inference, "_fallback_allowed", lambda device: True)  # pretend we are on a GPU
    vol = _image((3, 8, 8))
    with pytest.warns(RuntimeWarning, match="continuing on the CPU"):
        out, info = infer(OOMAboveBatch(limit=0), vol, InferenceLayout(), batch_size=2,
                          cpu_fallback=lambda: PickChannel(0))
    assert np.array_equal(out[0], vol) and info["device"] == "cpu"


def test_out_of_memory_on_cpu_at_batch_one_is_a_clear_error():
    with pytest.raises(MedGANError, match="Out of memory even at batch size 1"):
        infer(OOMAboveBatch(limit=0), _image((3, 8, 8)), InferenceLayout(), batch_size=2)


def test_other_runtime_errors_are_not_swallowed():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch in layer 3")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="shape mismatch"):
            infer(Broken(), _image((3, 8, 8)), InferenceLayout())


def test_batch_size_from_free_memory():
    gib = 1 << 30
    assert inference.batch_from_free_memory(100 * (1 << 20), 10 * gib) == 61  # 60 % of 10 GiB / 100 MiB
    assert inference.batch_from_free_memory(100 * (1 << 20), 80 * gib) == 64  # capped: more gains nothing
    assert inference.batch_from_free_memory(4 * gib, 2 * gib) == 1  # never below one item
    assert inference.batch_from_free_memory(0, gib) == 64  # a model that allocates nothing


class Recorder(nn.Module):
    """Doubles its input and logs each forward pass, so the order of passes and progress reports can be checked."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def forward(self, x):
        self.log.append(("forward", x.shape[0]))
        return x * 2


def test_results_come_back_one_batch_behind_and_progress_ends_at_one():
    """Batch k is collected after batch k+1 was queued (on CUDA its download overlaps that batch's compute);
    every slice still lands in its place, and progress reports each collected batch once, ending at 1."""
    log = []
    vol = _image((7, 8, 8))
    out, info = infer(Recorder(log), vol, InferenceLayout(), batch_size=3,
                      progress=lambda f, m: log.append(("progress", round(f, 3))))
    assert np.array_equal(out[0], vol * 2) and info["batch_size"] == 3
    assert log == [("progress", 0.0), ("forward", 3), ("forward", 3), ("progress", round(3 / 7, 3)),
                   ("forward", 1), ("progress", round(6 / 7, 3)), ("progress", 1.0)]


def test_cancel_while_a_batch_is_still_coming_back():
    state = {"passes": 0}

    class CountPasses(nn.Module):
        def forward(self, x):
            state["passes"] += 1
            return x

    with pytest.raises(CancelledError):
        infer(CountPasses(), _image((9, 8, 8)), InferenceLayout(), batch_size=2,
              cancel=lambda: state["passes"] >= 2)
    assert state["passes"] == 2
