"""Self-supervised through-plane super-resolution of an anisotropic scan (after SMORE and ECLARE, Remedios et al.).

    result = fit_superres(thick, budget=FitBudget(seconds=120))
    result.volume        # finer slice spacing, same field of view

A thick-slice scan is sharp in-plane and blurred through-plane. The in-plane slices hold the missing detail:
degraded along one in-plane axis exactly as the scanner degraded the slice axis, they become training pairs
(low-resolution input, the slice itself as target) for a 2D SRResNet (:mod:`MedGANLogic.models.srgan`) that
learns to undo that degradation. The network is then applied to the planes that contain the slice axis, both
of them (e.g. coronal and sagittal for axial slices), and the two results are averaged.

* Degradation: the project's one super-resolution degradation (:func:`MedGANLogic.simulate.superres_pair`,
  ``thick_slices``): ``factor`` neighbouring in-plane pixels averaged, a box slice profile as wide as the slice
  spacing (thickness = spacing, no gap), along each in-plane axis in turn.
* Factor: the slice spacing over the in-plane spacing, rounded (at least 2); the output slice spacing is the
  input's divided by it.
* Losses: L1, plus an optional adversarial term in the second half of the budget (:mod:`.adversarial`), as the
  SRGAN family; batches come from the family's :class:`~MedGANLogic.train.data.superres.ScaledPairBatches`.
* Start: ``init="auto"`` fine-tunes an installed super-resolution model whose network fits (an ``srresnet2d``
  scaling the slice axis by the same factor, for this modality); its context channels are folded into one
  (the stem's weights summed: the same output as feeding the slice as every channel). Otherwise from scratch.
* Output grid: :meth:`MedGANLogic.volume.Volume.resampled_grid`, as the super-resolution task: spacing along the
  slice axis / factor, outer voxel edges unchanged, direction unchanged.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..inference import InferenceLayout, resolve_device
from ..models.adapted import ScanFittedNetwork
from ..normalization import intensity_window
from ..volume import Volume
from .adversarial import AdversarialTerm
from .data import FOREGROUND, through_plane_axis, unit_window
from .export import fitted_card
from .loop import (
    FitBudget,
    FitRecord,
    ProgressFn,
    fit_steps,
    init_network,
    learning_rate,
    loss_curve,
    optimise,
    schedule_lr,
    span_progress,
)
from .result import AdaptResult, apply_network

FIT_SHARE = 0.8  # of the progress bar; the two passes over the volume take the rest
DEFAULT_BUDGET = FitBudget(seconds=120.0, max_steps=2000)
# Adam learning rate, chosen on the validation phantom (subject 1000; make eval scores test subject 2000), gain over
# B-spline after 400 steps. From scratch (x4: T2w / T1w / FLAIR) lr 5e-4: +1.6 / +4.4 / +3.4 dB; 1e-3: +2.4 / +5.0 /
# +4.2; 2e-3: +2.9 / +5.5 / +4.8; 4e-3: +2.7 / +5.2 / +4.9; 8e-3: +0.2 / +1.1 / diverged. Starting from
# mr-sr-x2-throughplane (x2) it matters less: 5e-4: +4.8 / +3.0 / +3.6; 2e-3: +5.0 / +3.0 / +3.8; 4e-3: +4.5 / +2.7.
DEFAULT_LR = 2e-3


def sr_spec(factor: int, features: int = 32, n_blocks: int = 4) -> dict[str, Any]:
    """The inner network: SRResNet scaling H by ``factor`` (H = the low-resolution axis), one input channel."""
    return {"name": "srresnet2d", "params": {"in_channels": 1, "out_channels": 1, "scale": [int(factor), 1],
                                             "features": int(features), "n_blocks": int(n_blocks),
                                             "res_scale": 0.2, "global_skip": "bilinear"}}


def through_plane_factor(volume: Volume, axis: int) -> float:
    """Slice spacing over the mean in-plane spacing."""
    spacing_zyx = np.asarray(volume.spacing[::-1])
    return float(spacing_zyx[axis] / np.mean([s for a, s in enumerate(spacing_zyx) if a != axis]))


def _window(array: np.ndarray, modality: str | None, spec: dict[str, Any] | None = None) -> tuple[float, float]:
    """The intensities the fit maps onto [-1, 1]: those of the pretrained model it starts from (its card's
    ``mr_percentile`` input spec, zero-based or not), else the engine's MR window, else the volume's percentiles."""
    if spec is not None and spec.get("kind") == "mr_percentile":
        w = intensity_window(array, spec)
        return w["low"], w["high"]
    if modality == "MR":  # the engine's MR window: what a pretrained MR model was trained on
        w = intensity_window(array, {"kind": "mr_percentile", "percentiles": [0.5, 99.5]})
        return w["low"], w["high"]
    return unit_window(array)


def pretrained_card(factor: int, modality: str | None) -> Any:
    """The card of an installed super-resolution model that can start this fit (an ``srresnet2d`` scaling one
    axis other than its slice axis by ``factor``, for ``modality``), or None."""
    from ..models import registry

    if modality is None:
        return None
    for card in registry.list_models("superres"):
        plane = [int(s) for s in card.arch_params.get("scale", [])]
        scaled = [a for a, s in enumerate(card.scale_factor) if s != 1]
        if (card.architecture == "srresnet2d" and plane == [factor, 1] and len(scaled) == 1
                and scaled[0] != card.slice_axis and card.input.get("modality") in (modality, "any")):
            return card
    return None


def training_pairs(unit: np.ndarray, factor: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """In-plane slices of ``unit`` (slice axis first) degraded along each in-plane axis: (low, high) lists of
    (S, 1, h, w) and (S, 1, h * factor, w) arrays, the low-resolution axis first (H)."""
    from ..simulate import superres_pair

    low_y, high_y = (v.array for v in superres_pair(Volume(unit), (1, factor, 1), "thick_slices"))
    low_x, high_x = (v.array for v in superres_pair(Volume(unit), (1, 1, factor), "thick_slices"))
    lows = [low_y[:, None], np.ascontiguousarray(low_x.transpose(0, 2, 1))[:, None]]
    highs = [high_y[:, None], np.ascontiguousarray(high_x.transpose(0, 2, 1))[:, None]]
    return lows, highs


def fit_superres(volume: Volume, factor: int | None = None, *, budget: FitBudget | None = None, seed: int = 0,
                 device: str | torch.device = "auto", progress: ProgressFn | None = None, cancel: Any = None,
                 adversarial: float = 0.0, init: Any = "auto", patch: int = 64, batch_size: int = 8,
                 features: int = 32, n_blocks: int = 4, lr: float | None = None) -> AdaptResult:
    """Fit a super-resolution network to ``volume``'s own in-plane detail and super-resolve its slice axis.

    Args:
        volume: an anisotropic scan (never modified): the slice axis is the one with the largest spacing.
        factor: integer up-sampling along the slice axis; default: slice spacing / in-plane spacing, rounded.
        budget: seconds and maximum steps of fitting (default 120 s, 2000 steps).
        seed: seeds weights and batches: same seed and steps, same result (on the same CPU).
        device, progress, cancel: as :func:`MedGANLogic.adapt.fit_denoise` (fitting covers 0-0.8 of progress).
        adversarial: weight of the adversarial term (0: L1 only; the SRGAN family uses 5e-3).
        init: ``"auto"`` (an installed model that fits, else scratch), ``None`` (scratch) or a model id/folder
            (an ``srresnet2d`` super-resolution model, or a model saved from an earlier fit).
        patch, batch_size: high-resolution patch side (pixels) and patches per step.
        features, n_blocks: SRResNet width and depth (when not starting from a model).
        lr: Adam learning rate (default ``DEFAULT_LR``, chosen on the validation phantom).

    Returns:
        :class:`AdaptResult`: the volume on the grid ``factor`` times finer along the slice axis, same field of
        view (:meth:`~MedGANLogic.volume.Volume.resampled_grid`).
    """
    from ..pipeline import check_volume

    check_volume(volume)
    budget = budget or DEFAULT_BUDGET
    axis = through_plane_axis(volume)
    ratio = through_plane_factor(volume, axis)
    factor = int(round(ratio)) if factor is None else int(factor)
    if factor < 2 or factor != round(factor):
        raise InputError(f"Super-resolution by fitting to the scan needs a thick-slice scan: its slice spacing is "
                         f"{ratio:.2f} x the in-plane spacing (spacing {volume.spacing} mm), which makes factor "
                         f"{factor}. Give factor=2 or more explicitly to super-resolve anyway.")
    if any(n < factor for n in volume.shape):
        raise InputError(f"The volume {volume.shape} is too small to super-resolve by {factor}.")
    dev = resolve_device(device)
    modality = volume.metadata.get("modality")
    array = np.moveaxis(volume.array, axis, 0)  # slice axis first (a view)
    inner, start, state, start_spec = sr_spec(factor, features, n_blocks), "scratch", None, None
    if init == "auto":
        card = pretrained_card(factor, modality)
        init = card.folder if card is not None else None
    if init not in (None, "scratch"):
        inner, state, start, start_spec = _named_start(init, factor)
    window = _window(array, modality, start_spec)  # the intensities the starting model learned on
    net = init_network(lambda: ScanFittedNetwork(inner, "identity", window), seed)
    if state is not None:
        net.inner.load_state_dict(state)
    model = net.inner.to(dev).train()
    lr = learning_rate(lr, DEFAULT_LR)

    from ..train.data.superres import ScaledPairBatches

    unit = net.to_unit(torch.from_numpy(np.array(array, dtype=np.float32))).numpy()
    lows, highs = training_pairs(unit, factor)
    del unit
    size = max(8, int(patch) // factor)
    batches = ScaledPairBatches(lows, highs, scale=(factor, 1), batch_size=batch_size, seed=seed,
                                crop=[size, size * factor], background=FOREGROUND - 0.1, min_foreground=0.05)
    if not batches.index:
        raise InputError("The scan has no slice with enough signal to learn from (every slice is nearly empty).")
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    adv = init_network(lambda: AdversarialTerm(adversarial, dev), seed + 1) if adversarial > 0 else None

    def step(k: int, fraction: float) -> float:
        schedule_lr(opt, lr, fraction)
        batch = batches.batch(k)
        x, y = batch["source"].to(dev), batch["target"].to(dev)
        out = model(x)
        loss = F.l1_loss(out, y)
        total = loss
        if adv is not None and adv.active(fraction):
            adv.update_discriminator(y, out)
            total = total + adv.generator_loss(out)
        optimise(opt, total)
        return loss.item()

    losses, seconds, stopped = fit_steps(step, budget, progress=span_progress(progress, 0.0, FIT_SHARE),
                                         cancel=cancel, label=f"fitting x{factor} super-resolution to this scan")
    net = net.to(dev).eval()
    applied = time.perf_counter()
    fused = None
    for i, plane in enumerate((1, 2)):  # the two planes that contain the slice axis
        layout = InferenceLayout(dims="2d", slice_axis=plane, scale=(float(factor), 1.0, 1.0), pad_value=window[0])
        share = FIT_SHARE + (1 - FIT_SHARE) * np.array([i, i + 1]) / 2
        out = apply_network(net, array, layout, dev, span_progress(progress, *share), cancel)
        fused = out if fused is None else (fused + out) * np.float32(0.5)
    net = net.cpu()

    scale = tuple(float(factor) if a == axis else 1.0 for a in range(3))
    grid = volume.resampled_grid(scale)
    shape = grid.pop("shape")
    result_array = np.ascontiguousarray(np.moveaxis(fused, 0, axis))
    assert result_array.shape == shape, (result_array.shape, shape)
    record = FitRecord(
        method=f"self-supervised through-plane super-resolution x{factor} (in-plane slices degraded to the slice "
               f"profile, SRResNet, L1{' + adversarial' if adv else ''}, two planes fused)",
        steps=len(losses), seconds=seconds, seed=int(seed), device=str(dev), stopped_by=stopped,
        budget={"seconds": budget.seconds, "max_steps": budget.max_steps},
        loss_first=losses[0], loss_last=losses[-1], loss_curve=loss_curve(losses), init=start,
        details={"modality": modality, "factor": factor, "lr": lr, "scaled_axis": axis,
                 "spacing_ratio": round(ratio, 4), "window": list(window), "network": inner,
                 "adversarial": float(adversarial),
                 "slice_profile": "box (thickness = spacing)", "patch": size * factor, "batch_size": batch_size,
                 "apply_seconds": round(time.perf_counter() - applied, 3)})
    meta = {"adapt": record.summary(),
            "geometry_changed": f"super-resolution x{factor} along array axis {axis}: spacing "
                                f"{[round(s, 4) for s in volume.spacing]} -> "
                                f"{[round(s, 4) for s in grid['spacing']]} mm, same field of view"}
    out_volume = volume.with_array(result_array, metadata=meta, **grid)
    return AdaptResult(out_volume, record, net, fitted_card("superres", volume, net, record))


def _named_start(init: Any, factor: int) -> tuple[dict[str, Any], dict[str, torch.Tensor], str, Any]:
    """Inner spec, weights, id and input normalisation spec (None for an earlier fit, which maps its own window)
    of the model ``init`` (an earlier fit or an srresnet2d model) for ``factor``."""
    from ..errors import ModelError
    from ..models import registry

    card = registry.get_model(init)
    net = registry.load_network(card, "cpu")
    if card.architecture == "scan_fitted2d":
        spec, state = card.arch_params["inner"], net.inner.state_dict()
    elif card.architecture == "srresnet2d":
        spec = {"name": "srresnet2d", "params": dict(card.arch_params, in_channels=1, out_channels=1)}
        state = dict(net.state_dict())
        state["stem.weight"] = state["stem.weight"].sum(dim=1, keepdim=True)
    else:
        raise ModelError(f"Model {card.id} ({card.architecture}) cannot start a super-resolution fit; give an "
                         f"srresnet2d super-resolution model, a model saved by an earlier fit, or init=None.")
    if spec.get("name") != "srresnet2d" or [int(s) for s in spec["params"].get("scale", [])] != [factor, 1]:
        raise ModelError(f"Model {card.id} does not scale by {factor} along one axis; fit from scratch (init=None).")
    norm = card.input.get("normalization") if card.architecture == "srresnet2d" else None
    return spec, {k: v.detach().clone() for k, v in state.items()}, card.id, norm
