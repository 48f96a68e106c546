"""Super-resolution (``mr-sr-x2-throughplane``, ``mr-sr-x2-inplane``, SRGAN) against cubic B-spline.

Each test subject's 2 mm T2w is degraded exactly as in training (two slices averaged into one 4 mm slice; or the
central half of k-space kept in-plane); the model and a cubic B-spline interpolation (SimpleITK ``sitkBSpline``
onto the same output grid) bring it back to 2 mm, and both are scored with PSNR and SSIM in the head against the
noise-free T2w of the subject (and, beside it, against the acquired noisy T2w). Data range: the reference's
0.5-99.5 percentile range.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from ...volume import Volume
from ..baselines import bspline_upsample
from ..context import PHANTOM_DIRECTION, SPACING_MM, EvalContext, SectionResult, Target, mean, missing_models, mr_range
from ..metrics import psnr, ssim
from ..panels import fullest_slice, save_panel
from . import SECTIONS

SR_MODELS: dict[str, dict[str, Any]] = {
    "mr-sr-x2-throughplane": {"scale": (2, 1, 1), "panel_axis": 1,
                              "what": "through-plane (4 mm thick axial slices -> 2 mm)"},
    "mr-sr-x2-inplane": {"scale": (1, 2, 2), "panel_axis": 0, "fitted_to_scan": True,
                         "what": "in-plane (4 mm in-plane, k-space truncated -> 2 mm)"},
}  # fitted_to_scan: the section also scores the model fine-tuned on each scan (MedGANLogic.adapt.inplane)
SR_TARGET_DB = 1.5
FITTED = "model fitted to the scan"


def degrade_volume(hr: Volume, model_id: str) -> tuple[Volume, Volume]:
    """(low-resolution input, high-resolution grid it came from), acquired as the model's card says it was trained."""
    from ...simulate import superres_pair

    return superres_pair(hr, SR_MODELS[model_id]["scale"], degradation(model_id))


def degradation(model_id: str) -> str:
    """The acquisition the installed model ``model_id`` was trained to invert (its card's ``extras.degradation``)."""
    from ...models.registry import get_model

    return get_model(model_id).extras["degradation"]


def superres_section(ctx: EvalContext, model_id: str) -> SectionResult:
    """The section of the super-resolution model ``model_id`` (a key of :data:`SR_MODELS`)."""
    spec = SR_MODELS[model_id]
    title = f"T2w super-resolution x2, {spec['what']} ({model_id}, SRGAN)"
    if (m := missing_models(title, [model_id])) is not None:
        return m
    fitted_to_scan = bool(spec.get("fitted_to_scan"))
    metrics: dict[str, dict[str, list[float]]] = {"model": {}, **({FITTED: {}} if fitted_to_scan else {}),
                                                  "cubic B-spline": {}}
    geometry_exact, panel = [], None
    for seed in ctx.test_seeds:
        s = ctx.subject(seed)
        clean = ctx.subject(seed, keys=("T1w", "T2w"), noise_free=True)["T2w"]
        hr = Volume(s["T2w"], spacing=(SPACING_MM,) * 3, direction=PHANTOM_DIRECTION,
                    metadata={"modality": "MR", "contrast": "T2w"})
        low, grid = degrade_volume(hr, model_id)
        out = ctx.run("superres", low, model_id).volume
        geometry_exact.append(bool(out.same_geometry(grid)))
        preds = {"model": out.array, "cubic B-spline": bspline_upsample(low, grid)}
        if fitted_to_scan:
            from ...adapt.inplane import DEFAULT_STEPS

            preds[FITTED] = ctx.run("superres", low, model_id, adapt=True, adapt_steps=DEFAULT_STEPS,
                                    adapt_budget_s=86400.0).volume.array
        base = preds["cubic B-spline"]
        crop = tuple(slice(0, n) for n in grid.shape)
        mask, ref, acquired = s["head"][crop], clean[crop], grid.array
        rng = mr_range(ref, mask)
        for method, pred in preds.items():
            metrics[method].setdefault("PSNR", []).append(psnr(pred, ref, mask, rng))
            metrics[method].setdefault("SSIM", []).append(ssim(pred, ref, mask, rng))
            metrics[method].setdefault("PSNR vs acquired", []).append(
                psnr(pred, acquired, mask, mr_range(acquired, mask)))
        if panel is None:
            panel = _superres_panel(ctx, model_id, low, out.array, base, ref, mask)
    model, base_m = metrics["model"], metrics["cubic B-spline"]
    gain = mean(model["PSNR"]) - mean(base_m["PSNR"])
    gain_acq = mean(model["PSNR vs acquired"]) - mean(base_m["PSNR vs acquired"])
    targets = [
        Target(f"{model_id}: PSNR ≥ cubic B-spline + {SR_TARGET_DB} dB", mean(model["PSNR"]),
               mean(base_m["PSNR"]) + SR_TARGET_DB, ">="),
        Target(f"{model_id}: SSIM above cubic B-spline", mean(model["SSIM"]), mean(base_m["SSIM"]), ">"),
        Target(f"{model_id}: output grid = the 2 mm grid, same field of view (all subjects)",
               float(np.mean(geometry_exact)), 1.0, ">="),
    ]
    how = ("pairs of 2 mm axial slices averaged into 4 mm slices (a box slice profile), restored along z"
           if degradation(model_id) == "thick_slices" else
           "the central half of k-space kept along y and x (4 mm in-plane), restored in-plane")
    fitted_words = ""
    if fitted_to_scan:
        from ...adapt.inplane import DEFAULT_LR, DEFAULT_STEPS

        fitted_gain = mean(metrics[FITTED]["PSNR"]) - mean(base_m["PSNR"])
        fitted_words = (f" Row '{FITTED}': the same model fine-tuned on each degraded input first (`adapt=True`: "
                        f"the input degraded once more as in training is the training input, the input its target; "
                        f"{DEFAULT_STEPS} steps at {DEFAULT_LR:g}, seed 0), then run as the model runs: "
                        f"{fitted_gain:+.2f} dB over B-spline (no target).")
    return SectionResult(title=title, intro=(
        f"Input: each test subject's acquired 2 mm T2w degraded as in training ({how}). Reference: the subject's "
        f"noise-free T2w on the 2 mm grid; the last column scores against the acquired, noisy T2w instead. "
        f"Baseline: cubic B-spline interpolation (SimpleITK `sitkBSpline`) of the same input onto the same grid. "
        f"PSNR gain of the model over B-spline: {gain:+.2f} dB against the noise-free reference, {gain_acq:+.2f} dB "
        f"against the acquired image. The model's output grid equalled the 2 mm grid (spacing, origin, direction, "
        f"field of view) for {sum(geometry_exact)} of {len(geometry_exact)} subjects.{fitted_words}"),
        metrics=metrics, units={"PSNR": "dB", "SSIM": "", "PSNR vs acquired": "dB"}, targets=targets,
        panels=[panel] if panel else [], info={"psnr_gain_db": gain, "psnr_gain_vs_acquired_db": gain_acq,
                                               "geometry_exact": geometry_exact})


def _superres_panel(ctx: EvalContext, model_id: str, low: Volume, out: np.ndarray, base: np.ndarray,
                    ref: np.ndarray, mask: np.ndarray) -> str:
    axis = SR_MODELS[model_id]["panel_axis"]
    scale = SR_MODELS[model_id]["scale"]
    nearest = low.array
    for a, s in enumerate(scale):
        nearest = np.repeat(nearest, s, axis=a)
    i = fullest_slice(mask, axis)

    def cut(a: np.ndarray) -> np.ndarray:
        return np.take(a, i, axis=axis)

    win = tuple(float(v) for v in np.percentile(ref[mask], [0.5, 99.5]))
    err = 0.25 * (win[1] - win[0])
    rows = [("model", [cut(nearest), cut(out), cut(ref), np.abs(cut(out) - cut(ref)) * cut(mask)]),
            ("B-spline", [cut(nearest), cut(base), cut(ref), np.abs(cut(base) - cut(ref)) * cut(mask)])]
    return save_panel(ctx.report_dir / f"panel_{model_id}.png", rows, [win, win, win, (0.0, err)],
                      ["input (nearest)", "output", "reference", "|error|"])


for _model_id in SR_MODELS:
    SECTIONS.add(_model_id, partial(superres_section, model_id=_model_id), module=__name__)
