"""Validation that no report scores: where recipes choose between candidate models before the reports test them.

    python -m MedGANLogic.evaluation.validation ldct [--phantoms] [--ensemble N] MODEL [MODEL ...]
    python -m MedGANLogic.evaluation.validation anomaly [--contrast T1w] MODEL [MODEL ...]
    python -m MedGANLogic.evaluation.validation superres [--adapt [--adapt-steps N] | --ensemble N] MODEL [MODEL ...]
    python -m MedGANLogic.evaluation.validation mr-ct [--ensemble N] MODEL [MODEL ...]

``ldct``: low-dose CT denoisers (ids or model folders) on the real body CT slice of :data:`.real_data.
VALIDATION_IMAGES` (``ct_small``: pydicom's ``CT_small.dcm``, fetched with the report's real images), at its own
0.66 mm pixels and averaged 2 x 2 to 1.32 mm. Per pixel size, five settings:

* quarter dose simulated in the projection domain (:func:`~MedGANLogic.simulate.lowdose.simulate_low_dose`, noise
  seeds 0-3) with the ramp at the simulator's default photons and at a sixth of them, and with a cosine kernel at
  the default photons; reference the noise-free reconstruction with the same kernel;
* image-domain Gaussian noise smoothed by 0.7 and 1.5 pixels, SD 30 HU (4 draws); reference the slice.

PSNR in the [-160, 240] HU window over the body (> -500 HU), mean over the draws. ``--phantoms`` adds phantom
validation subjects 1000 and 1001 at 25 % dose on 2 mm voxels (whole volumes, one pass). The models run as their
cards say on a CPU unless ``--ensemble`` says how many passes.

``anomaly``: anomaly models (ids or model folders) through the engine, as a user runs them, on

* phantoms :data:`ANOMALY_PHANTOM_SEEDS` (1010-1019: outside the training, validation and test splits; the
  calibration's case-score check also draws from them) of ``--contrast`` at 2 mm, each with its lesion-free twin:
  voxel AUROC of the map for the lesions inside the engine's brain, Dice of the candidate mask, normal brain flagged
  (% of the twin's brain in the mask) and the case AUROC of the ten pairs;
* with T1w, :data:`ANOMALY_HEADS` domain-randomised post-contrast T1w heads (:class:`~MedGANLogic.simulate.randomize.
  DomainRandomizer` seed 777, enhancing sinuses, veins, choroid plexus and dura in every head, 1-3 lesions): lesion
  voxel AUROC, normal brain flagged and the share of the normal brain's highest map (its top 1 %) on or beside its
  brightest tissue (:func:`.real_mr.hyperintense_share`): what real contrast T1w shows and the training never did;
* with T1w, as many post-contrast heads with *enhancing tumours* (:data:`ANOMALY_TUMOURS`: seed 778, 1-2 lesions of
  6-20 mm, half of those not beside the ventricles centred in the cortex, every one with an enhancing rim around its
  own core, :func:`~MedGANLogic.simulate.anatomy.
  enhancing_rims`; the textbook look of a high-grade tumour or metastasis on contrast T1w, which the heads above
  lack): lesion voxel AUROC and normal brain flagged, and beside them the voxel AUROC of the image's own intensity
  z-score (:func:`.real_mr.zscore_map` over the engine's brain, no training), the baseline of the real tumours;
  and the same heads shaded (:func:`radial_shading`: a coil's bright periphery or a 3 T head's bright centre, which
  real scans carry and the training's bias fields hold only in part): lesion voxel AUROC and normal brain flagged.

``superres``: super-resolution models on real MR that no report scores (:data:`SR_CASES`: nibabel's EPI volumes 0
and 1 and its small T1w, fetched with the report's real images), each degraded as its model was trained to invert
(as ``make eval-real`` degrades its brains): gain over cubic B-spline in the head, per case and mean; ``--adapt``
fits each degraded scan first, as ``MedGANLogic.run(..., adapt=True)`` does.

``mr-ct``: T1w MR -> CT and CT -> T1w MR models (ids or model folders; the card's input modality says which way) on
the phantom's validation subjects :data:`MRCT_SEEDS` at 2 mm, as ``make eval`` runs its test subjects: MAE in the head
(MR -> CT also in bone and brain, :func:`.sections.synthesis.ct_regions`), against the noise-free T1w for CT -> MR;
mean over the subjects.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..resampling import block_mean_2x2
from ..volume import Volume
from .context import LDCT_WINDOW, PHANTOM_DIRECTION

SMOOTHED_NOISE_HU = 30.0
PHANTOM_SEEDS = (1000, 1001)
ANOMALY_PHANTOM_SEEDS = tuple(range(1010, 1020))
ANOMALY_HEADS = 8
ANOMALY_HEAD_SEED = 777
ANOMALY_TUMOURS = (778, {"enhancement": 1.0, "lesion_enhancement": 1.0, "n_lesions": [1, 2],
                         "lesion_radius_mm": [6.0, 20.0], "juxtacortical": 0.5})  # seed, DomainRanges of those heads
SR_CASES = ("epi0", "epi1", "t1_small")
MRCT_SEEDS = (1000, 1001, 1002, 1003, 1004)  # the first five of the phantom's validation split (split_seeds('val'))


@dataclass(frozen=True)
class Case:
    name: str
    inputs: np.ndarray  # (draws, y, x) HU
    reference: np.ndarray  # (y, x) HU
    body: np.ndarray  # (y, x) bool
    pixel_mm: float
    smoothed: bool  # image-domain smoothed noise, not projection-domain


def window_psnr(output: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in the low-dose CT window of the reports (:data:`.context.LDCT_WINDOW`; both clipped to it, data range its
    width) over ``mask``."""
    from .metrics import psnr

    lo, hi = LDCT_WINDOW
    return psnr(np.clip(output, lo, hi), np.clip(reference, lo, hi), mask, hi - lo)


def ldct_cases(slice_hu: np.ndarray, pixel_mm: float) -> list[Case]:
    """The ten settings of the ``ldct`` validation (see the module) for one real CT slice."""
    from ..simulate.lowdose import FULL_DOSE_PHOTONS, noiseless_reconstruction, simulate_low_dose

    halved = block_mean_2x2(slice_hu)
    cases = []
    for image, px in ((slice_hu, pixel_mm), (halved, 2 * pixel_mm)):
        tag, body = f"{px:.2f} mm", image > -500
        for label, photons, kernel in (("ramp", FULL_DOSE_PHOTONS, "ramp"), ("ramp, 1/6 photons",
                                       FULL_DOSE_PHOTONS / 6, "ramp"), ("cosine", FULL_DOSE_PHOTONS, "cosine")):
            reference = noiseless_reconstruction(image, pixel_mm=px, kernel=kernel)
            lows = [simulate_low_dose(image, 0.25, seed=s, pixel_mm=px, full_dose_photons=photons, kernel=kernel)[0]
                    for s in range(4)]
            cases.append(Case(f"{tag} {label}", np.stack(lows), reference, body, px, False))
        for sigma in (0.7, 1.5):
            rng = np.random.default_rng(int(sigma * 10))
            noise = ndimage.gaussian_filter(rng.normal(0, 1, (4, *image.shape)), (0, sigma, sigma))
            noise *= SMOOTHED_NOISE_HU / noise.std()
            cases.append(Case(f"{tag} smoothed {sigma}", (image + noise).astype(np.float32), image, body, px, True))
    return cases


Denoiser = Callable[[np.ndarray, float], np.ndarray]


def model_denoiser(model: str, ensemble: int | None = None) -> Denoiser:
    """``(slices (n, y, x) HU, pixel mm) -> denoised`` through the engine with ``model`` on the CPU."""
    from ..pipeline import run

    def denoise(slices: np.ndarray, pixel_mm: float) -> np.ndarray:
        volume = Volume(slices, spacing=(pixel_mm, pixel_mm, 1.0), metadata={"modality": "CT"})
        options = {} if ensemble is None else {"ensemble": ensemble}
        return run("denoise", volume, model=model, device="cpu", precision="fp32", **options).volume.array

    return denoise


def score_ldct(cases: list[Case], denoise: Denoiser | None) -> dict[str, float]:
    """Mean PSNR per case of ``denoise`` (None: the noisy input itself), and the means over the projection-domain
    and the smoothed-noise cases."""
    out = {}
    for case in cases:
        outputs = case.inputs if denoise is None else denoise(case.inputs, case.pixel_mm)
        out[case.name] = float(np.mean([window_psnr(o, case.reference, case.body) for o in outputs]))
    for key, smoothed in (("projection mean", False), ("smoothed mean", True)):
        out[key] = float(np.mean([out[c.name] for c in cases if c.smoothed == smoothed]))
    return out


def phantom_scores(model: str) -> list[float]:
    """PSNR of ``model`` (one pass) on phantom validation subjects :data:`PHANTOM_SEEDS` at 25 % dose, 2 mm, in
    the head."""
    from ..pipeline import run
    from ..train.data import phantom_subject_arrays

    scores = []
    for seed in PHANTOM_SEEDS:
        a = phantom_subject_arrays(seed, ["CT"], 2.0, low_dose={"dose_fraction": 0.25, "realisations": 1})
        low = Volume(a["CT_low_dose_0"], spacing=(2.0, 2.0, 2.0), direction=PHANTOM_DIRECTION,
                     metadata={"modality": "CT"})
        out = run("denoise", low, model=model, device="cpu", precision="fp32", ensemble=1).volume.array
        scores.append(window_psnr(out, a["CT_full_dose_0"], a["head_mask"].astype(bool)))
    return scores


def superres_scores(model: str, adapt: bool = False, adapt_steps: int | None = None,
                    cache: Any = None, ensemble: int | None = None) -> dict[str, float]:
    """Gain over cubic B-spline (dB) of the super-resolution ``model`` on :data:`SR_CASES`, each degraded as the
    model was trained to invert (its card's scale and ``extras.degradation``, as ``make eval-real`` degrades its
    brains), per case and their mean; PSNR over the head, data range the reference's 0.5-99.5 percentile range
    there. ``adapt``: fitted to each degraded scan first (the engine's fit, from ``model``; ``adapt_steps`` steps
    or its default). ``ensemble``: passes over flips (default: the card's on a CPU)."""
    from ..models.registry import get_model
    from ..pipeline import run
    from ..simulate.lowres import superres_pair
    from . import real_masks
    from .baselines import bspline_upsample
    from .context import mr_range
    from .metrics import psnr
    from .real_data import load

    card = get_model(model)
    scale = tuple(int(s) for s in card.scale_factor)
    options: dict[str, Any] = {"adapt": True} if adapt else {"precision": "fp32"}
    if adapt and adapt_steps:
        options["adapt_steps"] = int(adapt_steps)
    if ensemble:
        options["ensemble"] = int(ensemble)
    gains = {}
    for case in SR_CASES:
        low, grid = superres_pair(load(case, cache), scale, card.extras.get("degradation", "thick_slices"))
        out = run("superres", low, model=model, device="cpu", **options).volume
        if not out.same_geometry(grid, atol=1e-4):
            raise ValueError(f"{model} on {case}: the output {out.shape} is not on the reference grid {grid.shape}.")
        head = real_masks.mr_head(grid.array)
        data_range = mr_range(grid.array, head)
        spline = bspline_upsample(low, grid)
        gains[case] = psnr(out.array, grid.array, head, data_range) - psnr(spline, grid.array, head, data_range)
    gains["mean"] = float(np.mean(list(gains.values())))
    return gains


def mr_ct_scores(model: str, seeds: tuple[int, ...] = MRCT_SEEDS, ensemble: int | None = None) -> dict[str, float]:
    """The ``mr-ct`` validation of ``model`` (see the module): MAE per region, mean over ``seeds``."""
    from ..models.registry import get_model
    from .context import EvalContext
    from .metrics import mae
    from .sections.synthesis import ct_regions

    to_ct = get_model(model).input.get("modality") == "MR"
    ctx = EvalContext(report_dir=Path("."))  # writes nothing: only its subjects and runs
    options = {"ensemble": int(ensemble)} if ensemble else {}
    out: dict[str, list[float]] = {}
    for seed in seeds:
        s = ctx.subject(seed)
        head = s["head"]
        if to_ct:
            ct, pred = s["CT"], ctx.run_model(model, "synthesize", s["T1w"], "MR", "T1w", **options)
            for name, region in ct_regions(ct, head).items():  # the regions make eval scores
                out.setdefault(f"MAE {name}", []).append(mae(pred, ct, region))
        else:
            t1 = ctx.subject(seed, keys=("T1w", "T2w"), noise_free=True)["T1w"]
            pred = ctx.run_model(model, "synthesize", s["CT"], "CT", **options)
            out.setdefault("MAE head", []).append(mae(pred, t1, head))
    return {k: float(np.mean(v)) for k, v in out.items()}


def anomaly_case(model: str, volume: Volume, lesion: np.ndarray) -> dict[str, Any]:
    """One scan through the engine: its case score, and the map and candidate mask inside the engine's brain."""
    from ..models.registry import get_model
    from ..pipeline import run
    from ..tasks.anomaly import anomaly_region

    result = run("anomaly", volume, model=model, device="cpu", precision="fp32")
    brain = anomaly_region(volume, get_model(model))
    return {"score": float(result.extras["case_score"]), "brain": brain, "lesion": lesion & brain,
            "map": result.outputs["anomaly_map"].array, "mask": result.outputs["mask"].array > 0}


def anomaly_scores(model: str, contrast: str = "T1w", seeds: tuple[int, ...] = ANOMALY_PHANTOM_SEEDS,
                   heads: int = ANOMALY_HEADS, per_case: dict[str, list[float]] | None = None) -> dict[str, float]:
    """The ``anomaly`` validation of ``model`` (see the module): phantom figures, and with T1w the post-contrast
    heads' (``heads`` of them; 0: none). ``per_case`` (a dict) receives each set's voxel AUROC per case
    ("phantoms", "heads", "tumours", "tumours z-score" and "shaded tumours"): the means hide which case moved."""
    from ..simulate.randomize import DomainRandomizer
    from ..simulate.tissue import TISSUES
    from ..train.anomaly_calibration import phantom_subject
    from .metrics import auroc, dice
    from .real_mr import hyperintense_share, zscore_map

    def voxel_auroc(cases: list[dict[str, Any]], key: str = "map", name: str | None = None) -> float:
        each = [auroc(c[key][c["brain"]], c["lesion"][c["brain"]]) for c in cases]  # of the map for the lesions, in
        if per_case is not None and name:  # the brain; the mean over the cases
            per_case[name] = [float(a) for a in each]
        return float(np.mean(each))

    def normal_flagged(cases: list[dict[str, Any]]) -> float:  # % of the normal brain in the candidate mask, mean
        return float(np.mean([100.0 * c["mask"][c["brain"] & ~c["lesion"]].mean() for c in cases]))

    def head_cases(seed: int, ranges: dict[str, Any]) -> list[tuple[Volume, dict[str, Any]]]:
        gen = DomainRandomizer(seed, ranges)
        out = []
        for i in range(heads):
            sample = gen.sample("anomaly", i, ordering="T1w")
            volume = sample["input"]  # its metadata says MR, T1w
            out.append((volume, anomaly_case(model, volume, sample["labels"].array == TISSUES.index("lesion"))))
        return out

    lesioned, healthy = [], []
    for seed in seeds:
        lesioned.append(anomaly_case(model, *phantom_subject(seed, contrast, False, 2.0)))
        healthy.append(anomaly_case(model, *phantom_subject(seed, contrast, True, 2.0)))
    out = {"phantom voxel AUROC": voxel_auroc(lesioned, name="phantoms"),
           "phantom Dice": float(np.mean([dice(c["mask"] & c["brain"], c["lesion"]) for c in lesioned])),
           "phantom normal flagged %": float(np.mean([100.0 * c["mask"][c["brain"]].mean() for c in healthy])),
           "phantom case AUROC": auroc([c["score"] for c in lesioned + healthy],
                                       [1.0] * len(lesioned) + [0.0] * len(healthy))}
    if contrast != "T1w" or heads <= 0:
        return out
    cases = []
    for volume, case in head_cases(ANOMALY_HEAD_SEED, {"enhancement": 1.0, "n_lesions": [1, 3]}):
        case["bright"] = hyperintense_share(volume.array, case["map"], case["brain"] & ~case["lesion"])
        cases.append(case)
    bright = [c["bright"][0] for c in cases if c["bright"] is not None]  # None: no map above 0 on normal brain
    out.update({"heads lesion AUROC": voxel_auroc([c for c in cases if c["lesion"].any()], name="heads"),
                "heads normal flagged %": normal_flagged(cases),
                "heads top 1 % on bright tissue %": float(np.mean(bright)) if bright else float("nan")})
    tumours, shaded = [], []
    for i, (volume, case) in enumerate(head_cases(*ANOMALY_TUMOURS)):
        if case["lesion"].any():
            case["z"] = zscore_map(volume.array, case["brain"], volume.spacing)
            tumours.append(case)
            shaded.append(anomaly_case(model, radial_shading(volume, case["brain"], i), case["lesion"]))
    out.update({"tumours lesion AUROC": voxel_auroc(tumours, name="tumours"),
                "tumours normal flagged %": normal_flagged(tumours),
                "tumours z-score AUROC": voxel_auroc(tumours, "z", name="tumours z-score"),
                "shaded tumours lesion AUROC": voxel_auroc(shaded, name="shaded tumours"),
                "shaded tumours normal flagged %": normal_flagged(shaded)})
    return out


def radial_shading(volume: Volume, brain: np.ndarray, index: int) -> Volume:
    """``volume`` times a radial shading, exp(a (u - 1/2)) with u the squared distance (mm) from the centroid of
    ``brain`` divided by its largest value there (0-1): a receive coil's bright periphery (a < 0) or a 3 T head's
    bright centre (a > 0), |a| ~ U(0.2, 0.5), the sign and size drawn from ``index`` (fixed). A smooth shading the
    training heads' bias fields (low-order, about 1 +- 0.4) hold only in part: the anomaly validation's check that a
    map does not flag it."""
    rng = np.random.default_rng([ANOMALY_TUMOURS[0], 1, index])
    a = float(rng.uniform(0.2, 0.5) * rng.choice([-1.0, 1.0]))
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) * s for n, s in zip(volume.shape, volume.spacing[::-1])],
                        indexing="ij")
    centre = [float(g[brain].mean()) for g in grids]
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    u = r2 / max(float(r2[brain].max()), 1e-6)
    return volume.with_array((volume.array * np.exp(a * (u - 0.5))).astype(volume.array.dtype))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m MedGANLogic.evaluation.validation",
                                     description="Validation that no report scores (see the module's docstring).")
    parser.add_argument("task", choices=("ldct", "anomaly", "superres", "mr-ct"))
    parser.add_argument("models", nargs="+", help="model ids or model folders")
    parser.add_argument("--phantoms", action="store_true", help="also phantom subjects 1000-1001 at 25 %% dose")
    parser.add_argument("--ensemble", type=int, default=None, help="passes (default: the card's on a CPU)")
    parser.add_argument("--cache", default=None, help="real-image cache (default: that of make eval-real)")
    parser.add_argument("--contrast", default="T1w", help="anomaly: the phantoms' contrast (default T1w)")
    parser.add_argument("--per-case", action="store_true", help="anomaly: also each case's voxel AUROC, per set")
    parser.add_argument("--adapt", action="store_true", help="superres: fit each scan first (the engine's fit)")
    parser.add_argument("--adapt-steps", type=int, default=None, help="superres --adapt: steps (default: the fit's)")
    args = parser.parse_args(argv)
    if args.adapt and args.ensemble:
        parser.error("--ensemble sets a trained model's passes; a fit to the scan (--adapt) runs its card's: "
                     "leave one out")
    if args.task == "superres":
        for model in args.models:
            gains = superres_scores(model, args.adapt, args.adapt_steps, args.cache, args.ensemble)
            print(model, "fitted" if args.adapt else "", "| gain over B-spline (dB):",
                  ", ".join(f"{k} {v:+.3f}" for k, v in gains.items()), flush=True)
        return 0
    if args.task == "mr-ct":
        for model in args.models:
            scores = mr_ct_scores(model, ensemble=args.ensemble)
            print(model, "|", ", ".join(f"{k} {v:.1f}" for k, v in scores.items()), flush=True)
        return 0
    if args.task == "anomaly":
        for model in args.models:
            each: dict[str, list[float]] = {}
            scores = anomaly_scores(model, args.contrast, per_case=each)
            print(model, "|", ", ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
            if args.per_case:
                for name, values in each.items():
                    print(f"  {name} per case:", " ".join(f"{v:.3f}" for v in values), flush=True)
        return 0
    from .real_data import load

    ct = load("ct_small", args.cache)
    cases = ldct_cases(ct.array[0], float(np.mean(ct.spacing[:2])))
    print("case".ljust(26) + " | ".join([c.name for c in cases] + ["projection mean", "smoothed mean"]), flush=True)
    print(f"{'input':26s}" + " ".join(f"{v:.2f}" for v in score_ldct(cases, None).values()), flush=True)
    for model in args.models:
        scores = score_ldct(cases, model_denoiser(model, args.ensemble))
        line = f"{model[-26:]:26s}" + " ".join(f"{v:.2f}" for v in scores.values())
        if args.phantoms:
            line += " | phantoms " + " / ".join(f"{v:.2f}" for v in phantom_scores(model))
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
