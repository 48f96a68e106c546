"""What a per-scan fit returns, and the pieces both fits share: network set-up and application."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from ..inference import InferenceLayout, infer
from ..volume import Volume
from .loop import FitRecord, ProgressFn


@dataclass
class AdaptResult:
    """The output of a per-scan fit.

    Attributes:
        volume: the result (denoised: the input's grid; super-resolved: a finer grid over the same field of view),
            with ``metadata["provenance"]["adapt"]`` = ``record.summary()``.
        record: the fitting record (steps, seconds, seed, device, loss curve).
        network: the fitted :class:`~MedGANLogic.models.adapted.ScanFittedNetwork` (raw intensities in and out),
            in eval mode on the CPU.
        card: a model card for it (without weights): :func:`MedGANLogic.adapt.save_fitted_model` writes both.
    """

    volume: Volume
    record: FitRecord
    network: torch.nn.Module
    card: dict[str, Any] = field(default_factory=dict)


def load_initial_weights(inner: torch.nn.Module, init: Any, inner_spec: dict[str, Any]) -> str:
    """Load a saved per-scan model's inner weights into ``inner`` (fine-tuning); returns the model's id.

    ``init`` is a model id or folder of a ``scan_fitted2d`` model whose inner network matches ``inner_spec``.
    """
    from ..models import registry

    card = registry.get_model(init)
    params = card.arch_params
    if card.architecture != "scan_fitted2d" or params.get("inner") != inner_spec:
        raise ModelError(f"Model {card.id} cannot start this fit: it is not a network fitted to a scan with the same "
                         f"architecture ({inner_spec['name']} {inner_spec.get('params')}). Fit from scratch "
                         f"(init=None), or pass a model saved by a fit of the same kind.")
    net = registry.load_network(card, "cpu")
    inner.load_state_dict(net.inner.state_dict())
    return card.id


def apply_network(net: torch.nn.Module, array: np.ndarray, layout: InferenceLayout, device: torch.device,
                  progress: ProgressFn | None, cancel: Any) -> np.ndarray:
    """The engine's one inference path (:func:`MedGANLogic.inference.infer`), fp32, on raw intensities."""
    out, _ = infer(net.eval(), np.ascontiguousarray(array, dtype=np.float32), layout, device=device,
                   progress=progress, cancel=cancel, precision="fp32")
    return out[0]
