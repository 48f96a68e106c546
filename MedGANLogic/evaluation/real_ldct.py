"""Low-dose CT on real chest CT (``make eval-real``): quarter dose simulated in the projection domain at two photon
levels and with a soft-tissue kernel, the shipped ``ldct-denoise`` against tuned non-local means and BM3D.

The real CT slices (pyradiomics ``lung1``/``lung2``, 0.57-0.63 mm pixels, 5 mm slices) are first halved in-plane
(2 x 2 block means, ~1.2 mm pixels, the pixel size of a 1 mm-class reconstruction; it also quarters the cost of the
simulation). Each halved slice is projected, Poisson noise at a quarter of the incident photons is added and it is
reconstructed by filtered back-projection (:mod:`MedGANLogic.simulate.lowdose`), at two photon levels: the
simulator's default count, and a count calibrated on the tuning slices so that the quarter-dose soft-tissue noise is
~60 HU, as in a real quarter-dose 1 mm reconstruction. The reference is the (halved) real slice itself; its own
clinical noise and the simulated scanner's blur set a ceiling, shown as the noise-free reconstruction row. Both use
the ramp kernel. The third level (``soft``) reconstructs the default quarter dose with a soft-tissue kernel
(:data:`SOFT_KERNEL`: the ramp times a cosine window), as clinical low-dose protocols do: less noise, a coarser
grain; its reference is the noise-free reconstruction with the same kernel (a denoiser cannot undo the kernel's
smoothing), as in training. It has no target: the issue's targets are the two ramp levels. Scores: PSNR/SSIM in the
[-160, 240] HU window (data range 400 HU) over the body inside a 192 x 192 square around the body centre (the
baselines run on that square; the model runs on the whole slice, as a user runs it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..resampling import block_mean_2x2
from ..simulate.lowdose import FULL_DOSE_PHOTONS, noiseless_reconstruction, simulate_low_dose
from ..volume import Volume
from . import real_masks
from .baselines import nlm_denoise
from .context import SectionResult, Target, card_passes, mean, missing_models
from .real import LDCT_WINDOW, REAL_SECTIONS, RealContext, axial_view, save_real_panel, unit_range, windowed_scores

LDCT_MODEL = "ldct-denoise"
LDCT_CASES = ("lung1", "lung2")
LDCT_DOSE = 0.25
LDCT_POSITIONS = 7  # slices evenly spread over the central 60 % of each CT ...
LDCT_TUNE = (1, 5)  # ... of which these positions tune the baselines; the other five are scored
LDCT_CROP = 192  # pixels: the scored square around the body centre
REALISTIC_NOISE_HU = 60.0
NLM_FACTORS = (0.4, 0.6, 0.8, 1.0, 1.3)  # h = factor x the measured noise SD
BM3D_FACTORS = (1.0, 1.3, 1.7)  # sigma = factor x the measured noise SD (FBP noise is correlated: > 1)
SOFT_KERNEL = ("cosine", 1.0)  # (kernel, cutoff) of the soft level (MedGANLogic.simulate.lowdose.RECON_KERNELS)
LEVELS = ("default", "realistic", "soft")


def select_slices(n_slices: int, positions: int = LDCT_POSITIONS, tune: tuple[int, ...] = LDCT_TUNE
                  ) -> tuple[list[int], list[int]]:
    """(scored, tuning) slice indices, disjoint: ``positions`` slices evenly spread over the central 60 %."""
    idx = [int(i) for i in np.round(np.linspace(0.2 * (n_slices - 1), 0.8 * (n_slices - 1), positions))]
    tuning = [idx[p] for p in tune]
    return sorted({i for p, i in enumerate(idx) if p not in tune} - set(tuning)), tuning


def half_resolution(volume: Volume) -> Volume:
    """2 x 2 in-plane block means: x and y spacing doubled, the same field of view (an odd last row or column
    is dropped first), the origin at the centre of the first block."""
    from ..simulate.lowres import crop_to_multiple

    even = crop_to_multiple(volume, 2, (1, 2))
    blocks = block_mean_2x2(even.array, np.float64).astype(np.float32)
    grid = even.resampled_grid((1.0, 0.5, 0.5))
    grid.pop("shape")
    return even.with_array(blocks, **grid)


def slice_volume(volume: Volume, z: int, array: np.ndarray) -> Volume:
    """A one-slice Volume holding ``array`` (y, x) exactly where slice ``z`` of ``volume`` lies."""
    origin = np.asarray(volume.origin) + volume.direction @ np.array([0.0, 0.0, z * volume.spacing[2]])
    return volume.with_array(np.asarray(array, np.float32)[None], origin=tuple(origin))


def photons_for_noise(measured_sd: float, photons: float, target_sd: float) -> float:
    """Incident photons giving ``target_sd`` HU of noise, from ``measured_sd`` at ``photons`` (SD ~ 1/sqrt(N))."""
    return float(photons * (measured_sd / target_sd) ** 2)


def crop_box(body: np.ndarray, size: int) -> tuple[slice, slice]:
    """A ``size`` square (clamped to the image) centred on the bounding box of the (y, x) mask ``body``."""
    out = []
    for axis, n in enumerate(body.shape):
        coords = np.nonzero(body.any(axis=1 - axis))[0]
        centre = (int(coords.min()) + int(coords.max())) // 2 if coords.size else n // 2
        start = int(np.clip(centre - size // 2, 0, max(0, n - size)))
        out.append(slice(start, start + min(size, n)))
    return out[0], out[1]


def bm3d_denoise(image_hu: np.ndarray, sigma_hu: float) -> np.ndarray:
    """BM3D (the ``bm3d`` package) of a (y, x) slice in HU for white noise of SD ``sigma_hu``.

    The noise after filtered back-projection is correlated, and ``bm3d`` can take its power spectrum instead, but
    bm3d 4.0.3 reaches that path through ``numpy.trapz``, which NumPy 2.4 no longer has; the tuned white-noise
    sigma is the baseline until it does.
    """
    import bm3d

    return np.asarray(bm3d.bm3d(image_hu.astype(np.float64), sigma_psd=float(sigma_hu)), np.float32)


def _slices(ctx: RealContext) -> list[dict[str, Any]]:
    """The halved real slices (scored and tuning) with their masks, crop and noise-free reconstruction."""
    out = []
    for c, case in enumerate(LDCT_CASES):
        half = half_resolution(ctx.image(case))
        pixel_mm = float(np.mean(half.spacing[:2]))
        scored, tuning = select_slices(half.shape[0])
        for z in scored + tuning:
            hu = half.array[z]
            body = real_masks.ct_body(hu[None])[0]
            box = crop_box(body, LDCT_CROP)
            out.append({"case": case, "z": z, "tune": z in tuning, "hu": hu, "pixel_mm": pixel_mm, "body": body,
                        "soft": real_masks.ct_soft_tissue(hu[None])[0], "box": box, "seed": 1000 * c + z,
                        "volume": slice_volume(half, z, hu),
                        "noise_free": noiseless_reconstruction(hu, pixel_mm=pixel_mm),
                        "noise_free_soft": noiseless_reconstruction(hu, pixel_mm=pixel_mm, kernel=SOFT_KERNEL[0],
                                                                    cutoff=SOFT_KERNEL[1])})
    return out


def _noise_free(s: dict[str, Any], level: str) -> np.ndarray:
    """The noise-free reconstruction of slice ``s`` with ``level``'s kernel."""
    return s["noise_free_soft"] if level == "soft" else s["noise_free"]


def _reference(s: dict[str, Any], level: str) -> np.ndarray:
    """What ``level`` is scored against: the real slice (ramp levels), the soft kernel's noise-free reconstruction."""
    return s["noise_free_soft"] if level == "soft" else s["hu"]


def _noise_sd(image: np.ndarray, s: dict[str, Any], level: str = "default") -> float:
    return float(np.std((image - _noise_free(s, level))[s["soft"]]))


def _tune(tune: list[dict[str, Any]], level: str) -> dict[str, Any]:
    """NLM strength and BM3D noise PSD with the best mean windowed PSNR on the tuning slices at ``level``."""
    sd = float(np.mean([_noise_sd(s["low"][level], s, level) for s in tune]))

    def psnr_of(denoise: Any) -> float:
        return float(np.mean([windowed_scores(denoise(s["low"][level][s["box"]]), _reference(s, level)[s["box"]],
                                              s["body"][s["box"]])[0] for s in tune]))

    nlm = {f: psnr_of(lambda img, h=f * sd: nlm_denoise(img[None], h)[0]) for f in NLM_FACTORS}
    bm3d = {f: psnr_of(lambda img, sigma=f * sd: bm3d_denoise(img, sigma)) for f in BM3D_FACTORS}
    best_nlm, best_bm3d = max(nlm, key=nlm.get), max(bm3d, key=bm3d.get)
    return {"noise_sd_tuning": sd, "nlm_h": best_nlm * sd, "bm3d_sigma": best_bm3d * sd,
            "nlm_tuning_psnr": nlm, "bm3d_tuning_psnr": bm3d}


def _prepare(ctx: RealContext) -> dict[str, Any]:
    """Slices, the calibrated photon levels, the simulated low-dose slices and the tuned baselines (cached)."""
    if "ldct" in ctx.store:
        return ctx.store["ldct"]
    slices = _slices(ctx)
    tune = [s for s in slices if s["tune"]]
    for s in slices:
        s["low"] = {"default": simulate_low_dose(s["hu"], LDCT_DOSE, seed=s["seed"], pixel_mm=s["pixel_mm"])[0]}
    default_sd = float(np.mean([_noise_sd(s["low"]["default"], s) for s in tune]))
    photons = {"default": FULL_DOSE_PHOTONS, "soft": FULL_DOSE_PHOTONS,  # soft: the default dose, a soft kernel
               "realistic": photons_for_noise(default_sd, FULL_DOSE_PHOTONS, REALISTIC_NOISE_HU)}
    for s in slices:
        s["low"]["realistic"] = simulate_low_dose(s["hu"], LDCT_DOSE, seed=s["seed"] + 500, pixel_mm=s["pixel_mm"],
                                                  full_dose_photons=photons["realistic"])[0]
        s["low"]["soft"] = simulate_low_dose(s["hu"], LDCT_DOSE, seed=s["seed"] + 700, pixel_mm=s["pixel_mm"],
                                             kernel=SOFT_KERNEL[0], cutoff=SOFT_KERNEL[1])[0]
    tuned = {level: dict(_tune(tune, level), photons=photons[level]) for level in LEVELS}
    ctx.store["ldct"] = {"slices": slices, "tuned": tuned, "default_sd": default_sd}
    return ctx.store["ldct"]


def _section(ctx: RealContext, level: str) -> Any:
    title = "Low-dose CT on real chest CT: quarter dose, " + {
        "default": "simulator default photons", "realistic": f"~{REALISTIC_NOISE_HU:g} HU noise",
        "soft": f"soft-tissue kernel ({SOFT_KERNEL[0]})"}[level]
    if (m := missing_models(title, [LDCT_MODEL])) is not None:
        return m
    data = _prepare(ctx)
    tuned = data["tuned"][level]
    passes = card_passes(LDCT_MODEL, ctx.device)  # the card's default on this device
    gpu_passes = card_passes(LDCT_MODEL, "cuda")
    most = f"model, {gpu_passes} passes (GPU default)" if gpu_passes != passes else None
    methods = ("low-dose input", "model (ldct-denoise)", *([most] if most else []), "non-local means", "BM3D",
               *(["noise-free reconstruction"] if level != "soft" else []))
    metrics: dict[str, dict[str, list[float]]] = {m: {"PSNR": [], "SSIM": [], "soft-tissue noise": []}
                                                  for m in methods}
    panel_rows = []
    for s in (s for s in data["slices"] if not s["tune"]):
        low = s["low"][level]
        box = s["box"]
        preds = {"low-dose input": low[box]}
        for method, options in {"model (ldct-denoise)": {}, **({most: {"ensemble": gpu_passes}} if most else {})
                                }.items():
            result = ctx.run("denoise", s["volume"].with_array(low[None]), LDCT_MODEL, f"{s['case']} (slices)",
                             **options)
            preds[method] = (result.volume.array[0] if result is not None else np.full_like(low, np.nan))[box]
        preds |= {"non-local means": nlm_denoise(low[box][None], tuned["nlm_h"])[0],
                  "BM3D": bm3d_denoise(low[box], tuned["bm3d_sigma"]),
                  **({"noise-free reconstruction": s["noise_free"][box]} if level != "soft" else {})}
        ref, body, soft = _reference(s, level)[box], s["body"][box], s["soft"][box]
        noise_free = _noise_free(s, level)[box]
        for method, pred in preds.items():
            ok = bool(np.isfinite(pred).all())
            p, q = windowed_scores(pred, ref, body) if ok else (np.nan, np.nan)
            metrics[method]["PSNR"].append(p)
            metrics[method]["SSIM"].append(q)
            noise = float(np.std((pred - noise_free)[soft])) if ok and soft.any() else np.nan
            metrics[method]["soft-tissue noise"].append(noise if method != "noise-free reconstruction" else np.nan)
        if len(panel_rows) < 2:
            shown = [preds[m] for m in ("low-dose input", "model (ldct-denoise)", "non-local means", "BM3D")] + [ref]
            panel_rows.append((f"{s['case']} z{s['z']}", [axial_view(unit_range(img, *LDCT_WINDOW),
                                                                     s["volume"].direction) for img in shown]))
    panel = save_real_panel(ctx, f"ldct_{level}", panel_rows, ["quarter dose", "model", "NLM", "BM3D",
                                                               "real CT" if level != "soft" else "noise-free, soft"])
    avg = {m: {k: mean(v) for k, v in d.items()} for m, d in metrics.items()}
    model = avg["model (ldct-denoise)"]
    why = (f"The model leaves {model['soft-tissue noise']:.0f} HU of soft-tissue noise where non-local means leaves "
           f"{avg['non-local means']['soft-tissue noise']:.0f} HU and BM3D {avg['BM3D']['soft-tissue noise']:.0f} HU "
           f"(input {avg['low-dose input']['soft-tissue noise']:.0f} HU); it was trained on simulated head CT only "
           f"(domain-randomised phantom anatomy, 1-2 mm pixels), these are "
           f"~{np.mean([s['pixel_mm'] for s in data['slices']]):.1f} mm chest slices"
           + (f"; with {gpu_passes} passes (its GPU default) it scores {avg[most]['PSNR']:.2f} dB" if most else "")
           + ".")
    targets = [] if level == "soft" else [
        Target(f"ldct-denoise on real CT ({level} dose level): PSNR above non-local means", model["PSNR"],
               avg["non-local means"]["PSNR"], ">", why),
        Target(f"ldct-denoise on real CT ({level} dose level): PSNR above BM3D", model["PSNR"],
               avg["BM3D"]["PSNR"], ">", why)]
    n_scored = len(metrics["BM3D"]["PSNR"])
    intro = (
        f"{n_scored} real chest CT slices ({', '.join(LDCT_CASES)}; 5 per CT, evenly spread over the central 60 %), "
        f"halved in-plane to ~{np.mean([s['pixel_mm'] for s in data['slices']]):.2f} mm pixels; quarter dose "
        f"simulated in the projection domain with {tuned['photons']:.3g} incident photons per bin and view at full "
        f"dose ({'calibrated on the tuning slices' if level == 'realistic' else 'the simulator default'}), "
        + (f"reconstructed with a soft-tissue kernel (the ramp times a {SOFT_KERNEL[0]} window, cut off at "
           f"{SOFT_KERNEL[1]:g} x Nyquist), the kind clinical low-dose protocols use: less noise, a coarser grain. "
           if level == "soft" else "reconstructed with the ramp kernel. ")
        + f"Measured quarter-dose soft-tissue noise on the tuning slices: {tuned['noise_sd_tuning']:.1f} HU. "
        + ("Reference: the noise-free reconstruction with the same kernel (no denoiser can undo the kernel's "
           "smoothing; the models were trained against such targets); no target here, the issue's are the two "
           "ramp-kernel levels" if level == "soft" else "Reference: the real slice")
        + f"; scores in the [{LDCT_WINDOW[0]:.0f}, {LDCT_WINDOW[1]:.0f}] HU window (data range "
        f"{LDCT_WINDOW[1] - LDCT_WINDOW[0]:.0f} HU) over the body in a {LDCT_CROP} x {LDCT_CROP} square; "
        f"'soft-tissue noise' is the SD (HU) of the difference from the noise-free reconstruction in flat soft "
        f"tissue. Baselines tuned on 4 other slices of the same CTs: non-local means (skimage, patch 5, search 13) "
        f"h = {tuned['nlm_h']:.1f} HU, BM3D sigma = {tuned['bm3d_sigma']:.1f} HU (each the best of "
        f"{len(NLM_FACTORS)} and {len(BM3D_FACTORS)} multiples of the measured noise SD; BM3D as white noise, see "
        f"`bm3d_denoise`). The model runs as its card says on this machine ({ctx.device}): averaged over {passes} "
        f"flip(s) and transposition(s) of each slice (self-ensemble; {gpu_passes} on a GPU"
        + (", its own row" if most else "") + "). The stent CT "
        "is not scored: it is stored clipped at 0 HU in 62.5 HU steps, so the soft-tissue window holds four grey "
        "levels.")
    return SectionResult(title=title, intro=intro, metrics=metrics,
                            units={"PSNR": "dB", "SSIM": "", "soft-tissue noise": "HU"}, targets=targets,
                            panels=[panel] if panel_rows else [],
                            info=tuned | {"slices": [
                                (s["case"], s["z"], "tuning" if s["tune"] else "scored") for s in data["slices"]]})


@REAL_SECTIONS.register("ldct-default")
def ldct_default(ctx: RealContext) -> Any:
    return _section(ctx, "default")


@REAL_SECTIONS.register("ldct-realistic")
def ldct_realistic(ctx: RealContext) -> Any:
    return _section(ctx, "realistic")


@REAL_SECTIONS.register("ldct-soft")
def ldct_soft(ctx: RealContext) -> Any:
    return _section(ctx, "soft")
