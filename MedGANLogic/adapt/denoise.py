"""Self-supervised denoising fitted to one scan: no clean image, no training data, any scanner.

    result = fit_denoise(volume, "MR", budget=FitBudget(seconds=60))
    result.volume        # denoised, on the input's grid
    result.record        # steps, loss curve, seed, time

How: the scan's noise model (:mod:`.noise`) transforms it so that the noise is additive and even (Rician MR as
is, PET through the Anscombe transform, ultrasound in the log domain, CT in HU) and maps it to a unit range; a
blind-spot U-Net (:class:`~MedGANLogic.models.blindspot.BlindSpotUNet`, whose output never sees a block of
pixels around itself: one pixel for white noise, wider for spatially correlated noise) learns to reproduce
random patches of the slices along the through-plane axis. It cannot copy a pixel's noise, so the squared
error on every pixel is minimised by the clean signal (Noise2Self's J-invariance); an optional adversarial term
(:mod:`.adversarial`) sharpens in the second half of the budget.

CT's and PET's default is another self-supervised fit (``method="r2r"``): their noise, correlated over several
pixels by filtered back-projection or by PET's reconstruction and post-filter, costs a blind-spot network the
signal in a block around every pixel, and where the block is too small the network learns the correlation and
puts part of the noise back. Instead the noise power spectrum is measured on the scan and the network, which sees
every pixel, learns from pairs recorrupted with fresh noise of that spectrum (Recorrupted-to-Recorrupted, Pang et
al. CVPR 2021; :func:`recorrupted_pair`), then runs over its eight flips and transpositions. On the real tuning CT
(lung2) at equal time it beat the blind spot (1500 steps: 28.2 against 27.6 dB at 300, where the blind spot
stops) and it keeps improving with steps. It needs stationary noise and its spectrum (``NOISE_SPECTRUM``): CT's is
measured on the scan's flattest tissue (:func:`.noise.noise_power`); PET has no flat tissue (uptake is everywhere:
with that estimator the fit scored 19.9 dB against the blind spot's 31.8 on the validation phantom), but its
activity is blurred by the scanner's point spread function as well as by what blurs the noise, so the highest
frequencies hold noise alone, and a Gaussian spectrum fitted there (:func:`.noise.gaussian_noise_power`) gives the
noise. PET on the validation phantoms (subjects 1000 / 1001, 3000 steps): 32.75 / 32.00 dB against the blind
spot's 31.88 / 31.07 at its 300 steps (longer blind-spot fits learn the noise) and non-local means tuned on
subject 1000 at 32.65 / 31.71. On ultrasound (log-speckle is not Gaussian) r2r lost (14.3 against 17.7), so
ultrasound and MR (white noise, where the blind spot loses nothing) keep the blind spot.

A CT fit starts from the trained CT denoiser when it is installed (``TRAINED_START``: ``ldct-denoise``, fine-tuned
with the same recorrupted pairs, in its own network and HU window, at ``R2R_FINETUNE_LR`` for at most
``R2R_FINETUNE_STEPS``): it already knows CT anatomy and how to take noise off it, and the fit teaches it this
scan's noise. On the real tuning CT (lung2) it reached 29.17 dB in 1500 steps where the fit from scratch reached
28.47 (28.95 in 6000; non-local means tuned on lung2 itself 28.71). Without it, CT fits from scratch as PET does.

The fitted network, wrapped with the transform
(:class:`~MedGANLogic.models.adapted.ScanFittedNetwork`), then runs over every slice through the engine's
inference path, averaged over flips of each slice (``SELF_ENSEMBLE``: the blind spot's four flips, r2r's eight
flips and transpositions), and the inverse transform (with MR's Rician bias correction) gives intensities in the
input's units. Fitting takes ``FIT_SHARE`` of the progress bar, the pass over the volume the rest.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..errors import InputError, MedGANError
from ..inference import InferenceLayout, resolve_device
from ..models.adapted import ScanFittedNetwork
from ..models.card import ENSEMBLE_COUNTS
from ..models.ensemble import ensemble_count
from ..volume import Volume
from .adversarial import AdversarialTerm
from .data import PatchSampler, augment_like, through_plane_axis, to_unit, unit_window
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
from .noise import canonical_modality, gaussian_noise_power, noise_model, noise_power, robust_noise_std
from .result import AdaptResult, apply_network, load_initial_weights

FIT_SHARE = 0.85  # of the progress bar; the pass over the volume takes the rest
# Seconds of a default fit per modality: CT's recorrupted-to-recorrupted fit keeps improving for thousands of
# steps (real tuning CT lung2, first noise estimator, without the self-ensemble: 28.2 / 28.55 / 28.75 dB at 1500 /
# 3000 / 6000 steps, 28.98 with it at 6000; with alpha 0.5, benchmarks/adapt_ct.py: 28.37 / 28.66 / 28.88 in 98 / 189
# / 414 s on two CPU cores; tuned NLM 28.71, BM3D 27.73), and so does PET's (validation subject 1000: 32.55 / 32.75 /
# 33.00 dB at 1500 / 3000 / 6000 steps, the first with the true noise spectrum, the others with the measured one);
# the blind-spot fits of the others stop at their cap or improve slowly.
DEFAULT_SECONDS = {"MR": 90.0, "PT": 300.0, "US": 120.0, "CT": 300.0}  # US: room for its 750-step cap on 2 cores
R2R_STEPS = 6000  # CT's and PET's cap: where CT's settings were chosen (lung2 at 12000 steps: 29.01 dB, 28.95 at 6000)
# Steps after which a default fit stops even with time left, per modality (None: the time budget alone binds).
# Where the noise is correlated beyond the blind block the blind-spot network slowly learns that correlation and a
# longer fit can be WORSE (when the caps were set, validation subject 1000 / real tuning CT lung2, 300 -> 750 steps:
# PET 31.8 -> 31.5 dB, ultrasound 17.7 -> 15.9, CT 27.8 -> 27.0; a wider blind block does not fix it: PET radius 2
# at 750 steps 31.1), so these stop where their settings were chosen: a GPU or a fast CPU gives the result of a slow
# one, sooner. Measured again with today's fit and starts (validation subjects 1000 / 1001, default settings), the
# PET blind spot still does not gain (1000: 31.79 at 300 steps, 31.72 at 750) but ultrasound does: 17.70 / 17.35 dB
# at 300 steps, 18.05 / 17.88 at 750 (1000 at 1500: 17.79), so its cap is 750. White MR noise keeps improving
# (benchmarks/adapt.py, four flips: 30.9 / 31.6 / 32.1 dB at 433 / 822 / 1906 steps). CT's and PET's default fit
# (recorrupted-to-recorrupted) does not learn the noise: its cap only bounds the time.
STEP_CAP = {"MR": None, "PT": R2R_STEPS, "US": 750, "CT": R2R_STEPS}
MR_MAX_STEPS = 1500  # the default budget's step limit where no cap applies (direct calls of fit_denoise)
# Per modality, chosen on the validation phantom (subject 1000 of make eval's adapt-denoise cases; the reported
# figures are on test subject 2000) at 300 steps from the shipped fit starts:
# Adam learning rate: MR 1e-3 / 3e-3 / 6e-3 -> 28.1 / 28.9 / 29.3 dB; PT (blind spot) 1e-3 / 3e-3 -> 31.5 / 31.3;
# US 1e-3 / 3e-3 -> 16.8 / 15.2. CT, chosen like the report's NLM and BM3D strengths on the real tuning CT of
# make eval-real (lung2, correlated noise added; scored on lung1), from scratch with blind radius 2:
# 1e-3 / 3e-3 / 6e-3 -> 27.1 / 27.6 / 27.0 dB.
DEFAULT_LR = {"MR": 6e-3, "PT": 1e-3, "US": 1e-3, "CT": 3e-3}
# Factor on the estimated noise variance the posterior weighs with: the smallest estimate is right for white
# noise (MR: x2 costs 0.5 dB) but short where the noise is correlated beyond one pixel and the blind block
# hides only part of it (PT x2: +0.35 dB, US x2: +1.0 dB on the validation phantom; CT x2: +0.2 dB on lung2).
# With the four-flip pass (SELF_ENSEMBLE) ultrasound scored better with less (validation subjects 1000 / 1001 at 750
# steps, factor 1.25 / 1.5 / 1.75 / 2 / 3: 18.12 / 18.38 / 18.36 / 18.25 / 18.01 and 17.93 / 18.25 / 18.25 / 18.14 /
# 17.88 dB), but on make eval's test subject 1.5 moved PSNR 19.17 -> 19.18 and SSIM 0.594 -> 0.583, and in short fits it
# narrows what the shipped start gains over scratch (Testing/Python/test_fit_starts.py): not changed yet. PET with the
# four flips still wants 2 (1.5 / 2 / 3: 31.79 / 31.87 / 31.64 and 31.01 / 31.07 / 30.86).
NOISE_VAR_FACTOR = {"MR": 1.0, "PT": 2.0, "US": 2.0, "CT": 2.0}


METHODS = ("blindspot", "r2r")
# The fit per modality when none is asked for (see fit_method).
DEFAULT_METHOD = {"MR": "blindspot", "PT": "r2r", "US": "blindspot", "CT": "r2r"}
# How a recorrupted-to-recorrupted fit measures the noise spectrum, per modality: on the flattest tissue
# (noise_power: CT, and MR or ultrasound when asked for), or, for PET, where uptake is everywhere, a Gaussian spectrum
# fitted at the high frequencies that only the noise reaches (gaussian_noise_power).
NOISE_SPECTRUM = {"MR": "flattest", "PT": "gaussian", "US": "flattest", "CT": "flattest"}
SPECTRUM_WORDS = {"flattest": "the noise spectrum measured on the scan's flattest tissue",
                  "gaussian": "a Gaussian noise spectrum fitted to the scan's high frequencies"}
# The fit method of a starting network's inner architecture (a kept fit or a shipped start).
METHOD_OF_INNER = {"blindspot_unet2d": "blindspot", "residual_unet2d": "r2r", "red_cnn2d": "r2r"}
# Recorruption strength: the input carries (1 + alpha^2) x the noise variance, the target 1 / alpha^2 x. Pang et al.
# used 0.5; on the real tuning CT (lung2, seed 0, one thread) 0.3 / 0.5 / 0.7 / 1.0 gave 28.21 / 28.40 / 28.47 /
# 28.44 dB at 1500 steps, and 0.7 28.95 at 6000 steps against 0.5's 28.88 (benchmarks/adapt_ct.py, two threads).
# On the test CT of make eval-real (lung1) it then scored 29.29 against 0.5's 29.38: an effect within the spread
# between scans, kept rather than chosen again on the test scan. PET (validation subject 1000, 3000 steps): 0.5 / 0.7
# 32.79 / 32.75 dB, the same; CT's is kept.
R2R_ALPHA = 0.7
# Learning rate and width, on lung2 at 6000 steps: 5e-4 / 1e-3 / 2e-3 gave 28.89 / 28.95 / 28.93 dB; 48 features 28.91,
# batches of 16 28.95, 96-pixel patches 28.95; a U-Net of depth 4 (3000 steps) 28.69 against 28.71; averaging the
# weights (EMA, decay 0.99-0.999, or the second half's mean) 28.90-28.95: the decaying learning rate already averages.
# Also tried on lung2 (seed 0, 1500 steps: 28.47 dB as shipped), none kept: Pang et al.'s test-time average over
# recorrupted inputs (the network over x + alpha z, K = 1 / 2 / 4 draws per flip, alpha 0.35 / 0.5 / 0.7) 28.33-28.47;
# the measured spectrum scaled by 0.85 / 1.2 (variance) 28.34 / 28.26; the spectrum of the added noise itself, known
# exactly, 28.37 (the scan's own noise is in the reference, and the measured spectrum suits it better); two fits of
# 3000 steps with seeds 0 and 1, averaged, 28.75 against 28.74 / 28.70 alone.
R2R_LR = 1e-3
R2R_FEATURES = 32
# A trained denoiser a modality's recorrupted-to-recorrupted fit fine-tunes when it is installed (trained_start):
# the network already knows the modality's anatomy and how to remove noise, and the fit adapts it to this scan's
# noise spectrum. CT: ldct-denoise (RED-CNN, trained on simulated low-dose CT; HU window -1000..2000). The issue's
# suggestion ("fine-tuning the pretrained CT denoiser"); measured on the real tuning CT (lung2, seed 0, see below).
# lung2 from ldct-denoise: learning rate 1e-4 / 3e-4 / 1e-3 at 1500 steps 29.11 / 29.17 / 29.14 dB; 3e-4 at 3000 steps
# 29.17 (it has arrived by 1500); from scratch at the same steps 28.47 (1500), 28.72 (3000), 28.95 (6000; NLM tuned on
# lung2 itself 28.71). A RED-CNN step costs about twice a scratch U-Net's (0.15 s on two CPU cores), so the fit stops
# at R2R_FINETUNE_STEPS, about 230 s there, inside CT's default 300 s.
TRAINED_START = {"CT": "ldct-denoise"}
R2R_FINETUNE_LR = 3e-4
R2R_FINETUNE_STEPS = 1500
# Passes of the fitted network over flips and transpositions of each slice, averaged (the geometric self-ensemble,
# MedGANLogic/models/ensemble.py), per fit method. CT (r2r, lung2, 1500 steps): 28.19 dB alone, 28.35 over the four
# flips, 28.39 over all eight. Blind spot (validation subjects 1000 / 1001 at each modality's default steps, 1 / 2 /
# 4 / 8 passes): ultrasound (750 steps) 18.04 / 18.15 / 18.25 / 18.26 and 17.87 / - / - / 18.12 dB; PET (300)
# 31.78 / 31.85 / 31.86 / 31.89 and 31.00 / 31.06 / 31.07 / 31.09; MR (300, subject 1000) 29.21 / 29.31 /
# 29.33 / 29.35. The blind spot's four-branch network makes each pass dear (2 CPU cores, 256 x 256 x 100 voxels: about
# 15 s a pass), and four passes hold nearly all of the gain: four for it, eight for r2r (2.7 s a pass).
SELF_ENSEMBLE = {"blindspot": 4, "r2r": 8}


def fit_method(modality: str, method: str | None = None) -> str:
    """``method`` checked, or the default fit of ``modality`` (``DEFAULT_METHOD``)."""
    chosen = DEFAULT_METHOD[canonical_modality(modality)] if method is None else str(method).strip().lower()
    if chosen not in METHODS:
        raise InputError(f"Unknown denoising fit {method!r}: use one of {', '.join(METHODS)} (blindspot: a "
                         f"blind-spot network, for white or briefly correlated noise; r2r: recorrupted-to-"
                         f"recorrupted with the noise spectrum measured on the scan, for correlated noise).")
    return chosen


def start_method(init: Any) -> str | None:
    """The fit method whose network ``init`` (a model id or folder saved from a denoising fit, or a trained
    denoiser: :func:`trained_window`) holds, or None."""
    from ..models import registry

    card = registry.get_model(init)
    if trained_window(card) is not None:
        return "r2r"
    inner = card.arch_params.get("inner") or {}
    return METHOD_OF_INNER.get(inner.get("name"))


def trained_window(card: Any) -> tuple[float, float] | None:
    """The HU window (low, high -> -1, 1) of a trained denoiser a recorrupted-to-recorrupted fit can fine-tune: a
    ``denoise`` card with a fixed CT window (``ct_window``) that predicts the clean image from the noisy one (as
    ``ldct-denoise``); None for anything else (a kept fit, a start, a model of another kind)."""
    if card.task != "denoise" or card.architecture == "scan_fitted2d" or card.dims != "2d":
        return None
    norm = card.input.get("normalization") or {}
    out = card.output.get("normalization") or {}
    if norm.get("kind") != "ct_window" or out.get("kind") != "same_as_input" or norm.get("knots"):
        return None  # the fit's recorruption works on a linear HU window
    low, high = (float(v) for v in norm["window"])
    range_ = [float(v) for v in norm.get("range", [-1.0, 1.0])]
    return (low, high) if range_ == [-1.0, 1.0] else None


def trained_start(modality: str) -> str | None:
    """The installed trained denoiser a ``modality`` fit fine-tunes by default (``TRAINED_START``), or None."""
    model = TRAINED_START.get(canonical_modality(modality))
    if model is None:
        return None
    try:
        card = trained_card(model)
    except MedGANError:  # not installed
        return None
    return card.id if card is not None else None


def trained_card(init: Any) -> Any:
    """``init``'s card when it is a trained denoiser a fit can fine-tune (:func:`trained_window`), else None."""
    if init is None:
        return None
    from ..models import registry

    card = registry.get_model(init)
    return card if trained_window(card) is not None else None


def _kept_fit_inner(init: Any) -> tuple[dict[str, Any], tuple[float, float]] | None:
    """(inner network spec, window) of ``init`` when it is a kept denoising fit (``scan_fitted2d``), else None."""
    if init is None:
        return None
    from ..models import registry

    card = registry.get_model(init)
    if card.architecture != "scan_fitted2d" or card.task != "denoise":
        return None
    low, high = (float(w) for w in card.arch_params["window"])
    return dict(card.arch_params["inner"]), (low, high)


def _load_trained(inner: torch.nn.Module, card: Any) -> str:
    """The trained denoiser's weights (checked against its card's SHA-256) in ``inner``; returns its id."""
    from ..models import registry

    inner.load_state_dict(registry.load_network(card, "cpu").state_dict())
    return card.id


def measure_noise(modality: str, slices: np.ndarray, tissue: np.ndarray) -> Any:
    """The noise spectrum of a scan's unit-range ``slices`` for a recorrupted-to-recorrupted fit (NOISE_SPECTRUM)."""
    if NOISE_SPECTRUM[canonical_modality(modality)] == "gaussian":
        return gaussian_noise_power(slices, tissue)
    return noise_power(slices, tissue)


def default_budget(modality: str, seconds: float | None = None, max_steps: int | None = None,
                   fine_tuning: bool = False) -> FitBudget:
    """The budget of a fit to a ``modality`` scan when the user gives seconds (or nothing) but no step count:
    ``seconds`` (default ``DEFAULT_SECONDS``), and no more steps than the modality's cap (``STEP_CAP``;
    ``R2R_FINETUNE_STEPS`` when ``fine_tuning`` a trained denoiser) or ``max_steps`` (default: the cap, or
    ``MR_MAX_STEPS`` where there is none)."""
    mod = canonical_modality(modality)
    cap = R2R_FINETUNE_STEPS if fine_tuning else STEP_CAP[mod]
    most = int(max_steps) if max_steps is not None else int(cap or MR_MAX_STEPS)
    return FitBudget(seconds=float(DEFAULT_SECONDS[mod] if seconds is None else seconds),
                     max_steps=min(most, cap) if cap else most)


def denoiser_spec(blind_radius: int, features: int = 16, levels: int = 2) -> dict[str, Any]:
    """The inner network: a blind-spot U-Net with a (2 ``blind_radius`` + 1)^2 blind block predicting each pixel's
    mean and log-variance (two output channels)."""
    return {"name": "blindspot_unet2d", "params": {"features": int(features), "levels": int(levels),
                                                   "blind_radius": int(blind_radius), "out_channels": 2}}


def r2r_spec(features: int = 32, depth: int = 3) -> dict[str, Any]:
    """The inner network of a recorrupted-to-recorrupted fit: a U-Net that predicts the noise and sees every pixel."""
    return {"name": "residual_unet2d", "params": {"features": int(features), "depth": int(depth)}}


def recorrupted_pair(x: torch.Tensor, noise: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Recorrupted-to-Recorrupted (Pang et al., CVPR 2021): from one noisy batch ``x`` and fresh ``noise`` with
    the scan's noise covariance, the input x + alpha z and the target x - z / alpha. Their noises n + alpha z and
    n - z / alpha are uncorrelated (covariance C - C = 0), and independent for Gaussian noise, so the squared error
    to the target is minimised by the clean image of an input with (1 + alpha^2) times the noise: supervised
    training without a clean image, and the network may look at every pixel, however correlated the noise."""
    return x + alpha * noise, x - noise / alpha


#: The least log-variance the blind-spot network may predict (unit-range data: a variance of 1e-8, far under any
#: noise or quantisation). Unbounded, exp(-log_var) can overflow where the surroundings predict pixels exactly: on an
#: H200, an MR fit of benchmarks/adapt.py stopped at step 384 with an infinite loss, and this is the one term of the
#: loss that can reach infinity from finite weights. Above the bound nothing changes.
MIN_LOG_VAR = math.log(1e-8)


def gaussian_nll(x: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (per pixel, without the constant) of ``x`` under N(mean, exp(log_var)) predicted as
    the two channels of ``prediction``: the blind-spot network learns its mean and how sure it is (the log-variance
    bounded below by :data:`MIN_LOG_VAR`)."""
    mean, log_var = prediction[:, :1], prediction[:, 1:2].clamp(min=MIN_LOG_VAR)
    return 0.5 * ((x - mean) ** 2 * torch.exp(-log_var) + log_var).mean()


def tissue_mask(image: np.ndarray) -> np.ndarray:
    """Pixels of a unit-range slice that hold tissue, not air: above the window's lower quarter once smoothed (air
    in MR is Rayleigh noise whose variance is less than the tissue's, and must not set the noise level)."""
    return ndimage.gaussian_filter(image, 1.0) > -0.5


def noise_variance(model: torch.nn.Module, slices: np.ndarray, device: torch.device, count: int = 16,
                   quantile: float = 5.0) -> float:
    """The noise variance (unit range) of ``slices``: a low percentile of the variance the fitted network predicts
    on signal pixels. Where the surroundings predict a pixel almost exactly (flat tissue), what remains of its
    predicted variance is the noise; edges and detail only add to it."""
    picks = np.linspace(0, len(slices) - 1, num=min(count, len(slices))).round().astype(int)
    values = []
    m = int(getattr(model, "size_multiple", 1))
    with torch.no_grad():
        for k in picks:
            image = slices[k]
            pad = [(0, (-n) % m) for n in image.shape]
            x = torch.from_numpy(np.pad(image, pad, mode="edge")[None, None]).to(device)
            log_var = model(x)[0, 1, : image.shape[0], : image.shape[1]].clamp(min=MIN_LOG_VAR).cpu().numpy()
            signal = tissue_mask(image)
            if signal.any():
                values.append(log_var[signal])
    if not values:
        return 0.0
    return float(np.exp(np.percentile(np.concatenate(values), quantile)))


def _patch_size(slices: np.ndarray, patch: int, multiple: int) -> int:
    largest = max(slices.shape[1:])
    return int(min(patch, math.ceil(largest / multiple) * multiple))


def fit_denoise(volume: Volume, modality: str | None = None, *, budget: FitBudget | None = None, seed: int = 0,
                device: str | torch.device = "auto", progress: ProgressFn | None = None, cancel: Any = None,
                blind_radius: int | None = None, adversarial: float = 0.0,
                init: Any = None, patch: int = 64, batch_size: int = 8, features: int | None = None,
                lr: float | None = None, method: str | None = None, self_ensemble: int | None = None) -> AdaptResult:
    """Fit a self-supervised denoiser to ``volume`` and denoise it.

    Args:
        volume: the noisy scan (never modified); any grid and orientation.
        modality: ``MR``, ``CT``, ``PT`` (PET) or ``US``; default: ``volume.metadata["modality"]``.
        budget: seconds and maximum steps of fitting (default :func:`default_budget`: ``DEFAULT_SECONDS``, and at
            most ``STEP_CAP`` steps where the noise is spatially correlated); an explicit budget is taken as given.
        seed: seeds weights, patches and masks: same seed and steps, same result (on the same CPU).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``...
        progress: ``progress(fraction, message)``; fitting covers 0-0.85, the pass over the volume the rest.
        cancel: a callable returning True or a ``threading.Event``; checked every step and every batch.
        blind_radius: half-width of the blind block (pixels); default per modality (:mod:`.noise`).
        adversarial: weight of the adversarial term (0: none; ESRGAN used 5e-3).
        init: a model id or folder saved from an earlier denoising fit of the same kind: start from its weights.
        patch, batch_size, features: patch side (pixels), patches per step, network width (default 16 for the
            blind spot, 32 for r2r).
        lr: Adam learning rate; default per modality (``DEFAULT_LR``, chosen on the validation phantom; r2r
            ``R2R_LR``).
        method: ``blindspot`` or ``r2r`` (recorrupted-to-recorrupted with the noise spectrum measured on the
            scan); default: the method of ``init``'s network when one is given, else per modality
            (``DEFAULT_METHOD``: r2r for CT and PET). ``blind_radius`` and ``adversarial`` apply to the blind spot
            only; ``init`` must come from a fit of the same method.
        self_ensemble: passes over the flips and transpositions of each slice that the denoised volume averages
            (1, 2, 4 or 8); default per method (``SELF_ENSEMBLE``). The fit itself is the same.

    Returns:
        :class:`AdaptResult`; its volume has the input's geometry and units.

    Raises:
        InputError (unknown modality, unusable volume), CancelledError (``cancel`` set: nothing is returned).
    """
    from ..pipeline import check_volume  # the engine's input checks (imported here: pipeline imports adapt)

    check_volume(volume)
    mod = canonical_modality(modality or volume.metadata.get("modality"))
    trained = trained_card(init)  # a trained denoiser to fine-tune (its own network and HU window), or None
    budget = budget or default_budget(mod, fine_tuning=trained is not None)
    noise = noise_model(mod, blind_radius)
    if adversarial < 0:
        raise InputError(f"adversarial must be a weight >= 0; got {adversarial}.")
    dev = resolve_device(device)
    axis = through_plane_axis(volume)

    method = fit_method(mod, method if method is not None or init is None else start_method(init))
    if method == "r2r" and adversarial > 0:
        raise InputError("The adversarial term works with the blind-spot fit only: pass method='blindspot' with "
                         "adversarial > 0, or adversarial=0.")
    if trained is not None and (method != "r2r" or mod != "CT"):
        raise InputError(f"The trained denoiser {trained.id} starts a recorrupted-to-recorrupted fit to a CT scan "
                         f"only; this fit is {method} on {mod}: pass method='r2r' for a CT scan, or another start.")
    lr = learning_rate(lr, (R2R_FINETUNE_LR if trained is not None else R2R_LR) if method == "r2r"
                       else DEFAULT_LR[mod])
    try:
        passes = ensemble_count(SELF_ENSEMBLE[method] if self_ensemble is None else self_ensemble)
    except (TypeError, ValueError):
        raise InputError(f"self_ensemble must be a number of passes, one of {ENSEMBLE_COUNTS}; got "
                         f"{self_ensemble!r}.") from None

    constants = noise.estimate(volume.array)
    transformed = noise.forward(volume.array)
    # (network, window) that the start's weights work in and the fit keeps: a trained denoiser's own, or those of a
    # kept recorrupted-to-recorrupted fit of another network than a fit's own (r2r_spec), which fine-tuned one;
    # otherwise None (the fit's own network, in the scan's own window)
    fixed = None
    if trained is not None:
        fixed = {"name": trained.architecture, "params": dict(trained.arch_params)}, trained_window(trained)
    elif method == "r2r" and (kept := _kept_fit_inner(init)) is not None:
        if kept[0]["name"] != r2r_spec()["name"] and METHOD_OF_INNER.get(kept[0]["name"], "r2r") == "r2r":
            fixed = kept
    window = fixed[1] if fixed is not None else unit_window(transformed)
    slices = np.moveaxis(to_unit(transformed, window), axis, 0)
    del transformed
    tissue = np.stack([tissue_mask(s) for s in slices])
    if method == "r2r":
        inner = dict(fixed[0]) if fixed is not None else r2r_spec(features or R2R_FEATURES)
        power = measure_noise(mod, slices, tissue)
    else:
        inner = denoiser_spec(noise.blind_radius, features or 16)
    net = init_network(lambda: ScanFittedNetwork(inner, noise.transform, window, constants,
                                                 self_ensemble=passes), seed)
    if trained is not None:
        start = _load_trained(net.inner, trained)
    else:
        start = load_initial_weights(net.inner, init, inner) if init is not None else "scratch"
    model = net.inner.to(dev).train()
    multiple = int(getattr(model, "size_multiple", 1))
    sampler = PatchSampler(slices, _patch_size(slices, patch, multiple), batch_size, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    adv = init_network(lambda: AdversarialTerm(adversarial, dev), seed + 1) if adversarial > 0 else None

    def r2r_step(k: int, fraction: float) -> float:
        schedule_lr(opt, lr, fraction)
        x, transforms = sampler.batch_with_transforms(k)
        # the noise is drawn as the scan has it, then turned and mirrored with each patch: a patch's own noise and
        # its recorruption keep one orientation, which matters where the noise is anisotropic (streaky CT)
        z = augment_like(power.sample(x.shape, torch.Generator().manual_seed(seed * 1_000_003 + k)), transforms)
        given, wanted = recorrupted_pair(torch.from_numpy(x), z, R2R_ALPHA)
        loss = torch.nn.functional.mse_loss(model(given.to(dev)), wanted.to(dev))
        optimise(opt, loss)
        return loss.item()

    def step(k: int, fraction: float) -> float:
        schedule_lr(opt, lr, fraction)
        x = torch.from_numpy(sampler.batch(k)).to(dev)
        out = model(x)
        loss = gaussian_nll(x, out)
        total = loss
        if adv is not None and adv.active(fraction):
            mean = out[:, :1]
            fake = mean + (x - mean).detach().roll(1, dims=0)  # another patch's residual: re-sampled noise
            adv.update_discriminator(x, fake)
            total = total + adv.generator_loss(fake)
        optimise(opt, total)
        return loss.item()

    losses, seconds, stopped = fit_steps(r2r_step if method == "r2r" else step, budget,
                                         progress=span_progress(progress, 0.0, FIT_SHARE), cancel=cancel,
                                         label=f"fitting a {mod} denoiser to this scan")
    net = net.to(dev).eval()
    if method == "blindspot":
        # the smallest of what the physics, the image and the network say: an overestimate would trust the
        # prediction from the surroundings over the pixel itself
        estimates = [noise_variance(model, slices, dev), robust_noise_std(slices, noise.blind_radius, tissue) ** 2]
        if noise.noise_std() is not None:
            estimates.append((noise.noise_std() * 2.0 / (window[1] - window[0])) ** 2)
        net.constants["noise_var"] = min(estimates) * NOISE_VAR_FACTOR[mod]
    low = float(np.percentile(volume.array[:: max(1, volume.shape[0] // 8)], 1))
    layout = InferenceLayout(dims="2d", slice_axis=axis, pad_value=low)
    applied = time.perf_counter()
    out = apply_network(net, volume.array, layout, dev, span_progress(progress, FIT_SHARE, 1.0), cancel)
    if noise.transform == "log":  # the log domain biases the mean envelope; speckle keeps it: one gain restores it
        gain = float(volume.array.mean(dtype=np.float64) / max(out.mean(dtype=np.float64), 1e-12))
        net.constants["out_gain"] = gain
        out *= np.float32(gain)
    net = net.cpu().eval()

    if method == "r2r":
        described = (f"self-supervised recorrupted-to-recorrupted denoising ({mod}, {noise.transform} transform, "
                     f"{SPECTRUM_WORDS[NOISE_SPECTRUM[mod]]}"
                     f"{f', fine-tuning the trained {trained.id}' if trained is not None else ''})")
    else:
        described = (f"self-supervised blind-spot denoising ({mod}, {noise.transform} transform, blind radius "
                     f"{noise.blind_radius} px{', adversarial' if adv else ''})")
    record = FitRecord(
        method=described,
        steps=len(losses), seconds=seconds, seed=int(seed), device=str(dev), stopped_by=stopped,
        budget={"seconds": budget.seconds, "max_steps": budget.max_steps},
        loss_first=losses[0], loss_last=losses[-1], loss_curve=loss_curve(losses), init=start,
        details={"modality": mod, "transform": noise.transform, "constants": dict(net.constants),
                 "window": list(window), "slice_axis": axis, "method": method,
                 "blind_radius": noise.blind_radius if method == "blindspot" else None,
                 "noise_power": power.summary() if method == "r2r" else None,
                 "noise_spectrum": NOISE_SPECTRUM[mod] if method == "r2r" else None,
                 "alpha": R2R_ALPHA if method == "r2r" else None, "self_ensemble": net.self_ensemble,
                 "adversarial": float(adversarial), "patch": sampler.size,
                 "batch_size": batch_size, "lr": lr, "network": inner,
                 "apply_seconds": round(time.perf_counter() - applied, 3)})
    meta = {"adapt": record.summary(), "description": f"denoised by a network fitted to this scan ({mod})"}
    result = volume.with_array(out, metadata=meta)
    return AdaptResult(result, record, net, fitted_card("denoise", volume, net, record))

