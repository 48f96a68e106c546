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
