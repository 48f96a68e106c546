"""The CUDA paths, on a real GPU: ``pytest -m gpu`` on a machine with one (skipped where there is none, as in CI).

What only a GPU can check: the engine's batch size measured from free device memory, the pinned-memory upload and
the download one batch behind, a real out-of-memory error (halving, then the CPU), bf16 autocast where a card
allows it, every shipped model giving on the GPU what it gives on the CPU, fitting to the scan and training on the
device. The CPU versions of the same paths are tested in test_inference.py, test_precision.py, test_adapt.py and
test_train.py.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import REPO, assert_runs_agree, robust_range
from torch import nn

import MedGANLogic
from MedGANLogic.adapt import FitBudget, fit_denoise, fit_superres
from MedGANLogic.demo import load_manifest, pick_sample
from MedGANLogic.inference import InferenceLayout, infer
from MedGANLogic.io import read_volume
from MedGANLogic.models import build_network
from MedGANLogic.models.card import self_ensemble
from MedGANLogic.models.registry import list_models
from MedGANLogic.tasks import TASKS
from MedGANLogic.train import trainer_class
from MedGANLogic.volume import Volume

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

BUILTIN = {card.id: card for card in list_models() if card.source == "builtin"}
HUGE = 1 << 42  # bytes: 4 TiB, more than any GPU has, so that asking for it is a real out-of-memory error


def _volume(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _unet() -> nn.Module:
    torch.manual_seed(0)
    return build_network("unet2d", {"features": 8, "depth": 2, "norm": "instance", "upsample": "resize"}).eval()


class RealOOMAbove(nn.Module):
    """Asks the GPU for 4 TiB when a batch has more than ``limit`` items: CUDA's own out-of-memory error."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.batches = limit, []
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit:
            torch.empty(HUGE, dtype=torch.uint8, device=x.device)
        return x * self.scale


def test_batch_size_comes_from_free_memory_and_batches_change_nothing():
    """The measured batch is > 1 on a GPU; the output of the asynchronous one-behind loop equals batch size 1 and
    the CPU, for a slice count that no batch divides. (With TF32 left on, batch sizes differed by 1e-3 here.)"""
    net, vol = _unet(), _volume((37, 64, 48), seed=1)
    layout = InferenceLayout()
    cpu, _ = infer(copy.deepcopy(net), vol, layout, device="cpu", batch_size=4)
    auto, info = infer(copy.deepcopy(net).cuda(), vol, layout, device="cuda")
    one, _ = infer(copy.deepcopy(net).cuda(), vol, layout, device="cuda", batch_size=1)
    odd, _ = infer(copy.deepcopy(net).cuda(), vol, layout, device="cuda", batch_size=5)
    assert info["device"].startswith("cuda") and info["batch_size"] > 1 and info["precision"] == "fp32"
    scale = robust_range(cpu)  # fp32 is IEEE fp32 on the GPU (no TF32): batches and devices differ only by rounding
    assert np.abs(auto - one).max() < 5e-4 * scale and np.abs(odd - one).max() < 5e-4 * scale
    assert np.abs(auto - cpu).max() < 1e-3 * scale


def test_tiled_2d_and_3d_run_on_the_gpu_like_the_cpu():
    torch.manual_seed(0)
    net3 = build_network("conv3d", {"features": 4, "depth": 2}).eval()
    vol3 = _volume((20, 26, 22), seed=2)
    layout3 = InferenceLayout(dims="3d", tile_size=(8, 8, 8))
    cpu3, _ = infer(copy.deepcopy(net3), vol3, layout3, device="cpu", batch_size=4, overlap=0.5)
    gpu3, info = infer(copy.deepcopy(net3).cuda(), vol3, layout3, device="cuda", overlap=0.5)
    assert info["device"].startswith("cuda") and np.abs(gpu3 - cpu3).max() < 1e-3 * robust_range(cpu3)
    layout2 = InferenceLayout(tile_size=(32, 32))
    vol2 = _volume((5, 70, 90), seed=3)
    cpu2, _ = infer(copy.deepcopy(_unet()), vol2, layout2, device="cpu", batch_size=2)
    gpu2, _ = infer(_unet().cuda(), vol2, layout2, device="cuda")
    assert np.abs(gpu2 - cpu2).max() < 1e-3 * robust_range(cpu2)


def test_a_real_out_of_memory_error_halves_the_batch_then_falls_back_to_the_cpu():
    vol = _volume((9, 16, 16), seed=4)
    net = RealOOMAbove(limit=2).cuda()
    out, info = infer(net, vol, InferenceLayout(), device="cuda", batch_size=8)
    assert net.batches[:3] == [8, 4, 2] and max(net.batches[3:]) <= 2
    assert np.allclose(out[0], vol * 2) and info["device"].startswith("cuda")
    never = RealOOMAbove(limit=0).cuda()
    with pytest.warns(RuntimeWarning, match="continuing on the CPU"):
        out, info = infer(never, vol, InferenceLayout(), device="cuda", batch_size=2,
                          cpu_fallback=lambda: RealOOMAbove(limit=100))
    assert info["device"] == "cpu" and np.allclose(out[0], vol * 2)
    assert torch.cuda.memory_allocated() < 1 << 30  # nothing of the failed batches is left on the GPU


@pytest.mark.parametrize("model_id", sorted(BUILTIN))
def test_every_shipped_model_gives_on_the_gpu_what_it_gives_on_the_cpu(model_id):
    """On the bundled sample: the GPU at ``auto`` precision (bf16 where the card allows it) against the CPU in fp32,
    with test_precision.py's bounds (99.9 % of voxels within 1 % of the range, all within 5 %; masks Dice 0.97),
    and the same output geometry, exactly."""
    card = BUILTIN[model_id]
    volume = read_volume(pick_sample(card, load_manifest())["path"])
    options = {"mask": read_volume(REPO / "Resources" / "SampleData" / "sample_lesion_mask.nrrd")} \
        if card.task == "lesion" else {}
    if "ensemble" in TASKS.get(card.task).options:  # the same passes on both (cards ask for more on a GPU)
        options["ensemble"] = self_ensemble(card.extras, "cuda")
    cpu = MedGANLogic.run(card.task, volume, model_id, device="cpu", precision="fp32", **options)
    gpu = MedGANLogic.run(card.task, volume, model_id, device="cuda", **options)
    allows = card.data.get("mixed_precision") == "bf16"
    assert gpu.provenance["precision"] == ("bf16" if allows else "fp32")
    assert str(gpu.provenance.get("device", "cuda")).startswith("cuda")
    assert_runs_agree(cpu, gpu)


def test_fitting_to_the_scan_runs_on_the_gpu():
    """Denoising and super-resolution fits on the device: the loss falls, the record names the GPU, the output keeps
    the input's grid (denoising) or refines the slice axis only (super-resolution)."""
    from MedGANLogic.simulate import make_subject

    subject = make_subject(2001, spacing_mm=4.0, contrasts=("T2w",), snr=5.0, n_lesions=0)
    noisy = subject.volumes["T2w"]
    noisy = noisy.with_array(np.ascontiguousarray(noisy.array[20:30]))
    budget = FitBudget(seconds=600.0, max_steps=60)
    fit = fit_denoise(noisy, "MR", budget=budget, seed=0, device="cuda", features=16, patch=48, batch_size=8)
    assert fit.record.device.startswith("cuda") and fit.record.steps == 60
    assert fit.record.loss_last < fit.record.loss_first
    out = fit.volume
    assert out.shape == noisy.shape and np.isfinite(out.array).all()
    assert all(np.array_equal(getattr(out, g), getattr(noisy, g)) for g in ("spacing", "origin", "direction"))
    thick = Volume(np.ascontiguousarray(subject.volumes["T2w"].array[::2]), (4.0, 4.0, 8.0),
                   subject.volumes["T2w"].origin, subject.volumes["T2w"].direction, {"modality": "MR"})
    sr = fit_superres(thick, budget=budget, seed=0, device="cuda", features=16, patch=32, batch_size=8)
    assert sr.record.device.startswith("cuda") and sr.record.loss_last < sr.record.loss_first
    assert sr.volume.shape[0] == 2 * thick.shape[0] and np.array_equal(sr.volume.spacing[:2], thick.spacing[:2])
    assert sr.volume.spacing[2] == pytest.approx(4.0)


def test_the_in_plane_fit_runs_on_the_gpu_and_agrees_with_the_cpu_fit():
    """The shipped in-plane model fine-tuned on an isotropic scan on the device (MedGANLogic.adapt.inplane): the record
    names the GPU, the output lies on the trained model's grid and is close to the same fit on the CPU (fp32 both;
    the optimiser's steps differ in the last bits, so not bit for bit)."""
    from MedGANLogic.simulate import make_subject

    t2 = make_subject(2001, spacing_mm=2.0, contrasts=("T2w",), snr=30.0, n_lesions=0).volumes["T2w"]
    t2 = t2.with_array(np.ascontiguousarray(t2.array[40:48]), metadata={"modality": "MR"})
    runs = {dev: MedGANLogic.run("superres", t2, device=dev, adapt=True, adapt_steps=10) for dev in ("cuda", "cpu")}
    gpu, cpu = runs["cuda"], runs["cpu"]
    fit = gpu.provenance["adapt"]
    assert fit["device"].startswith("cuda") and fit["init"] == "mr-sr-x2-inplane"
    assert gpu.volume.same_geometry(cpu.volume) and gpu.volume.shape == (8, 2 * t2.shape[1], 2 * t2.shape[2])
    assert_runs_agree(cpu, gpu)


def test_training_runs_on_the_gpu_and_its_export_runs_on_the_cpu(tiny_config, tmp_path):
    from MedGANLogic.models.registry import load_network

    config = tiny_config("pix2pix", steps=40, optim__lr_g=1e-3, device="cuda")
    trainer = trainer_class("pix2pix")(config, tmp_path / "run", progress=False)
    g = trainer.net("G")
    assert next(g.parameters()).is_cuda
    batch = {k: v.to("cuda") for k, v in trainer.data.sample_batch(4).items()}  # the sample batch stays on the host
    with torch.no_grad():
        before = torch.nn.functional.l1_loss(g.eval()(batch["source"]), batch["target"]).item()
    g.train()
    summary = trainer.fit()
    with torch.no_grad():
        after = torch.nn.functional.l1_loss(g.eval()(batch["source"]), batch["target"]).item()
    assert summary["step"] == 40 and after < 0.7 * before
    x = batch["source"][:2]
    with torch.no_grad():
        expected = g(x).cpu()
    card = trainer.export(tmp_path / "export", dtype=torch.float32)[0]
    with torch.no_grad():
        on_cpu = load_network(card, "cpu")(x.cpu())
    assert torch.allclose(on_cpu, expected, atol=1e-3)
