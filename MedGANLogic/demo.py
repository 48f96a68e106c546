"""`medgan demo`: every installed model on the bundled sample subject, outputs + a montage to look at.

The sample data (``Resources/SampleData/``, described by its ``manifest.json``) is one held-out phantom subject
made by ``medgan simulate``. For each model the demo picks the sample that fits the model's input, runs it and
writes ``demo_out/<model id>.nii.gz`` (with provenance). ``demo_out/montage.png`` has one row per model:

* input | output | reference (the acquired image the output should look like; the simulated lesion for anomaly
  maps and segmentation), on one slice through the centre of the sample's largest lesion: axial, or coronal for
  through-plane super-resolution, where the slices' thickness shows. Radiological convention: anterior (or
  superior) up, the patient's right on the left. Pixels at their physical size (2 px per mm); CT in the brain
  window (W 80 / L 40), MR from 0 to the reference's 99.5th percentile;
* anomaly maps in colour over the scan, with a colour bar and the threshold marked; segmentations filled, the
  simulated lesion outlined;
* a caption with the task, the model and one measured figure against its strongest baseline, read from the
  committed report ``Testing/Reports/evaluation.json`` (or a line saying the report has none).

``demo_out/montage.json`` records what each row shows (model, sample, plane, slice, figure).
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .io import read_volume, write_volume
from .tasks import TASKS
from .volume import Volume

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # no torch import here: Slicer reads the manifest at startup
REPORT = PACKAGE_ROOT / "Testing" / "Reports" / "evaluation.json"
CT_WINDOW = (0.0, 80.0)  # brain window, W 80 / L 40 HU
_LOWER_IS_BETTER = ("MAE", "HD95", "RMSE")


def sample_data_dir() -> Path:
    return PACKAGE_ROOT / "Resources" / "SampleData"


def load_manifest(folder: Path | None = None) -> list[dict[str, Any]]:
    """Entries ``{"file", "modality", "contrast", ...}`` of the sample data, paths made absolute."""
    folder = folder or sample_data_dir()
    path = folder / "manifest.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    items = data.get("files", data) if isinstance(data, dict) else data
    if isinstance(items, dict):
        items = [dict(v, name=k) for k, v in items.items()]
    entries = []
    for item in items:
        entry = dict(item)
        entry["path"] = folder / entry["file"]
        entry.setdefault("name", Path(entry["file"]).name.split(".")[0])
        entries.append(entry)
    return entries


def _tag(entry: dict[str, Any]) -> str:
    return " ".join(str(entry.get(k, "")) for k in ("name", "file", "role", "description")).lower()


def pick_sample(card: Any, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The sample entry that fits the model's input: modality and contrast, low-dose CT and thick slices."""
    want_mod, want_con = card.input.get("modality"), card.input.get("contrast")
    fits = [e for e in entries if e.get("modality") == want_mod and (not want_con or e.get("contrast") == want_con)
            and "mask" not in _tag(e)]
    if card.task == "denoise":
        fits = [e for e in fits if "dose" in _tag(e) or e.get("dose_fraction")] or fits
    elif card.task == "superres":
        # through-plane models (scale along z) get the thick-slice sample, in-plane ones the k-space one
        scale = list(getattr(card, "scale_factor", None) or [1, 1, 1])
        kind = "thick" if scale[0] > 1 else "inplane"
        fits = [e for e in fits if kind in _tag(e)] or fits
    else:
        fits = [e for e in fits if not any(k in _tag(e) for k in ("dose", "thick", "inplane"))] or fits
    return fits[0] if fits else None


def pick_reference(card: Any, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the output is compared with: the acquired image of the output's kind (full-dose CT, 2 mm T2w, the
    other contrast), or the lesion mask for anomaly maps and segmentation."""
    if card.task in ("anomaly", "segment"):
        return next((e for e in entries if e.get("modality") == "mask"), None)
    if card.task == "lesion":  # compared with its own input
        return None
    output = dict(card.output)
    if not output.get("contrast") and card.task in ("superres", "denoise"):
        # a contrast-agnostic model gives back its input's contrast: compare with that contrast's acquisition
        source = pick_sample(card, entries)
        if source is not None and source.get("contrast"):
            output["contrast"] = source["contrast"]
    return pick_sample(SimpleNamespace(task="synthesize", input=output), entries)


# --- what the report says --------------------------------------------------------------------------------------
def load_report(path: Path = REPORT) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _number(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}"


def report_figure(model_id: str, report: dict[str, Any] | None, source: str = "evaluation.json") -> str:
    """One measured figure of the model against its strongest baseline, as a caption, from the report.

    The figure is the section's first metric (the one its targets are about); the baseline is the best of the
    rows that are methods (rows marked "(not a method)", such as the acquired image, are not, nor the model's own
    other settings, rows named "model, ..."). Whatever is
    missing from the report, the line says so instead.
    """
    section = ((report or {}).get("sections") or {}).get(model_id)
    if report is None:
        return f"no figure: the report {source} is not there (`make eval` writes it)"
    if not section or section.get("error") or not section.get("metrics") or not section.get("units"):
        return f"no figure: {source} has no results for {model_id}"
    metrics, units = section["metrics"], section["units"]
    metric = next(iter(units))
    model_row = next((name for name in metrics if name == "model" or model_id in name), None)
    baselines = [name for name in metrics if name != model_row and "not a method" not in name
                 and not name.startswith("model")  # the model itself run otherwise ("model, 8 passes ...")
                 and "mean" in metrics[name].get(metric, {})]
    if model_row is None or "mean" not in metrics[model_row].get(metric, {}) or not baselines:
        return f"no figure: {source} has no {metric} of {model_id} and a baseline"
    lower = metric.split()[0] in _LOWER_IS_BETTER
    best = (min if lower else max)(baselines, key=lambda name: metrics[name][metric]["mean"])
    unit = f" {units[metric]}" if units[metric] else ""
    value, base = metrics[model_row][metric]["mean"], metrics[best][metric]["mean"]
    subjects = len(metrics[model_row][metric].get("per_subject", []))
    held_out = f"mean of {subjects} held-out phantoms" if subjects else "held-out phantoms"
    return (f"{metric} {_number(value)}{unit} vs {_number(base)}{unit} for {best} "
            f"({'lower' if lower else 'higher'} is better; {held_out}, {source})")


# --- where to look -----------------------------------------------------------------------------------------------
def largest_lesion_point(mask: Volume) -> tuple[np.ndarray, float] | None:
    """LPS point (mm) at the centre of the largest lesion's largest axial cross-section, and its volume (mL)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask.array > 0)
    if count == 0:
        return None
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    lesion = labels == largest
    k = int(np.argmax(lesion.sum(axis=(1, 2))))
    j, i = np.argwhere(lesion[k]).mean(axis=0)
    point = (mask.ijk_to_lps() @ np.array([i, j, k, 1.0]))[:3]
    return point, float(lesion.sum() * np.prod(mask.spacing) / 1000.0)


def _axis_order(volume: Volume) -> tuple[list[int], list[bool]]:
    """For the display axes (superior, posterior, left): which array axis runs along each, and whether backwards."""
    best = max(itertools.permutations(range(3)),  # index axis (i, j, k) for LPS axis (x, y, z)
               key=lambda p: sum(abs(volume.direction[lps, p[lps]]) for lps in range(3)))
    order = [2 - best[lps] for lps in (2, 1, 0)]  # array axes are (k, j, i)
    flips = [bool(volume.direction[lps, best[lps]] < 0) for lps in (2, 1, 0)]
    return order, flips


def view_slice(volume: Volume, point: np.ndarray, plane: str) -> tuple[np.ndarray, tuple[float, float], dict]:
    """The ``plane`` ("axial" or "coronal") slice of ``volume`` through LPS ``point``, as displayed.

    Returns the 2D image (rows top to bottom: anterior or superior first; columns: patient right to left), its
    pixel size (row, column) in mm, and ``{"array_axis", "index"}``: which slice of ``volume.array`` it is.
    """
    order, flips = _axis_order(volume)
    normal = 0 if plane == "axial" else 1  # display axis: 0 superior, 1 posterior
    ijk = np.linalg.solve(volume.direction @ np.diag(volume.spacing), np.asarray(point) - np.array(volume.origin))
    axis = order[normal]
    index = int(np.clip(round(float(ijk[::-1][axis])), 0, volume.shape[axis] - 1))
    array = np.moveaxis(volume.array, order, [0, 1, 2])
    for display_axis, flip in enumerate(flips):
        if flip:
            array = np.flip(array, display_axis)
    k = volume.shape[axis] - 1 - index if flips[normal] else index
    spacing = [volume.spacing[::-1][a] for a in order]
    if plane == "axial":
        image, pixel = array[k], (spacing[1], spacing[2])
    else:
        image, pixel = array[::-1, k, :], (spacing[0], spacing[2])  # superior up
    return np.ascontiguousarray(image), pixel, {"array_axis": axis, "index": index}


# --- the demo ------------------------------------------------------------------------------------------------
def _window(volume: Volume) -> tuple[float, float]:
    if volume.modality == "CT":
        return CT_WINDOW
    return 0.0, float(np.percentile(volume.array, 99.5))


def _window_label(volume: Volume) -> str:
    return " W80/L40" if volume.modality == "CT" else ""


def add_rician_noise(volume: Volume, fraction: float = 0.08, seed: int = 0) -> Volume:
    """``volume`` with Rician noise of SD ``fraction`` of its 99.5th percentile (seeded): the sample MR is nearly
    noise-free, so the MR denoiser's row shows it with noise added, against the sample itself."""
    from .simulate.mri import add_rician_noise as rician

    sigma = fraction * float(np.percentile(volume.array, 99.5))
    (noisy,) = rician([np.asarray(volume.array, np.float32)], sigma, np.random.default_rng(seed))
    return volume.with_array(noisy)


def read_sample(entry: dict[str, Any]) -> Volume:
    """A sample volume with the modality and contrast its manifest entry declares."""
    return read_volume(entry["path"], metadata={k: entry[k] for k in ("modality", "contrast") if k in entry})


def build_row(card: Any, volume: Volume, result: Any, entry: dict, reference: Volume | None, point: np.ndarray,
              report: dict | None, report_name: str = REPORT.name) -> tuple[Any, dict[str, Any]]:
    """One montage row (image) and its record for ``montage.json``."""
    from . import demo_render as render

    plane = "coronal" if card.task == "superres" and card.scale_factor[0] > 1 else "axial"
    image, pixel, where = view_slice(volume, point, plane)
    panels, legend = [], None
    if card.task == "anomaly":
        amap = result.outputs["anomaly_map"]
        threshold = float(result.extras["threshold"])
        levels = (threshold / 2, threshold, max(float(amap.array.max()), threshold * 1.01))
        base = render.grey(image, _window(volume), pixel)
        heat = render.heat(base, view_slice(amap, point, plane)[0], levels)
        panels = [(f"input: {entry['name']}", base), ("anomaly map over the scan", heat)]
        legend = render.colour_bar(levels, "anomaly map", "threshold")
        cand = view_slice(result.outputs["mask"], point, plane)[0] > 0
        truth = view_slice(reference, point, plane)[0] > 0 if reference is not None else None
        panels.append(("candidates (yellow), lesion (green)", render.outlines(base, cand, truth)))
    elif card.task == "lesion":  # the same window before and after: the lesion is the only change
        window = _window(volume)
        base = render.grey(image, window, pixel)
        out_image, out_pixel, _ = view_slice(result.volume, point, plane)
        after = render.grey(out_image, window, out_pixel)
        drawn = view_slice(result.outputs["mask"], point, plane)[0] > 0
        panels = [(f"input: {entry['name']}", base), (f"output: {result.extras['lesion_type']} lesion inserted", after),
                  ("the mask (yellow)", render.outlines(after, drawn, None))]
    elif card.task == "segment":
        base = render.grey(image, _window(volume), pixel)
        pred = view_slice(result.volume, point, plane)[0] > 0
        truth = view_slice(reference, point, plane)[0] > 0 if reference is not None else None
        panels = [(f"input: {entry['name']}", base), ("output: lesion segmentation", render.filled(base, pred))]
        if truth is not None:
            panels.append(("reference: simulated lesion", render.filled(base, truth, render.TRUTH)))
    else:
        window = _window(reference if reference is not None else result.volume)  # output and reference alike
        out_name = card.output.get("contrast") or card.output.get("modality")
        acquired = f"acquired {out_name}"
        if card.task == "denoise":
            acquired = ("CT before the dose reduction" if card.input.get("modality") == "CT" else
                        "the sample before the noise was added")

        def heading(what: str, vol: Volume) -> str:  # super-resolution: the voxel size is the point
            voxels = " x ".join(f"{s:g}" for s in vol.spacing)
            return f"{what}, {voxels} mm" if card.task == "superres" else f"{what}{_window_label(vol)}"

        panels = [(heading(f"input: {entry['name']}", volume), render.grey(image, _window(volume), pixel))]
        out_image, out_pixel, _ = view_slice(result.volume, point, plane)
        panels.append((heading(f"output: {TASKS.get(card.task).output_label} {out_name}", result.volume),
                       render.grey(out_image, window, out_pixel)))
        if reference is not None:
            ref_image, ref_pixel, _ = view_slice(reference, point, plane)
            panels.append((heading(f"reference: {acquired}", reference), render.grey(ref_image, window, ref_pixel)))
    title = f"{TASKS.get(card.task).label} \u00b7 {card.id} \u00b7 {card.data.get('name', '')}"
    figure = report_figure(card.id, report, report_name)
    row = render.row(title, figure, panels, legend, scale_bar_mm=50)
    record = {"model": card.id, "task": card.task, "sample": entry["file"], "plane": plane,
              "point_lps_mm": [round(float(c), 2) for c in point], **where, "title": title, "figure": figure,
              "panels": [name for name, _ in panels]}
    return row, record


def run_demo(output: Path, device: str = "auto", log=print, models: Sequence[str] | None = None,
             report_path: Path = REPORT) -> int:
    """Check I/O on every sample, run every installed model (or ``models``), write outputs and the montage."""
    from . import demo_render as render
    from .models.registry import list_models
    from .pipeline import run

    entries = load_manifest()
    if not entries:
        log(f"No sample data found in {sample_data_dir()}; regenerate it with `medgan simulate --sample-data "
            f"{sample_data_dir()}`.", file=sys.stderr)
        return 1
    output.mkdir(parents=True, exist_ok=True)
    # Check I/O on every sample: read, and read back what we write.
    for entry in entries:
        vol = read_volume(entry["path"])
        check = write_volume(vol, output / f"io_check_{entry['name']}.nrrd")
        back = read_volume(check)
        if not (back.same_geometry(vol) and np.array_equal(back.array, vol.array)):
            log(f"I/O check failed for {entry['file']}", file=sys.stderr)
            return 1
        check.unlink()
    log(f"I/O check passed on {len(entries)} sample volumes.")
    order = TASKS.names()
    cards = sorted((c for c in list_models() if models is None or c.id in models),
                   key=lambda c: (order.index(c.task), c.id))
    if not cards:
        log("No trained models are installed yet: nothing to run. (The I/O check above passed.)")
        return 0
    mask_entry = next((e for e in entries if e.get("modality") == "mask"), None)
    focus = largest_lesion_point(read_volume(mask_entry["path"])) if mask_entry else None
    report = load_report(report_path)
    rows, records, point = [], [], None
    for card in cards:
        entry = pick_sample(card, entries)
        if entry is None:
            log(f"- {card.id}: no sample fits its input ({card.input.get('modality')} "
                f"{card.input.get('contrast', '')}); skipped.")
            continue
        volume = read_sample(entry)
        options, where, clean = {}, focus, None
        if card.task == "denoise" and card.input.get("modality") == "MR":  # a clean sample: add the noise
            clean, volume = volume, add_rician_noise(volume)
            entry = dict(entry, name=f"{entry['name']} + Rician noise")
        if card.task == "lesion":  # the sample lesion mirrored left-right: a new lesion in the other hemisphere
            if mask_entry is None:
                log(f"- {card.id}: no sample lesion mask to place a lesion with; skipped.")
                continue
            mirrored = read_sample(mask_entry)
            mirrored = mirrored.with_array(np.ascontiguousarray(mirrored.array[:, :, ::-1]))
            options, where = {"mask": mirrored, "lesion_type": "tumour"}, largest_lesion_point(mirrored)
        result = run(card.task, volume, model=card.id, device=device, **options)
        out_path = write_volume(result.volume, output / f"{card.id}.nii.gz")
        if card.task in ("anomaly", "lesion"):
            write_volume(result.outputs["mask"], output / f"{card.id}_mask.nii.gz")
        ref_entry = pick_reference(card, entries)
        reference = clean if clean is not None else read_sample(ref_entry) if ref_entry else None
        # through the largest lesion; without a lesion mask, through the middle of the volume
        point = where[0] if where else volume.ijk_to_lps() @ np.array([*(np.array(volume.shape[::-1]) - 1) / 2, 1])
        row, record = build_row(card, volume, result, entry, reference, point[:3], report, report_path.name)
        rows.append(row)
        records.append(record)
        extra = "".join(f"  {k}={v:.3g}" for k, v in result.extras.items() if isinstance(v, float))
        log(f"- {card.id}: {entry['file']} -> {out_path} ({result.provenance['seconds']} s){extra}")
    if rows:
        lesion = f"through the centre of its largest simulated lesion ({focus[1]:.1f} mL)" if focus else \
            "through the middle of the volume"
        title = (f"MedGAN demo: phantom test subject, every row {lesion}. Simulated data, phantom-trained demo "
                 f"weights: research use, not for diagnosis.")
        montage = render.montage(title, rows, output / "montage.png")
        (output / "montage.json").write_text(json.dumps({"title": title, "size": list(montage.size),
                                                         "rows": records}, indent=2) + "\n", encoding="utf-8")
        log(f"Montage: {output / 'montage.png'} ({montage.size[0]} x {montage.size[1]} px)")
    return 0
