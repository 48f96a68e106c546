"""Calibrating an anomaly model on validation subjects: what its map and case score mean (see tasks/anomaly.py).

:func:`calibrate` runs the exported model on phantom validation subjects of its contrast (lesion-free twins and
subjects with lesions; the seeds are disjoint from training and test), with the passes of the card's
``extras.self_ensemble`` (recorded as ``validation.self_ensemble``: the calibration holds for them), and writes into
the card's ``extras``:

* ``calibration``: the normal residual per reconstruction intensity: bin edges at quantiles of the intensity-matched
  reconstruction inside the brain of the normal subjects (without its outer ``extras.edge_mm``, which the map leaves
  out), per bin the residual's median and robust spread
  (1.4826 MAD, at least ``min_scale``); with ``extras.calibration_gradient_bins`` n > 1 each bin is split again at
  n quantiles of the reconstruction's in-plane gradient magnitude (``grad_edges``; tasks/anomaly.py);
* ``calibration.spread``: the robust spread (1.4826 MAD) of the z-scores inside a normal brain, the median over the
  normal subjects: the engine divides a scan's z-scores by how much wider they spread (never multiplies);
* ``residual_sign``: of "positive" and "both", the one whose smoothed map gives the higher mean Dice on the lesion
  subjects at its best threshold (hyperintense lesions on T2w favour "positive");
* ``threshold``: the threshold maximising mean Dice on the lesion subjects, from the engine's own maps, raised where
  needed to the level that at most ``NORMAL_FLAGGED`` (0.1 %) of the normal subjects' brain voxels exceed: a
  candidate mask must stay nearly empty on a normal brain even where the lesions are too faint for Dice to say
  where to cut (phantom T1w);
* ``case_score``: the fraction of the brain above that threshold, its mean and standard deviation over the normal
  subjects (the engine reports a case's fraction as a z-score against them; the spread is at least 10 % of the
  mean, as four subjects estimate it roughly);
* ``validation``: the figures behind each choice.

:func:`calibrate_slices` measures the calibration, threshold and case score again on the same validation phantoms
made thick-sliced (their 2 mm slices averaged in twos and threes: 4 and 6 mm, a box slice profile) and stores them
as ``extras.slice_calibrations``, for scans with thick slices (tasks/anomaly.py ``for_slices``); the residual sign
stays the one chosen at 2 mm.

:func:`check_case_score` measures how well the case score separates phantoms with lesions from their lesion-free
twins on further seeds (default 1010-1109: outside the training 0-39, validation 1000-1009 and test 2000-2009
splits): ``extras.validation.case_auroc``. The test split holds only ten such pairs.

    python -m MedGANLogic.train.anomaly_calibration MODEL_FOLDER --contrast T2w [--slices-mm 4 6] [--check-case 100]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

CASE_STATISTIC = "fraction_above_threshold"
CHECK_SEEDS = range(1010, 1110)  # check_case_score: phantom seeds outside the train, validation and test splits
SLICES_MM = (4.0, 6.0)  # the thick-slice calibration sets (calibrate_slices): validation slices averaged to these
NORMAL_FLAGGED = 0.001  # the most of a normal validation brain the stored threshold may flag


def phantom_subject(seed: int, contrast: str, healthy: bool, spacing_mm: float) -> tuple[Any, np.ndarray]:
    """(the phantom subject ``seed``'s ``contrast`` image as a Volume of ``spacing_mm`` voxels, its lesion mask); with
    ``healthy`` its lesion-free twin (the mask then empty)."""
    from ..orientation import TRAINING_DIRECTION
    from ..volume import Volume
    from .data import phantom_subject_arrays

    arrays = phantom_subject_arrays(seed, [contrast, "lesion_mask"], spacing_mm, healthy=healthy)
    vol = Volume(arrays[contrast], spacing=(spacing_mm,) * 3, direction=TRAINING_DIRECTION,
                 metadata={"modality": "MR", "contrast": contrast})
    return vol, arrays["lesion_mask"] > 0


def thick_slices(volume: Any, lesion: np.ndarray, factor: int) -> tuple[Any, np.ndarray]:
    """``volume`` (z, y, x) with its slices averaged in groups of ``factor`` along z (a box slice profile ``factor``
    times as thick; a last incomplete group is dropped) and the lesion mask where it fills at least half a slab."""
    from ..volume import Volume

    if factor == 1:
        return volume, lesion
    n = volume.shape[0] // factor * factor
    if n == 0:
        raise ValueError(f"a volume of {volume.shape[0]} slices has no group of {factor}")
    shape = (n // factor, factor, *volume.shape[1:])
    array = volume.array[:n].reshape(shape).mean(axis=1, dtype=np.float64).astype(np.float32)
    sx, sy, sz = volume.spacing
    thick = Volume(array, spacing=(sx, sy, sz * factor), origin=volume.origin, direction=volume.direction,
                   metadata=dict(volume.metadata))
    return thick, lesion[:n].reshape(shape).mean(axis=1) >= 0.5


def write_extras(folder: str | Path, extras: dict[str, Any]) -> None:
    """Replace the ``extras`` of the card in ``folder`` (validated, written atomically; weights untouched)."""
    from ..models import registry
    from ..models.card import validate_card

    path = Path(folder) / "card.json"
    data = json.loads(path.read_text())
    data["extras"] = json.loads(json.dumps(extras))
    validate_card(data, where=str(folder))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    registry.clear_cache()


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """``bins`` bin edges at quantiles of ``values`` (fewer where quantiles coincide), the outer ones infinite."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    return edges


def finite_edges(edges: np.ndarray) -> list[float]:
    """``edges`` as JSON numbers: the infinite outer edges as -+1e6."""
    return [float(x) if np.isfinite(x) else (-1e6 if x < 0 else 1e6) for x in edges]


def residual_bins(recons: list[np.ndarray], residuals: list[np.ndarray], bins: int = 12,
                  min_scale: float = 0.01, gradients: list[np.ndarray] | None = None,
                  gradient_bins: int = 0) -> dict[str, Any]:
    """Bin edges over the reconstruction (quantiles) and the residual's median and 1.4826 MAD per bin; with
    ``gradient_bins`` > 1 the bins are split again at quantiles of ``gradients`` (the reconstructions'
    :func:`~MedGANLogic.tasks.anomaly.restoration_gradient` at the same voxels), and median and scale are tables
    (intensity bin x gradient bin; ``grad_edges`` their edges)."""
    r = np.concatenate([a.ravel() for a in recons]).astype(np.float64)
    e = np.concatenate([a.ravel() for a in residuals]).astype(np.float64)
    edges = quantile_edges(r, bins)
    idx = np.clip(np.searchsorted(edges, r, side="right") - 1, 0, edges.size - 2)
    split = gradient_bins > 1
    if split:
        if gradients is None:
            raise ValueError("gradient_bins > 1 needs the reconstructions' gradients")
        g = np.concatenate([a.ravel() for a in gradients]).astype(np.float64)
        grad_edges = quantile_edges(g, gradient_bins)
        gdx = np.clip(np.searchsorted(grad_edges, g, side="right") - 1, 0, grad_edges.size - 2)
    else:
        grad_edges, gdx = np.array([-np.inf, np.inf]), np.zeros(e.size, np.int64)
    median = np.zeros((edges.size - 1, grad_edges.size - 1))
    scale = np.ones_like(median)
    for b in range(median.shape[0]):
        for k in range(median.shape[1]):
            v = e[(idx == b) & (gdx == k)]
            median[b, k] = float(np.median(v)) if v.size else 0.0
            scale[b, k] = max(1.4826 * float(np.median(np.abs(v - median[b, k]))) if v.size else 1.0, min_scale)
    if not split:
        return {"edges": finite_edges(edges), "median": median[:, 0].tolist(), "scale": scale[:, 0].tolist()}
    return {"edges": finite_edges(edges), "grad_edges": finite_edges(grad_edges), "median": median.tolist(),
            "scale": scale.tolist()}


def calibrate(folder: str | Path, contrast: str, *, normal_seeds: list[int] | None = None,
              lesion_seeds: list[int] | None = None, spacing_mm: float = 2.0, device: str = "cpu",
              signs: tuple[str, ...] = ("positive", "both"), slice_factor: int = 1) -> dict[str, Any]:
    """Calibrate the anomaly model in ``folder`` (see the module docstring); returns the new extras. With
    ``slice_factor`` > 1 the phantoms' slices are averaged in groups of that many first (:func:`thick_slices`).
    Thick-slice sets already on the card are dropped (they go with the calibration: :func:`calibrate_slices`)."""
    from ..models.card import self_ensemble
    from ..models.registry import get_model
    from ..pipeline import run
    from ..tasks.anomaly import (
        anomaly_region,
        calibrated_z,
        inner_region,
        region_z,
        restoration_gradient,
        robust_spread,
        signed_part,
        smooth_inside,
    )
    from .data import split_seeds
    from .fanogan import best_dice_threshold

    val = split_seeds("val")
    normal_seeds = normal_seeds if normal_seeds is not None else val[4:8]
    lesion_seeds = lesion_seeds if lesion_seeds is not None else val[:4]
    card = get_model(folder)
    dropped = ("threshold", "calibration", "case_score", "slice_calibrations", "calibration_slice_mm")
    extras = {k: v for k, v in card.extras.items() if k not in dropped}
    smoothing, edge_mm = float(extras.get("smoothing_mm", 2.0)), float(extras.get("edge_mm", 0.0))
    cases = [(thick_slices(*phantom_subject(s, contrast, True, spacing_mm), slice_factor), False)
             for s in normal_seeds]
    cases += [(thick_slices(*phantom_subject(s, contrast, False, spacing_mm), slice_factor), True)
              for s in lesion_seeds]
    passes, brains = [], []  # brains: each case's whole brain mask (passes hold it without its rim)
    for (vol, lesion), _ in cases:  # pass 1: residuals and reconstructions, on the input grid
        res = run("anomaly", vol, model=str(folder), device=device, precision="fp32", residual=True)
        brains.append(anomaly_region(vol, card, device))  # the engine's own brain (learned or morphological)
        passes.append((res.outputs["anomaly_map"].array, res.outputs["reconstruction"].array,
                       inner_region(brains[-1], vol.spacing[::-1], edge_mm), lesion))
    grads = [restoration_gradient(r, card.slice_axis) for _, r, _, _ in passes]  # used where the bins split by it
    normal = [p for p, (_, les) in zip(passes, cases) if not les]
    normal_grads = [g for g, (_, les) in zip(grads, cases) if not les]
    calibration = residual_bins([r[b] for _, r, b, _ in normal], [e[b] for e, _, b, _ in normal],
                                gradients=[g[b] for g, (_, _, b, _) in zip(normal_grads, normal)],
                                gradient_bins=int(extras.get("calibration_gradient_bins", 0)))
    calibration["spread"] = float(np.median([robust_spread(calibrated_z(e, r, calibration, g)[b])
                                             for (e, r, b, _), g in zip(normal, normal_grads)]))
    if extras.get("rim_calibrated") and edge_mm > 0:  # the rim's own bins: the map is made there too
        rims = [brain & ~b for (_, _, b, _), brain, (_, is_lesion) in zip(passes, brains, cases) if not is_lesion]
        calibration["rim"] = residual_bins([r[m] for (_, r, _, _), m in zip(normal, rims)],
                                           [e[m] for (e, _, _, _), m in zip(normal, rims)])
    sigma = [smoothing / (spacing_mm * slice_factor), smoothing / spacing_mm, smoothing / spacing_mm]  # (z, y, x)

    def case_map(e: np.ndarray, r: np.ndarray, b: np.ndarray, brain: np.ndarray, sign: str,
                 g: np.ndarray) -> np.ndarray:
        z, _, mapped = region_z(e, r, calibration, b, brain, g)
        return smooth_inside(signed_part(z, sign), mapped, sigma)

    sign_dice = {}
    for sign in signs:  # which part of the residual finds the validation lesions best
        maps = [case_map(e, r, b, brain, sign, g)
                for (e, r, b, les), brain, g, (_, is_lesion) in zip(passes, brains, grads, cases) if is_lesion]
        masks = [les for (_, _, _, les), (_, is_lesion) in zip(passes, cases) if is_lesion]
        sign_dice[sign] = best_dice_threshold(maps, masks)[1]
    sign = max(sign_dice, key=lambda k: sign_dice[k])
    write_extras(folder, dict(extras, calibration=calibration, residual_sign=sign))
    maps, masks, normal_values = [], [], []  # pass 2: the engine's own maps with that calibration
    for ((vol, lesion), is_lesion), brain in zip(cases, brains):
        amap = run("anomaly", vol, model=str(folder), device=device, precision="fp32").outputs["anomaly_map"].array
        if is_lesion:
            maps.append(amap)
            masks.append(lesion)
        else:
            normal_values.append(amap[brain])
    dice_threshold, _ = best_dice_threshold(maps, masks)
    normal_threshold = float(np.quantile(np.concatenate(normal_values), 1.0 - NORMAL_FLAGGED, method="higher"))
    threshold = max(float(dice_threshold), normal_threshold)
    dice_at = float(np.mean([2.0 * ((m > threshold) & t).sum() / max((m > threshold).sum() + t.sum(), 1)
                             for m, t in zip(maps, masks)]))
    extras.update(calibration=calibration, residual_sign=sign, threshold=threshold,
                  threshold_selection={"criterion": f"max mean Dice on validation subjects with lesions, at least "
                                                    f"the level {NORMAL_FLAGGED:.1%} of normal validation brain "
                                                    f"exceeds",
                                       "validation_subjects": len(lesion_seeds),
                                       "dice_best": round(float(dice_threshold), 4),
                                       "normal_level": round(normal_threshold, 4),
                                       "validation_dice": round(dice_at, 4)},
                  validation={"contrast": contrast, "self_ensemble": int(self_ensemble(extras, device)),
                              "normal_seeds": list(normal_seeds),
                              "lesion_seeds": list(lesion_seeds),
                              "dice_by_sign": {k: round(float(v), 4) for k, v in sign_dice.items()}})
    write_extras(folder, extras)
    return calibrate_case_score(folder, [vol for (vol, _), is_lesion in cases if not is_lesion], device)


def calibrate_slices(folder: str | Path, contrast: str, slices_mm: tuple[float, ...] = SLICES_MM, *,
                     normal_seeds: list[int] | None = None, lesion_seeds: list[int] | None = None,
                     spacing_mm: float = 2.0, device: str = "cpu") -> dict[str, Any]:
    """Add thick-slice calibration sets to the calibrated card in ``folder`` (module docstring): for each of
    ``slices_mm`` (multiples of ``spacing_mm``), :func:`calibrate` on a scratch copy of the model with the validation
    phantoms' slices averaged to that thickness and the card's residual sign; their calibration, threshold and case
    score go into ``extras.slice_calibrations``. Returns the new extras."""
    import shutil
    import tempfile

    from ..models.registry import get_model

    extras = {k: v for k, v in get_model(folder).extras.items() if k not in ("slice_calibrations",)}
    if "calibration" not in extras:
        raise ValueError(f"{folder} has no calibration at {spacing_mm:g} mm: calibrate() it first")
    sets = []
    for mm in slices_mm:
        factor = int(round(float(mm) / spacing_mm))
        if factor < 2 or abs(factor * spacing_mm - float(mm)) > 1e-6:
            raise ValueError(f"slice thickness {mm} mm is not a multiple (>= 2) of the phantoms' {spacing_mm:g} mm")
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / Path(folder).name
            shutil.copytree(folder, copy)
            got = calibrate(copy, contrast, normal_seeds=normal_seeds, lesion_seeds=lesion_seeds,
                            spacing_mm=spacing_mm, device=device, signs=(str(extras.get("residual_sign", "both")),),
                            slice_factor=factor)
        validation = got.get("validation", {})
        sets.append({"slice_mm": factor * spacing_mm, "calibration": got["calibration"],
                     "threshold": got["threshold"], "case_score": got["case_score"],
                     "threshold_selection": got["threshold_selection"],
                     "validation": {k: validation[k] for k in ("case_statistic_normal",) if k in validation}})
    extras.update(calibration_slice_mm=float(spacing_mm), slice_calibrations=sets)
    write_extras(folder, extras)
    return extras


def check_seeds(count: int) -> range:
    """The first ``count`` seeds :func:`check_case_score` uses by default (from ``CHECK_SEEDS.start``)."""
    return range(CHECK_SEEDS.start, CHECK_SEEDS.start + int(count))


def check_case_score(folder: str | Path, contrast: str, seeds: Any = CHECK_SEEDS, *, spacing_mm: float = 2.0,
                     device: str = "cpu") -> dict[str, Any]:
    """The case AUROC of the card in ``folder`` on phantoms ``seeds`` with lesions against their lesion-free twins,
    through the engine; written to ``extras.validation.case_auroc`` (seeds, pairs, auroc, the share of subjects
    above their own twin, lesion volumes). Returns the new extras."""
    from ..evaluation.metrics import auroc
    from ..models.registry import get_model
    from ..pipeline import run
    from .data import split_seeds

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("check_case_score needs at least one phantom seed")
    taken = set(split_seeds("train")) | set(split_seeds("val")) | set(split_seeds("test"))
    if overlap := sorted(taken.intersection(seeds)):
        raise ValueError(f"seeds {overlap[:5]} belong to a training, validation or test split; check on others "
                         f"(default {CHECK_SEEDS.start}-{CHECK_SEEDS.stop - 1})")
    lesioned, healthy, volumes_ml = [], [], []
    for seed in seeds:
        for is_healthy, into in ((False, lesioned), (True, healthy)):
            vol, lesion = phantom_subject(seed, contrast, is_healthy, spacing_mm)
            into.append(float(run("anomaly", vol, model=str(folder), device=device, precision="fp32")
                              .extras["case_score"]))
            if not is_healthy:
                volumes_ml.append(float(lesion.sum()) * spacing_mm ** 3 / 1000.0)
    extras = dict(get_model(folder).extras)
    extras["validation"] = dict(extras.get("validation", {}), case_auroc={
        "seeds": [seeds[0], seeds[-1]] if seeds == list(range(seeds[0], seeds[-1] + 1)) else seeds,
        "pairs": len(seeds), "auroc": round(auroc(lesioned + healthy, [1.0] * len(lesioned) + [0.0] * len(healthy)), 4),
        "above_own_twin": round(float(np.mean([a > b for a, b in zip(lesioned, healthy)])), 4),
        "lesion_ml": [round(min(volumes_ml), 2), round(float(np.median(volumes_ml)), 2), round(max(volumes_ml), 2)]})
    write_extras(folder, extras)
    return extras


def calibrate_model(folder: str | Path, contrast: str, slices_mm: tuple[float, ...] = SLICES_MM,
                    check_case: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Everything an anomaly card's calibration holds: :func:`calibrate` at 2 mm, the thick-slice sets of
    ``slices_mm`` (:func:`calibrate_slices`; none when empty) and, for ``check_case`` > 0, the case-score check on
    that many further phantom pairs (:func:`check_case_score`). Returns the new extras."""
    extras = calibrate(folder, contrast, device=device)
    if slices_mm:
        extras = calibrate_slices(folder, contrast, tuple(float(mm) for mm in slices_mm), device=device)
    if check_case:
        extras = check_case_score(folder, contrast, check_seeds(check_case), device=device)
    return extras


def calibrate_case_score(folder: str | Path, normal: list[Any], device: str = "cpu") -> dict[str, Any]:
    """The case score's mean and spread over the ``normal`` volumes, from the engine's own raw statistic."""
    from ..models.registry import get_model
    from ..pipeline import run

    extras = dict(get_model(folder).extras)
    write_extras(folder, dict(extras, case_score={"statistic": CASE_STATISTIC}))  # no mean: the raw statistic
    stats = np.array([run("anomaly", vol, model=str(folder), device=device, precision="fp32").extras["case_score"]
                      for vol in normal])
    spread = stats.std(ddof=1) if stats.size > 1 else 0.0
    extras["case_score"] = {"statistic": CASE_STATISTIC, "mean": float(stats.mean()),
                            "std": float(max(spread, 0.1 * stats.mean(), 1e-4))}
    extras.setdefault("validation", {}).pop("case_statistic_lesion", None)
    extras["validation"]["case_statistic_normal"] = [round(float(v), 6) for v in stats]
    write_extras(folder, extras)
    return extras


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Calibrate an anomaly model's map and case score on phantom "
                                                 "validation subjects (writes the card's extras).")
    parser.add_argument("model", help="the model folder (card.json + weights)")
    parser.add_argument("--contrast", required=True, help="the MR contrast of the validation subjects, e.g. T2w")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slices-mm", type=float, nargs="*", default=list(SLICES_MM),
                        help="thick-slice calibration sets to add, mm (multiples of 2; default 4 6; none: no sets)")
    parser.add_argument("--check-case", type=int, default=0, metavar="N",
                        help=f"then measure the case AUROC on N further phantom pairs (seeds from "
                             f"{CHECK_SEEDS.start}; extras.validation.case_auroc)")
    parser.add_argument("--keep-calibration", action="store_true",
                        help="do not calibrate again: only --check-case")
    parser.add_argument("--case-score-only", action="store_true",
                        help="keep the map's calibration and threshold; recalibrate the case score only")
    args = parser.parse_args(argv)
    if args.keep_calibration:
        from ..models.registry import get_model

        extras = dict(get_model(args.model).extras)
    elif args.case_score_only:
        from .data import split_seeds

        normal = [phantom_subject(s, args.contrast, True, 2.0)[0] for s in split_seeds("val")[4:8]]
        extras = calibrate_case_score(args.model, normal, device=args.device)
    else:
        extras = calibrate_model(args.model, args.contrast, tuple(args.slices_mm), device=args.device)
    if args.check_case:
        extras = check_case_score(args.model, args.contrast, check_seeds(args.check_case), device=args.device)
    print(json.dumps({k: v for k, v in extras.items() if k != "calibration"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
