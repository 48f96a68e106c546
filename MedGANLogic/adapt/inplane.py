"""In-plane super-resolution fitted to the scan: a trained in-plane model fine-tuned on the scan's own detail.

    MedGANLogic.run("superres", "t1_1mm.nii.gz", adapt=True)                        # a scan without thick slices
    MedGANLogic.run("superres", "t2.nii.gz", model="mr-sr-x2-inplane", adapt=True)  # any scan, in-plane

A network trained on other images meets each real scan's own anatomy, texture and blur for the first time. The
scan itself holds examples of what the network must do at a coarser scale (Shocher et al. 2018, "zero-shot"
super-resolution, ZSSR; Soh et al. 2020 start such a fit from a trained network, MZSR): the input, degraded once
more exactly as the model was trained to invert (its card's ``extras.degradation``, e.g. the central half of
k-space in-plane), is a training input whose target is the input. The trained model is fine-tuned on those pairs
for a few hundred steps at a small learning rate (a longer or faster fit forgets what it learned on other images:
:data:`DEFAULT_STEPS`, :data:`DEFAULT_LR`), then runs on the input as the trained model does (same frame,
self-ensemble, kept measured data), through :func:`MedGANLogic.pipeline.network_outputs`.

The pairs are made in the model's frame, where the network sees the input (reoriented and resampled as the engine
does for the trained model), normalised as the model's training normalised its pairs (the coarser image's window).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..inference import resolve_device
from ..volume import Volume
from .export import fitted_on
from .loop import (
    FitBudget,
    FitRecord,
    fit_steps,
    init_network,
    learning_rate,
    loss_curve,
    optimise,
    schedule_lr,
    span_progress,
)

FIT_SHARE = 0.8  # of the progress bar; the pass over the volume takes the rest
# Chosen on real MR that no report scores (nibabel's EPI volumes 0 and 1 and its small T1w, degraded x2 in-plane as
# make eval-real degrades its brains), starting from mr-sr-x2-inplane 3.5.0 (gain over cubic B-spline, mean of the
# three: +1.24 dB), 2026-12-06, with a prototype of this fit (the rate decayed linearly to zero): 400 steps at 3e-4
# +1.20, 400 at 1e-4 +1.31, 200 at 3e-4 +1.31, 200 at 1e-4 +1.36, 200 at 5e-5 +1.39, 100 at 1e-4 +1.39, 100 at 5e-5
# +1.40, 50 at 1e-4 +1.40 dB (the fewest steps within 0.02 dB of the best, the rule set before). Longer or faster fits
# forget: the EPIs gain up to +0.28 dB, the 16 x 20-pixel T1w loses (0.04 dB at 50 steps, 0.4 dB at 400 steps at
# 3e-4). This fit with the chosen setting (python -m MedGANLogic.evaluation.validation superres --adapt
# mr-sr-x2-inplane): +1.60 / +1.60 / +1.00, mean +1.40 dB.
# Tried, not kept (2026-12-07; rule set before: keep if it gains 0.03 dB): rehearsal, a share of the fit's crops from
# the photographs of the model's last training stage, so that a longer fit forgets less. Same validation, this fit:
# 50 steps without +1.399; with a quarter of the crops: 50 steps +1.392, 200 steps +1.427; with half: 200 steps
# +1.418, 400 steps +1.420 (the small T1w gains up to 0.11 dB, the EPIs lose up to 0.03).
# Kept for mr-sr-x2-inplane 3.6.0 (twice as deep; not chosen again): the same validation, this fit +1.66 / +1.65 /
# +1.14, mean +1.48 dB (the model as trained +1.29).
DEFAULT_STEPS = 50
DEFAULT_LR = 1e-4
PATCH = 32  # low-resolution crop side (pixels), as the model's recipe
BATCH_SIZE = 8
MIN_FOREGROUND = 0.15


def is_inplane(card: Any) -> bool:
    """Whether ``card`` is a super-resolution model this fit can start from: a 2D/2.5D network scaling the two axes
    of its slices (not its slice axis), which the engine runs as any trained model."""
    scale = [float(s) for s in card.scale_factor]
    return (card.task == "superres" and card.dims in ("2d", "2.5d") and scale[card.slice_axis] == 1
            and sum(s != 1 for s in scale) == 2 and card.architecture != "scan_fitted2d")


def inplane_card(modality: str | None) -> Any:
    """The first installed in-plane super-resolution model for ``modality`` (:func:`is_inplane`), or None."""
    from ..models import registry

    for card in registry.list_models("superres"):
        if is_inplane(card) and card.input.get("modality") in (modality, "any"):
            return card
    return None


def fit_inplane(plan: Any, *, budget: FitBudget, seed: int = 0, progress: Any = None, cancel: Any = None,
                lr: float | None = None) -> tuple[dict[str, Volume], dict[str, Any], Any]:
    """Fine-tune the trained model of ``plan`` (a :class:`~MedGANLogic.pipeline.RunPlan` of an in-plane model,
    :func:`is_inplane`) on its input's own pairs, then run it as the plan says.

    Returns (the task's outputs on the input's grid, the task's extras, an
    :class:`~MedGANLogic.adapt.AdaptResult` whose network and card are the fitted model's).
    """
    from .. import pipeline
    from ..frame import to_model
    from ..models import build_network, registry
    from ..models.ensemble import SelfEnsemble
    from ..simulate.lowres import superres_pair
    from ..tasks import get_task
    from ..train.data.slices import normalize_for_training, range_low, volume_slices
    from ..train.data.superres import ScaledPairBatches, plane_scale
    from .result import AdaptResult

    card, volume = plan.card, plan.volume
    if len(plan.planes) > 1:
        raise InputError(f"Model {card.id} runs in {len(plan.planes)} planes; a fit to the scan fine-tunes a model "
                         f"that runs in one.")
    one = plan.planes[0] if plan.planes else pipeline.PlanePass(plan.layout.slice_axis, 1.0, plan.frame,
                                                                plan.layout)
    task_module = get_task(plan.task)
    source = task_module.network_source(plan) if hasattr(task_module, "network_source") else volume
    seen = to_model(source, one.frame)  # what the trained model would be shown
    axis, scale = int(one.layout.slice_axis), tuple(int(s) for s in card.scale_factor)
    degradation = card.extras.get("degradation", "thick_slices")
    spec = copy.deepcopy(card.input["normalization"])
    context = int(card.data.get("context_slices", 0)) if card.dims == "2.5d" else 0
    coarser, finer = superres_pair(seen, scale, degradation)  # the input degraded once more, and the input
    coarser_n, stats = normalize_for_training(coarser.array, spec)
    finer_n = normalize_for_training(finer.array, spec, stats)[0]
    batches = ScaledPairBatches([volume_slices(coarser_n, axis, context)], [volume_slices(finer_n, axis, 0)],
                                scale=plane_scale(card.data, axis), batch_size=BATCH_SIZE, seed=seed,
                                crop=[PATCH, PATCH], background=range_low(spec), min_foreground=MIN_FOREGROUND,
                                augment={"flip": True})
    if not batches.index:
        raise InputError("The scan has no slice with enough signal to learn from (every slice is nearly empty).")
    del coarser_n, finer_n

    dev = resolve_device(plan.device)
    state = registry.read_weights(card)  # checked against the card's SHA-256
    net = init_network(lambda: build_network(card.architecture, card.arch_params), seed)
    net.load_state_dict(state)
    net = net.to(dev).train()
    lr = learning_rate(lr, DEFAULT_LR)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999))

    def step(k: int, fraction: float) -> float:
        schedule_lr(opt, lr, fraction)
        batch = batches.batch(k)
        loss = F.l1_loss(net(batch["source"].to(dev)), batch["target"].to(dev))
        optimise(opt, loss)
        return loss.item()

    factor = "x".join(str(s) for s in scale if s != 1)
    losses, seconds, stopped = fit_steps(step, budget, progress=span_progress(progress, 0.0, FIT_SHARE),
                                         cancel=cancel, label=f"fitting {card.id} to this scan")
    net = net.eval().requires_grad_(False)
    applied = time.perf_counter()
    count = pipeline.ensemble_count(card, plan.options, plan.device)
    ready = SelfEnsemble(net, count) if count > 1 else net
    outputs, extras, _, _ = pipeline.network_outputs(plan, ready, count, span_progress(progress, FIT_SHARE, 1.0),
                                                     cancel, cpu_network=lambda: ready.to("cpu"))
    record = FitRecord(
        method=f"in-plane super-resolution {factor}: the trained {card.id} {card.version} fine-tuned on this scan's "
               f"own pairs (the input degraded once more as the model was trained to invert, "
               f"{degradation}, and the input), L1",
        steps=len(losses), seconds=seconds, seed=int(seed), device=str(dev), stopped_by=stopped,
        budget={"seconds": budget.seconds, "max_steps": budget.max_steps},
        loss_first=losses[0], loss_last=losses[-1], loss_curve=loss_curve(losses), init=card.id,
        details={"modality": volume.metadata.get("modality"), "scale_factor": list(scale), "lr": lr,
                 "degradation": degradation, "slice_axis": axis, "patch": PATCH * int(max(scale)),
                 "batch_size": BATCH_SIZE, "start_sha256": card.sha256,
                 "apply_seconds": round(time.perf_counter() - applied, 3)})
    return outputs, extras, AdaptResult(outputs["image"], record, net.cpu(), fitted_card(card, volume, record))


def fitted_card(card: Any, volume: Volume, record: FitRecord) -> dict[str, Any]:
    """The trained ``card`` (without weights) for its network fine-tuned on ``volume`` by the fit ``record``: it
    runs through the engine as the trained model does, and can start a later fit."""
    data = json.loads(json.dumps(card.data))
    for key in ("weights", "training"):
        data.pop(key, None)
    scan = fitted_on(volume, record.details.get("modality"))
    name = Path(scan["source"]).name
    data.update({
        "id": f"fitted-superres-{str(scan['modality']).lower()}-{scan['voxels_sha256'][:10]}-s{record.seed}",
        "version": "1.0.0",
        "name": f"{card.name}, fine-tuned on one scan ({name})",
        "training_data": f"{data.get('training_data', '')}; then fine-tuned on one scan only ({scan['source']}), "
                         f"self-supervised",
        "license": "the weights derive from the scan they were fitted on: share them only as that scan may be shared",
        "intended_use": "research, not for diagnosis: made for the one scan it was fitted on; on other scans only a "
                        "starting point for another fit",
        "notes": f"{record.method}; {record.steps} steps. Before the fit: {data.get('notes', '')}",
    })
    data["extras"] = dict(data.get("extras") or {}, fitted_on=scan, fit=record.summary())
    return data
