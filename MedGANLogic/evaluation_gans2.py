"""The GANs II sections of the ``make eval`` report: super-resolution, f-AnoGAN anomaly maps, adversarial
segmentation. :mod:`MedGANLogic.evaluate` calls :func:`register_sections` after its own sections, so these
follow them in the report; each section uses that module's metrics, panels and result types (taken from the
running evaluation, so ``python -m MedGANLogic.evaluate`` and an imported ``evaluate()`` behave the same).

* Super-resolution (``mr-sr-x2-throughplane``, ``mr-sr-x2-inplane``): each test subject's 2 mm T2w is degraded
  exactly as in training (two slices averaged into one 4 mm slice; or the central half of k-space kept in-plane),
  the model and a cubic B-spline interpolation (SimpleITK ``sitkBSpline`` onto the same output grid) bring it
  back to 2 mm, and both are scored with PSNR and SSIM in the head against the noise-free T2w of the subject
  (and, beside it, against the acquired noisy T2w). Data range: the reference's 0.5-99.5 percentile range.
* Anomaly (``brain-anomaly-t2``): on the test subjects (with lesions), voxel AUROC and average precision of the
  anomaly map inside the head (MONAI ``compute_roc_auc`` / ``compute_average_precision``), Dice of the mask at
  the threshold stored in the card, and case-level AUROC of the case score (each lesioned subject against its
  lesion-free twin). Baseline: robust voxel-wise z-scores against the healthy population, |x - median| /
  (1.4826 MAD) over the 20 lesion-free training subjects, normalised, smoothed and masked exactly as the model's
  map; its threshold is chosen on the same validation subjects by the same rule; its case score is the mean of
  the top 1 % of the map in the head.
* Segmentation (``brain-lesion-seg``): Dice and 95 % Hausdorff distance (MONAI, in mm) on the test subjects'
  FLAIR, against the same U-Net trained without the adversarial term (``Resources/Ablations``), with a paired
  Wilcoxon signed-rank test of the difference.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .volume import Volume

REPO = Path(__file__).resolve().parents[1]
SR_MODELS: dict[str, dict[str, Any]] = {
    "mr-sr-x2-throughplane": {"degrade": "thick_slices", "scale": (2, 1, 1), "panel_axis": 1,
                              "what": "through-plane (4 mm thick axial slices -> 2 mm)"},
    "mr-sr-x2-inplane": {"degrade": "kspace_truncate", "scale": (1, 2, 2), "panel_axis": 0,
                         "what": "in-plane (4 mm in-plane, k-space truncated -> 2 mm)"},
}
SR_TARGET_DB = 1.5
ANOMALY_MODEL = "brain-anomaly-t2"
ANOMALY_POPULATION = 20  # lesion-free training subjects behind the z-score baseline
ANOMALY_VAL_SUBJECTS = 3  # as many as the model's threshold was chosen on
VOXEL_AUROC_TARGET, DICE_TARGET = 0.95, 0.5
SEG_MODEL = "brain-lesion-seg"
SEG_ABLATION = REPO / "Resources" / "Ablations" / "brain-lesion-seg-noadv"


def _ev(ctx: Any):
    """The running evaluation module (``MedGANLogic.evaluate``, or ``__main__`` under ``python -m``)."""
    return sys.modules[type(ctx).__module__]


def _run(task: str, volume: Volume, model: str, device: str):
    from .pipeline import run

    return run(task, volume, model=model, device=device, precision="fp32")  # as evaluate.py: CPU-independent


# --- super-resolution ------------------------------------------------------------------------------------------
def bspline_upsample(low: Volume, grid: Volume) -> np.ndarray:
    """Cubic B-spline interpolation (SimpleITK ``sitkBSpline``) of ``low`` at the voxel centres of ``grid``.

    Outside the outermost input voxel centres (half an input voxel at each end) the nearest value is used.
    """
    import SimpleITK as sitk

    from .io import from_volume

    resample = sitk.ResampleImageFilter()
    resample.SetReferenceImage(from_volume(grid))
    resample.SetInterpolator(sitk.sitkBSpline)
    resample.SetUseNearestNeighborExtrapolator(True)
    resample.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resample.Execute(from_volume(low)))


def degrade_volume(hr: Volume, model_id: str) -> tuple[Volume, Volume]:
    """(low-resolution input, high-resolution grid it came from), as the model's recipe simulates them."""
    from .simulate import superres_pair

    spec = SR_MODELS[model_id]
    return superres_pair(hr, spec["scale"], spec["degrade"])


def _middle_index(mask: np.ndarray, axis: int) -> int:
    counts = np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).sum(1)
    return int(np.argmax(counts))


def superres_section(ctx: Any, model_id: str) -> Any:
    ev = _ev(ctx)
    spec = SR_MODELS[model_id]
    title = f"T2w super-resolution x2, {spec['what']} ({model_id}, SRGAN)"
    if (m := ev._missing(title, [model_id])) is not None:
        return m
    metrics: dict[str, dict[str, list[float]]] = {"model": {}, "cubic B-spline": {}}
    geometry_exact, panel = [], None
    for seed in ctx.test_seeds:
        s = ctx.subject(seed)
        clean = ctx.subject(seed, keys=("T1w", "T2w"), noise_free=True)["T2w"]
        hr = Volume(s["T2w"], spacing=(ev.SPACING_MM,) * 3, metadata={"modality": "MR", "contrast": "T2w"})
        low, grid = degrade_volume(hr, model_id)
        out = _run("superres", low, model_id, ctx.device).volume
        geometry_exact.append(bool(out.same_geometry(grid)))
        base = bspline_upsample(low, grid)
        crop = tuple(slice(0, n) for n in grid.shape)
        mask, ref, acquired = s["head"][crop], clean[crop], grid.array
        rng = ev.mr_range(ref, mask)
        for method, pred in (("model", out.array), ("cubic B-spline", base)):
            metrics[method].setdefault("PSNR", []).append(ev.psnr(pred, ref, mask, rng))
            metrics[method].setdefault("SSIM", []).append(ev.ssim(pred, ref, mask, rng))
            metrics[method].setdefault("PSNR vs acquired", []).append(
                ev.psnr(pred, acquired, mask, ev.mr_range(acquired, mask)))
        if panel is None:
            panel = _superres_panel(ctx, model_id, low, out.array, base, ref, mask)
    model, base_m = metrics["model"], metrics["cubic B-spline"]
    gain = ev.mean(model["PSNR"]) - ev.mean(base_m["PSNR"])
    gain_acq = ev.mean(model["PSNR vs acquired"]) - ev.mean(base_m["PSNR vs acquired"])
    targets = [
        ev.Target(f"{model_id}: PSNR ≥ cubic B-spline + {SR_TARGET_DB} dB", ev.mean(model["PSNR"]),
                  ev.mean(base_m["PSNR"]) + SR_TARGET_DB, ">=", ev.MISSED_NOTES.get(f"{model_id}_psnr", "")),
        ev.Target(f"{model_id}: SSIM above cubic B-spline", ev.mean(model["SSIM"]), ev.mean(base_m["SSIM"]), ">",
                  ev.MISSED_NOTES.get(f"{model_id}_ssim", "")),
        ev.Target(f"{model_id}: output grid = the 2 mm grid, same field of view (all subjects)",
                  float(np.mean(geometry_exact)), 1.0, ">="),
    ]
    how = ("pairs of 2 mm axial slices averaged into 4 mm slices (a box slice profile), restored along z"
           if spec["degrade"] == "thick_slices" else
           "the central half of k-space kept along y and x (4 mm in-plane), restored in-plane")
    return ev.SectionResult(title=title, intro=(
        f"Input: each test subject's acquired 2 mm T2w degraded as in training ({how}). Reference: the subject's "
        f"noise-free T2w on the 2 mm grid; the last column scores against the acquired, noisy T2w instead. "
        f"Baseline: cubic B-spline interpolation (SimpleITK `sitkBSpline`) of the same input onto the same grid. "
        f"PSNR gain of the model over B-spline: {gain:+.2f} dB against the noise-free reference, {gain_acq:+.2f} dB "
        f"against the acquired image. The model's output grid equalled the 2 mm grid (spacing, origin, direction, "
        f"field of view) for {sum(geometry_exact)} of {len(geometry_exact)} subjects."),
        metrics=metrics, units={"PSNR": "dB", "SSIM": "", "PSNR vs acquired": "dB"}, targets=targets,
        panels=[panel] if panel else [], info={"psnr_gain_db": gain, "psnr_gain_vs_acquired_db": gain_acq,
                                               "geometry_exact": geometry_exact})


def _superres_panel(ctx: Any, model_id: str, low: Volume, out: np.ndarray, base: np.ndarray, ref: np.ndarray,
                    mask: np.ndarray) -> str:
    ev = _ev(ctx)
    axis = SR_MODELS[model_id]["panel_axis"]
    scale = SR_MODELS[model_id]["scale"]
    nearest = low.array
    for a, s in enumerate(scale):
        nearest = np.repeat(nearest, s, axis=a)
    i = _middle_index(mask, axis)

    def cut(a: np.ndarray) -> np.ndarray:
        return np.take(a, i, axis=axis)

    win = tuple(float(v) for v in np.percentile(ref[mask], [0.5, 99.5]))
    err = 0.25 * (win[1] - win[0])
    rows = [("model", [cut(nearest), cut(out), cut(ref), np.abs(cut(out) - cut(ref)) * cut(mask)]),
            ("B-spline", [cut(nearest), cut(base), cut(ref), np.abs(cut(base) - cut(ref)) * cut(mask)])]
    return ev.save_panel(ctx.report_dir / f"panel_{model_id}.png", rows, [win, win, win, (0.0, err)],
                         ["input (nearest)", "output", "reference", "|error|"])


# --- anomaly detection -----------------------------------------------------------------------------------------
def _phantom(ctx: Any, seed: int, keys: list[str], healthy: bool = False) -> dict[str, np.ndarray]:
    """Arrays of one phantom subject at the report's spacing (cached on disk), with its ``head_mask``."""
    from .train.data import phantom_subject_arrays

    return phantom_subject_arrays(seed, keys, _ev(ctx).SPACING_MM, healthy=healthy)


class RobustZScore:
    """Voxel-wise robust z-scores against a healthy population: |x - median| / (1.4826 MAD + eps).

    Every volume (population and case) is first normalised by the model card's input normalisation, so the
    baseline sees the intensities the model sees; the map is then smoothed and masked like the model's.
    """

    def __init__(self, spec: dict[str, Any], smoothing_mm: float, spacing_mm: float):
        self.spec, self.smoothing_mm, self.spacing_mm = spec, smoothing_mm, spacing_mm

    def fit(self, healthy: list[np.ndarray]) -> RobustZScore:
        from .normalization import normalize

        stack = np.stack([normalize(v, self.spec)[0] for v in healthy])
        self.median = np.median(stack, axis=0)
        self.scale = 1.4826 * np.median(np.abs(stack - self.median), axis=0) + 0.02  # floor: ~ the noise level
        return self

    def map(self, volume: np.ndarray, head: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        from .normalization import normalize

        z = np.abs(normalize(volume, self.spec)[0] - self.median) / self.scale
        if self.smoothing_mm > 0:
            z = ndimage.gaussian_filter(z, sigma=self.smoothing_mm / self.spacing_mm)
        return np.where(head, z, 0.0).astype(np.float32)

    @staticmethod
    def case_score(amap: np.ndarray, head: np.ndarray) -> float:
        values = np.sort(amap[head])
        return float(values[-max(1, values.size // 100):].mean())


def voxel_auroc_ap(amap: np.ndarray, lesion: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """Voxel AUROC and average precision of ``amap`` for ``lesion`` over the voxels of ``region`` (MONAI)."""
    import torch
    from monai.metrics import compute_average_precision, compute_roc_auc

    y_pred = torch.from_numpy(np.ascontiguousarray(amap[region], dtype=np.float32))
    y = torch.from_numpy(lesion[region].astype(np.float32))
    return float(compute_roc_auc(y_pred, y)), float(compute_average_precision(y_pred, y))


def case_auroc(lesioned: list[float], healthy: list[float]) -> float:
    import torch
    from monai.metrics import compute_roc_auc

    scores = torch.tensor(lesioned + healthy, dtype=torch.float32)
    labels = torch.tensor([1.0] * len(lesioned) + [0.0] * len(healthy))
    return float(compute_roc_auc(scores, labels))


def anomaly_section(ctx: Any) -> Any:
    from .models.registry import get_model
    from .train.fanogan import best_dice_threshold, dice

    ev = _ev(ctx)
    title = "Brain anomaly maps on T2w (brain-anomaly-t2, f-AnoGAN)"
    if (m := ev._missing(title, [ANOMALY_MODEL])) is not None:
        return m
    card = get_model(ANOMALY_MODEL)
    threshold = float(card.extras["threshold"])
    smoothing = float(card.extras.get("smoothing_mm", 2.0))
    spec = card.input["normalization"]
    baseline = RobustZScore(spec, smoothing, ev.SPACING_MM).fit(
        [_phantom(ctx, s, ["T2w"], healthy=True)["T2w"] for s in ctx.seeds("train", ANOMALY_POPULATION)])

    def model_map(t2: np.ndarray) -> tuple[np.ndarray, float]:
        vol = Volume(t2, spacing=(ev.SPACING_MM,) * 3, metadata={"modality": "MR", "contrast": "T2w"})
        result = _run("anomaly", vol, ANOMALY_MODEL, ctx.device)
        return result.outputs["anomaly_map"].array, float(result.extras["case_score"])

    val = [_phantom(ctx, s, ["T2w", "lesion_mask"]) for s in ctx.seeds("val", ANOMALY_VAL_SUBJECTS)]
    val_maps = [baseline.map(v["T2w"], model_map(v["T2w"])[0] > 0) for v in val]
    base_threshold, _ = best_dice_threshold(val_maps, [v["lesion_mask"] > 0 for v in val])

    metrics: dict[str, dict[str, list[float]]] = {"model": {}, "z-score baseline": {}}
    cases: dict[str, dict[str, list[float]]] = {"model": {"lesioned": [], "healthy": []},
                                                "z-score baseline": {"lesioned": [], "healthy": []}}
    panel = None
    for seed in ctx.test_seeds:
        s = _phantom(ctx, seed, ["T2w", "lesion_mask"])
        lesion, head = s["lesion_mask"] > 0, s["head_mask"] > 0
        amap, score = model_map(s["T2w"])
        engine_head = amap > 0  # the engine's head mask: the baseline map is masked the same way
        zmap = baseline.map(s["T2w"], engine_head)
        twin = _phantom(ctx, seed, ["T2w"], healthy=True)["T2w"]
        twin_map, twin_score = model_map(twin)
        cases["model"]["lesioned"].append(score)
        cases["model"]["healthy"].append(twin_score)
        cases["z-score baseline"]["lesioned"].append(baseline.case_score(zmap, engine_head))
        cases["z-score baseline"]["healthy"].append(baseline.case_score(baseline.map(twin, twin_map > 0),
                                                                        twin_map > 0))
        # where the map is high besides the lesions: bright CSF (the brightest 5 % of the lesion-free twin's head)
        bright = head & ~lesion & (twin > np.percentile(twin[head], 95))
        rest = head & ~lesion & ~bright
        for method, mp, thr in (("model", amap, threshold), ("z-score baseline", zmap, base_threshold)):
            auroc, ap = voxel_auroc_ap(mp, lesion, head)
            metrics[method].setdefault("voxel AUROC", []).append(auroc)
            metrics[method].setdefault("AP", []).append(ap)
            metrics[method].setdefault("Dice", []).append(dice(mp > thr, lesion))
            inside = float(mp[lesion].mean())
            metrics[method].setdefault("map lesions / CSF", []).append(inside / max(float(mp[bright].mean()), 1e-9))
            metrics[method].setdefault("map lesions / other", []).append(inside / max(float(mp[rest].mean()), 1e-9))
        if panel is None:
            panel = _anomaly_panel(ctx, s["T2w"], amap, zmap, lesion, threshold, base_threshold)
    case_auc = {k: case_auroc(v["lesioned"], v["healthy"]) for k, v in cases.items()}
    mdl, base = metrics["model"], metrics["z-score baseline"]
    targets = [
        ev.Target(f"{ANOMALY_MODEL}: voxel AUROC ≥ {VOXEL_AUROC_TARGET}", ev.mean(mdl["voxel AUROC"]),
                  VOXEL_AUROC_TARGET, ">=", ev.MISSED_NOTES.get("anomaly_auroc", "")),
        ev.Target(f"{ANOMALY_MODEL}: voxel AUROC above the z-score baseline", ev.mean(mdl["voxel AUROC"]),
                  ev.mean(base["voxel AUROC"]), ">", ev.MISSED_NOTES.get("anomaly_auroc_baseline", "")),
        ev.Target(f"{ANOMALY_MODEL}: Dice at the stored threshold ≥ {DICE_TARGET}", ev.mean(mdl["Dice"]),
                  DICE_TARGET, ">=", ev.MISSED_NOTES.get("anomaly_dice", "")),
        ev.Target(f"{ANOMALY_MODEL}: Dice above the z-score baseline", ev.mean(mdl["Dice"]), ev.mean(base["Dice"]),
                  ">", ev.MISSED_NOTES.get("anomaly_dice_baseline", "")),
    ]
    return ev.SectionResult(title=title, intro=(
        f"Test subjects with lesions (T2w, 2 mm); AUROC and AP over the voxels of the head, Dice of the candidate "
        f"mask at the threshold stored in the model card ({threshold:.4g}, chosen on {ANOMALY_VAL_SUBJECTS} "
        f"validation subjects). Baseline: robust voxel-wise z-scores |x − median| / (1.4826 MAD) against "
        f"{ANOMALY_POPULATION} lesion-free training subjects, normalised, smoothed ({smoothing:g} mm) and masked "
        f"like the model's map, thresholded at {base_threshold:.4g} (chosen on the same validation subjects by the "
        f"same rule: maximum mean Dice). 'map lesions / CSF' and 'map lesions / other': the map's mean inside "
        f"the lesions over its mean in bright CSF (the brightest 5 % of the lesion-free twin's head) and in the "
        f"rest of the head; a detector needs both well above 1. Case level (each lesioned test subject against its "
        f"lesion-free twin, "
        f"{len(cases['model']['lesioned'])} + {len(cases['model']['healthy'])} cases): AUROC of the f-AnoGAN case "
        f"score {case_auc['model']:.3f}, of the baseline's case score (mean of the top 1 % of its map) "
        f"{case_auc['z-score baseline']:.3f}."),
        metrics=metrics, units={"voxel AUROC": "", "AP": "", "Dice": "", "map lesions / CSF": "",
                                "map lesions / other": ""}, targets=targets,
        panels=[panel] if panel else [],
        info={"threshold": threshold, "baseline_threshold": base_threshold, "case_auroc": case_auc,
              "case_scores": cases})


def _anomaly_panel(ctx: Any, t2: np.ndarray, amap: np.ndarray, zmap: np.ndarray, lesion: np.ndarray,
                   threshold: float, base_threshold: float) -> str:
    ev = _ev(ctx)
    z = _middle_index(lesion, 0)
    win = tuple(float(v) for v in np.percentile(t2[t2 > 0.1 * np.percentile(t2, 99)], [0.5, 99.5]))
    rows = [("model", [t2[z], amap[z], (amap[z] > threshold).astype(np.float32), lesion[z].astype(np.float32)]),
            ("z-score", [t2[z], zmap[z], (zmap[z] > base_threshold).astype(np.float32),
                         lesion[z].astype(np.float32)])]
    top = float(np.percentile(amap[amap > 0], 99.9))
    ztop = float(np.percentile(zmap[zmap > 0], 99.9))
    path = ctx.report_dir / f"panel_{ANOMALY_MODEL}.png"
    name = ev.save_panel(path, rows[:1], [win, (0.0, top), (0.0, 1.0), (0.0, 1.0)],
                         ["T2w", "anomaly map", "mask at threshold", "true lesions"])
    ev.save_panel(ctx.report_dir / f"panel_{ANOMALY_MODEL}_baseline.png", rows[1:],
                  [win, (0.0, ztop), (0.0, 1.0), (0.0, 1.0)], ["T2w", "|z| map", "mask at threshold", "true lesions"])
    return name


# --- adversarial segmentation ----------------------------------------------------------------------------------
def hd95_mm(pred: np.ndarray, truth: np.ndarray, spacing_mm: float) -> float:
    """95 % Hausdorff distance in mm between two binary masks (MONAI); inf when the prediction is empty."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    if not pred.any():
        return float("inf")
    p = torch.from_numpy(np.stack([~pred, pred])[None].astype(np.float32))
    t = torch.from_numpy(np.stack([~truth, truth])[None].astype(np.float32))
    return float(compute_hausdorff_distance(p, t, include_background=False, percentile=95,
                                            spacing=spacing_mm)[0, 0])


def segmentation_section(ctx: Any) -> Any:
    from scipy.stats import wilcoxon

    from .train.fanogan import dice

    ev = _ev(ctx)
    title = "Lesion segmentation on FLAIR (brain-lesion-seg, U-Net + PatchGAN) vs the same U-Net without it"
    if (m := ev._missing(title, [SEG_MODEL, str(SEG_ABLATION)])) is not None:
        return m
    methods = {"U-Net + adversarial (brain-lesion-seg)": SEG_MODEL,
               "U-Net alone (ablation)": str(SEG_ABLATION)}
    metrics: dict[str, dict[str, list[float]]] = {name: {} for name in methods}
    first: dict[str, Any] = {}
    for seed in ctx.test_seeds:
        s = _phantom(ctx, seed, ["FLAIR", "lesion_mask"])
        lesion = s["lesion_mask"] > 0
        vol = Volume(s["FLAIR"], spacing=(ev.SPACING_MM,) * 3, metadata={"modality": "MR", "contrast": "FLAIR"})
        for name, model in methods.items():
            labels = _run("segment", vol, model, ctx.device).volume.array > 0
            metrics[name].setdefault("Dice", []).append(dice(labels, lesion))
            metrics[name].setdefault("HD95", []).append(hd95_mm(labels, lesion, ev.SPACING_MM))
            if not first or name not in first["labels"]:
                first = first or {"subject": s, "lesion": lesion, "labels": {}}
                first["labels"][name] = labels
    z = _middle_index(first["lesion"], 0)
    flair = first["subject"]["FLAIR"]
    win = tuple(float(v) for v in np.percentile(flair[first["subject"]["head_mask"] > 0], [0.5, 99.5]))
    rows = [(name.split(" (")[0].replace("U-Net ", ""), [flair[z], labels[z].astype(np.float32),
                                                         first["lesion"][z].astype(np.float32)])
            for name, labels in first["labels"].items()]
    panel = ev.save_panel(ctx.report_dir / f"panel_{SEG_MODEL}.png", rows, [win, (0.0, 1.0), (0.0, 1.0)],
                          ["FLAIR", "predicted", "true lesions"])
    adv, plain = (metrics[n] for n in methods)
    d_dice = np.array(adv["Dice"]) - np.array(plain["Dice"])
    finite = [(a, b) for a, b in zip(adv["HD95"], plain["HD95"]) if np.isfinite(a) and np.isfinite(b)]
    d_hd = np.array([a - b for a, b in finite]) if finite else np.array([])
    p_dice = float(wilcoxon(d_dice).pvalue) if np.any(d_dice != 0) else 1.0
    p_hd = float(wilcoxon(d_hd).pvalue) if d_hd.size and np.any(d_hd != 0) else 1.0
    helps = d_dice.mean() > 0 and p_dice < 0.05
    hurts = d_dice.mean() < 0 and p_dice < 0.05
    verdict = ("The adversarial term helps: Dice is significantly higher with it" if helps else
               "The adversarial term hurts: Dice is significantly lower with it" if hurts else
               "The adversarial term makes no significant difference to Dice on these subjects")
    return ev.SectionResult(title=title, intro=(
        f"Test subjects' FLAIR (2 mm) and their lesion masks. Both U-Nets (MONAI BasicUNet) were trained on the same "
        f"subjects, batches, seed and number of steps; the only difference is the adversarial term (a PatchGAN on "
        f"(image, mask) pairs, weight 0.05). HD95: MONAI 95 % Hausdorff distance in mm (infinite when nothing is "
        f"predicted). {verdict} (mean difference {d_dice.mean():+.4f}, better on {int((d_dice > 0).sum())} of "
        f"{d_dice.size} subjects, paired Wilcoxon p = {p_dice:.3g}); HD95 difference "
        f"{(d_hd.mean() if d_hd.size else float('nan')):+.2f} mm (p = {p_hd:.3g})."),
        metrics=metrics, units={"Dice": "", "HD95": "mm"}, targets=[], panels=[panel],
        info={"dice_difference": d_dice.tolist(), "wilcoxon_p_dice": p_dice, "wilcoxon_p_hd95": p_hd,
              "verdict": verdict})


def register_sections(register: Callable[[str], Callable]) -> None:
    """Add the GANs II sections to the report (``register`` is :func:`MedGANLogic.evaluate.register_section`)."""
    for model_id in SR_MODELS:
        register(model_id)(lambda ctx, model_id=model_id: superres_section(ctx, model_id))
    register(ANOMALY_MODEL)(anomaly_section)
    register(SEG_MODEL)(segmentation_section)
