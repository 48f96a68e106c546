"""Synthetic lesions (``brain-lesion-inpaint``): do they help a segmenter trained on few subjects, and do they look
like the phantom's own lesions?

* ``lesion-augmentation``: the same small U-Net (MONAI BasicUNet, Dice + cross-entropy) trained on :data:`FEW`
  phantom training subjects' FLAIR, without and with :data:`COPIES` synthetic-lesion copies of each
  (:func:`MedGANLogic.augment.augmented_pair`, what ``medgan augment`` does: masks from the image's own location
  priors, lesion types :data:`AUGMENT_TYPES`), same steps, batches and seed; Dice and HD95 on the test subjects,
  paired Wilcoxon signed-rank tests.
* ``lesion-realism``: the test subjects' lesion-free FLAIR twins with synthetic lesions painted into the real
  lesions' masks, against the real (simulated) lesions in the same masks: the lesion-to-surround intensity ratio,
  the mean profile across the lesion boundary, and how many lesions the shipped segmenter (``brain-lesion-seg``)
  finds in each.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from ...volume import Volume
from ..context import PHANTOM_DIRECTION, SPACING_MM, EvalContext, SectionResult, missing_models
from ..metrics import dice, dice_verdict, hd95, paired_difference
from ..panels import fullest_slice, save_panel
from . import SECTIONS

LESION_MODEL, SEG_MODEL = "brain-lesion-inpaint", "brain-lesion-seg"
FEW, COPIES, STEPS, SEED = 5, 3, 600, 7
AUGMENT_TYPES = ("wmh", "tumour")  # the phantom's test lesions are MS-like and oedema/tumour-like
REALISM_SUBJECTS = 5
PROFILE_MM = np.arange(-6.0, 7.0, 2.0)  # signed distance from the lesion boundary (negative: inside)
FLAIR = {"modality": "MR", "contrast": "FLAIR"}


def _train_segmenter(images: list[np.ndarray], masks: list[np.ndarray], name: str, folder: Path) -> str:
    """A small U-Net trained on ``images``/``masks`` (the ``brain-lesion-seg`` recipe without its adversarial
    term, smaller, :data:`STEPS` steps); returns the exported model folder."""
    from ...train import load_config
    from ...train.data import VolumeSet
    from ...train.segmentation import SegmentationGANTrainer

    config = load_config(recipe="brain-lesion-seg", overrides=[
        f"steps={STEPS}", f"seed={SEED}", "device=cpu", "loss.adversarial=0", "log.every=1000",
        "generator.params.features=[8,8,16,32,64,8]"])
    config["export"][0]["card"]["id"] = name
    names = [f"{name}-{i}" for i in range(len(images))]
    train = VolumeSet({"source": images, "target": masks}, {"source": names, "target": names})
    trainer = SegmentationGANTrainer(config, None, volumes=(train, None), progress=False)
    trainer.fit()
    return str(trainer.export(folder)[0].folder)


def _augmented(images: list[np.ndarray], masks: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from ...augment import augmented_pair

    out_images, out_masks = [], []
    for i, (image, mask) in enumerate(zip(images, masks)):
        vol = Volume(image, spacing=(SPACING_MM,) * 3, direction=PHANTOM_DIRECTION, metadata=dict(FLAIR))
        labels = vol.with_array(mask.astype(np.uint8))
        for k in range(COPIES):
            new, label, _ = augmented_pair(vol, labels, np.random.default_rng([SEED, i, k]),
                                           lesion_types=AUGMENT_TYPES, model=LESION_MODEL, device="cpu")
            out_images.append(new.array.astype(np.float32))
            out_masks.append((label.array > 0).astype(np.uint8))
    return out_images, out_masks


@SECTIONS.register("lesion-augmentation")
def augmentation_section(ctx: EvalContext) -> SectionResult:
    title = f"Synthetic-lesion augmentation: a U-Net trained on {FEW} subjects, without vs with synthetic lesions"
    if (m := missing_models(title, [LESION_MODEL])) is not None:
        return m
    few = [ctx.phantom(seed, ["FLAIR", "lesion_mask"]) for seed in ctx.seeds("train", FEW)]
    images = [s["FLAIR"].astype(np.float32) for s in few]
    masks = [(s["lesion_mask"] > 0).astype(np.uint8) for s in few]
    extra_images, extra_masks = _augmented(images, masks)
    methods = {f"{FEW} subjects": (images, masks),
               f"{FEW} subjects + {len(extra_images)} synthetic-lesion copies": (images + extra_images,
                                                                                   masks + extra_masks)}
    metrics: dict[str, dict[str, list[float]]] = {name: {"Dice": [], "HD95": []} for name in methods}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {name: _train_segmenter(imgs, msks, f"lesion-eval-{i}", Path(tmp))
                   for i, (name, (imgs, msks)) in enumerate(methods.items())}
        for seed in ctx.test_seeds:
            s = ctx.phantom(seed, ["FLAIR", "lesion_mask"])
            truth = s["lesion_mask"] > 0
            vol = Volume(s["FLAIR"], spacing=(SPACING_MM,) * 3, direction=PHANTOM_DIRECTION, metadata=dict(FLAIR))
            for name, folder in folders.items():
                pred = ctx.run("segment", vol, folder).volume.array > 0
                metrics[name]["Dice"].append(dice(pred, truth))
                metrics[name]["HD95"].append(hd95(pred, truth, SPACING_MM))
    plain, augmented = (metrics[n] for n in methods)
    d_dice, p_dice = paired_difference(augmented["Dice"], plain["Dice"])
    d_hd, p_hd = paired_difference(augmented["HD95"], plain["HD95"])
    verdict = dice_verdict("Augmentation", d_dice, p_dice)
    panel = _example_panel(ctx, extra_images, extra_masks, images[0])
    return SectionResult(title=title, intro=(
        f"Training: the FLAIR (2 mm) and lesion masks of the first {FEW} phantom training subjects, alone or with "
        f"{COPIES} copies of each carrying one more synthetic lesion ({' or '.join(AUGMENT_TYPES)}, drawn by "
        f"`medgan augment`'s code: location priors from the image, the {LESION_MODEL} inpainting GAN). Both U-Nets "
        f"(BasicUNet, features 8-64, Dice + cross-entropy, no adversarial term) have the same seed, batches per "
        f"step and {STEPS} steps. Test: the phantom test subjects. {verdict} (mean difference "
        f"{d_dice.mean():+.4f}, better on {int((d_dice > 0).sum())} of {d_dice.size} subjects, paired Wilcoxon "
        f"p = {p_dice:.3g}); HD95 difference {(d_hd.mean() if d_hd.size else float('nan')):+.2f} mm "
        f"(p = {p_hd:.3g})."),
        metrics=metrics, units={"Dice": "", "HD95": "mm"}, targets=[], panels=[panel],
        info={"dice_difference": d_dice.tolist(), "wilcoxon_p_dice": p_dice, "wilcoxon_p_hd95": p_hd,
              "verdict": verdict, "few": FEW, "copies": COPIES, "steps": STEPS, "types": list(AUGMENT_TYPES)})


def _example_panel(ctx: EvalContext, images: list[np.ndarray], masks: list[np.ndarray], original: np.ndarray) -> str:
    rows = []
    for k in range(min(COPIES, len(images))):
        new = masks[k] > 0
        changed = np.abs(images[k] - original) > 0
        z = fullest_slice(changed if changed.any() else new, 0)
        rows.append((f"copy {k + 1}", [original[z], images[k][z], new[z].astype(np.float32)]))
    win = tuple(float(v) for v in np.percentile(original[original > 0], [0.5, 99.5]))
    return save_panel(ctx.report_dir / "panel_lesion_augmentation.png", rows, [win, win, (0.0, 1.0)],
                      ["FLAIR", "+ synthetic lesion", "label map"])


def _ring(mask: np.ndarray, lo_mm: float, hi_mm: float) -> np.ndarray:
    from scipy import ndimage

    outside = ndimage.distance_transform_edt(~mask, sampling=SPACING_MM)
    return (outside > lo_mm) & (outside <= hi_mm)


def _profile(image: np.ndarray, mask: np.ndarray, reference: float) -> list[float]:
    """Mean intensity / ``reference`` in 2 mm shells of signed distance from the mask's boundary."""
    from scipy import ndimage

    signed = ndimage.distance_transform_edt(~mask, sampling=SPACING_MM) - \
        ndimage.distance_transform_edt(mask, sampling=SPACING_MM)
    out = []
    for d in PROFILE_MM:
        shell = (signed > d - 1.0) & (signed <= d + 1.0)
        out.append(float(image[shell].mean() / reference) if shell.any() else float("nan"))
    return out


def _detected(pred: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    found = len(set(np.unique(labels[pred & mask])) - {0})
    return found, count


@SECTIONS.register("lesion-realism")
def realism_section(ctx: EvalContext) -> SectionResult:
    title = "Synthetic lesions against the phantom's lesions: intensity, boundary profile, found by the segmenter"
    if (m := missing_models(title, [LESION_MODEL, SEG_MODEL])) is not None:
        return m
    kinds = {"real phantom lesions": None, "synthetic wmh": "wmh", "synthetic tumour": "tumour"}
    metrics: dict[str, dict[str, list[float]]] = {k: {"lesion/surround": [], "found": [], "Dice": [],
                                                      "T2w ratio": [], "T1w ratio": []} for k in kinds}
    profiles: dict[str, list[list[float]]] = {k: [] for k in kinds}
    example: dict[str, np.ndarray] = {}
    for seed in ctx.test_seeds[:REALISM_SUBJECTS]:
        real = ctx.phantom(seed, ["FLAIR", "T2w", "T1w", "lesion_mask"])
        twins = ctx.phantom(seed, ["FLAIR", "T2w", "T1w"], healthy=True)
        mask = real["lesion_mask"] > 0
        ring = _ring(mask, 2.0, 6.0)
        for name, lesion_type in kinds.items():
            ratios = {}
            for contrast in ("FLAIR", "T2w", "T1w"):  # the lesion in each contrast of the same subject
                twin = twins[contrast]
                healthy = Volume(twin, spacing=(SPACING_MM,) * 3, direction=PHANTOM_DIRECTION,
                                 metadata={"modality": "MR", "contrast": contrast})
                image = real[contrast] if lesion_type is None else _run_lesion(ctx, healthy, mask, lesion_type)
                ratios[contrast] = float(image[mask].mean() / np.median(twin[ring]))
                if contrast == "FLAIR":
                    flair, flair_twin = image, healthy
            pred = ctx.run("segment", flair_twin.with_array(flair), SEG_MODEL).volume.array > 0
            found, count = _detected(pred, mask)
            metrics[name]["lesion/surround"].append(ratios["FLAIR"])
            metrics[name]["T2w ratio"].append(ratios["T2w"])
            metrics[name]["T1w ratio"].append(ratios["T1w"])
            metrics[name]["found"].append(100.0 * found / max(count, 1))
            metrics[name]["Dice"].append(dice(pred, mask))
            profiles[name].append(_profile(flair, mask, float(np.median(twins["FLAIR"][ring]))))
            example.setdefault(name, flair)
            example.setdefault("twin", twins["FLAIR"])
            example.setdefault("mask", mask)
    panels = [_realism_panel(ctx, example), _profile_figure(ctx, profiles)]
    ratio = {k: float(np.mean(v["lesion/surround"])) for k, v in metrics.items()}
    found = {k: float(np.mean(v["found"])) for k, v in metrics.items()}
    subjects = len(metrics["real phantom lesions"]["Dice"])
    return SectionResult(title=title, intro=(
        f"The first {subjects} phantom test subjects: their lesion-free FLAIR twins (same anatomy, bias and "
        f"noise) with a synthetic lesion painted into each real lesion's mask by {LESION_MODEL}, against the real "
        f"(simulated) lesions in the same masks. lesion/surround: mean FLAIR inside the mask over the median of the "
        f"2-6 mm ring around it in the lesion-free twin (T2w ratio, T1w ratio: the same in T2w and T1w, where lesions "
        f"should be brighter and darker than their surround) (real {ratio['real phantom lesions']:.2f}, synthetic wmh "
        f"{ratio['synthetic wmh']:.2f}, tumour {ratio['synthetic tumour']:.2f}); found: lesions (connected "
        f"components) the shipped segmenter {SEG_MODEL} overlaps (real {found['real phantom lesions']:.0f} %, "
        f"synthetic wmh {found['synthetic wmh']:.0f} %, tumour {found['synthetic tumour']:.0f} %). The figure "
        f"lesion_profile.png shows the mean intensity across the lesion boundary (2 mm shells)."),
        metrics=metrics, units={"lesion/surround": "", "found": "%", "Dice": "", "T2w ratio": "", "T1w ratio": ""},
        targets=[], panels=panels,
        info={"profile_mm": PROFILE_MM.tolist(), "profiles": {k: _nan_mean(v) for k, v in profiles.items()}})


def _nan_mean(rows: list[list[float]]) -> list[float | None]:
    values = np.array(rows, dtype=np.float64)
    out = []
    for column in values.T:
        finite = column[np.isfinite(column)]
        out.append(round(float(finite.mean()), 4) if finite.size else None)
    return out


def _run_lesion(ctx: EvalContext, healthy: Volume, mask: np.ndarray, lesion_type: str) -> np.ndarray:
    from ...pipeline import run

    result = run("lesion", healthy, model=LESION_MODEL, device=ctx.device, precision="fp32",
                 mask=healthy.with_array(mask.astype(np.uint8)), lesion_type=lesion_type)
    return result.volume.array


def _realism_panel(ctx: EvalContext, example: dict[str, np.ndarray]) -> str:
    mask, twin = example["mask"], example["twin"]
    z = fullest_slice(mask, 0)
    win = tuple(float(v) for v in np.percentile(twin[twin > 0], [0.5, 99.5]))
    names = [k for k in example if k not in ("mask", "twin")]
    rows = [(f"z = {z}", [twin[z]] + [example[n][z] for n in names])]
    return save_panel(ctx.report_dir / "panel_lesion_realism.png", rows, [win] * (1 + len(names)),
                      ["FLAIR twin"] + [n.replace("phantom ", "") for n in names])


def _profile_figure(ctx: EvalContext, profiles: dict[str, list[list[float]]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.2), dpi=110)
    for name, rows in profiles.items():
        values = np.array(rows)
        with np.errstate(all="ignore"), warnings.catch_warnings():  # a shell deeper than every lesion is empty
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        ax.errorbar(PROFILE_MM, mean, yerr=std, capsize=3, label=name)
    ax.axvline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("signed distance from the lesion boundary (mm; < 0 inside)")
    ax.set_ylabel("FLAIR / surround median")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = ctx.report_dir / "lesion_profile.png"
    fig.savefig(path)
    plt.close(fig)
    return path.name
