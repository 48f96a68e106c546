"""Adversarial lesion segmentation (``brain-lesion-seg``): Dice and 95 % Hausdorff distance (mm) on the test
subjects' FLAIR, against the same U-Net trained without the adversarial term (``Resources/Ablations``), with a
paired Wilcoxon signed-rank test of the difference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...volume import Volume
from ..context import PHANTOM_DIRECTION, SPACING_MM, EvalContext, SectionResult, missing_models
from ..metrics import dice, dice_verdict, hd95, paired_difference
from ..panels import fullest_slice, save_panel
from . import SECTIONS

REPO = Path(__file__).resolve().parents[3]
SEG_MODEL = "brain-lesion-seg"
SEG_ABLATION = REPO / "Resources" / "Ablations" / "brain-lesion-seg-noadv"


@SECTIONS.register(SEG_MODEL)
def segmentation_section(ctx: EvalContext) -> SectionResult:
    title = "Lesion segmentation on FLAIR (brain-lesion-seg, U-Net + PatchGAN) vs the same U-Net without it"
    if (m := missing_models(title, [SEG_MODEL, str(SEG_ABLATION)])) is not None:
        return m
    methods = {"U-Net + adversarial (brain-lesion-seg)": SEG_MODEL,
               "U-Net alone (ablation)": str(SEG_ABLATION)}
    metrics: dict[str, dict[str, list[float]]] = {name: {} for name in methods}
    first: dict[str, Any] = {}
    for seed in ctx.test_seeds:
        s = ctx.phantom(seed, ["FLAIR", "lesion_mask"])
        lesion = s["lesion_mask"] > 0
        vol = Volume(s["FLAIR"], spacing=(SPACING_MM,) * 3, direction=PHANTOM_DIRECTION,
                     metadata={"modality": "MR", "contrast": "FLAIR"})
        for name, model in methods.items():
            labels = ctx.run("segment", vol, model).volume.array > 0
            metrics[name].setdefault("Dice", []).append(dice(labels, lesion))
            metrics[name].setdefault("HD95", []).append(hd95(labels, lesion, SPACING_MM))
            if not first or name not in first["labels"]:
                first = first or {"subject": s, "lesion": lesion, "labels": {}}
                first["labels"][name] = labels
    z = fullest_slice(first["lesion"], 0)
    flair = first["subject"]["FLAIR"]
    win = tuple(float(v) for v in np.percentile(flair[first["subject"]["head_mask"] > 0], [0.5, 99.5]))
    rows = [(name.split(" (")[0].replace("U-Net ", ""), [flair[z], labels[z].astype(np.float32),
                                                         first["lesion"][z].astype(np.float32)])
            for name, labels in first["labels"].items()]
    panel = save_panel(ctx.report_dir / f"panel_{SEG_MODEL}.png", rows, [win, (0.0, 1.0), (0.0, 1.0)],
                       ["FLAIR", "predicted", "true lesions"])
    adv, plain = (metrics[n] for n in methods)
    d_dice, p_dice = paired_difference(adv["Dice"], plain["Dice"])  # Dice is always finite: every subject
    d_hd, p_hd = paired_difference(adv["HD95"], plain["HD95"])
    verdict = dice_verdict("The adversarial term", d_dice, p_dice)
    return SectionResult(title=title, intro=(
        f"Test subjects' FLAIR (2 mm) and their lesion masks. Both U-Nets (MONAI BasicUNet) were trained on the same "
        f"subjects, batches, seed and number of steps; the only difference is the adversarial term (a PatchGAN on "
        f"(image, mask) pairs, weight 0.05). HD95: MONAI 95 % Hausdorff distance in mm (infinite when nothing is "
        f"predicted). {verdict} (mean difference {d_dice.mean():+.4f}, better on {int((d_dice > 0).sum())} of "
        f"{d_dice.size} subjects, paired Wilcoxon p = {p_dice:.3g}); HD95 difference "
        f"{(d_hd.mean() if d_hd.size else float('nan')):+.2f} mm (p = {p_hd:.3g})."),
        metrics=metrics, units={"Dice": "", "HD95": "mm"}, targets=[], panels=[panel],
        info={"dice_difference": d_dice.tolist(), "wilcoxon_p_dice": p_dice, "wilcoxon_p_hd95": p_hd,
              "verdict": verdict})
