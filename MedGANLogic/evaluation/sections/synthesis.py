"""Modality synthesis: T1w <-> T2w (pix2pix) against histogram matching, MR <-> CT (CycleGAN) against tissue
classes (bulk density).

Metrics in the head mask; PSNR/SSIM data range: the reference's 0.5-99.5 percentile range in the head. A
synthesised MR contrast is scored against the subject's noise-free contrast, and beside it against the acquired,
noisy one.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..baselines import ThresholdMapping, histogram_matching
from ..context import EvalContext, SectionResult, Target, installed, mean, missing_models, mr_range
from ..metrics import dice, mae, psnr, ssim
from ..panels import translation_panel
from . import SECTIONS

BLUR_VOXELS = 0.8
BONE_HU = 250.0  # bone: CT above this (the reference's, or a synthetic CT's for where it puts the skull)
BRAIN_HU = (0.0, 80.0)  # brain: CT strictly between these
CT_DISPLAY_WINDOW = (-200.0, 1600.0)  # HU: bone and soft tissue in the panels

# Why a target may be missed; printed in the report only next to a missed target.
T1T2_SSIM_NOTE = (
    "SSIM against the noise-free 2 mm reference punishes any blur: compare the model's SSIM with the row of the "
    f"acquired T2w blurred by a Gaussian of {BLUR_VOXELS:g} voxel. The T1w shows the lesions only faintly, "
    "so the model under-predicts their T2 brightness (MAE lesions column). A sharper generator (longer adversarial "
    "training, 1 mm data) is the next step.")
MRCT_NOTE = (
    "The baseline is fitted on paired training subjects, which the CycleGAN never had, and the phantom's CT is "
    "nearly a lookup of the T1w tissue classes, the best case for a bulk-density mapping. Compare the model's bone "
    "Dice (where it puts the skull) with its MAE in brain and bone (the HU it gives): its output window spans "
    "3000 HU (-1000 to 2000), so an intensity error of 2 % of the generator's range is 60 HU.")
CTMR_NOTE = (
    "The CT shows grey and white matter 10 HU apart, within its noise; the tissue-class baseline, fitted on "
    "paired training subjects, gives the brain one mean T1w value, while the unpaired CycleGAN, pushed by its "
    "discriminator towards T1w-looking images, invents grey/white-matter texture the CT does not determine "
    "(compare the brain SD / reference SD and MAE brain columns).")


def mr_translation(ctx: EvalContext, model_id: str, src_key: str, tgt_key: str) -> SectionResult:
    """One MR contrast to another with ``model_id`` against histogram matching onto a training subject."""
    title = f"{src_key} → {tgt_key} ({model_id}, pix2pix)"
    if (m := missing_models(title, [model_id])) is not None:
        return m
    ref = ctx.subject(ctx.seeds("train", 1)[0])  # the histogram-matching reference: a training subject
    blurred = f"acquired {tgt_key}, blurred {BLUR_VOXELS:g} voxel (not a method)"
    metrics: dict[str, dict[str, list[float]]] = {"model": {}, "histogram matching": {},
                                                  f"acquired {tgt_key} (not a method)": {}, blurred: {}}
    panel = None
    for seed in ctx.test_seeds:
        s = ctx.subject(seed)
        mask, src, acquired = s["head"], s[src_key], s[tgt_key]
        lesions = s["lesion_mask"] > 0
        tgt = ctx.subject(seed, keys=("T1w", "T2w"), noise_free=True)[tgt_key]
        out = ctx.run_model(model_id, "synthesize", src, "MR", src_key)
        base = histogram_matching(src, mask, ref[tgt_key], ref["head"])
        rng = mr_range(tgt, mask)
        # what the metrics make of the acquired target itself, sharp and slightly blurred: how much of the
        # score is noise and how much is sharpness
        smooth = ndimage.gaussian_filter(acquired, BLUR_VOXELS)
        for method, pred in (("model", out), ("histogram matching", base),
                             (f"acquired {tgt_key} (not a method)", acquired), (blurred, smooth)):
            d = metrics[method]
            d.setdefault("PSNR", []).append(psnr(pred, tgt, mask, rng))
            d.setdefault("SSIM", []).append(ssim(pred, tgt, mask, rng))
            d.setdefault("MAE", []).append(mae(pred, tgt, mask))
            d.setdefault("MAE lesions", []).append(mae(pred, tgt, lesions) if lesions.any() else float("nan"))
            itself = pred is acquired  # the acquired image against itself says nothing
            d.setdefault("PSNR vs acquired", []).append(float("nan") if itself else psnr(pred, acquired, mask, rng))
            d.setdefault("SSIM vs acquired", []).append(float("nan") if itself else ssim(pred, acquired, mask, rng))
        if panel is None:
            win_s = tuple(np.percentile(src[mask], [0.5, 99.5]))
            win_t = tuple(np.percentile(tgt[mask], [0.5, 99.5]))
            panel = translation_panel(ctx.report_dir, model_id, src, out, base, tgt, mask, win_s, win_t, 0.5 * rng,
                                      "hist. match")
    model, base = metrics["model"], metrics["histogram matching"]
    targets = [Target(f"{model_id}: PSNR above histogram matching", mean(model["PSNR"]), mean(base["PSNR"])),
               Target(f"{model_id}: SSIM above histogram matching", mean(model["SSIM"]), mean(base["SSIM"])),
               Target(f"{model_id}: MAE below histogram matching", mean(model["MAE"]), mean(base["MAE"]), "<")]
    if model_id == "mr-t1-to-t2":
        targets.append(Target("mr-t1-to-t2: SSIM ≥ 0.90", mean(model["SSIM"]), 0.90, ">=",
                              note_if_missed=T1T2_SSIM_NOTE))
    return SectionResult(title=title, intro=(
        f"Input: the acquired {src_key} (Rician noise, SNR 30) of each test subject. Reference: the subject's "
        f"noise-free {tgt_key}; the last two columns score against the acquired, noisy {tgt_key} instead (no method "
        f"can predict that noise, which caps those scores). Baseline: the {src_key} head intensities mapped onto "
        f"the {tgt_key} histogram of a training subject (skimage `match_histograms`). PSNR/SSIM data range: the "
        f"reference's 0.5–99.5 percentile range in the head; MAE in the phantom's MR units (MAE lesions: inside "
        f"the subject's lesion mask). The last two rows are not methods: they score the acquired {tgt_key} itself, "
        f"as acquired and smoothed by a Gaussian of {BLUR_VOXELS:g} voxel, to show how much these metrics punish "
        f"noise and how much a slight blur."),
        metrics=metrics, units={"PSNR": "dB", "SSIM": "", "MAE": "a.u.", "MAE lesions": "a.u.",
                                "PSNR vs acquired": "dB", "SSIM vs acquired": ""}, targets=targets,
        panels=[panel] if panel else [])


@SECTIONS.register("mr-t1-to-t2")
def section_t1_to_t2(ctx: EvalContext) -> SectionResult:
    return mr_translation(ctx, "mr-t1-to-t2", "T1w", "T2w")


@SECTIONS.register("mr-t2-to-t1")
def section_t2_to_t1(ctx: EvalContext) -> SectionResult:
    return mr_translation(ctx, "mr-t2-to-t1", "T2w", "T1w")


def ct_regions(ct: np.ndarray, head: np.ndarray) -> dict[str, np.ndarray]:
    """Where MR <-> CT synthesis is scored, by the subject's CT: the head, its bone (> :data:`BONE_HU`) and its brain
    (within :data:`BRAIN_HU`); shared by these sections and ``python -m MedGANLogic.evaluation.validation mr-ct``."""
    return {"head": head, "bone": head & (ct > BONE_HU), "brain": head & (ct > BRAIN_HU[0]) & (ct < BRAIN_HU[1])}


def _fit_threshold_baseline(ctx: EvalContext, src_key: str, tgt_key: str, mr_source: bool) -> ThresholdMapping:
    train = [ctx.subject(s) for s in ctx.seeds("train", 8)]
    return ThresholdMapping(classes=4, mr_source=mr_source).fit(
        [t[src_key] for t in train], [t[tgt_key] for t in train], [t["head"] for t in train])


PAIRED_MRCT = "mr-to-ct-paired"  # reported beside the CycleGAN when installed


@SECTIONS.register("mr-to-ct")
def section_mr_to_ct(ctx: EvalContext) -> SectionResult:
    title = "T1w MR → CT (mr-to-ct: CycleGAN, unpaired training; mr-to-ct-paired: pix2pix, paired)"
    if (m := missing_models(title, ["mr-to-ct"])) is not None:
        return m
    baseline = _fit_threshold_baseline(ctx, "T1w", "CT", mr_source=True)
    paired = f"{PAIRED_MRCT} (pix2pix, paired)" if installed(PAIRED_MRCT) else None  # its row, when installed
    metrics: dict[str, dict[str, list[float]]] = {"model": {}, **({paired: {}} if paired else {}), "bulk density": {}}
    panel = None
    for seed in ctx.test_seeds:
        s = ctx.subject(seed)
        mask, src, tgt = s["head"], s["T1w"], s["CT"]
        regions = ct_regions(tgt, mask)
        out = ctx.run_model("mr-to-ct", "synthesize", src, "MR", "T1w")
        base = baseline.predict(src, mask, background=-1000.0)
        preds = [("model", out), ("bulk density", base)]
        if paired:
            preds.append((paired, ctx.run_model(PAIRED_MRCT, "synthesize", src, "MR", "T1w")))
        for method, pred in preds:
            for name, region in regions.items():
                metrics[method].setdefault(f"MAE {name}", []).append(mae(pred, tgt, region))
            metrics[method].setdefault("bone Dice", []).append(dice(mask & (pred > BONE_HU), regions["bone"]))
        if panel is None:
            win_s = tuple(np.percentile(src[mask], [0.5, 99.5]))
            panel = translation_panel(ctx.report_dir, "mr-to-ct", src, out, base, tgt, mask, win_s,
                                      CT_DISPLAY_WINDOW, 500.0, "bulk density")
    model, base = metrics["model"], metrics["bulk density"]
    targets = [Target("mr-to-ct: MAE in the head below the bulk-density baseline", mean(model["MAE head"]),
                      mean(base["MAE head"]), "<", MRCT_NOTE),
               Target("mr-to-ct: MAE in bone below the bulk-density baseline", mean(model["MAE bone"]),
                      mean(base["MAE bone"]), "<", MRCT_NOTE)]
    if paired:
        rows = metrics[paired]
        why = ("pix2pix trained on paired domain-randomised heads: in soft tissue, piecewise constant per tissue in "
               "the phantom, a tissue-class mapping fitted on phantom pairs is hard to beat")
        targets += [Target(f"{PAIRED_MRCT} (paired): MAE in the head below the bulk-density baseline",
                           mean(rows["MAE head"]), mean(base["MAE head"]), "<", why),
                    Target(f"{PAIRED_MRCT} (paired): MAE in bone below the bulk-density baseline",
                           mean(rows["MAE bone"]), mean(base["MAE bone"]), "<", why)]
    return SectionResult(title=title, intro=(
        "The CycleGAN never saw an MR/CT pair (MR and CT came from different training subjects); "
        f"{PAIRED_MRCT} (pix2pix, when installed) was trained on paired T1w-like MR and CT of domain-randomised heads "
        "(never on these phantoms' fixed contrast). Baseline: "
        f"tissue-threshold bulk density: {baseline.classes} classes by multi-Otsu thresholds of the T1w "
        f"intensities, each assigned its mean HU on 8 paired training subjects "
        f"({', '.join(f'{v:.0f}' for v in baseline.values)} HU). Bone = target CT > 250 HU inside the head; brain = "
        "target CT in (0, 80) HU; bone Dice: voxels above 250 HU in the output vs in the target (where the skull "
        "is put, whatever its HU)."),
        metrics=metrics, units={"MAE head": "HU", "MAE bone": "HU", "MAE brain": "HU", "bone Dice": ""},
        targets=targets, panels=[panel] if panel else [],
        info={"bulk_density_hu": baseline.values.tolist()})


@SECTIONS.register("ct-to-mr")
def section_ct_to_mr(ctx: EvalContext) -> SectionResult:
    title = "CT → T1w MR (ct-to-mr, CycleGAN, unpaired training)"
    if (m := missing_models(title, ["ct-to-mr"])) is not None:
        return m
    baseline = _fit_threshold_baseline(ctx, "CT", "T1w", mr_source=False)
    metrics: dict[str, dict[str, list[float]]] = {"model": {}, "tissue classes": {}}
    panel = None
    for seed in ctx.test_seeds:
        s = ctx.subject(seed)
        mask, src = s["head"], s["CT"]
        tgt = ctx.subject(seed, keys=("T1w", "T2w"), noise_free=True)["T1w"]
        out = ctx.run_model("ct-to-mr", "synthesize", src, "CT")
        base = baseline.predict(src, mask, background=0.0)
        brain = ct_regions(src, mask)["brain"]
        for method, pred in (("model", out), ("tissue classes", base)):
            metrics[method].setdefault("MAE head", []).append(mae(pred, tgt, mask))
            metrics[method].setdefault("MAE brain", []).append(mae(pred, tgt, brain))
            metrics[method].setdefault("brain SD / reference SD", []).append(
                float(pred[brain].std() / max(float(tgt[brain].std()), 1e-6)))
        if panel is None:
            win_t = tuple(np.percentile(tgt[mask], [0.5, 99.5]))
            panel = translation_panel(ctx.report_dir, "ct-to-mr", src, out, base, tgt, mask, CT_DISPLAY_WINDOW,
                                      win_t, 0.5 * (win_t[1] - win_t[0]), "tissue classes")
    targets = [Target("ct-to-mr: MAE in the head below the tissue-class baseline", mean(metrics["model"]["MAE head"]),
                      mean(metrics["tissue classes"]["MAE head"]), "<", CTMR_NOTE)]
    return SectionResult(title=title, intro=(
        "Reference: the test subject's noise-free T1w. Baseline, the same idea in reverse: 4 tissue classes by "
        "multi-Otsu HU thresholds, each assigned its mean T1w intensity on 8 paired training subjects. MAE in the "
        "phantom's MR units; brain = CT in (0, 80) HU; brain SD / reference SD: the spread of the output's brain "
        "intensities over the reference's (1: as much grey/white-matter contrast as the T1w has; above 1: "
        "invented variation)."),
        metrics=metrics, units={"MAE head": "a.u.", "MAE brain": "a.u.", "brain SD / reference SD": ""},
        targets=targets, panels=[panel] if panel else [])
