"""How a fit to the scan joins the engine's two steps: decided in ``pipeline.plan``, run in ``pipeline.execute``.

    MedGANLogic.run("denoise", "pet.nii.gz", adapt=True, modality="PT", adapt_budget_s=90)
    MedGANLogic.run("superres", "thick_t2.nii.gz", adapt=True)        # starts from a fitting SR model if any

:func:`plan_adapt` checks everything a fit needs before any work (the task, the modality of a denoising fit,
the through-plane factor of a super-resolution fit, the options that do not apply, the model to start from)
and :func:`execute_adapt` fits and applies, with progress covering the fit and then the pass over the volume,
and records the fit in the provenance. The fit runs on the input's own grid: no resampling or reorientation.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..errors import InputError, ModelError
from ..modality import is_ct
from ..volume import Volume
from .data import through_plane_axis
from .loop import FitBudget
from .noise import canonical_modality

TASKS = ("denoise", "superres")
DEFAULT_BUDGET_S = {"denoise": 90.0, "superres": 120.0}
MAX_STEPS = 100_000  # the seconds bind unless adapt_steps is given
#: Options of a trained-model run that a fit does not use: refused rather than silently ignored.
NOT_FOR_A_FIT = ("batch_size", "overlap", "slice_axis", "precision", "amp", "native", "bias_correction", "force")


@dataclass(frozen=True)
class AdaptPlan:
    """What a fit to the scan will do (see :func:`plan_adapt`)."""

    task: str
    budget: FitBudget
    seed: int
    modality: str | None  # denoise: MR, CT, PT or US
    factor: int | None  # superres through-plane: up-sampling along the slice axis
    start: Any  # a model id/folder to start from (denoise: the modality's fit start if installed), "auto" or None
    notes: list[str] = field(default_factory=list)
    inplane: bool = False  # superres: fine-tune the trained in-plane model ``start`` (:mod:`.inplane`)
    trained: Any = None  # in-plane: the trained model's RunPlan (its frame and layout), made by pipeline.plan


def plan_adapt(task: str, volume: Volume, model: Any, options: dict[str, Any]) -> AdaptPlan:
    """Check a fit to ``volume`` for ``task`` with the validated ``options``; raises InputError/ModelError."""
    if task not in TASKS:
        raise InputError(f"adapt=True (fit to this scan) works for {' and '.join(TASKS)}, not {task!r}.")
    unused = [k for k in NOT_FOR_A_FIT if k in options and options[k] is not False]
    if unused:
        raise InputError(f"Option(s) {', '.join(unused)} do not apply when fitting to the scan (adapt=True); remove "
                         f"them.")
    budget = FitBudget(seconds=float(options.get("adapt_budget_s", DEFAULT_BUDGET_S[task])),
                       max_steps=int(options.get("adapt_steps", MAX_STEPS)))
    seed = int(options.get("adapt_seed", 0))
    notes = []
    if task == "denoise":
        from .denoise import DEFAULT_METHOD, default_budget, trained_card
        from .denoise import DEFAULT_SECONDS as DENOISE_SECONDS

        recorded = volume.metadata.get("modality") or ("CT" if is_ct(volume) else None)
        modality = canonical_modality(recorded)
        if "adapt_budget_s" not in options:  # the modality's default (CT's and PET's fits need more steps)
            budget = FitBudget(seconds=DENOISE_SECONDS[modality], max_steps=budget.max_steps)
        if "adapt_steps" not in options:  # the modality's step cap (blind-spot fits: longer learns the noise)
            budget = default_budget(modality, budget.seconds, MAX_STEPS)
        if model is not None:
            _check_start(model, "denoise")
            start, said = model, f"starting from model {model}"
            fine = trained_card(model) is not None
            if fine and modality != "CT":
                raise InputError(f"Model {model} is a trained CT denoiser: it starts a fit to a CT scan only, and "
                                 f"this one is {modality}. Give no model, or a fit kept from a {modality} scan.")
        else:
            from .denoise import trained_start
            from .starts import start_folder

            # the shipped starting point of this modality, if installed: blind-spot networks, so not for a
            # modality whose default fit is another method (CT, PET: recorrupted-to-recorrupted); there the
            # modality's trained denoiser, if installed, is fine-tuned (CT: ldct-denoise); a given model starts the
            # fit of its own method (fit_denoise)
            fine = False
            if DEFAULT_METHOD[modality] == "blindspot":
                start = start_folder(modality)
                said = (f"starting from the shipped {modality} starting point (fit-start-{modality.lower()})"
                        if start is not None else "from scratch")
            else:
                start = trained_start(modality)
                said = f"fine-tuning the trained {start}" if start is not None else "from scratch"
                fine = start is not None
        if fine and "adapt_steps" not in options:  # a fine-tuning fit arrives sooner: its own cap
            budget = default_budget(modality, budget.seconds, MAX_STEPS, fine_tuning=True)
        limit = f" or {budget.max_steps} steps" if budget.max_steps < MAX_STEPS else ""
        notes.append(f"fitting a {modality} denoiser to this scan for up to {budget.seconds:g} s{limit}, {said}")
        return AdaptPlan(task, budget, seed, modality, None, start, notes)
    from ..models import registry
    from .inplane import DEFAULT_STEPS, inplane_card, is_inplane
    from .superres import pretrained_card, through_plane_factor

    axis = through_plane_axis(volume)
    ratio = through_plane_factor(volume, axis)
    factor = int(round(ratio))
    modality = volume.metadata.get("modality")
    if model is not None:
        _check_start(model, "superres")
    inplane = registry.get_model(model) if model is not None else None
    if inplane is None and factor < 2:  # no thick slices: the installed in-plane model, if any
        inplane = inplane_card(modality)
    if inplane is not None and is_inplane(inplane):
        if "adapt_steps" not in options:  # a longer fit forgets what the model learned (DEFAULT_STEPS)
            budget = FitBudget(seconds=budget.seconds, max_steps=DEFAULT_STEPS)
        notes.append(f"fitting in-plane super-resolution to this scan: the trained {inplane.id} fine-tuned on the "
                     f"scan's own detail for up to {budget.seconds:g} s or {budget.max_steps} steps, then run as "
                     f"the trained model runs")
        return AdaptPlan(task, budget, seed, modality, None, inplane.id, notes, inplane=True)
    if factor < 2:
        raise InputError(f"Fitting super-resolution to the scan needs thick slices, or an installed in-plane "
                         f"super-resolution model (such as mr-sr-x2-inplane) for {modality or 'this modality'}: "
                         f"the largest spacing is {ratio:.2f} x the others (spacing "
                         f"{tuple(round(s, 3) for s in volume.spacing)} mm).")
    start: Any = "auto"
    if model is not None:
        start = model
    else:
        card = pretrained_card(factor, volume.metadata.get("modality"))
        start = card.id if card is not None else None
    notes.append(f"fitting x{factor} through-plane super-resolution (array axis {axis}) to this scan for up to "
                 f"{budget.seconds:g} s, " + (f"starting from model {start}" if start else "from scratch"))
    return AdaptPlan(task, budget, seed, volume.metadata.get("modality"), factor, start, notes)


def _check_start(model: Any, task: str) -> None:
    from ..models import registry
    from .denoise import trained_window

    card = registry.get_model(model)
    fits = card.task == task and (card.architecture == "scan_fitted2d"
                                  or (task == "superres" and card.architecture == "srresnet2d")
                                  or (task == "denoise" and trained_window(card) is not None))
    if not fits:
        raise ModelError(f"Model {card.id} cannot start a {task} fit to the scan: give a model saved by an earlier "
                         f"fit (or, for super-resolution, an srresnet2d model; for CT denoising, a trained CT "
                         f"denoiser such as ldct-denoise), or no model.")


def execute_adapt(plan: Any, progress=None, cancel=None):
    """Fit and apply for a :class:`~MedGANLogic.pipeline.RunPlan` whose ``adapt`` is set; a RunResult."""
    from ..pipeline import RunResult
    from .denoise import fit_denoise
    from .superres import fit_superres

    started = time.perf_counter()
    fit: AdaptPlan = plan.adapt
    common = {"budget": fit.budget, "seed": fit.seed, "device": plan.device, "progress": progress,
              "cancel": cancel}
    extras: dict[str, Any] = {}
    if fit.inplane:
        from .inplane import fit_inplane

        common.pop("device")
        _, extras, result = fit_inplane(fit.trained, **common)
    elif fit.task == "denoise":
        result = fit_denoise(plan.volume, fit.modality, init=fit.start, **common)
    else:
        result = fit_superres(plan.volume, fit.factor, init=fit.start, **common)
    record = result.record
    out = result.volume
    volume = plan.volume
    meta = {k: v for k, v in volume.metadata.items() if k not in ("provenance", "source", "synthetic", "adapt")}
    meta.update({"kind": "image", "synthetic": True})
    out.metadata = dict(out.metadata, **meta)
    provenance = {
        "software": f"MedGAN {__version__}", "task": plan.task, "model": "fitted to this scan",
        "model_name": record.method, "model_version": None, "weights_sha256": None, "options": dict(plan.options),
        "device": record.device, "precision": "fp32", "seconds": round(time.perf_counter() - started, 3),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": str(volume.metadata.get("source", volume.metadata.get("name", "volume"))), "synthetic": True,
        "intended_use": "research, not for diagnosis: a network fitted to this one scan",
        "warnings": list(plan.warnings), "notes": list(plan.notes), "adapt": record.summary(),
    }
    described = {k: out.metadata[k] for k in ("modality", "contrast", "units", "kind") if out.metadata.get(k)}
    for key, value in extras.items():  # what the trained model's task said of its run (in-plane: kept data)
        if isinstance(value, (int, float, str)):
            provenance[key] = value
    out.metadata["provenance"] = dict(provenance, output=described)
    out.metadata.pop("adapt", None)  # it lives in the provenance now
    extras = dict(extras, fit_steps=record.steps, fit_seconds=round(record.seconds, 3), fitted=result)
    return RunResult(outputs={"image": out}, extras=extras, provenance=provenance, primary="image")
