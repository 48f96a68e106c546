"""Anomaly maps: how far the input is from the model's reconstruction of healthy anatomy.

The model is any network that returns a healthy-looking version of its input: the shipped restoration GANs
(``unet2d``, :mod:`MedGANLogic.train.restore`: r = G(x)) or f-AnoGAN (``fanogan2d``: r = G(E(x))). The map, in the
model's frame, for a normalised input x and the network's healthy reconstruction r:

1. **brain mask** from the input itself: scalp, skull, orbits and neck are not brain, and the map is zero there.
   A card naming a brain extraction model (``extras.brain_mask_model``, e.g. the shipped ``brain-mask``, a U-Net
   trained on domain-randomised heads of any contrast) takes the brain from it (:func:`learned_brain`: its
   largest 3D part, holes filled per slice); other cards, or where that model is not installed, the morphological
   :func:`MedGANLogic.normalization.brain_mask` (intensity and morphology, any MR contrast), which cannot tell a
   dark tumour core at the brain's surface from the skull and lets scalp or orbit through where they touch the
   brain. A card calibrated with one is calibrated for that mask only;
2. **intensity matching**: per slice, r is shifted so that the median of x - r inside the brain is 0, giving r'
   (the generator does not reproduce absolute intensities exactly; a median ignores lesions);
   **detrending** (``extras.residual_detrend``, the ``detrend`` option; 0: none): a polynomial of that degree in
   the voxel's position, fitted robustly to x - r' over the brain less its rim (:func:`detrend`), is taken out of
   it: a smooth shading the restoration evens out (a bias field, a coil's bright periphery, a bright centre at
   3 T) would otherwise lift the z-score of whole lobes; a lesion of a few centimetres, which a field of low degree
   cannot follow, stays. The calibration holds for the degree it was measured with;
3. **calibration**: the signed residual x - r' is turned into a z-score by the residual's median and robust
   spread that normal (lesion-free) validation subjects show at the same reconstruction intensity
   (``extras.calibration``: bin edges over r', a median and a scale per bin). Where the model reconstructs
   normal tissue poorly (CSF, edges), normal residuals are large and the z-score stays small; a lesion's residual
   is large where the reconstruction shows healthy tissue, so it stands out;
   a calibration with ``grad_edges`` (made when ``extras.calibration_gradient_bins`` is set) bins the normal residual
   by the reconstruction's in-plane gradient magnitude as well (:func:`restoration_gradient`; ``median`` and
   ``scale`` are then tables, intensity bin x gradient bin): a blurred restoration misses most where it changes
   fastest (cortex against sulci, ventricle walls), so the same residual means less there than in the smooth white
   matter a lesion is restored to;
   when the calibration records the z-score's robust spread over normal validation brains
   (``calibration.spread``: 1.4826 MAD inside the brain, the median over those subjects), a scan whose z-scores
   spread wider (a scanner, resolution or contrast unlike the training data: its normal tissue is reconstructed
   less well) has them divided by the ratio, never multiplied: ``z / max(1, spread_scan / spread)``. Lesions are a
   minority of the brain and move a median absolute deviation little; the ratio is reported (``spread_ratio``);
4. the z-score's positive part (``extras.residual_sign`` "positive": hyperintense lesions, T2w/FLAIR), negative
   part ("negative") or magnitude ("both", the default: contrast T1w tumours have bright rims and dark cores),
   Gaussian-smoothed (``smoothing_mm``, default 2 mm) inside the brain and zero outside it;
5. the brain's outer ``edge_mm`` (``extras.edge_mm``, default 0: none) is left out of the map (zero there, and the
   smoothing takes nothing from it): where the mask meets CSF, skull and scalp the residual of a normal brain is
   largest (partial volume, an imperfect mask), and on validation subjects nearly all of a normal brain's voxels
   above threshold lay within 4 mm of the mask's edge. Slices thicker than ``edge_mm`` lose their outermost brain
   slice at the top and bottom of the brain (it straddles the brain's surface; :func:`inner_region`). Lesions
   nearer the brain's surface than ``edge_mm`` are not mapped there: the map's one blind spot, stated on the card.
   A card whose calibration also holds bins for that rim (``calibration.rim``, made when ``extras.rim_calibrated`` is
   true: the residuals of normal validation brains' rims, larger than inside) maps the rim too, each part against
   its own normal residuals (:func:`region_z`); no shipped card does (tried on validation, recipe
   ``brain-anomaly-t1``).

**Slice thickness**: the calibration, threshold and case score are measured on validation phantoms at 2 mm
(``extras.calibration_slice_mm``). A thick-slice scan (5-7 mm axial slices are common in clinical T1w) holds
partial volume through the slice that the model restores less well: at 6 mm the T1w model flagged 0.75 % of
normal validation brains and gave them case scores near 10. ``extras.slice_calibrations`` holds the same three
measured on the validation phantoms made thick (2 mm slices averaged in twos and threes: 4 and 6 mm); the engine
uses the set whose slice thickness is nearest (log scale) to the scan's slice spacing in the model's frame, and says
which (a plan note; ``calibration_slice_mm`` in the map's metadata and the run's extras).

Cards without ``extras.calibration`` get the uncalibrated |x - r'| (steps 1, 2, 4 and 5). The candidate-lesion mask
thresholds the map at ``threshold`` (default: the card's ``extras.threshold``, chosen on validation subjects).
The **case score** is a calibrated statistic of the map as a z-score against the normal validation subjects
(``extras.case_score``: statistic, mean, std): with ``statistic: fraction_above_threshold`` the fraction of the
brain above the card's threshold, else the map's ``percentile`` (default 99.9) in the brain; about 0 for a normal
brain, well above 2 for a brain the model finds abnormal. Without mean and std it is the raw statistic.

**Self-ensemble**: the healthy reconstruction r may be the network averaged over flips of each slice (the card's
``extras.self_ensemble``, the ``ensemble`` option; :mod:`MedGANLogic.models.ensemble`). What the network gets wrong
in normal tissue depends partly on orientation and averages out; what a lesion leaves in the residual (the network
restores healthy tissue there whichever way the slice lies) does not. A calibration holds for the passes it was
measured with: the shipped cards were calibrated with theirs, and a different ``ensemble`` changes the normal
residual the z-score assumes.

Option ``residual=True`` (used to calibrate a model) outputs the signed residual x - r' (zero outside the brain)
as the map and r' as ``reconstruction`` instead, both in the normalised range.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import MedGANWarning
from ..modality import is_ct
from ..normalization import brain_mask, ellipsoid, fill_holes_per_slice
from . import TaskContext, output_metadata, slice_axis_of

SIGNS = ("both", "positive", "negative")
SLICE_SET_KEYS = ("calibration", "threshold", "case_score")  # what a set of extras.slice_calibrations replaces
MIN_SLICE_VOXELS = 50  # fewer brain voxels in a slice: no intensity matching there


def match_intensity(x: np.ndarray, recon: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``recon`` (z, y, x) shifted slice by slice so that its median residual to ``x`` inside ``brain`` is 0.

    An offset only: a fitted slope would amplify every texture a blurred reconstruction misses. The median is
    not pulled by lesions, which cover a minority of a slice's brain.
    """
    out = recon.astype(np.float32, copy=True)
    for k in range(x.shape[0]):
        m = brain[k]
        if m.sum() >= MIN_SLICE_VOXELS:
            out[k] += float(np.median(x[k][m] - recon[k][m]))
    return out


DETREND_SAMPLES = 200_000  # at most this many voxels (an even stride through the fit region) fit the smooth field
DETREND_CHUNK = 1_000_000  # the field is evaluated over the brain this many voxels at a time (bounded memory)


def detrend(residual: np.ndarray, region: np.ndarray, fit: np.ndarray, spacing_zyx, degree: int,
            rounds: int = 4, cut: float = 2.5) -> np.ndarray:
    """``residual`` (z, y, x) less a smooth field fitted to it over ``fit``: a polynomial of ``degree`` in the
    voxel's position (mm, centred and scaled over ``fit``), by least squares refitted ``rounds`` times on the voxels
    within ``cut`` robust spreads of the last fit (a lesion is a minority of the brain and falls out of the fit);
    subtracted over ``region``, zero outside. Unchanged for ``degree`` 0 or an empty ``fit``.

    A smooth difference between a scan and its restoration (a bias field the restoration evens out, a coil's bright
    centre) is not an anomaly, but it lifts the z-score of whole lobes; a polynomial of low degree cannot follow a
    lesion of a few centimetres, so the lesion stays in the residual."""
    powers = [(a, b, c) for a in range(degree + 1) for b in range(degree + 1 - a) for c in range(degree + 1 - a - b)]
    if degree <= 0 or fit.sum() < 20 * len(powers):  # too few voxels to fit the field: left as it is
        return residual
    pos = np.nonzero(fit)
    step = max(1, pos[0].size // DETREND_SAMPLES)
    mm = [p[::step].astype(np.float64) * s for p, s in zip(pos, spacing_zyx)]
    centre = [m.mean() for m in mm]
    half = max(max(m.max() - m.min() for m in mm) / 2.0, 1e-6)

    def design(coords: list[np.ndarray]) -> np.ndarray:
        u = [(c - m) / half for c, m in zip(coords, centre)]
        return np.stack([u[0] ** a * u[1] ** b * u[2] ** c for a, b, c in powers], axis=1)

    a_fit, y = design(mm), residual[pos][::step].astype(np.float64)
    keep = np.ones(y.size, bool)
    for _ in range(rounds):
        coef = np.linalg.lstsq(a_fit[keep], y[keep], rcond=None)[0]
        err = y - a_fit @ coef
        spread = robust_spread(err[keep])
        if spread <= 0:
            break
        keep = np.abs(err) <= cut * spread
    where = np.nonzero(region)
    out = np.zeros_like(residual)
    for start in range(0, where[0].size, DETREND_CHUNK):  # in chunks: the design matrix of a native-resolution
        part = tuple(w[start:start + DETREND_CHUNK] for w in where)  # brain would take gigabytes
        field = design([w.astype(np.float64) * s for w, s in zip(part, spacing_zyx)]) @ coef
        out[part] = residual[part] - field.astype(residual.dtype)
    return out


GRADIENT_SIGMA_PX = 1.0  # restoration_gradient: the Gaussian derivative's sigma, in pixels of the model's frame


def restoration_gradient(recon: np.ndarray, slice_axis: int = 0) -> np.ndarray:
    """The in-plane gradient magnitude of the reconstruction ``recon`` (z, y, x; the slices the 2D model restored
    lie across ``slice_axis``), per pixel of the model's frame, by Gaussian derivatives of sigma
    :data:`GRADIENT_SIGMA_PX`: where the healthy reconstruction changes fast (tissue boundaries) and where it is
    smooth. The anomaly map takes it from the reconstruction with -1 outside the brain (the calibration's, too)."""
    sigma = [GRADIENT_SIGMA_PX] * 3
    sigma[slice_axis] = 0.0
    data = recon.astype(np.float32, copy=False)
    parts = [ndimage.gaussian_filter(data, sigma, order=[int(a == axis) for a in range(3)])
             for axis in range(3) if axis != slice_axis]
    return np.hypot(*parts).astype(np.float32)


def calibrated_z(residual: np.ndarray, recon: np.ndarray, calibration: dict[str, Any],
                 gradient: np.ndarray | None = None) -> np.ndarray:
    """The residual as a z-score against normal residuals at the same reconstruction intensity (see the docstring).

    ``calibration``: {"edges": n + 1 increasing bin edges over the reconstruction, "median": n, "scale": n}; with
    "grad_edges" (m + 1 edges over :func:`restoration_gradient`) "median" and "scale" are n x m tables and
    ``gradient`` (that of ``recon``, same shape) is needed.
    """
    edges = np.asarray(calibration["edges"], np.float64)
    median = np.asarray(calibration["median"], np.float32)
    scale = np.maximum(np.asarray(calibration["scale"], np.float32), 1e-6)
    idx = np.clip(np.searchsorted(edges, recon, side="right") - 1, 0, median.shape[0] - 1)
    if "grad_edges" not in calibration:
        return (residual - median[idx]) / scale[idx]
    if gradient is None:
        raise ValueError("this calibration bins by the reconstruction's gradient (grad_edges): pass gradient")
    grad_edges = np.asarray(calibration["grad_edges"], np.float64)
    gdx = np.clip(np.searchsorted(grad_edges, gradient, side="right") - 1, 0, median.shape[1] - 1)
    return (residual - median[idx, gdx]) / scale[idx, gdx]


def robust_spread(values: np.ndarray) -> float:
    """1.4826 x the median absolute deviation of ``values`` (0 for none)."""
    if values.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def scan_z(residual: np.ndarray, recon: np.ndarray, calibration: dict[str, Any],
           region: np.ndarray, gradient: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The calibrated z-score of ``residual`` divided by max(1, its spread ratio over ``region``), and that ratio
    (how much wider the z-scores spread than over normal validation brains; 1.0 without ``calibration.spread``).
    ``gradient``: see :func:`calibrated_z`."""
    z = calibrated_z(residual, recon, calibration, gradient)
    if not calibration.get("spread") or not region.any():
        return z, 1.0
    ratio = robust_spread(z[region]) / float(calibration["spread"])
    return z / max(1.0, ratio), ratio


def region_z(residual: np.ndarray, recon: np.ndarray, calibration: dict[str, Any], inner: np.ndarray,
             region: np.ndarray, gradient: np.ndarray | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """The calibrated z-score of ``residual`` (:func:`scan_z` over ``inner``), its spread ratio, and where the map is
    made: ``inner``; or, when the calibration holds a second set of bins for the brain's outer rim
    (``calibration.rim``: the same form, measured on the rims of normal validation brains, where residuals are
    larger), the rim (``region`` less ``inner``) scored by those bins and divided by the same ratio, and the map made
    over the whole ``region``: a lesion at the brain's surface is then mapped, against what a normal rim shows.
    ``gradient``: see :func:`calibrated_z`."""
    z, ratio = scan_z(residual, recon, calibration, inner, gradient)
    rim_bins = calibration.get("rim")
    if not rim_bins:
        return z, ratio, inner
    rim = region & ~inner
    z = np.where(rim, calibrated_z(residual, recon, rim_bins, gradient) / max(1.0, ratio), z)
    return z, ratio, region


def signed_part(z: np.ndarray, sign: str) -> np.ndarray:
    if sign == "positive":
        return np.maximum(z, 0.0)
    if sign == "negative":
        return np.maximum(-z, 0.0)
    if sign == "both":
        return np.abs(z)
    raise ValueError(f"residual_sign must be one of {', '.join(SIGNS)}; got {sign!r}")


def smooth_inside(values: np.ndarray, mask: np.ndarray, sigma: list[float]) -> np.ndarray:
    """Gaussian smoothing of ``values`` over ``mask`` only (normalised convolution: no bleeding in from outside)."""
    if not any(s > 0 for s in sigma):
        return np.where(mask, values, 0.0).astype(np.float32)
    m = mask.astype(np.float32)
    num = ndimage.gaussian_filter(np.where(mask, values, 0.0).astype(np.float32), sigma)
    den = ndimage.gaussian_filter(m, sigma)
    return np.where(mask, num / np.maximum(den, 1e-3), 0.0).astype(np.float32)


def inner_region(region: np.ndarray, spacing_zyx: list[float] | tuple[float, ...], edge_mm: float) -> np.ndarray:
    """The voxels of ``region`` (z, y, x) farther than ``edge_mm`` from any voxel outside it (the array's border
    counts as outside), and never the outermost voxel along an axis whose spacing exceeds ``edge_mm``: a voxel
    thicker than the rim straddles the region's surface (a thick slice cuts through skull and brain at the top and
    bottom of the head), so it is partial volume however far its centre lies from the outside voxel's. ``region``
    itself for ``edge_mm`` <= 0."""
    if edge_mm <= 0 or not region.any():
        return region
    # an erosion by the voxel offsets within edge_mm (the voxels a distance transform puts farther than edge_mm from
    # the outside, test_anomaly, several times faster), and by one step along every axis (the outermost voxels)
    far = ndimage.binary_erosion(region, structure=ellipsoid(edge_mm, spacing_zyx), border_value=0)
    return far & ndimage.binary_erosion(region, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def for_slices(extras: dict[str, Any], slice_mm: float) -> dict[str, Any]:
    """``extras`` with the calibration set (``calibration``, ``threshold``, ``case_score``) measured at the slice
    thickness nearest to ``slice_mm`` (log scale): the card's own (``calibration_slice_mm``, default 2 mm) or one of
    ``slice_calibrations``; ``calibration_slice_mm`` says which (see the module docstring). A card without a
    calibration is returned as it is."""
    if "calibration" not in extras:
        return dict(extras)
    own = {"slice_mm": float(extras.get("calibration_slice_mm", 2.0))}
    sets = [own, *extras.get("slice_calibrations", [])]
    best = min(sets, key=lambda s: abs(math.log(max(float(slice_mm), 1e-6) / float(s["slice_mm"]))))
    out = {k: v for k, v in extras.items() if k != "slice_calibrations"}
    out.update({k: best[k] for k in SLICE_SET_KEYS if k in best})
    out["calibration_slice_mm"] = float(best["slice_mm"])
    return out


def slice_spacing(volume: Any, card: Any, options: dict[str, Any]) -> float:
    """The spacing (mm) of ``volume`` along the axis the model slices (the slice thickness it sees)."""
    return float(volume.spacing[::-1][slice_axis_of(card, options)])


def plan_notes(card: Any, header: Any, options: dict[str, Any]) -> list[str]:
    """The plan's notes: which calibration set a scan gets (``header``: its geometry in the model's frame;
    ``options``: the run's, for its slice axis), and a brain extraction model the card names but that is not
    installed."""
    notes = []
    named = card.extras.get("brain_mask_model")
    if named and mask_model(card) is None:
        notes.append(f"brain extraction model {named!r} is not installed: the brain is found by intensity and "
                     f"morphology instead, for which this card's calibration was not made; install {named} for "
                     f"the map the card describes")
    if not card.extras.get("slice_calibrations"):
        return notes
    slice_mm = slice_spacing(header, card, options)
    chosen = for_slices(card.extras, slice_mm)["calibration_slice_mm"]
    return notes + [f"anomaly map, threshold and case score calibrated at {chosen:g} mm slices, the nearest of the "
                    f"card's to this scan's {slice_mm:.2f} mm"]


def case_statistic(amap: np.ndarray, region: np.ndarray, percentile: float) -> float:
    """The ``percentile`` of ``amap`` over ``region`` (0 for an empty region)."""
    return float(np.percentile(amap[region], percentile)) if region.any() else 0.0


def learned_brain(volume, model: str, device: Any = "cpu", cancel: Any = None) -> np.ndarray:
    """The brain of an MR ``volume`` (z, y, x bool) by the brain extraction model ``model`` (id or folder), run
    through the engine (``segment``; its own frame, back on ``volume``'s grid): its largest 3D part, holes filled
    per slice (ventricles, a dark tumour core the network left out). ``cancel`` (the anomaly run's) is checked
    between the mask model's batches: a cancel while it runs raises CancelledError."""
    from ..pipeline import run

    # force: the anomaly model already accepted this scan (the mask model takes any MR contrast)
    labels = run("segment", volume, model=model, device=device, precision="fp32", force=True,
                 cancel=cancel).outputs["labels"]
    brain = labels.array > 0
    if not brain.any():
        return brain
    parts, count = ndimage.label(brain)
    if count > 1:
        brain = parts == 1 + int(np.argmax(ndimage.sum_labels(brain, parts, range(1, count + 1))))
    return fill_holes_per_slice(brain)


def mask_model(card: Any) -> Any:
    """The card of the brain extraction model ``card`` names (``extras.brain_mask_model``) when it is installed,
    else None (the morphological mask is used, and the run's notes say so: :func:`plan_notes`)."""
    from ..errors import ModelError
    from ..models.registry import get_model

    name = card.extras.get("brain_mask_model") if card is not None else None
    if not name:
        return None
    try:
        return get_model(name)
    except ModelError:
        return None


def brain_region(volume, card: Any = None, device: Any = "cpu", cancel: Any = None) -> tuple[np.ndarray, str]:
    """Where the map is made, (z, y, x) bool, and what it was taken from, in words (the map's metadata and the
    run's extras): the brain (MR; by ``card``'s brain extraction model where it names one and it is installed,
    else morphological) or the body above -500 HU (CT). ``cancel``: see :func:`learned_brain`."""
    if is_ct(volume):
        return ndimage.binary_closing(volume.array > -500, iterations=2), "CT body above -500 HU"
    model = mask_model(card)
    if model is None:
        return (brain_mask(volume.array, volume.spacing),
                "intensity and morphology (MedGANLogic.normalization.brain_mask)")
    return (learned_brain(volume, str(model.folder), device, cancel),
            f"{model.id} {model.version} (weights {model.sha256[:12]})")


def anomaly_region(volume, card: Any = None, device: Any = "cpu") -> np.ndarray:
    """Where the map is made (:func:`brain_region` without its description)."""
    return brain_region(volume, card, device)[0]


def make_outputs(ctx: TaskContext):
    extras_card = for_slices(ctx.card.extras, slice_spacing(ctx.volume, ctx.card, ctx.options))
    calibrated_at = {k: extras_card[k] for k in ("calibration_slice_mm",) if k in extras_card}
    x, recon = ctx.normalized, ctx.raw[0]
    region, source = brain_region(ctx.volume, ctx.card, ctx.device, ctx.cancel)
    matched = match_intensity(x, recon, region)
    residual = np.where(region, x - matched, 0.0).astype(np.float32)
    edge_mm = float(ctx.options.get("edge_mm", extras_card.get("edge_mm", 0.0)))
    inner = inner_region(region, ctx.volume.spacing[::-1], edge_mm)
    degree = int(ctx.options.get("detrend", extras_card.get("residual_detrend", 0)))
    residual = detrend(residual, region, inner, ctx.volume.spacing[::-1], degree)
    made_with = {"brain_mask": source, "detrend_degree": degree}  # on the map, the mask and the run's extras
    meta = output_metadata(ctx, kind="anomaly_map")
    restored = np.where(region, matched, -1.0).astype(np.float32)  # the healthy reconstruction, -1 outside the brain
    if ctx.options.get("residual"):
        meta.update({"modality": "anomaly", "units": "normalised residual"})
        outs = {"anomaly_map": ctx.volume.with_array(residual, metadata=meta),
                "reconstruction": ctx.volume.with_array(restored, metadata=dict(meta, units="normalised intensity"))}
        return outs, {"region_voxels": int(region.sum()), **made_with}
    calibration = extras_card.get("calibration")
    ratio, mapped = 1.0, inner
    if calibration:
        gradient = (restoration_gradient(restored, slice_axis_of(ctx.card, ctx.options))  # the slices it restored
                    if "grad_edges" in calibration else None)
        score_map, ratio, mapped = region_z(residual, restored, calibration, inner, region, gradient)
        units = "z-score of the residual"
    else:
        score_map, units = residual, "normalised residual"
    empty = {"empty_map": warn_unmapped(ctx.volume, edge_mm)} if region.any() and not mapped.any() else {}
    score_map = signed_part(score_map, str(extras_card.get("residual_sign", "both")))
    smoothing_mm = float(ctx.options.get("smoothing_mm", extras_card.get("smoothing_mm", 2.0)))
    sigma = [smoothing_mm / s for s in ctx.volume.spacing[::-1]] if smoothing_mm > 0 else [0.0, 0.0, 0.0]
    amap = smooth_inside(score_map, mapped, sigma)
    threshold = ctx.options.get("threshold", extras_card.get("threshold"))
    if threshold is None:
        threshold = case_statistic(amap, region, 99.0)
    threshold = float(threshold)
    case = dict(extras_card.get("case_score") or {})
    if case.get("statistic") == "fraction_above_threshold":
        stat = float((amap[region] > float(extras_card.get("threshold", threshold))).mean()) if region.any() else 0.0
    else:
        stat = case_statistic(amap, region, float(case.get("percentile", 99.9)))
    score = (stat - float(case["mean"])) / max(float(case["std"]), 1e-6) if "mean" in case else stat
    meta.update({"modality": "anomaly", "units": units, "case_score": score, "threshold": threshold,
                 "spread_ratio": round(ratio, 4), **calibrated_at, **made_with})
    amap_vol = ctx.volume.with_array(amap, metadata=meta)
    mask_meta = dict(meta, kind="mask", modality="mask", segment_names={1: "anomaly candidate"})
    mask = ctx.volume.with_array((amap > threshold).astype(np.uint8), metadata=mask_meta)
    extras = {"case_score": score, "threshold": threshold, "candidate_voxels": int(mask.array.sum()),
              "spread_ratio": ratio, **calibrated_at, **made_with, **empty}
    return {"anomaly_map": amap_vol, "mask": mask}, extras


def warn_unmapped(volume, edge_mm: float) -> str:
    """Warn (:class:`~MedGANLogic.errors.MedGANWarning`) that the map is zero everywhere although a brain was found:
    all of it lies in the rim the map leaves out (a few slices of a thick-sliced scan, a partial stack). Returns the
    message (the run's extras ``empty_map``: the Slicer panel's status line shows it)."""
    grid = " x ".join(f"{n} voxels of {s:.2f} mm" for n, s in zip(volume.shape[::-1], volume.spacing))
    message = (f"the anomaly map is empty: the brain found lies wholly in the rim the map leaves out (its outer "
               f"{edge_mm:g} mm, and its outermost slice along any axis with voxels thicker than that; this volume "
               f"has {grid} in the model's frame); give the scan with all its slices through the brain")
    warnings.warn(message, MedGANWarning, stacklevel=2)
    return message


def on_input_grid(outputs, extras, volume, card):
    """The map resampled onto the input grid: the mask is its threshold there, so mask == (map > threshold)."""
    if "mask" not in outputs:
        return extras
    amap, mask = outputs["anomaly_map"], outputs["mask"]
    mask.array = (amap.array > extras["threshold"]).astype(np.uint8)
    return dict(extras, candidate_voxels=int(mask.array.sum()))
