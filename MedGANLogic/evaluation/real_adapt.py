"""Real-image sections of ``make eval-real`` for "Fit to this scan" (:mod:`MedGANLogic.adapt`, issue 17).

* ``adapt-superres``: real MR volumes with pairs of slices averaged (slices twice as thick: a box profile), brought
  back to their own slice spacing by :func:`~MedGANLogic.adapt.fit_superres` (factor 2, starting where a user's
  run would: from the installed ``mr-sr-x2-throughplane`` when there is one) and by cubic B-spline; the reference
  is the real volume itself. Factor 2 is given explicitly: the breast MR is already 2.1 mm over 0.66 mm (a spacing
  ratio of 3, 6 after the degradation), where a run with ``adapt=True`` would super-resolve by 6 at once. Beside
  them, when installed (``make peers``), the published peer ECLARE on the same inputs (:mod:`.peers`), with its
  default training budget on a GPU and :data:`~.peers.ECLARE_CPU_PATCHES` on a CPU; seconds per volume for each.
* ``adapt-denoise``: real MR with Rician noise added and real CT with spatially correlated noise added (white
  Gaussian noise smoothed by a one-pixel Gaussian, as filtered back-projection correlates it), denoised by the
  default fit of the modality (MR: a blind-spot network; CT: recorrupted-to-recorrupted with the noise spectrum
  measured on the scan) and by non-local means and BM3D tuned on ANOTHER real image of the same modality.
  The reference is the real image before the noise was added (its own noise included).

Cases are small slabs so a fit stays within minutes on a CPU; fits are bound by a fixed number of steps (seed
0), not by time, as in the phantom sections (:mod:`.sections.adapt`, whose baselines these reuse).
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage

from ..adapt.denoise import R2R_FINETUNE_STEPS, SELF_ENSEMBLE, STEP_CAP, trained_start
from ..volume import Volume
from . import real_masks
from .baselines import bspline_upsample
from .context import LDCT_WINDOW, SectionResult, Target, card_passes, installed, mean, missing_models, mr_window
from .metrics import psnr, ssim
from .peers import ECLARE_CPU_PATCHES, ECLARE_DEFAULT_PATCHES, ECLARE_VERSION, eclare_command, eclare_superres
from .real import REAL_SECTIONS, RealContext, axial_view, save_real_panel, unit_range, windowed_scores
from .real_ldct import crop_box
from .sections.adapt import DN_STEPS, SR_STEPS, SR_TARGET_DB, best_factor, bm3d3, fit_run, nlm, stabilised

SR_CASES = ("t2_brain", "breast1")  # small volumes: a CPU fits each in minutes
PEER = "ECLARE (peer)"
PANEL_NAMES = {"fitted to the scan": "fit", "cubic B-spline": "B-spline", PEER: "ECLARE"}
MR_CASES = ("t2_brain",)  # denoised; tuned on brain2
MR_TUNING = "brain2"
CT_CASE, CT_TUNING = "lung1", "lung2"
MR_NOISE = 0.06  # Rician sigma as a fraction of the image's 99.5th percentile in the head
CT_NOISE_HU = 30.0  # SD of the added correlated noise
SLAB = 8  # axial slices per denoising case (brains: their central ones)
CROP = 128  # pixels: the centre box of the body (CT) or head (MR) of each slice
TRAINED = {"MR": "mr-denoise", "CT": "ldct-denoise"}  # trained denoisers run as they are, beside the fit
#: why a trained denoiser can trail here: what it was trained on against the noise these rows add
TRAINED_WHY = {
    "MR": "A network trained on simulated heads with Rician noise (and noisy photographs, where its card's "
          "training_data lists them), run as it is: no fitting to this scan and no strength to set, where the "
          f"baselines' strength was tuned on another real scan ({MR_TUNING}).",
    "CT": "A network trained on simulated low-dose CT (filtered back-projection noise of Poisson projections, in "
          "phantom heads and, where its card's training_data lists them, photographs made CT slices), run as it "
          "is: the noise added here is Gaussian smoothed by a one-pixel Gaussian, a texture it never saw, "
          f"where the baselines' strength was tuned on another real CT ({CT_TUNING})."}


def fit_steps(ct_start: str | None) -> dict[str, int]:
    """Fitting steps: MR as the phantom section; CT its default cap (a run whose time budget is not the limit):
    that of fine-tuning the trained CT denoiser ``ct_start`` (its default start, when installed), else from
    scratch."""
    return {"MR": DN_STEPS["MR"], "CT": R2R_FINETUNE_STEPS if ct_start else STEP_CAP["CT"]}


# --- super-resolution -------------------------------------------------------------------------------------------
@REAL_SECTIONS.register("adapt-superres")
def real_adapt_superres(ctx: RealContext) -> SectionResult:
    from ..adapt import FitBudget, fit_superres
    from ..simulate.lowres import superres_pair

    title = "Fit to this scan on real MR: through-plane super-resolution x2"
    names = ("PSNR", "SSIM", "seconds")
    peer, gpu = eclare_command(), str(ctx.device).startswith("cuda")
    patches = ECLARE_DEFAULT_PATCHES if gpu else ECLARE_CPU_PATCHES
    methods = ("fitted to the scan", "cubic B-spline") + ((PEER,) if peer else ())
    metrics: dict[str, dict[str, list[float]]] = {m: {k: [] for k in names} for m in methods}
    rows, info = [], {"steps": SR_STEPS, "cases": {}}
    if peer:
        info["peer"] = {"name": "ECLARE", "version": ECLARE_VERSION, "patches": patches, "device": ctx.device}
    for case in SR_CASES:
        real = ctx.image(case)
        real = real.with_array(real.array, metadata={**real.metadata, "modality": "MR"})
        low, grid = superres_pair(real, (2, 1, 1), "thick_slices")
        preds, seconds = {}, {}
        start = time.perf_counter()
        fit = fit_superres(low, 2, budget=FitBudget(seconds=86400.0, max_steps=SR_STEPS), seed=0, device=ctx.device)
        preds[methods[0]], seconds[methods[0]] = fit.volume.array, time.perf_counter() - start
        start = time.perf_counter()
        preds[methods[1]] = bspline_upsample(low, grid)
        seconds[methods[1]] = time.perf_counter() - start
        if peer:
            done = eclare_superres(low, grid, patches=patches, gpu=gpu, command=peer)
            preds[PEER], seconds[PEER] = done.array, done.seconds
        head = real_masks.mr_head(grid.array)
        lo, hi = mr_window(grid.array, head)
        for method, pred in preds.items():
            metrics[method]["PSNR"].append(psnr(pred, grid.array, head, hi - lo))
            metrics[method]["SSIM"].append(ssim(pred, grid.array, head, hi - lo))
            metrics[method]["seconds"].append(seconds[method])
        info["cases"][case] = {"spacing_in": [round(s, 3) for s in low.spacing], "init": fit.record.init,
                               "seconds": round(fit.record.seconds, 1),
                               "gain_db": metrics[methods[0]]["PSNR"][-1] - metrics[methods[1]]["PSNR"][-1]}
        if peer:
            info["cases"][case]["peer_gain_db"] = metrics[PEER]["PSNR"][-1] - metrics[methods[1]]["PSNR"][-1]
        j = int(np.argmax(head.sum(axis=(0, 2))))  # the coronal slice with the most head
        nearest = np.repeat(low.array, 2, axis=0)[: grid.shape[0]]
        shown = [nearest, *(preds[m] for m in methods), grid.array]
        rows.append((case, [unit_range(img[:, j], lo, hi) for img in shown]))
    per_case = ", ".join(f"{c} {v['gain_db']:+.2f} dB" for c, v in info["cases"].items())
    why = (f"Per case: {per_case}. The fit learns from the in-plane resolution; where that is much finer than the "
           f"slice spacing to restore (breast1: 0.66 mm in-plane, 4.2 mm slices to bring to 2.1 mm) it learns "
           f"detail at another scale.")
    targets = [Target(f"adapt on real MR: through-plane x2 PSNR ≥ cubic B-spline + {SR_TARGET_DB} dB (mean)",
                      mean(metrics[methods[0]]["PSNR"]), mean(metrics[methods[1]]["PSNR"]) + SR_TARGET_DB, ">=",
                      why)]
    intro = (
        f"Real MR volumes ({', '.join(SR_CASES)}) with pairs of slices averaged (twice the slice spacing), "
        f"super-resolved x2 along the slice axis by a network fitted to the degraded scan ({SR_STEPS} steps, seed "
        f"0, started from the installed super-resolution model where there is one) and by cubic B-spline onto the "
        f"same grid. Reference: the real volume; PSNR/SSIM in the head, data range its 0.5-99.5 percentile range; "
        f"seconds per volume on this machine ({ctx.device}). Gain of the fit over B-spline: {per_case}. "
        f"{_peer_words(info, peer, patches)}Panel: a coronal slice (input, "
        f"{', '.join(PANEL_NAMES[m] for m in methods)}, real).")
    panel = save_real_panel(ctx, "adapt_superres", rows,
                            ["input (nearest)", *(PANEL_NAMES[m] for m in methods), "real"])
    return SectionResult(title=title, intro=intro, metrics=metrics, units={"PSNR": "dB", "SSIM": "", "seconds": "s"},
                         targets=targets, panels=[panel], info=info)


INPLANE_MODEL = "mr-sr-x2-inplane"


@REAL_SECTIONS.register("adapt-inplane")
def real_adapt_inplane(ctx: RealContext) -> SectionResult:
    """The in-plane model fine-tuned on each degraded scan (:mod:`MedGANLogic.adapt.inplane`) beside the model as
    it is and B-spline, on the brains of the ``superres`` section degraded as there."""
    from ..adapt.inplane import DEFAULT_LR, DEFAULT_STEPS
    from ..models.registry import get_model
    from ..simulate.lowres import superres_pair
    from .real_mr import SR_CASES, SR_MODELS, on_grid

    title = f"Fit to this scan on real MR: in-plane super-resolution x2 ({INPLANE_MODEL} fine-tuned on the scan)"
    if (m := missing_models(title, [INPLANE_MODEL])) is not None:
        return m
    card = get_model(INPLANE_MODEL)
    scale, degradation = SR_MODELS[INPLANE_MODEL][1], card.extras["degradation"]
    methods = ("fitted to the scan", f"trained model ({INPLANE_MODEL})", "cubic B-spline")
    names = ("PSNR", "SSIM", "seconds")
    metrics: dict[str, dict[str, list[float]]] = {m: {k: [] for k in names} for m in methods}
    rows, info = [], {"steps": DEFAULT_STEPS, "lr": DEFAULT_LR, "model": f"{card.id} {card.version}", "cases": {}}
    for case in SR_CASES:
        low, grid = superres_pair(ctx.image(case), scale, degradation)
        preds, seconds = {}, {}
        for method, options in ((methods[0], {"adapt": True, "adapt_steps": DEFAULT_STEPS,
                                              "adapt_budget_s": 86400.0}), (methods[1], {})):
            start = time.perf_counter()
            result = ctx.run("superres", low, INPLANE_MODEL, case, **options)
            seconds[method] = time.perf_counter() - start
            preds[method] = on_grid(result.volume, grid) if result is not None else np.full(grid.shape, np.nan)
        start = time.perf_counter()
        preds[methods[2]] = bspline_upsample(low, grid)
        seconds[methods[2]] = time.perf_counter() - start
        head = real_masks.mr_head(grid.array)
        lo, hi = mr_window(grid.array, head)
        for method, pred in preds.items():
            ok = bool(np.isfinite(pred).all())
            metrics[method]["PSNR"].append(psnr(pred, grid.array, head, hi - lo) if ok else np.nan)
            metrics[method]["SSIM"].append(ssim(pred, grid.array, head, hi - lo) if ok else np.nan)
            metrics[method]["seconds"].append(seconds[method])
        gains = {m: metrics[m]["PSNR"][-1] - metrics[methods[2]]["PSNR"][-1] for m in methods[:2]}
        info["cases"][case] = {"spacing_in": [round(s, 3) for s in low.spacing], "gain_db": gains[methods[0]],
                               "trained_gain_db": gains[methods[1]]}
        if case == SR_CASES[0]:
            z = int(np.argmax(head.reshape(head.shape[0], -1).sum(1)))
            nearest = np.repeat(np.repeat(low.array, 2, axis=1), 2, axis=2)[:, : grid.shape[1], : grid.shape[2]]
            shown = [nearest, *(preds[m] for m in methods), grid.array]
            rows.append((case, [unit_range(axial_view(img[z], grid.direction), lo, hi) for img in shown]))
    per_case = ", ".join(f"{c} {v['gain_db']:+.2f} dB (the trained model {v['trained_gain_db']:+.2f})"
                         for c, v in info["cases"].items())
    why = (f"Per case: {per_case}. The fit starts from {card.id} {card.version} and learns from the scan's own "
           f"detail one scale coarser ({DEFAULT_STEPS} steps at {DEFAULT_LR:g}, chosen on real MR no report "
           f"scores: MedGANLogic/adapt/inplane.py).")
    targets = [Target(f"adapt on real MR: in-plane x2 PSNR ≥ cubic B-spline + {SR_TARGET_DB} dB (mean)",
                      mean(metrics[methods[0]]["PSNR"]), mean(metrics[methods[2]]["PSNR"]) + SR_TARGET_DB, ">=",
                      why)]
    intro = (
        f"The real volumes of the super-resolution section ({', '.join(SR_CASES)}) degraded x2 in-plane as there "
        f"({SR_MODELS[INPLANE_MODEL][2]}), super-resolved x2 in-plane by {card.id} {card.version} fine-tuned on "
        f"each degraded scan (`MedGANLogic.run(..., model='{card.id}', adapt=True)`: the scan degraded once more "
        f"the same way is the training input, the scan its target; {DEFAULT_STEPS} steps at learning rate "
        f"{DEFAULT_LR:g}, seed 0; then run as the trained model runs, kept measured data included), by the same "
        f"model as it is, and by cubic B-spline onto the same grid. Reference: the real volume; PSNR/SSIM in the "
        f"head, data range its 0.5-99.5 percentile range; seconds per volume on this machine ({ctx.device}). Gain "
        f"over B-spline: {per_case}. Panel: an axial slice of {SR_CASES[0]} (input, fit, trained model, "
        f"B-spline, real).")
    panel = save_real_panel(ctx, "adapt_inplane", rows, ["input (nearest)", "fit", "trained", "B-spline", "real"])
    return SectionResult(title=title, intro=intro, metrics=metrics, units={"PSNR": "dB", "SSIM": "", "seconds": "s"},
                         targets=targets, panels=[panel], info=info)


def _peer_words(info: dict, peer: object, patches: int) -> str:
    """What the report says about the peer (ECLARE): how it ran, or that it is not installed."""
    if not peer:
        return ("The published peer ECLARE (Remedios et al.; PyPI eclare) is not installed here, so not run: "
                "`make peers` installs it in its own environment. ")
    gains = ", ".join(f"{c} {v['peer_gain_db']:+.2f} dB" for c, v in info["cases"].items())
    budget = ("its default" if patches == ECLARE_DEFAULT_PATCHES else
              f"{patches:,} training patches ({patches // 128} steps of its batch of 128; its default "
              f"{ECLARE_DEFAULT_PATCHES:,} takes about 9 hours per volume on a 2-core CPU, minutes on a GPU, where "
              f"this report gives it its default)")
    return (f"Beside them the published peer ECLARE {ECLARE_VERSION} (Remedios et al., PyPI eclare; self-supervised "
            f"like the fit: it estimates the slice profile with ESPRESO, learns from the in-plane data, applies "
            f"along the slice axis), run as its own program in its own environment (`make peers`) with {budget}; "
            f"it returns slices as thin as the pixels, averaged here over each reference slice. Its gain over "
            f"B-spline: {gains}. ")


# --- denoising --------------------------------------------------------------------------------------------------
def noisy_case(ctx: RealContext, case: str, seed: int) -> tuple[Volume, np.ndarray, np.ndarray, str]:
    """(noisy slab, clean slab, scoring mask, modality) of a real image with noise added (fixed ``seed``)."""
    vol = ctx.image(case)
    middle = vol.shape[0] // 2
    keep = slice(max(0, middle - SLAB // 2), max(0, middle - SLAB // 2) + SLAB)
    rng = np.random.default_rng(seed)
    if vol.metadata.get("modality") == "CT":
        slab = vol.array[keep]
        body = real_masks.ct_body(slab)
        ys, xs = crop_box(body.any(axis=0), CROP)
        clean = np.ascontiguousarray(slab[:, ys, xs], dtype=np.float32)
        noise = ndimage.gaussian_filter(rng.normal(0, 1, clean.shape), (0, 1.0, 1.0))
        noise *= CT_NOISE_HU / noise.std()
        noisy = Volume(clean + noise.astype(np.float32), spacing=vol.spacing, direction=vol.direction,
                       metadata={"modality": "CT"})
        return noisy, clean, body[:, ys, xs], "CT"
    slab = vol.array[keep]
    ys, xs = crop_box(real_masks.mr_head(slab).any(axis=0), CROP)
    clean = np.ascontiguousarray(slab[:, ys, xs], dtype=np.float32)
    head = real_masks.mr_head(clean)
    sigma = MR_NOISE * float(np.percentile(clean[head], 99.5))
    noisy = np.hypot(clean + rng.normal(0, sigma, clean.shape), rng.normal(0, sigma, clean.shape))
    noisy_volume = Volume(noisy.astype(np.float32), spacing=vol.spacing, direction=vol.direction,
                          metadata={"modality": "MR"})
    return noisy_volume, clean, head, "MR"


def _scores(pred: np.ndarray, clean: np.ndarray, mask: np.ndarray, modality: str) -> tuple[float, float]:
    if modality == "CT":
        return windowed_scores(pred, clean, mask)
    lo, hi = mr_window(clean, mask)
    return psnr(pred, clean, mask, hi - lo), ssim(pred, clean, mask, hi - lo)


def _tune(ctx: RealContext, case: str) -> dict[str, float]:
    """NLM and BM3D strengths (factors of the estimated noise SD) best on the real image ``case``."""
    noisy, clean, mask, modality = noisy_case(ctx, case, seed=7)
    forward, inverse, sd = stabilised(noisy, modality)
    return {"nlm": best_factor(lambda f: _scores(inverse(nlm(forward, sd, f)), clean, mask, modality)[0]),
            "bm3d": best_factor(lambda f: _scores(inverse(bm3d3(forward, sd, f)), clean, mask, modality)[0])}


@REAL_SECTIONS.register("adapt-denoise")
def real_adapt_denoise(ctx: RealContext) -> SectionResult:
    title = "Fit to this scan on real MR and CT with added noise: denoising"
    cases = (*MR_CASES, CT_CASE)
    methods = ("noisy input", "fitted to the scan", "non-local means (tuned)", "BM3D (tuned)")
    trained = {m: model for m, model in TRAINED.items() if installed(model)}
    row_name = "trained denoiser (" + ", ".join(trained.values()) + ")"
    metrics: dict[str, dict[str, list[float]]] = {m: {f"{c} {k}": [] for k in ("PSNR", "SSIM") for c in cases}
                                                  for m in methods + ((row_name,) if trained else ())}
    tuned = {"MR": _tune(ctx, MR_TUNING), "CT": _tune(ctx, CT_TUNING)}
    ct_start = trained_start("CT")
    steps = fit_steps(ct_start)
    targets, rows = [], []
    for case in cases:
        noisy, clean, mask, modality = noisy_case(ctx, case, seed=1)
        forward, inverse, sd = stabilised(noisy, modality)
        preds = {"noisy input": noisy.array,
                 "fitted to the scan": fit_run("denoise", noisy, steps[modality], ctx.device,
                                               modality=modality).array,
                 "non-local means (tuned)": inverse(nlm(forward, sd, tuned[modality]["nlm"])),
                 "BM3D (tuned)": inverse(bm3d3(forward, sd, tuned[modality]["bm3d"]))}
        if modality in trained:
            result = ctx.run("denoise", noisy, trained[modality], case)
            if result is not None:
                preds[row_name] = result.volume.array
        for method, pred in preds.items():
            p, s = _scores(pred, clean, mask, modality)
            metrics[method][f"{case} PSNR"].append(p)
            metrics[method][f"{case} SSIM"].append(s)
        fit_db = metrics["fitted to the scan"][f"{case} PSNR"][-1]
        for baseline in methods[2:]:
            targets.append(Target(f"adapt on real {modality} ({case}, added noise): PSNR above {baseline}", fit_db,
                                  metrics[baseline][f"{case} PSNR"][-1], ">",
                                  f"{steps[modality]} fitting steps"))
            if row_name in preds:
                targets.append(Target(f"{trained[modality]} (trained, no fitting) on real {modality} ({case}, added "
                                      f"noise): PSNR above {baseline}", metrics[row_name][f"{case} PSNR"][-1],
                                      metrics[baseline][f"{case} PSNR"][-1], ">", TRAINED_WHY[modality]))
        z = clean.shape[0] // 2
        lo, hi = LDCT_WINDOW if modality == "CT" else mr_window(clean, mask)
        direction = ctx.image(case).direction
        rows.append((case, [axial_view(unit_range(preds[m][z], lo, hi), direction) for m in methods]
                     + [axial_view(unit_range(clean[z], lo, hi), direction)]))
    intro = (
        f"Real MR ({', '.join(MR_CASES)}; Rician noise of sigma {MR_NOISE:.0%} of the 99.5th percentile in the "
        f"head) and real CT ({CT_CASE}; Gaussian noise smoothed by a one-pixel Gaussian, SD {CT_NOISE_HU:g} HU), "
        f"{SLAB} central axial slices each, cropped to a {CROP}-pixel box around the head or body. Fitted with "
        f"`MedGANLogic.run(..., adapt=True, modality=...)` with each modality's default method (seed 0): MR a "
        f"blind-spot network, {steps['MR']} steps from the shipped MR fit start, averaged over "
        f"{SELF_ENSEMBLE['blindspot']} flips of each slice; CT recorrupted-to-recorrupted "
        f"(Pang et al. 2021) with the noise power spectrum measured on the scan's flattest tissue, "
        f"{steps['CT']} steps (its default step cap) "
        + (f"fine-tuning the trained {ct_start} (the default start where it is installed; " if ct_start else
           "from scratch (")
        + f"settings chosen on {CT_TUNING}), averaged "
        f"over {SELF_ENSEMBLE['r2r']} flips and transpositions. "
        f"NLM and BM3D run per "
        f"slice in the fit's variance-stabilised domain with strengths tuned on {MR_TUNING} (MR) and {CT_TUNING} (CT): "
        + "; ".join(f"{m} h = {t['nlm']:.2g} SD, BM3D sigma = {t['bm3d']:.2g} SD" for m, t in tuned.items())
        + ". " + (f"Beside them the trained {' and '.join(trained.values())}, run as they are (no fitting), as their "
                  f"cards say on this machine ({ctx.device}): averaged over " + " and ".join(
                      f"{card_passes(model, ctx.device)} flips and transpositions of each slice ({model}; "
                      f"{card_passes(model, 'cuda')} on a GPU)" for model in trained.values()) + ". "
                  if trained else "")
        + "Reference: the real image before the noise was added; MR scored in the head (data range its "
        f"0.5-99.5 percentile range), CT in the body in the [{LDCT_WINDOW[0]:g}, {LDCT_WINDOW[1]:g}] HU window.")
    panel = save_real_panel(ctx, "adapt_denoise", rows, ["noisy", "fit", "NLM", "BM3D", "real"])
    return SectionResult(title=title, intro=intro, metrics=metrics,
                         units={k: "dB" if k.endswith("PSNR") else "" for k in metrics[methods[0]]},
                         targets=targets, panels=[panel], info={"tuned": tuned, "steps": steps, "ct_start": ct_start})
