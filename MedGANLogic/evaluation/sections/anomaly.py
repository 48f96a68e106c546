"""Anomaly maps on held-out phantom subjects: the restoration GANs against their non-GAN ablation, f-AnoGAN and
voxel z-scores.

Methods, each on the test subjects with lesions and on their lesion-free twins:

* ``brain-anomaly-t2`` (T2w) and ``brain-anomaly-t1`` (T1w): the shipped restoration U-Net + PatchGAN
  (:mod:`MedGANLogic.train.restore`), the engine's calibrated map;
* ``brain-anomaly-t2-ae`` (``Resources/Ablations``, not installed): the non-GAN baseline, the same U-Net trained on
  the same data, corruptions, seed and steps without the adversarial term (a denoising autoencoder);
* ``brain-anomaly-t2-fanogan`` (``Resources/Ablations``): the f-AnoGAN (WGAN-GP + izi_f encoder) shipped before;
* robust voxel-wise z-scores |x - median| / (1.4826 MAD) against the 20 lesion-free training subjects (T2w),
  normalised and smoothed like the model's map and, like it, zero in the brain's outer ``edge_mm``; threshold chosen
  on the same validation subjects (max Dice).

Everything is measured inside the brain (:func:`MedGANLogic.normalization.brain_mask` of the image, the same
mask for all methods): voxel AUROC and average precision, Dice of the candidate mask at the method's stored
threshold, the map's mean in the lesions over its mean in bright CSF (the brightest 5 % of the twin's T2w brain)
and in the rest of the brain, the share of the twin's (normal) brain above that threshold, and the case-level AUROC
of the case score (lesioned subjects against their twins). The shipped models are also run on the same subjects and
twins made thick-sliced (their 2 mm slices averaged in threes: 6 mm, as many clinical scans are), where they use the
calibration their cards hold for 6 mm slices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...normalization import brain_mask
from ...tasks.anomaly import inner_region
from ...train.anomaly_calibration import thick_slices
from ...volume import Volume
from ..baselines import RobustZScore
from ..context import PHANTOM_DIRECTION, SPACING_MM, EvalContext, SectionResult, Target, mean, missing_models
from ..metrics import auroc, average_precision, dice, paired_auroc_interval
from ..panels import fullest_slice, save_panel
from . import SECTIONS

ANOMALY_MODEL = "brain-anomaly-t2"
T1_MODEL = "brain-anomaly-t1"
AE_MODEL = "brain-anomaly-t2-ae"
FANOGAN_MODEL = "brain-anomaly-t2-fanogan"
ABLATIONS = Path(__file__).resolve().parents[3] / "Resources" / "Ablations"  # baselines, not installed
AE_FOLDER, FANOGAN_FOLDER = ABLATIONS / AE_MODEL, ABLATIONS / FANOGAN_MODEL
ANOMALY_POPULATION = 20  # lesion-free training subjects behind the z-score baseline
ANOMALY_VAL_SUBJECTS = 3  # validation subjects the z-score threshold is chosen on
VOXEL_AUROC_TARGET, DICE_TARGET, CASE_AUROC_TARGET, CSF_RATIO_TARGET = 0.97, 0.5, 0.95, 2.0
ZSCORE = "z-score baseline (T2w)"
THICK_FACTOR = 3  # the thick-slice rows: the test subjects' 2 mm slices averaged in threes
#: method label -> (model id, contrast)
MAIN = f"{ANOMALY_MODEL} (restoration GAN)"
AE_LABEL = f"{AE_MODEL} (no adversarial term)"
MODELS = {MAIN: (ANOMALY_MODEL, "T2w"), AE_LABEL: (str(AE_FOLDER), "T2w"),
          f"{FANOGAN_MODEL} (f-AnoGAN)": (str(FANOGAN_FOLDER), "T2w"),
          f"{T1_MODEL} (restoration GAN, T1w)": (T1_MODEL, "T1w")}
THICK = {f"{ANOMALY_MODEL}, {THICK_FACTOR * SPACING_MM:g} mm slices": (ANOMALY_MODEL, "T2w"),
         f"{T1_MODEL} (T1w), {THICK_FACTOR * SPACING_MM:g} mm slices": (T1_MODEL, "T1w")}

ANOMALY_NOTE = (
    "A 2D U-Net trained for 40 minutes on a CPU: its restoration of healthy tissue is blurred (the residual "
    "of normal cortex and sulci is not zero) and a lesion is only partly pulled back to healthy tissue, so the map "
    "inside a lesion is uneven and the candidate mask, cut at one threshold, covers part of each lesion.")


def voxel_auroc_ap(amap: np.ndarray, lesion: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """Voxel AUROC and average precision of ``amap`` for the boolean ``lesion`` over the voxels of ``region``."""
    scores, labels = amap[region], lesion[region]
    return auroc(scores, labels), average_precision(scores, labels)


def flagged(amap: np.ndarray, brain: np.ndarray, threshold: float) -> float:
    """The percentage of ``brain`` where ``amap`` exceeds ``threshold`` (on a normal twin: false positives)."""
    return 100.0 * float((amap[brain] > threshold).mean()) if brain.any() else float("nan")


def case_auroc(lesioned: list[float], healthy: list[float]) -> float:
    """Case-level AUROC: the case scores of lesioned subjects (positives) against those of healthy ones."""
    return auroc(lesioned + healthy, [1.0] * len(lesioned) + [0.0] * len(healthy))


def map_ratios(amap: np.ndarray, lesion: np.ndarray, csf: np.ndarray, rest: np.ndarray) -> tuple[float, float]:
    """The map's mean in the lesions over its mean in ``csf`` and in ``rest``."""
    inside = float(amap[lesion].mean())
    return inside / max(float(amap[csf].mean()), 1e-9), inside / max(float(amap[rest].mean()), 1e-9)


@SECTIONS.register(ANOMALY_MODEL)
def anomaly_section(ctx: EvalContext) -> SectionResult:
    from ...models.registry import get_model
    from ...train.fanogan import best_dice_threshold

    title = ("Brain anomaly maps (brain-anomaly-t2, brain-anomaly-t1: restoration GAN) against the same U-Net "
             "without its adversarial term, f-AnoGAN and z-scores")
    if (m := missing_models(title, [ANOMALY_MODEL, T1_MODEL])) is not None:
        return m
    for folder in (AE_FOLDER, FANOGAN_FOLDER):
        if not (folder / "card.json").is_file():
            return SectionResult(title=title, intro="", metrics={}, units={}, targets=[],
                                 error=f"the baseline {folder.name} is missing from {folder.parent} (medgan train "
                                       f"--recipe {folder.name} --export Resources/Ablations)")
    card = get_model(ANOMALY_MODEL)
    smoothing, edge_mm = float(card.extras.get("smoothing_mm", 2.0)), float(card.extras.get("edge_mm", 0.0))
    gradient_bins = int(card.extras.get("calibration_gradient_bins", 0))
    gradient_note = (f" and, for {ANOMALY_MODEL} and its two network baselines, in the same one of "
                     f"{gradient_bins} bands of the restoration's in-plane gradient magnitude"
                     if gradient_bins > 1 else "")

    def inner(brain: np.ndarray) -> np.ndarray:  # where the z-score baseline maps, as the model: its rim left out
        return inner_region(brain, (SPACING_MM,) * 3, edge_mm)

    baseline = RobustZScore(card.input["normalization"], smoothing, SPACING_MM).fit(
        [ctx.phantom(s, ["T2w"], healthy=True)["T2w"] for s in ctx.seeds("train", ANOMALY_POPULATION)])

    def volume(image: np.ndarray, contrast: str) -> Volume:
        return Volume(image, spacing=(SPACING_MM,) * 3, direction=PHANTOM_DIRECTION,
                      metadata={"modality": "MR", "contrast": contrast})

    def model_map(model: str, image: np.ndarray | Volume, contrast: str) -> tuple[np.ndarray, float, float]:
        vol = image if isinstance(image, Volume) else volume(image, contrast)
        result = ctx.run("anomaly", vol, model)
        return (result.outputs["anomaly_map"].array, float(result.extras["case_score"]),
                float(result.extras["threshold"]))

    val = [ctx.phantom(s, ["T2w", "lesion_mask"]) for s in ctx.seeds("val", ANOMALY_VAL_SUBJECTS)]
    base_threshold, _ = best_dice_threshold([baseline.map(v["T2w"], inner(brain_mask(v["T2w"], (SPACING_MM,) * 3)))
                                             for v in val], [v["lesion_mask"] > 0 for v in val])
    thresholds = {label: float(get_model(mid).extras["threshold"]) for label, (mid, _) in MODELS.items()}
    thresholds[ZSCORE] = base_threshold
    methods = [*MODELS, ZSCORE, *THICK]
    metrics: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    cases = {m: {"lesioned": [], "healthy": []} for m in methods}
    panel_rows: list[tuple[str, list[np.ndarray]]] = []
    lesion_ml: list[float] = []
    for seed in ctx.test_seeds:
        s = ctx.phantom(seed, ["T2w", "T1w", "lesion_mask"])
        twin = ctx.phantom(seed, ["T2w", "T1w"], healthy=True)
        lesion = s["lesion_mask"] > 0
        lesion_ml.append(float(lesion.sum()) * SPACING_MM ** 3 / 1000.0)
        brain = brain_mask(s["T2w"], (SPACING_MM,) * 3)
        twin_brain = brain_mask(twin["T2w"], (SPACING_MM,) * 3)
        csf = brain & ~lesion & (twin["T2w"] > np.percentile(twin["T2w"][twin_brain], 95))
        rest = brain & ~lesion & ~csf
        maps, twin_maps = {}, {}
        for label, (mid, contrast) in MODELS.items():
            maps[label], score, _ = model_map(mid, s[contrast], contrast)
            twin_maps[label], twin_score, _ = model_map(mid, twin[contrast], contrast)
            cases[label]["lesioned"].append(score)
            cases[label]["healthy"].append(twin_score)
        mapped, twin_mapped = inner(brain), inner(twin_brain)
        maps[ZSCORE] = baseline.map(s["T2w"], mapped)
        twin_maps[ZSCORE] = baseline.map(twin["T2w"], twin_mapped)
        cases[ZSCORE]["lesioned"].append(baseline.case_score(maps[ZSCORE], mapped))
        cases[ZSCORE]["healthy"].append(baseline.case_score(twin_maps[ZSCORE], twin_mapped))
        for method, amap in maps.items():
            voxel_auc, ap = voxel_auroc_ap(amap, lesion, brain)
            to_csf, to_rest = map_ratios(amap, lesion, csf, rest)
            for name, value in (("voxel AUROC", voxel_auc), ("AP", ap), ("Dice", dice(amap > thresholds[method],
                                                                                       lesion)),
                                ("map lesions / CSF", to_csf), ("map lesions / other", to_rest),
                                ("normal brain flagged", flagged(twin_maps[method], twin_brain, thresholds[method]))):
                metrics[method].setdefault(name, []).append(value)
        # the same subject and twin with 6 mm slices: one brain mask each (of the T2w, as above) for both models
        thick_t2, thick_lesion = thick_slices(volume(s["T2w"], "T2w"), lesion, THICK_FACTOR)
        thick_brain = brain_mask(thick_t2.array, thick_t2.spacing)
        twin_thick_t2 = thick_slices(volume(twin["T2w"], "T2w"), lesion, THICK_FACTOR)[0]
        twin_thick_brain = brain_mask(twin_thick_t2.array, twin_thick_t2.spacing)
        for label, (mid, contrast) in THICK.items():
            thick = thick_slices(volume(s[contrast], contrast), lesion, THICK_FACTOR)[0]
            thick_twin = thick_slices(volume(twin[contrast], contrast), lesion, THICK_FACTOR)[0]
            amap, score, threshold = model_map(mid, thick, contrast)
            twin_map, twin_score, _ = model_map(mid, thick_twin, contrast)
            thresholds[label] = threshold
            cases[label]["lesioned"].append(score)
            cases[label]["healthy"].append(twin_score)
            voxel_auc, ap = voxel_auroc_ap(amap, thick_lesion, thick_brain)
            for name, value in (("voxel AUROC", voxel_auc), ("AP", ap), ("Dice", dice(amap > threshold, thick_lesion)),
                                ("map lesions / CSF", np.nan), ("map lesions / other", np.nan),
                                ("normal brain flagged", flagged(twin_map, twin_thick_brain, threshold))):
                metrics[label].setdefault(name, []).append(value)
        if not panel_rows:
            panel_rows = _panel_rows(s, maps, thresholds, lesion)
    case_auc = {k: case_auroc(v["lesioned"], v["healthy"]) for k, v in cases.items()}
    for method in methods:
        metrics[method]["case AUROC"] = [case_auc[method]]
    main, ae, zs = (metrics[k] for k in (MAIN, AE_LABEL, ZSCORE))
    case_note = _case_note(cases[MAIN], lesion_ml, ctx.test_seeds) + _case_check_note(card.extras)
    targets = [
        Target(f"{ANOMALY_MODEL}: voxel AUROC in the brain ≥ {VOXEL_AUROC_TARGET}", mean(main["voxel AUROC"]),
               VOXEL_AUROC_TARGET, ">=", ANOMALY_NOTE),
        Target(f"{ANOMALY_MODEL}: Dice at the stored threshold ≥ {DICE_TARGET}", mean(main["Dice"]), DICE_TARGET,
               ">=", ANOMALY_NOTE),
        Target(f"{ANOMALY_MODEL}: case AUROC ≥ {CASE_AUROC_TARGET}", case_auc[MAIN], CASE_AUROC_TARGET, ">=",
               case_note),
        Target(f"{ANOMALY_MODEL}: map lesions / CSF ≥ {CSF_RATIO_TARGET}", mean(main["map lesions / CSF"]),
               CSF_RATIO_TARGET, ">=", ANOMALY_NOTE),
        Target(f"{ANOMALY_MODEL}: Dice above the same U-Net without the adversarial term", mean(main["Dice"]),
               mean(ae["Dice"]), ">"),
        Target(f"{ANOMALY_MODEL}: Dice above f-AnoGAN", mean(main["Dice"]),
               mean(metrics[f"{FANOGAN_MODEL} (f-AnoGAN)"]["Dice"]), ">"),
        Target(f"{ANOMALY_MODEL}: Dice above the z-score baseline", mean(main["Dice"]), mean(zs["Dice"]), ">"),
    ]
    panels = [save_panel(ctx.report_dir / f"panel_{ANOMALY_MODEL}.png", panel_rows,
                         [(0.0, 1.0)] * 4, ["image", "anomaly map", "mask at threshold", "true lesions"])]
    return SectionResult(title=title, intro=(
        f"Held-out test subjects with lesions and their lesion-free twins (2 mm). The models run through the "
        f"engine as a user runs them: brain mask, intensity-matched residual, calibrated z-score (against normal "
        f"residuals at the same restored intensity{gradient_note}), {smoothing:g} mm "
        f"smoothing, the brain's outer {edge_mm:g} mm left out of the map (where a normal brain's residual is largest: "
        f"partial volume with CSF and skull, an imperfect mask; the z-score baseline's map leaves it out too), the "
        f"threshold and case-score calibration stored in each card (chosen on validation subjects: the threshold "
        f"maximises Dice on validation subjects with lesions, raised where needed so that at most 0.1 % of a normal "
        f"validation brain exceeds it; a scan whose z-scores spread wider than the normal validation brains' has "
        f"them divided by the ratio). "
        f"All metrics inside the brain mask of the image; 'map lesions / CSF' and '/ other': the map's mean in the "
        f"lesions over its mean in bright CSF (brightest 5 % of the twin's T2w brain) and in the rest of the brain. "
        f"Case AUROC: each lesioned subject against its twin ({len(cases[MAIN]['lesioned'])} + "
        f"{len(cases[MAIN]['healthy'])} cases); the models' case score is the fraction of the brain above the "
        f"card's threshold as a z-score against normal validation subjects, the z-score baseline's the mean of the "
        f"top 1 % of its map. The restoration GAN is a U-Net trained on lesion-free domain-randomised heads to undo "
        f"random corruptions (coarse noise, random blobs of any intensity) against a PatchGAN that has seen healthy "
        f"slices; its ablation is the same U-Net, data, corruptions, seed and steps without the adversarial term; "
        f"f-AnoGAN (WGAN-GP + izi_f encoder, 4 mm) is the model shipped before it; the z-score baseline "
        f"(|x − median| / 1.4826 MAD against {ANOMALY_POPULATION} lesion-free training subjects, threshold "
        f"{base_threshold:.4g} chosen on {ANOMALY_VAL_SUBJECTS} validation subjects) needs subjects in one space, "
        f"which real scans are not. 'Normal brain flagged': the share of the twin's brain above the method's "
        f"threshold. Rows '..., {THICK_FACTOR * SPACING_MM:g} mm slices': the same subjects and twins with their "
        f"slices averaged in threes, run as a user runs them (each card's calibration set for "
        f"{THICK_FACTOR * SPACING_MM:g} mm slices); brain mask and lesions on that grid. {ANOMALY_MODEL}'s case "
        f"AUROC, met or not: {case_note.strip()}"),
        metrics=metrics, units={"voxel AUROC": "", "AP": "", "Dice": "", "map lesions / CSF": "",
                                "map lesions / other": "", "normal brain flagged": "%", "case AUROC": ""},
        targets=targets, panels=panels,
        info={"thresholds": thresholds, "case_auroc": case_auc, "case_scores": cases})


def _case_note(scores: dict[str, list[float]], lesion_ml: list[float], seeds: list[int]) -> str:
    """Which lesioned subjects the case score does not rank above every lesion-free twin, with their lesion
    volumes against the others' (the measured reason a case AUROC falls short), and the case AUROC's bootstrap
    interval over the pairs (how much one subject moves it)."""
    top_twin = max(scores["healthy"])
    missed = [(seed, ml, sc) for seed, ml, sc in zip(seeds, lesion_ml, scores["lesioned"]) if sc <= top_twin]
    found = [ml for ml, sc in zip(lesion_ml, scores["lesioned"]) if sc > top_twin]
    if not missed:  # every resample then separates too: its interval (1.00-1.00) would not show how few pairs
        return (f"Every lesioned subject scores above every lesion-free twin (lowest lesioned subject "
                f"{min(scores['lesioned']):.2f}, highest twin {top_twin:.2f}); with every pair apart, a bootstrap over "
                f"these {len(seeds)} pairs gives 1.00-1.00 and cannot show how few they are: the further pairs below "
                f"measure it on more.")
    listed = ", ".join(f"{seed} ({ml:.1f} mL of lesion, score {sc:.2f})" for seed, ml, sc in missed)
    low, high = paired_auroc_interval(scores["lesioned"], scores["healthy"])
    interval = (f" 95 % bootstrap interval of the case AUROC over these {len(seeds)} pairs (subject with its twin, "
                f"2000 resamples, seed 0): {low:.2f}-{high:.2f}.")
    return (f"The case score (the fraction of the brain above the threshold, as a z-score against normal validation "
            f"brains) does not rank every lesioned subject above every lesion-free twin (highest twin: "
            f"{top_twin:.2f}): {listed}; the subjects ranked above all twins carry "
            f"{np.median(found) if found else float('nan'):.1f} mL of lesion (median)." + interval)


def _case_check_note(extras: dict) -> str:
    """What the card's check on further phantom pairs says (train/anomaly_calibration.py check_case_score)."""
    check = extras.get("validation", {}).get("case_auroc")
    if not check:
        return ""
    seeds = check["seeds"]
    low, median, high = check["lesion_ml"]
    return (f" On {check['pairs']} further phantom pairs (seeds {seeds[0]}-{seeds[-1]}, outside the training, "
            f"validation and test splits; the card's extras.validation.case_auroc) the same case score reaches AUROC "
            f"{check['auroc']:.3f}, each subject above its own twin in {check['above_own_twin']:.0%} of pairs "
            f"(lesions {low:g}-{high:g} mL, median {median:g}).")


def _panel_rows(s: dict[str, np.ndarray], maps: dict[str, np.ndarray], thresholds: dict[str, float],
                lesion: np.ndarray) -> list[tuple[str, list[np.ndarray]]]:
    """One row per method on the slice with the most lesion: image, map (to its 99.9th percentile), mask, truth."""
    z = fullest_slice(lesion, 0)
    rows = []
    for method, amap in maps.items():
        image = s["T1w"] if "T1w" in method else s["T2w"]
        lo, hi = np.percentile(image[image > 0.1 * np.percentile(image, 99)], [0.5, 99.5])
        top = max(float(np.percentile(amap[amap > 0], 99.9)) if (amap > 0).any() else 1.0, 1e-6)
        label = method.split(" ")[0].replace("brain-anomaly-", "").replace("z-score", "z-score")
        rows.append((label, [np.clip((image[z] - lo) / max(hi - lo, 1e-6), 0, 1), np.clip(amap[z] / top, 0, 1),
                             (amap[z] > thresholds[method]).astype(np.float32), lesion[z].astype(np.float32)]))
    return rows
