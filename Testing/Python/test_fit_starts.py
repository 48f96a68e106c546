"""Starting points of the denoising fit (MedGANLogic.adapt.starts): the shipped folders, their training stacks, and
that a user's fit starts from them and gets further in the same number of steps than from scratch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from MedGANLogic import run
from MedGANLogic.adapt import FitBudget, fit_denoise
from MedGANLogic.adapt.denoise import DEFAULT_LR, denoiser_spec
from MedGANLogic.adapt.noise import MODALITIES, noise_model
from MedGANLogic.adapt.result import load_initial_weights
from MedGANLogic.adapt.starts import FIT_START_DIR, SHIPPED, start_folder, training_stack
from MedGANLogic.demo import add_rician_noise, load_manifest
from MedGANLogic.errors import InputError
from MedGANLogic.io import read_volume
from MedGANLogic.models import build_network
from MedGANLogic.models.registry import list_models


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("modality", SHIPPED)
def test_the_shipped_starts_load_into_their_modality_s_default_fit(modality):
    folder = start_folder(modality)
    assert folder is not None and folder.parent == FIT_START_DIR
    card = json.loads((folder / "card.json").read_text())
    assert card["id"] == f"fit-start-{modality.lower()}" and card["extras"]["role"] == "fit-start"
    assert card["extras"]["modality"] == modality and "not for diagnosis" in card["intended_use"]
    assert card["extras"]["fit"]["steps"] >= 1000 and len(card["extras"]["scans"]) >= 8
    spec = denoiser_spec(noise_model(modality).blind_radius)
    inner = build_network(spec["name"], dict(spec["params"]))
    before = [p.detach().clone() for p in inner.parameters()]
    assert load_initial_weights(inner, folder, spec) == card["id"]
    assert any(not torch.equal(a, b) for a, b in zip(before, inner.parameters()))


def test_starts_are_not_models_a_run_could_pick_and_ct_fits_start_from_scratch():
    assert not any(c.id.startswith("fit-start-") for c in list_models())
    assert set(SHIPPED) < set(MODALITIES) and start_folder("CT") is None


@pytest.mark.parametrize("modality", ["PT", "US"])
def test_training_stacks_are_seeded_and_come_from_the_training_split(modality):
    a, drawn = training_stack(modality, 1, seed=0)
    b, _ = training_stack(modality, 1, seed=0)
    c, _ = training_stack(modality, 1, seed=1)
    assert a.metadata["modality"] == modality and np.array_equal(a.array, b.array)
    assert not np.array_equal(a.array, c.array)  # other noise, other draws
    from MedGANLogic.train.data.sources import split_seeds

    assert drawn[0]["subject"] in split_seeds("train")


def _noisy_sample():
    """Six middle slices of the bundled sample T1w, and the same with Rician noise (8 % of its range)."""
    folder = FIT_START_DIR.parent / "SampleData"
    entry = next(e for e in load_manifest(folder) if e["name"] == "T1w")
    clean = read_volume(entry["path"], metadata={"modality": "MR"})
    middle = clean.shape[0] // 2
    clean = clean.with_array(np.ascontiguousarray(clean.array[middle - 3: middle + 3]))
    return clean, add_rician_noise(clean, 0.08, seed=0)


def test_an_mr_fit_starts_from_the_shipped_start_with_the_mr_learning_rate():
    clean, noisy = _noisy_sample()
    result = run("denoise", noisy, adapt=True, adapt_steps=3, adapt_budget_s=3600.0, device="cpu")
    fit = result.provenance["adapt"]
    assert fit["init"] == "fit-start-mr" and fit["steps"] == 3
    assert fit["details"]["lr"] == DEFAULT_LR["MR"]  # the modality's own learning rate, recorded
    assert any("starting from the shipped MR starting point" in n for n in result.provenance["notes"])


def test_an_ultrasound_fit_from_the_shipped_start_gets_further_in_the_same_steps_than_from_scratch():
    from MedGANLogic.evaluation.sections.adapt import denoising_case
    from MedGANLogic.train.data.sources import split_seeds

    subject = split_seeds("test")[1]  # held out from the starts' training stacks
    noisy, clean, head = denoising_case(subject, "US")

    def error(array):
        return float(np.sqrt(np.mean((array[head] - clean[head]) ** 2)))

    result = run("denoise", noisy, adapt=True, modality="US", adapt_steps=15, adapt_budget_s=3600.0, device="cpu")
    assert result.provenance["adapt"]["init"] == "fit-start-us"
    scratch = fit_denoise(noisy, "US", budget=FitBudget(seconds=3600.0, max_steps=15), device="cpu")
    assert scratch.record.init == "scratch"
    assert error(result.volume.array) < 0.9 * error(scratch.volume.array)
    assert error(result.volume.array) < 0.9 * error(noisy.array)


def test_the_learning_rate_is_per_modality_and_a_bad_one_is_refused():
    assert set(DEFAULT_LR) == set(MODALITIES) and all(v > 0 for v in DEFAULT_LR.values())
    _, noisy = _noisy_sample()
    small = noisy.with_array(np.ascontiguousarray(noisy.array[:2, :64, :64]))
    fit = fit_denoise(small, "MR", budget=FitBudget(seconds=3600.0, max_steps=1), device="cpu", lr=2e-3)
    assert fit.record.details["lr"] == 2e-3
    with pytest.raises(InputError, match="learning rate"):
        fit_denoise(small, "MR", budget=FitBudget(seconds=3600.0, max_steps=1), device="cpu", lr=0.0)
