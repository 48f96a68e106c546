"""Real brain MR sections of ``make eval-real``: T1w -> T2w and MR -> CT contrast checks, super-resolution of
degraded real volumes, and anomaly maps against real tumour labels.

The brains: pyradiomics ``brain1``/``brain2`` (contrast-enhanced T1w, 0.78 x 0.78 x 6.5 mm, tumour labels),
dipy's ``t1_coronal`` (one skull-stripped T1w slice) and ``t2_brain`` (T2-weighted b = 0 EPI, 4 x 4 x 5 mm, no
lesion). Tissue masks are the rough ones of :mod:`.real_masks`. Where a model's card asks for another contrast
(the super-resolution and anomaly models want T2w) the run is forced and the report says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..degradation import consistent_with
from ..simulate.lowres import superres_pair
from ..volume import Volume
from . import real_masks
from .baselines import bspline_upsample
from .context import SectionResult, Target, installed, mean, missing_models, mr_window
from .metrics import auroc, psnr, ssim
from .real import REAL_SECTIONS, RealContext, axial_view, save_real_panel, unit_range
from .real_data import IMAGES
from .sections.synthesis import PAIRED_MRCT

BRAINS = ("brain1", "brain2")
T2_TARGET_RATIO = 1.5
SR_MODELS = {  # model -> (short name, (z, y, x) scale, what its card's degradation does); the kind: the card's
    "mr-sr-x2-throughplane": ("throughplane", (2, 1, 1), "pairs of slices averaged (slices twice as thick)"),
    "mr-sr-x2-inplane": ("inplane", (1, 2, 2), "the central half of k-space kept in-plane (pixels twice as large)")}
SR_CASES = ("brain1", "brain2", "t2_brain")
SR_TARGET_DB = 1.5
ANOMALY_MODELS = {"T1w": "brain-anomaly-t1", "T2w": "brain-anomaly-t2"}  # the model of each scan's contrast
REAL_AUROC_TARGET, REAL_FLAGGED_TARGET = 0.9, 0.5
ANOMALY_CASES = ("brain1", "brain2", "t2_brain")
ZSCORE_THRESHOLD = 3.0
SCALP_FREE = ("t1_coronal", "t2_brain")


def masks(ctx: RealContext, case: str) -> dict[str, np.ndarray]:
    """Head, brain, tumour (and on T1w the tissue classes) of a real brain MR, made once per run."""
    key = f"masks:{case}"
    if key not in ctx.store:
        vol = ctx.image(case)
        head = real_masks.mr_head(vol.array)
        # the dipy images have no scalp (skull-stripped T1w; fat-suppressed EPI): there the head is the brain
        brain = head.copy() if case in SCALP_FREE else real_masks.mr_brain(vol.array, vol.spacing, head)
        tumour = ctx.label(case) if IMAGES[case].label else np.zeros(vol.shape, bool)
        out = {"head": head, "brain": brain, "tumour": tumour}
        if vol.metadata.get("contrast") == "T1w":
            out.update(real_masks.t1_tissue_classes(vol.array, brain, vol.spacing, tumour))
        ctx.store[key] = out
    return ctx.store[key]


def _forced(volume: Volume, want: str) -> dict[str, Any]:
    return {"force": True} if volume.metadata.get("contrast") != want else {}


def _fullest(mask: np.ndarray) -> int:
    return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(1)))


def zscore_map(image: np.ndarray, region: np.ndarray, spacing_xyz: tuple[float, float, float],
               smoothing_mm: float = 2.0) -> np.ndarray:
    """|x - median| / (1.4826 MAD) against the image's own ``region`` (no training), Gaussian-smoothed
    (``smoothing_mm``), zero outside the region."""
    values = image[region]
    med = float(np.median(values))
    scale = 1.4826 * float(np.median(np.abs(values - med))) + 1e-6
    z = ndimage.gaussian_filter(np.abs(image - med) / scale, [smoothing_mm / s for s in spacing_xyz[::-1]])
    return np.where(region, z, 0.0).astype(np.float32)


def _trained_on(model_id: str) -> str:
    """The installed model's name and version from its card (what it was trained on is in the name)."""
    from ..models.registry import get_model

    card = get_model(model_id)
    return f"{card.data.get('name', model_id)}, version {card.data.get('version', '?')}"


def csf_wm_ratio(image: np.ndarray, csf: np.ndarray, wm: np.ndarray) -> float:
    """Median of ``image`` in CSF over its median in white matter (NaN when a mask is empty)."""
    if not csf.any() or not wm.any():
        return float("nan")
    return float(np.median(image[csf]) / max(abs(float(np.median(image[wm]))), 1e-6))


# --- T1w <-> T2w: contrast order -------------------------------------------------------------------------------
def _inverted(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``image`` turned upside down within its 0.5-99.5 percentile window in ``brain`` (zero outside): the
    baseline of the contrast-order checks, and how a T2w's tissue classes are found with the T1w masks."""
    lo, hi = mr_window(image, brain)
    return np.where(brain, lo + hi - image, 0.0)


def _contrast_order(ctx: RealContext, model_id: str, cases: tuple[str, ...], source: str, target: str,
                    classes_of: Any, csf_brighter: bool) -> tuple[tuple[str, ...], dict[str, dict[str, list[float]]],
                                                                  Any]:
    """Run ``model_id`` (``source`` -> ``target``) on each real case and measure the contrast order of the input,
    the model's output and the inverted input: CSF / WM medians and the share of CSF voxels above (``csf_brighter``)
    or below the white-matter median, on the masks ``classes_of(case)`` gives (csf, wm, parenchyma, core). Returns
    (methods: input, model, baseline; metrics; the panel)."""
    methods = (f"input {source} (reference order)", f"model ({model_id})", f"inverted {source} (baseline)")
    share = f"CSF {'above' if csf_brighter else 'below'} WM median (%)"
    metrics: dict[str, dict[str, list[float]]] = {m: {"CSF / WM": [], share: []} for m in methods}
    rows = []
    for case in cases:
        vol, mk = ctx.image(case), masks(ctx, case)
        classes = classes_of(case)
        result = ctx.run("synthesize", vol, model_id, case)
        images = {methods[0]: vol.array, methods[2]: _inverted(vol.array, mk["brain"]),
                  methods[1]: result.volume.array if result is not None else np.full(vol.shape, np.nan)}
        for method, img in images.items():
            ok = bool(np.isfinite(img).all()) and classes["csf"].any() and classes["wm"].any()
            metrics[method]["CSF / WM"].append(csf_wm_ratio(img, classes["csf"], classes["wm"]) if ok else np.nan)
            wm_median = np.median(img[classes["wm"]]) if ok else np.nan
            past = (img[classes["csf"]] > wm_median if csf_brighter else img[classes["csf"]] < wm_median) if ok \
                else np.nan
            metrics[method][share].append(100.0 * float(np.mean(past)))
        z = _fullest(classes["core"])
        shown_classes = classes["csf"][z] * 0.33 + classes["parenchyma"][z] * 0.66 + classes["wm"][z] * 0.34
        shown = [unit_range(images[m][z], *mr_window(images[m][z], mk["brain"][z])) for m in methods] + [shown_classes]
        rows.append((case, [axial_view(img, vol.direction) for img in shown]))
    panel = save_real_panel(ctx, model_id.removeprefix("mr-").replace("-", "_"), rows,
                            [source, f"synthetic {target}", f"inverted {source}", "masks"])
    return methods, metrics, panel


@REAL_SECTIONS.register("t1-to-t2")
def t1_to_t2(ctx: RealContext) -> Any:
    title = "T1w → T2w on real brains (mr-t1-to-t2): contrast order"
    if (m := missing_models(title, ["mr-t1-to-t2"])) is not None:
        return m
    methods, metrics, panel = _contrast_order(ctx, "mr-t1-to-t2", (*BRAINS, "t1_coronal"), "T1w", "T2w",
                                              lambda case: masks(ctx, case), csf_brighter=True)
    model = [v for v in metrics[methods[1]]["CSF / WM"] if np.isfinite(v)]
    above = metrics[methods[1]]["CSF above WM median (%)"]
    why = (f"CSF/WM of the synthetic T2w per brain: {', '.join(f'{v:.2f}' for v in metrics[methods[1]]['CSF / WM'])}; "
           f"{mean(above):.0f} % of CSF voxels are brighter than the white-matter median (inverted T1w: "
           f"{mean(metrics[methods[2]]['CSF above WM median (%)']):.0f} %)"
           + (": on average CSF stays darker than white matter, the T1w order" if mean(model) < 1 else "")
           + f". The model: {_trained_on('mr-t1-to-t2')}; these are 0.78-1 mm real T1w, two of them "
           "contrast-enhanced, t1_coronal one skull-stripped coronal slice stored as an axial one.")
    targets = [Target("synthetic T2w of real T1w: CSF/white-matter ratio > 1.5 (mean of the brains)",
                      mean(model), T2_TARGET_RATIO, ">", why),
               Target("synthetic T2w of real T1w: CSF brighter than white matter on every brain (lowest ratio)",
                      min(model) if model else float("nan"), 1.0, ">", why)]
    intro = (
        "Real T1w brains: brain1 and brain2 (contrast-enhanced, with tumours; the tumour and 2 mm around it are left "
        "out of the tissue masks) and dipy's single coronal T1w slice. No real T2w of these brains ships with them, "
        "so the check is the contrast order: on a T2w, CSF is brighter than white matter (real ratio ~2-4). Rough "
        "tissue masks (documented in `MedGANLogic/evaluation/real_masks.py`): a morphological skull strip, the T1w "
        "flattened by its 25 mm local mean; CSF = flattened value < 0.85 in the brain core; white matter = the "
        "brighter half of the remaining parenchyma. The input row shows the order on the T1w itself (CSF/WM below "
        "1); the baseline inverts the T1w within the brain. Panel: T1w, synthetic T2w, inverted T1w, and the masks "
        "(dark grey CSF, light grey grey matter, white white matter).")
    return SectionResult(title=title, intro=intro, metrics=metrics, units={}, targets=targets, panels=[panel])


T2_CASES = ("t2_brain",)


def t2_classes(ctx: RealContext, case: str) -> dict[str, np.ndarray]:
    """Rough CSF and white-matter masks of a real T2w: the T1w classes of :mod:`.real_masks` on the T2w inverted
    within the brain (CSF, bright on a T2w, becomes the dark class; white matter the brightest parenchyma)."""
    vol, mk = ctx.image(case), masks(ctx, case)
    return real_masks.t1_tissue_classes(_inverted(vol.array, mk["brain"]), mk["brain"], vol.spacing, mk["tumour"])


@REAL_SECTIONS.register("t2-to-t1")
def t2_to_t1(ctx: RealContext) -> Any:
    title = "T2w → T1w on a real brain (mr-t2-to-t1): contrast order"
    if (m := missing_models(title, ["mr-t2-to-t1"])) is not None:
        return m
    methods, metrics, panel = _contrast_order(ctx, "mr-t2-to-t1", T2_CASES, "T2w", "T1w",
                                              lambda case: t2_classes(ctx, case), csf_brighter=False)
    model = [v for v in metrics[methods[1]]["CSF / WM"] if np.isfinite(v)]
    why = (f"CSF/WM of the synthetic T1w: {', '.join(f'{v:.2f}' for v in metrics[methods[1]]['CSF / WM'])}. "
           f"The model: {_trained_on('mr-t2-to-t1')}; this is a 4 x 4 x 5 mm T2-weighted EPI.")
    targets = [Target("synthetic T1w of a real T2w: CSF darker than white matter (highest CSF/WM ratio < 1)",
                      max(model) if model else float("nan"), 1.0, "<", why)]
    intro = (
        "dipy's T2-weighted b = 0 EPI (no lesion, 4 x 4 x 5 mm; no scalp, so the head mask is the brain). No real "
        "T1w of this brain ships with it, so the check is the contrast order: on a T1w, CSF is darker than white "
        "matter (real ratio ~0.3-0.6). Tissue masks: those of the T1w check on the T2w inverted within the brain "
        "(CSF = the dark class there, bright on the T2w; white matter = the brightest half of the rest). The input "
        "row shows the order on the T2w itself (CSF/WM above 1); the baseline inverts the T2w within the brain. "
        "Panel: T2w, synthetic T1w, inverted T2w, and the masks.")
    return SectionResult(title=title, intro=intro, metrics=metrics, units={}, targets=targets, panels=[panel])


# --- MR -> CT ------------------------------------------------------------------------------------------------------
def bulk_density_ct(t1: np.ndarray, head: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """A three-class bulk-density CT from a T1w: brain 30 HU, head outside the brain 0 HU where it is not dark
    and 700 HU (bone) where it is (below the lowest of three multi-Otsu classes of the head), air -1000 HU."""
    from skimage.filters import threshold_multiotsu

    dark = t1 < threshold_multiotsu(t1[head], classes=3)[0]
    ct = np.full(t1.shape, -1000.0, np.float32)
    ct[head] = np.where(dark[head], 700.0, 0.0)
    ct[brain] = 30.0
    return ct


@REAL_SECTIONS.register("mr-to-ct")
def mr_to_ct(ctx: RealContext) -> Any:
    title = "MR → CT on real T1w brains (mr-to-ct, mr-to-ct-paired): brain HU and skull"
    if (m := missing_models(title, ["mr-to-ct"])) is not None:
        return m
    names = ("brain median", "brain > 150 HU", "skull shell > 250 HU", "skull shell < -200 HU")
    paired = PAIRED_MRCT if installed(PAIRED_MRCT) else None
    models = {"model (mr-to-ct)": "mr-to-ct", **({f"{paired} (pix2pix, paired)": paired} if paired else {})}
    metrics: dict[str, dict[str, list[float]]] = {m: {k: [] for k in names}
                                                  for m in (*models, "bulk density (baseline)")}
    rows = []
    for case in BRAINS:
        vol, mk = ctx.image(case), masks(ctx, case)
        shell = real_masks.skull_shell(mk["head"], mk["brain"], vol.spacing)
        brain = mk["core"]
        preds = {}
        for method, model_id in models.items():
            result = ctx.run("synthesize", vol, model_id, case)
            preds[method] = result.volume.array if result is not None else np.full(vol.shape, np.nan)
        preds["bulk density (baseline)"] = bulk_density_ct(vol.array, mk["head"], mk["brain"])
        for method, ct in preds.items():
            if not np.isfinite(ct).all():  # the engine refused or failed: shown as "–", no target met
                for name in names:
                    metrics[method][name].append(np.nan)
                continue
            metrics[method]["brain median"].append(float(np.median(ct[brain])))
            metrics[method]["brain > 150 HU"].append(100.0 * float(np.mean(ct[brain] > 150)))
            metrics[method]["skull shell > 250 HU"].append(100.0 * float(np.mean(ct[shell] > 250)))
            metrics[method]["skull shell < -200 HU"].append(100.0 * float(np.mean(ct[shell] < -200)))
        z = _fullest(mk["brain"])
        ct = preds["model (mr-to-ct)"]
        shown = [unit_range(vol.array[z], *mr_window(vol.array, mk["head"])), unit_range(ct[z], -160, 240),
                 unit_range(ct[z], -1000, 1500), unit_range(preds["bulk density (baseline)"][z], -1000, 1500),
                 shell[z].astype(np.float32)]
        rows.append((case, [axial_view(img, vol.direction) for img in shown]))
    targets = []
    for method, model_id in models.items():
        model = {k: mean(v) for k, v in metrics[method].items()}
        per_case = metrics[method]
        why = (f"Per brain: median {', '.join(f'{v:.0f}' for v in per_case['brain median'])} HU, "
               f"{', '.join(f'{v:.1f}' for v in per_case['brain > 150 HU'])} % of brain voxels above 150 HU, "
               f"{', '.join(f'{v:.0f}' for v in per_case['skull shell > 250 HU'])} % of the skull shell above "
               f"250 HU.")
        who = "" if model_id == "mr-to-ct" else f" ({model_id})"
        targets += [
            Target(f"synthetic CT of real T1w{who}: brain median ≥ 0 HU", model["brain median"], 0.0, ">=", why),
            Target(f"synthetic CT of real T1w{who}: brain median < 60 HU", model["brain median"], 60.0, "<", why),
            Target(f"synthetic CT of real T1w{who}: < 2 % of brain voxels above 150 HU", model["brain > 150 HU"],
                   2.0, "<", why),
            Target(f"synthetic CT of real T1w{who}: skull present (≥ 15 % of the skull shell above 250 HU)",
                   model["skull shell > 250 HU"], 15.0, ">=", why)]
    intro = (
        "The real contrast-enhanced T1w brains (brain1, brain2) through mr-to-ct (CycleGAN) and, when installed, "
        f"{PAIRED_MRCT} (pix2pix trained on paired domain-randomised heads). No real CT of these heads exists, "
        "so the checks are physical: brain (the brain core of the rough mask, tumour left out) median 0-60 HU, few "
        "brain voxels above 150 HU (no bone inside the brain), and a skull: the share of the skull shell (head "
        "voxels 1-10 mm outside the brain mask: bone plus some scalp and CSF) above 250 HU, and below -200 HU (air "
        "where bone should be). Percentages are of voxels. Baseline: a three-class bulk-density CT from the T1w "
        "(brain 30 HU; head outside the brain 700 HU where dark, 0 HU elsewhere). Panel: T1w, synthetic CT in the "
        "brain window and the bone window, the baseline, the skull shell.")
    return SectionResult(title=title, intro=intro, metrics=metrics,
                            units={"brain median": "HU", "brain > 150 HU": "%", "skull shell > 250 HU": "%",
                                   "skull shell < -200 HU": "%"}, targets=targets,
                            panels=[save_real_panel(ctx, "mr_to_ct", rows, ["T1w", "sCT brain", "sCT bone",
                                                                            "bulk density", "skull shell"])])


# --- super-resolution ---------------------------------------------------------------------------------------------
def on_grid(out: Volume, grid: Volume) -> np.ndarray:
    """``out`` on ``grid``'s voxels: as is when the geometry matches, else linearly resampled (noted by caller)."""
    if out.same_geometry(grid, atol=1e-4):
        return out.array
    import SimpleITK as sitk

    from ..io import from_volume

    return sitk.GetArrayFromImage(sitk.Resample(from_volume(out), from_volume(grid), sitk.Transform(),
                                                sitk.sitkLinear, 0.0, sitk.sitkFloat32))


@REAL_SECTIONS.register("superres")
def superres(ctx: RealContext) -> Any:
    from ..models.registry import get_model

    title = "Super-resolution ×2 of real MR degraded ×2 (mr-sr-x2-throughplane, mr-sr-x2-inplane)"
    if (m := missing_models(title, list(SR_MODELS))) is not None:
        return m
    metrics: dict[str, dict[str, list[float]]] = {}
    targets, rows, regridded, detail, kept = [], [], [], [], []
    for model_id, (kind, scale, _) in SR_MODELS.items():
        mine, base = metrics.setdefault(model_id, {}), metrics.setdefault(f"B-spline ({kind})", {})
        base_kept = metrics.setdefault(f"B-spline, measured data kept ({kind})", {})
        card = get_model(model_id)
        want = card.input.get("contrast")  # none: a contrast-agnostic model, never forced
        degradation = card.extras["degradation"]  # degraded as the model was trained, and kept by it
        scaled = scale.index(2)  # the first (z, y, x) axis the degradation coarsens
        degraded = []  # per case, the degraded voxel size along it (mm)
        for case in SR_CASES:
            hr = ctx.image(case)
            low, grid = superres_pair(hr, scale, degradation)
            degraded.append(low.spacing[::-1][scaled])
            result = ctx.run("superres", low, model_id, case, **(_forced(hr, want) if want else {}))
            out = on_grid(result.volume, grid) if result is not None else np.full(grid.shape, np.nan)
            if result is not None and not result.volume.same_geometry(grid, atol=1e-4):
                regridded.append(f"{model_id} on {case}")
            if result is not None and result.provenance.get("input_detail"):
                detail.append(f"{model_id} on {case}")
            if result is not None and result.provenance.get("consistency"):
                kept.append(f"{model_id} on {case}")
            spline = bspline_upsample(low, grid)
            spline_kept = consistent_with(spline, low.array, scale, degradation)  # what keeping the data alone gives
            head = real_masks.mr_head(grid.array)
            lo, hi = mr_window(grid.array, head)
            for store, pred in ((mine, out), (base, spline), (base_kept, spline_kept)):
                ok = bool(np.isfinite(pred).all())
                store.setdefault("PSNR", []).append(psnr(pred, grid.array, head, hi - lo) if ok else np.nan)
                store.setdefault("SSIM", []).append(ssim(pred, grid.array, head, hi - lo) if ok else np.nan)
            if case == "brain1":  # through-plane: a coronal cut shows the slice direction
                images = (_on_grid_nearest(low, grid), out, spline, grid.array)
                z = _fullest(head)
                # coronal cut (z, x): save_panel's bottom-up rows put superior on top
                cuts = [a[:, a.shape[1] // 2] if kind == "throughplane" else axial_view(a[z], grid.direction)
                        for a in images]
                rows.append((kind, [unit_range(c, lo, hi) for c in cuts]))
        mine["gain over B-spline"] = [a - b for a, b in zip(mine["PSNR"], base["PSNR"])]
        base["gain over B-spline"] = [0.0] * len(base["PSNR"])
        base_kept["gain over B-spline"] = [a - b for a, b in zip(base_kept["PSNR"], base["PSNR"])]
        why = (f"Gain over B-spline per case ({', '.join(SR_CASES)}): "
               f"{', '.join(f'{g:+.2f}' for g in mine['gain over B-spline'])} dB. "
               + _sr_trained_on(model_id) + "; here contrast-enhanced T1w and a 4 mm T2w EPI, degraded to "
               + " / ".join(f"{mm:.3g}" for mm in degraded)
               + f" mm {'slices' if kind == 'throughplane' else 'pixels'}, with their own noise. Keeping the "
               f"input's measured data alone (B-spline, measured data kept) gains "
               f"{mean(base_kept['gain over B-spline']):+.2f} dB.")
        targets.append(Target(f"{model_id} on real MR degraded ×2: PSNR ≥ B-spline + {SR_TARGET_DB} dB",
                              mean(mine["PSNR"]), mean(base["PSNR"]) + SR_TARGET_DB, ">=", why))
    intro = (
        f"Real volumes ({', '.join(SR_CASES)}) degraded ×2 as in training — through-plane: "
        f"{SR_MODELS['mr-sr-x2-throughplane'][2]}; in-plane: {SR_MODELS['mr-sr-x2-inplane'][2]} — then restored "
        f"onto the original grid (same field of view) by the model and by cubic B-spline (SimpleITK). Reference: the "
        f"real volume itself; PSNR/SSIM over the head, data range its 0.5-99.5 percentile range. "
        + " ".join(f"{m}: {_sr_trained_on(m)}." for m in SR_MODELS)
        + " Voxels (x, y, z): " + "; ".join(f"{case} " + " x ".join(f"{mm:.3g}" for mm in ctx.image(case).spacing)
                                            + " mm" for case in SR_CASES) + ". "
        + (f"Output grids differed from the reference grid and were resampled linearly for: {', '.join(regridded)}."
           if regridded else "Every output lay exactly on the reference grid.")
        + (f" Resampled into the model's voxel size, with the detail finer than it added back from a cubic B-spline "
           f"of the input on its own grid (the engine's default, `input_detail`): {', '.join(detail)}."
           if detail else " No input was resampled into a model's voxel size.")
        + (f" The output kept the input's measured data (the engine's default, `consistency`: degraded as the card "
           f"says, it gives the input back): {', '.join(kept)}; the rows 'B-spline, measured data kept' do the same to "
           f"B-spline, i.e. what keeping the data gives without the model." if kept else
           " No output was made consistent with the input's measured data.")
        + " Gain over B-spline per case (" + ", ".join(SR_CASES) + "): "
        + "; ".join(f"{m} " + ", ".join(f"{g:+.3f}" for g in metrics[m]["gain over B-spline"]) + " dB"
                    for m in SR_MODELS) + "."
        + " Panel (brain1): degraded input (nearest), model, B-spline, original; coronal cut for through-plane.")
    return SectionResult(title=title, intro=intro, metrics=metrics,
                            units={"PSNR": "dB", "SSIM": "", "gain over B-spline": "dB"}, targets=targets,
                            panels=[save_real_panel(ctx, "superres", rows, ["degraded", "model", "B-spline",
                                                                            "original"])],
                            info={"regridded": regridded, "input_detail": detail, "consistency": kept})


def _sr_trained_on(model_id: str) -> str:
    """What the installed super-resolution model was trained on, from its card: one contrast (other contrasts then
    run forced) or any."""
    from ..models.registry import get_model

    card = get_model(model_id)
    contrast = card.input.get("contrast")
    if contrast:
        return f"version {card.version}, trained on {contrast} only (other contrasts run forced)"
    photos = ((card.data.get("training") or {}).get("data") or {}).get("natural_fraction")
    return (f"version {card.version}, trained on domain-randomised heads of any contrast"
            + (f" (and, for {photos:.0%} of the crops of its last stage, photographs: data.natural_images)"
               if photos else ""))


def _on_grid_nearest(low: Volume, grid: Volume) -> np.ndarray:
    import SimpleITK as sitk

    from ..io import from_volume

    return sitk.GetArrayFromImage(sitk.Resample(from_volume(low), from_volume(grid), sitk.Transform(),
                                                sitk.sitkNearestNeighbor, 0.0, sitk.sitkFloat32))


# --- anomaly -------------------------------------------------------------------------------------------------------
@REAL_SECTIONS.register("anomaly")
def anomaly(ctx: RealContext) -> Any:
    from ..models.registry import get_model
    from ..tasks.anomaly import anomaly_region

    title = "Anomaly maps on real brains (brain-anomaly-t1, brain-anomaly-t2): real tumours, normal brain"
    if (m := missing_models(title, sorted(set(ANOMALY_MODELS.values())))) is not None:
        return m
    names = ("voxel AUROC", "tumour flagged", "normal brain flagged")
    methods = ("model (restoration GAN of the scan's contrast)", "intensity z-score (baseline)")
    metrics: dict[str, dict[str, list[float]]] = {m: {k: [] for k in names} for m in methods}
    rows = []
    cases: dict[str, list[str]] = {k: [] for k in names}  # which cases each metric's values are of
    unseen: list[str] = []  # per tumour case: how much of the tumour lies where the map is zero (not made)
    ends: list[str] = []  # per case: how much of the normal brain flagged lies in the brain's outermost slices
    hyper: list[str] = []  # per case: how much of the normal brain's highest map lies on its brightest tissue
    for case in ANOMALY_CASES:
        vol, mk = ctx.image(case), masks(ctx, case)
        brain, tumour = mk["brain"], mk["tumour"] & mk["brain"]
        contrast = "T1w" if vol.metadata.get("contrast") == "T1w" else "T2w"
        result = ctx.run("anomaly", vol, ANOMALY_MODELS[contrast], case, **_forced(vol, contrast))
        if result is not None:
            amap, flagged = result.outputs["anomaly_map"].array, result.outputs["mask"].array > 0
        else:
            amap, flagged = np.full(vol.shape, np.nan, np.float32), np.zeros(vol.shape, bool)
        zmap = zscore_map(vol.array, brain, vol.spacing)
        if tumour.any() and result is not None:  # where the returned map is zero: outside the engine's brain mask
            # (made in the model's frame; the one found here, on the input grid, approximates it) or in its rim
            outside = tumour & ~anomaly_region(vol, get_model(ANOMALY_MODELS[contrast]))
            unseen.append(f"{case} {100.0 * (tumour & (amap == 0)).sum() / tumour.sum():.0f} % (the brain mask "
                          f"found on the input grid leaves out {100.0 * outside.sum() / tumour.sum():.0f} %)")
        applies = {"voxel AUROC": bool(tumour.any()), "tumour flagged": bool(tumour.any()),
                   "normal brain flagged": True}  # a lesion-free brain scores only what it flags
        for metric, ok in applies.items():
            if ok:
                cases[metric].append(case)
        if (share := hyperintense_share(vol.array, amap, brain & ~tumour)) is not None:
            hyper.append(f"{case} {share[0]:.0f} % ({share[1]:.0f} % of all normal brain)")
        if (false_pos := flagged & brain & ~tumour).any():
            ends.append(f"{case} {100.0 * (false_pos & end_slices(brain, vol.spacing)).sum() / false_pos.sum():.0f} %")
        for method, mp, flag in ((methods[0], amap, flagged), (methods[1], zmap, zmap > ZSCORE_THRESHOLD)):
            failed = not np.isfinite(mp).all()  # the engine refused or failed: shown as "–"
            if applies["voxel AUROC"]:
                metrics[method]["voxel AUROC"].append(np.nan if failed else auroc(mp[brain], tumour[brain]))
                metrics[method]["tumour flagged"].append(np.nan if failed else 100.0 * float(flag[tumour].mean()))
            metrics[method]["normal brain flagged"].append(
                np.nan if failed else 100.0 * float(flag[brain & ~tumour].mean()))
        z = _fullest(tumour) if tumour.any() else _fullest(brain)
        img = unit_range(vol.array[z], *mr_window(vol.array, brain))
        top = float(np.nanpercentile(amap[brain], 99.5)) if np.isfinite(amap).any() else 1.0
        shown = [real_masks_outline(img, tumour[z]), unit_range(amap[z], 0.0, top), flagged[z].astype(np.float32),
                 unit_range(zmap[z], 0.0, 2 * ZSCORE_THRESHOLD)]
        rows.append((case, [axial_view(a, vol.direction) for a in shown]))
    model = {k: mean(v) for k, v in metrics[methods[0]].items()}
    base = {k: mean(v) for k, v in metrics[methods[1]].items()}
    why = (f"Voxel AUROC per tumour case: {', '.join(f'{v:.3f}' for v in metrics[methods[0]]['voxel AUROC'])} "
           f"(z-score: {', '.join(f'{v:.3f}' for v in metrics[methods[1]]['voxel AUROC'])}); at the card's threshold "
           f"the model flags {model['tumour flagged']:.1f} % of tumour voxels and "
           f"{model['normal brain flagged']:.2f} % of normal brain, the z-score {base['tumour flagged']:.1f} % and "
           f"{base['normal brain flagged']:.2f} %. Of the normal brain the model flags, the share in the first and "
           f"last slice of the brain along the scan's thickest axis (where a thick slice cuts skull and brain "
           f"tangentially): {', '.join(ends) or 'none flagged'}. Of the normal brain's highest map (its top 1 %), "
           f"the share on or next to (one voxel in-plane) its brightest tissue on the input (at or above its 99th "
           f"percentile; on contrast T1w: enhancing vessels, dural sinuses, choroid plexus, which the shipped "
           f"model was not trained with): {', '.join(hyper)}. Tumour where the map is zero (outside the brain "
           f"mask or in the rim the card leaves out): "
           f"{'; '.join(unseen)}. The models were trained on domain-randomised phantom heads only.")
    targets = [Target(f"on real tumours: voxel AUROC in the brain ≥ {REAL_AUROC_TARGET}", model["voxel AUROC"],
                      REAL_AUROC_TARGET, ">=", why),
               Target("on real tumours: voxel AUROC above the intensity z-score", model["voxel AUROC"],
                      base["voxel AUROC"], ">", why),
               Target(f"normal-appearing brain above threshold < {REAL_FLAGGED_TARGET} %",
                      model["normal brain flagged"], REAL_FLAGGED_TARGET, "<", why)]
    intro = (
        "brain1 and brain2 (contrast-enhanced T1w with tumours) through brain-anomaly-t1, and t2_brain (a real "
        "T2-weighted brain without lesions, 4 x 4 x 5 mm) through brain-anomaly-t2: each scan through the model of "
        "its contrast, not forced. Voxel AUROC of the map for the tumour label over the voxels of the rough brain "
        "mask; 'flagged' = the engine's candidate mask at the card's threshold, as % of tumour and of normal brain "
        "voxels (brain minus tumour). "
        f"Baseline: the image's own robust z-score |x − median| / (1.4826 MAD) over the brain, smoothed 2 mm, "
        f"flagged above {ZSCORE_THRESHOLD:g} (no training). Panel: image with the tumour outlined, anomaly map, "
        "candidate mask, z-score map.")
    return SectionResult(title=title, intro=intro, metrics=metrics,
                            units={"voxel AUROC": "", "tumour flagged": "%", "normal brain flagged": "%"},
                            targets=targets, info={"cases": cases},
                            panels=[save_real_panel(ctx, "anomaly", rows, ["image + tumour", "anomaly map",
                                                                           "candidate mask", "z-score"])])


def hyperintense_share(image: np.ndarray, amap: np.ndarray, normal: np.ndarray) -> tuple[float, float] | None:
    """(% of the ``normal`` voxels whose map is in their top 1 % (and above 0) that lie on or next to (one voxel
    in-plane) the ``normal`` tissue brightest on ``image`` (at or above its 99th percentile), % of all ``normal`` voxels
    that do: the share by chance), or None (no map)."""
    values = amap[normal]
    if not values.size or not np.isfinite(values).all():
        return None
    highest = normal & (amap >= np.percentile(values, 99.0)) & (amap > 0)
    if not highest.any():
        return None
    bright = normal & (image >= np.percentile(image[normal], 99.0))
    near = ndimage.binary_dilation(bright, structure=np.ones((1, 3, 3), bool))
    return 100.0 * float((highest & near).sum() / highest.sum()), 100.0 * float(near[normal].mean())


def end_slices(region: np.ndarray, spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    """``region`` (z, y, x) in its first and last slice along the array axis with the largest voxel spacing."""
    axis = int(np.argmax(spacing_xyz[::-1]))
    occupied = np.flatnonzero(np.moveaxis(region, axis, 0).reshape(region.shape[axis], -1).any(1))
    out = np.zeros_like(region)
    if occupied.size:
        index = [slice(None)] * 3
        for k in (occupied[0], occupied[-1]):
            index[axis] = k
            out[tuple(index)] = region[tuple(index)]
    return out


def real_masks_outline(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` (scaled to [0, 1]) with the outline of ``mask`` drawn in white."""
    edge = mask & ~ndimage.binary_erosion(mask)
    return np.where(edge, 1.0, image).astype(np.float32)
