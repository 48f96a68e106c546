"""Fit to this scan (:mod:`MedGANLogic.adapt`, issue 17) against the methods a user would otherwise reach for.

* ``adapt-superres``: the held-out subject's acquired 2 mm T2w, T1w and FLAIR degraded to thick axial slices (2 or
  4 slices averaged: a box profile, 4 or 8 mm), super-resolved back to 2 mm by a network fitted to the scan itself
  (``MedGANLogic.run(..., adapt=True)``: the user's default, which at x2 starts from the installed
  ``mr-sr-x2-throughplane``), by cubic B-spline, and at x2 by the pretrained ``mr-sr-x2-throughplane`` alone
  (run with ``force`` on the contrasts its card does not name, if it names one). Reference: the subject's
  noise-free contrast.
* ``adapt-denoise``: MR (Rician noise added to the noise-free T2w), PET (Poisson counts, 4 mm post-filter) and
  ultrasound (speckle) phantoms of the held-out subject, denoised by a fitted blind-spot network, by non-local
  means and by BM3D. Both baselines work per axial slice in the same variance-stabilised domain as the fit
  (Rician: as is, with the same bias correction after; PET: Anscombe; ultrasound: log) and have their strength
  tuned on ANOTHER subject (the first validation subject), never on the test images.

A fit costs minutes, so these sections use the first test subject only (the denoising cases a slab of
``DN_SLICES`` axial slices), and a fixed number of fitting steps (``SR_STEPS``, ``DN_STEPS``; seed 0) instead of a
time budget, so the figures do not depend on the machine's speed. PSNR/SSIM in the head, data range the
reference's 0.5-99.5 percentile range.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...adapt.denoise import SPECTRUM_WORDS, STEP_CAP
from ...models.registry import get_model
from ...volume import Volume
from ..baselines import bspline_upsample
from ..context import (
    PHANTOM_DIRECTION,
    SPACING_MM,
    EvalContext,
    SectionResult,
    Target,
    card_passes,
    installed,
    mean,
    mr_range,
)
from ..metrics import psnr, ssim
from ..panels import fullest_slice, save_panel
from . import SECTIONS

SR_CONTRASTS = ("T2w", "T1w", "FLAIR")
SR_FACTORS = (2, 4)
SR_STEPS = 400  # fitting steps per scan (batch 8 of 64-pixel patches): about 1-2 CPU minutes
SR_TARGET_DB = 1.5
PRETRAINED_SR = "mr-sr-x2-throughplane"
PRETRAINED_DN = {"MR": "mr-denoise"}  # a trained denoiser run as it is, beside the fit, where one is installed
TRAINED_DN_WHY = ("One small blind network (a 2-level residual encoder-decoder, 33 min on one CPU thread) for every "
                  "contrast and SNR 3-60, trained on domain-randomised heads: it reads the noise level off the "
                  "image, where the fit learns this scan and BM3D gets the measured noise SD with a strength tuned "
                  "on a validation subject. See the section's table.")
DN_MODALITIES = ("MR", "PT", "US")
# fitting steps: MR's default fit is bound by time alone (300 steps here), PET's and ultrasound's stop at their caps
DN_STEPS = {"MR": 300, "PT": STEP_CAP["PT"], "US": STEP_CAP["US"]}
DN_SLICES = 24
MR_NOISE = 0.06  # Rician sigma as a fraction of the noise-free image's 99.5th percentile in the head
# Baseline strengths: factors of the noise SD estimated on the image (stabilised domain; the wavelet estimate sees
# only the finest scale, so correlated noise needs factors well above 1): coarse, then halfway around the best.
COARSE_FACTORS = (0.5, 1.0, 2.0, 4.0, 8.0)
LABEL = {"MR": "MR", "PT": "PET", "US": "US"}


def fit_run(task: str, volume: Volume, steps: int, device: str, **options: Any) -> Volume:
    """A fit to ``volume`` as the user runs it (``MedGANLogic.run(..., adapt=True)``), bound by ``steps``."""
    from ...pipeline import run

    return run(task, volume, device=device, adapt=True, adapt_steps=steps, adapt_budget_s=86400.0,
               adapt_seed=0, **options).volume


def _empty(methods: list[str], names: list[str]) -> dict[str, dict[str, list[float]]]:
    return {m: {n: [] for n in names} for m in methods}


# --- super-resolution -------------------------------------------------------------------------------------------
@SECTIONS.register("adapt-superres")
def section_adapt_superres(ctx: EvalContext) -> SectionResult:
    from ...pipeline import run
    from ...simulate import superres_pair

    title = "Fit to this scan: through-plane super-resolution x2 and x4 (T2w, T1w, FLAIR)"
    seed = ctx.test_seeds[0]
    acquired = ctx.subject(seed, keys=SR_CONTRASTS)
    clean = ctx.subject(seed, keys=SR_CONTRASTS, noise_free=True)
    pretrained = installed(PRETRAINED_SR)  # without it the fit starts from scratch, its column empty
    sr_contrast = get_model(PRETRAINED_SR).input.get("contrast") if pretrained else None  # none: any contrast
    names = [f"{c} {m}" for m in ("PSNR", "SSIM") for c in SR_CONTRASTS]
    methods = [f"{name} x{f}" for f in SR_FACTORS for name in ("fitted to the scan", "cubic B-spline")]
    methods.insert(2, f"{PRETRAINED_SR} x2")
    metrics = _empty(methods, names)
    targets, panels, info = [], [], {"subject": seed, "steps": SR_STEPS, "fits": {}}
    for contrast in SR_CONTRASTS:
        hr = Volume(acquired[contrast], spacing=(SPACING_MM,) * 3, direction=PHANTOM_DIRECTION,
                    metadata={"modality": "MR", "contrast": contrast})
        rows = []
        for factor in SR_FACTORS:
            low, grid = superres_pair(hr, (factor, 1, 1), "thick_slices")
            crop = tuple(slice(0, n) for n in grid.shape)
            mask, ref = acquired["head"][crop], clean[contrast][crop]
            rng = mr_range(ref, mask)
            fitted = fit_run("superres", low, SR_STEPS, ctx.device)
            info["fits"][f"{contrast} x{factor}"] = {k: fitted.metadata["provenance"]["adapt"][k]
                                                     for k in ("steps", "seconds", "init", "loss_first", "loss_last")}
            preds = {f"fitted to the scan x{factor}": fitted.array, f"cubic B-spline x{factor}": bspline_upsample(
                low, grid)}
            if factor == 2 and pretrained:
                preds[f"{PRETRAINED_SR} x2"] = run("superres", low, model=PRETRAINED_SR, device=ctx.device,
                                                   precision="fp32", force=bool(sr_contrast) and contrast != sr_contrast
                                                   ).volume.array
            scores = {}
            for method, pred in preds.items():
                scores[method] = psnr(pred, ref, mask, rng)
                metrics[method][f"{contrast} PSNR"].append(scores[method])
                metrics[method][f"{contrast} SSIM"].append(ssim(pred, ref, mask, rng))
            fit_db, base_db = scores[f"fitted to the scan x{factor}"], scores[f"cubic B-spline x{factor}"]
            targets.append(Target(f"adapt {contrast} x{factor}: PSNR ≥ cubic B-spline + {SR_TARGET_DB} dB", fit_db,
                                  base_db + SR_TARGET_DB, ">=", f"{SR_STEPS} fitting steps; the gain over "
                                  f"B-spline is {fit_db - base_db:+.2f} dB"))
            if factor == 2 and pretrained:
                targets.append(Target(f"adapt {contrast} x2: PSNR ≥ the pretrained {PRETRAINED_SR}", fit_db,
                                      scores[f"{PRETRAINED_SR} x2"], ">="))
            rows += _sr_rows(low, preds, ref, mask, factor)
        panels.append(_save_rows(ctx, f"panel_adapt_sr_{contrast}.png", rows,
                                 ["input (nearest)", "output", "reference", "|error| x4"]))
    gains = {f"{c} x{f}": mean(metrics[f"fitted to the scan x{f}"][f"{c} PSNR"])
             - mean(metrics[f"cubic B-spline x{f}"][f"{c} PSNR"]) for f in SR_FACTORS for c in SR_CONTRASTS}
    info["psnr_gain_over_bspline_db"] = gains
    start = f"at x2 from the installed {PRETRAINED_SR} (fine-tuned on the scan), " if pretrained else ""
    trained_on = (f"trained on {sr_contrast} only; run with force on the other contrasts" if sr_contrast
                  else "trained on domain-randomised heads of any contrast")
    intro = (
        f"Test subject {seed} (held out), 2 mm. Input: its acquired T2w, T1w and FLAIR with 2 or 4 axial slices "
        f"averaged into one (4 or 8 mm thick slices, a box profile). Fitted to the scan with "
        f"`MedGANLogic.run(..., adapt=True)` for {SR_STEPS} steps (seed 0; {start}at x4 from scratch): the in-plane "
        f"slices degraded the same way teach a 2D SRResNet, applied in the coronal and sagittal planes and averaged. "
        f"Baselines: cubic B-spline (SimpleITK) onto the same grid, and the pretrained {PRETRAINED_SR} "
        f"({trained_on}). Reference: the noise-free contrast. PSNR gain "
        "of the fit over B-spline: " + ", ".join(f"{k} {v:+.2f} dB" for k, v in gains.items()) + ". Panels: a "
        "coronal slice, each row windowed to its reference.")
    return SectionResult(title=title, intro=intro, metrics=metrics,
                         units={n: "dB" if n.endswith("PSNR") else "" for n in names}, targets=targets,
                         panels=panels, info=info)


def _sr_rows(low: Volume, preds: dict[str, np.ndarray], ref: np.ndarray, mask: np.ndarray,
             factor: int) -> list[tuple[str, list[np.ndarray]]]:
    """Panel rows (a coronal slice) of one contrast and factor, each scaled to its reference's window."""
    nearest = np.repeat(low.array, factor, axis=0)[: ref.shape[0]]
    j = fullest_slice(mask, 1)
    lo, hi = np.percentile(ref[mask], [0.5, 99.5])

    def unit(a: np.ndarray) -> np.ndarray:
        return (a[:, j] - lo) / (hi - lo)

    return [(name.replace("fitted to the scan", "fit").replace("cubic ", "").replace(PRETRAINED_SR, "pretrained"),
             [unit(nearest), unit(pred), unit(ref), 4 * np.abs(unit(pred) - unit(ref)) * mask[:, j]])
            for name, pred in preds.items()]


def _save_rows(ctx: EvalContext, name: str, rows: list[tuple[str, list[np.ndarray]]], titles: list[str]) -> str:
    """Rows of unit-windowed images, cropped to the smallest common shape, as one PNG panel."""
    h = min(img.shape[0] for _, imgs in rows for img in imgs)
    w = min(img.shape[1] for _, imgs in rows for img in imgs)
    rows = [(label, [img[:h, :w] for img in imgs]) for label, imgs in rows]
    return save_panel(ctx.report_dir / name, rows, [(0.0, 1.0)] * len(titles), titles)


# --- denoising --------------------------------------------------------------------------------------------------
def denoising_case(seed: int, modality: str) -> tuple[Volume, np.ndarray, np.ndarray]:
    """(noisy input, noise-free reference, head mask) of ``modality`` on a slab of ``DN_SLICES`` axial slices of
    phantom subject ``seed`` (fixed noise seeds)."""
    from ...simulate.pet import simulate_pet
    from ...simulate.ultrasound import simulate_ultrasound

    subject = _subject(seed)
    head = subject.head_mask
    middle = fullest_slice(head, 0)
    keep = slice(max(0, middle - DN_SLICES // 2), max(0, middle - DN_SLICES // 2) + DN_SLICES)
    clean = subject.volumes["T2w"]
    grid = clean.with_array(np.ascontiguousarray(clean.array[keep]))
    mask = np.ascontiguousarray(head[keep]).astype(bool)
    tissues = np.ascontiguousarray(subject.tissues[:, keep])
    if modality == "PT":
        noisy, ref = simulate_pet(tissues, grid, seed=seed, counts_per_suv=2.0, postfilter_fwhm_mm=4.0)
        return noisy, ref.array, mask
    if modality == "US":
        noisy, ref = simulate_ultrasound(tissues, grid, seed=seed)
        return noisy, ref.array, mask
    rng = np.random.default_rng(seed)
    sigma = MR_NOISE * float(np.percentile(grid.array[mask], 99.5))
    noisy = np.hypot(grid.array + rng.normal(0, sigma, grid.shape), rng.normal(0, sigma, grid.shape))
    return grid.with_array(noisy.astype(np.float32), metadata={"modality": "MR", "contrast": "T2w"}), grid.array, mask


_SUBJECTS: dict[int, Any] = {}


def _subject(seed: int) -> Any:
    from ...simulate import make_subject

    if seed not in _SUBJECTS:
        _SUBJECTS.clear()  # one at a time: a subject is large
        _SUBJECTS[seed] = make_subject(seed, spacing_mm=SPACING_MM, contrasts=("T2w",), snr=1e6)
    return _SUBJECTS[seed]


def stabilised(noisy: Volume, modality: str) -> tuple[np.ndarray, Any, float]:
    """(the image in its modality's variance-stabilised domain, the inverse back to intensities, the noise SD
    there estimated from the image): what the baselines work in, the same transform as the fit's."""
    import torch
    from skimage.restoration import estimate_sigma

    from ...adapt.noise import noise_model
    from ...models.adapted import inverse_transform

    model = noise_model(modality)
    constants = dict(model.estimate(noisy.array))
    forward = np.asarray(model.forward(noisy.array), dtype=np.float64)
    sd = float(np.median([estimate_sigma(s, channel_axis=None) for s in forward]))

    def inverse(y: np.ndarray) -> np.ndarray:
        out = inverse_transform(torch.from_numpy(np.asarray(y, np.float32)), model.transform, constants).numpy()
        if model.transform == "log":  # the log domain biases the mean envelope: one gain restores it, as the fit
            out = out * np.float32(noisy.array.mean(dtype=np.float64) / max(out.mean(dtype=np.float64), 1e-12))
        return out

    return forward, inverse, sd


def nlm(forward: np.ndarray, sd: float, factor: float) -> np.ndarray:
    """Non-local means per axial slice (skimage, patch 5, search distance 6), h = ``factor`` x ``sd``."""
    from skimage.restoration import denoise_nl_means

    return np.stack([denoise_nl_means(s, h=factor * sd, sigma=sd, patch_size=5, patch_distance=6, fast_mode=True)
                     for s in forward])


def bm3d3(forward: np.ndarray, sd: float, factor: float) -> np.ndarray:
    """BM3D (the ``bm3d`` package) per axial slice for white noise of SD ``factor`` x ``sd``."""
    import bm3d

    return np.stack([bm3d.bm3d(s, sigma_psd=factor * sd) for s in forward])


def best_factor(score: Any, coarse: tuple[float, ...] = COARSE_FACTORS) -> float:
    """The factor with the highest ``score(factor)``: the best of ``coarse``, then of it and its neighbours a
    factor sqrt(2) away."""
    scores = {f: score(f) for f in coarse}
    best = max(scores, key=scores.get)
    for f in (best / np.sqrt(2.0), best * np.sqrt(2.0)):
        scores[round(float(f), 3)] = score(f)
    return float(max(scores, key=scores.get))


def tune(seed: int, modality: str) -> dict[str, float]:
    """The NLM and BM3D strengths (factors of the estimated noise SD) with the best PSNR in the head on 8 slices
    of subject ``seed`` (not a test subject)."""
    noisy, ref, mask = denoising_case(seed, modality)
    middle = slice(DN_SLICES // 2 - 4, DN_SLICES // 2 + 4)
    noisy = noisy.with_array(np.ascontiguousarray(noisy.array[middle]))
    ref, mask = ref[middle], mask[middle]
    forward, inverse, sd = stabilised(noisy, modality)
    rng = mr_range(ref, mask)
    return {"nlm": best_factor(lambda f: psnr(inverse(nlm(forward, sd, f)), ref, mask, rng)),
            "bm3d": best_factor(lambda f: psnr(inverse(bm3d3(forward, sd, f)), ref, mask, rng))}


def _described_fit(fit: dict[str, Any]) -> str:
    """One fit of the section in words: its method, start, learning rate and passes over the volume."""
    if fit["method"] == "r2r":
        how = f"recorrupted-to-recorrupted with {SPECTRUM_WORDS[fit['noise_spectrum']]}, from {fit['init']}"
    else:
        how = f"a blind-spot network from {'scratch' if fit['init'] == 'scratch' else 'the shipped ' + fit['init']}"
    kind = "flips and transpositions" if fit["self_ensemble"] == 8 else "flips"
    return f"{how}, learning rate {fit['lr']:g}, averaged over {fit['self_ensemble']} {kind} of each slice"


@SECTIONS.register("adapt-denoise")
def section_adapt_denoise(ctx: EvalContext) -> SectionResult:
    title = "Fit to this scan: denoising MR (Rician), PET and ultrasound"
    seed, tuning_seed = ctx.test_seeds[0], ctx.seeds("val", 1)[0]
    names = [f"{LABEL[m]} {k}" for k in ("PSNR", "SSIM") for m in DN_MODALITIES]
    methods = ["noisy input", "fitted to the scan", "non-local means (tuned)", "BM3D (tuned)"]
    pretrained = {m: model for m, model in PRETRAINED_DN.items() if installed(model)}
    trained = "trained denoiser (" + ", ".join(pretrained.values()) + ")"
    metrics = _empty(methods + ([trained] if pretrained else []), names)
    targets, rows, info = [], [], {"subject": seed, "tuning_subject": tuning_seed, "steps": DN_STEPS, "tuned": {},
                                   "fits": {}, "trained_denoisers": pretrained}
    for modality in DN_MODALITIES:
        tuned = tune(tuning_seed, modality)
        info["tuned"][modality] = tuned
        noisy, ref, mask = denoising_case(seed, modality)
        forward, inverse, sd = stabilised(noisy, modality)
        fitted = fit_run("denoise", noisy, DN_STEPS[modality], ctx.device, modality=modality)
        info["fits"][modality] = {k: fitted.metadata["provenance"]["adapt"][k]
                                  for k in ("steps", "seconds", "init", "loss_first", "loss_last")}
        details = fitted.metadata["provenance"]["adapt"]["details"]
        info["fits"][modality].update(lr=details["lr"], self_ensemble=details["self_ensemble"],
                                      method=details["method"], noise_spectrum=details.get("noise_spectrum"))
        preds = {"noisy input": noisy.array, "fitted to the scan": fitted.array,
                 "non-local means (tuned)": inverse(nlm(forward, sd, tuned["nlm"])),
                 "BM3D (tuned)": inverse(bm3d3(forward, sd, tuned["bm3d"]))}
        if modality in pretrained:
            from ...pipeline import run

            preds[trained] = run("denoise", noisy, model=pretrained[modality], device=ctx.device,
                                 precision="fp32").volume.array
        rng = mr_range(ref, mask)
        label = LABEL[modality]
        for method, pred in preds.items():
            metrics[method][f"{label} PSNR"].append(psnr(pred, ref, mask, rng))
            metrics[method][f"{label} SSIM"].append(ssim(pred, ref, mask, rng))
        fit_db = metrics["fitted to the scan"][f"{label} PSNR"][-1]
        for baseline in ("non-local means (tuned)", "BM3D (tuned)"):
            targets.append(Target(f"adapt denoise {label}: PSNR above {baseline}", fit_db,
                                  metrics[baseline][f"{label} PSNR"][-1], ">",
                                  f"{DN_STEPS[modality]} fitting steps; see the section's table"))
            if modality in pretrained:
                targets.append(Target(f"{pretrained[modality]} (trained, no fitting) on {label}: PSNR above "
                                      f"{baseline}", metrics[trained][f"{label} PSNR"][-1],
                                      metrics[baseline][f"{label} PSNR"][-1], ">", TRAINED_DN_WHY))
        z = DN_SLICES // 2
        lo, hi = np.percentile(ref[mask], [0.5, 99.5])
        rows.append((label, [(preds[m][z] - lo) / (hi - lo) for m in methods] + [(ref[z] - lo) / (hi - lo)]))
    panel = _save_rows(ctx, "panel_adapt_denoise.png", rows, ["noisy", "fit", "NLM", "BM3D", "reference"])
    intro = (
        f"Test subject {seed} (held out), {DN_SLICES} axial slices at 2 mm. MR: the noise-free T2w with Rician noise "
        f"(sigma {MR_NOISE:.0%} of its 99.5th percentile in the head); PET: Poisson counts (2 per SUV unit, 5 mm "
        f"PSF, 4 mm post-filter: correlated noise); ultrasound: Rayleigh speckle on the echogenicity. Fitted with "
        f"`MedGANLogic.run(..., adapt=True, modality=...)` for " + ", ".join(
            f"{n} steps ({LABEL[m]})" for m, n in DN_STEPS.items()) + " (seed 0; PET and ultrasound: the steps their "
        "default fits stop at), as a user runs it, with each modality's default fit (" + "; ".join(
            f"{LABEL[m]}: {_described_fit(f)}" for m, f in info["fits"].items())
        + f"; learning rates, the blind spot's noise-variance factor and PET's spectrum band chosen on subject "
        f"{tuning_seed}, see MedGANLogic/adapt/denoise.py). Non-local means and BM3D run per slice in the fit's "
        f"variance-stabilised domain, their strength tuned on subject "
        f"{tuning_seed} (validation split): " + "; ".join(
            f"{LABEL[m]} h = {t['nlm']:.2g} SD, BM3D sigma = {t['bm3d']:.2g} SD" for m, t in info["tuned"].items())
        + ". " + (f"Beside them the trained {', '.join(pretrained.values())} (domain-randomised training, no fitting; "
                  f"{', '.join(LABEL[m] for m in pretrained)} only), run as it is: as its card says on this machine "
                  f"({ctx.device}), averaged over " + ", ".join(
                      f"{card_passes(model, ctx.device)} flips and transpositions of each slice ({model}; "
                      f"{card_passes(model, 'cuda')} on a GPU)" for model in pretrained.values()) + ". "
                  if pretrained else "")
        + "Reference: the noise-free image. Panel: the middle slice, each row windowed to its reference.")
    return SectionResult(title=title, intro=intro, metrics=metrics,
                         units={n: "dB" if n.endswith("PSNR") else "" for n in names}, targets=targets,
                         panels=[panel], info=info)
