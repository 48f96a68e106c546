"""`medgan demo`: every installed model on the bundled sample subject, outputs + a PNG montage.

The sample data (``Resources/SampleData/``, described by its ``manifest.json``) is one held-out phantom subject
made by ``medgan simulate``. For each model the demo picks the sample that fits the model's input, runs it,
writes ``demo_out/<model id>.nii.gz`` (with provenance) and adds a row "input | output" (middle slices; anomaly
maps in colour over the input) to ``demo_out/montage.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .io import read_volume, write_volume
from .volume import Volume

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # no torch import here: Slicer reads the manifest at startup


def sample_data_dir() -> Path:
    return PACKAGE_ROOT / "Resources" / "SampleData"


def load_manifest(folder: Path | None = None) -> list[dict[str, Any]]:
    """Entries ``{"file", "modality", "contrast", ...}`` of the sample data, paths made absolute."""
    folder = folder or sample_data_dir()
    path = folder / "manifest.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
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


def _middle(volume: Volume, k: int | None = None) -> np.ndarray:
    """Axial slice ``k`` (default: the middle one) as float32."""
    return volume.array[volume.shape[0] // 2 if k is None else k].astype(np.float32)


def _busiest_slice(mask: np.ndarray) -> int | None:
    """The axial slice with the most voxels of ``mask``; None when it is empty."""
    counts = (mask > 0).sum(axis=(1, 2))
    return int(np.argmax(counts)) if counts.any() else None


def _tint(base: np.ndarray, mask: np.ndarray, colour=(255, 64, 64), alpha: float = 0.6) -> np.ndarray:
    """``base`` RGB with the pixels of ``mask`` blended towards ``colour``."""
    a = np.where(mask, alpha, 0.0)[..., None]
    return (base.astype(np.float32) * (1 - a) + np.array(colour, np.float32) * a).astype(np.uint8)


def _grey(slice_: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    lo, hi = window or tuple(np.percentile(slice_, [1, 99.5]))
    g = np.clip((slice_ - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=2)


def _overlay(base: np.ndarray, amap: np.ndarray, threshold: float) -> np.ndarray:
    rgb = base.astype(np.float32)
    norm = np.clip(amap / max(float(amap.max()), 1e-6), 0, 1)
    heat = np.stack([np.clip(3 * norm, 0, 1), np.clip(3 * norm - 1, 0, 1), np.clip(3 * norm - 2, 0, 1)], -1) * 255
    alpha = np.where(amap > threshold, 0.6, 0.0)[..., None]
    return (rgb * (1 - alpha) + heat * alpha).astype(np.uint8)


def _panel(volume: Volume, rgb: np.ndarray | None = None) -> np.ndarray:
    """The middle axial slice of ``volume`` (or ``rgb``, an overlay drawn on that slice) as RGB,
    anterior up, voxels at their physical aspect ratio and size (thick slices stay thick in the picture)."""
    from PIL import Image

    if rgb is None:
        window = (-160.0, 240.0) if volume.modality == "CT" else None
        rgb = _grey(_middle(volume), window)
    sx, sy = volume.spacing[0], volume.spacing[1]
    h, w = rgb.shape[:2]
    scale = 2.0 / min(sx, sy) if min(sx, sy) < 2 else 1.0
    size = (max(1, int(round(w * sx * scale / 1.0))), max(1, int(round(h * sy * scale / 1.0))))
    return np.asarray(Image.fromarray(rgb[::-1]).resize(size, Image.NEAREST))  # flip rows: anterior up


def save_montage(rows: list[tuple[str, list[np.ndarray]]], path: Path) -> Path:
    """Rows of (label, panels) side by side, written as one PNG."""
    from PIL import Image, ImageDraw

    pad, label_h = 6, 16
    height = sum(max(p.shape[0] for p in panels) + label_h + pad for _, panels in rows) + pad
    width = max(sum(p.shape[1] + pad for p in panels) for _, panels in rows) + pad
    canvas = Image.new("RGB", (width, height), (20, 20, 20))
    draw = ImageDraw.Draw(canvas)
    y = pad
    for label, panels in rows:
        draw.text((pad, y), label, fill=(230, 230, 230))
        x = pad
        for p in panels:
            canvas.paste(Image.fromarray(p), (x, y + label_h))
            x += p.shape[1] + pad
        y += max(p.shape[0] for p in panels) + label_h + pad
    canvas.save(path)
    return path


def run_demo(output: Path, device: str = "auto", log=print) -> int:
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
    cards = list_models()
    if not cards:
        log("No trained models are installed yet: nothing to run. (The I/O check above passed.)")
        return 0
    rows = []
    for card in cards:
        entry = pick_sample(card, entries)
        if entry is None:
            log(f"- {card.id}: no sample fits its input ({card.input.get('modality')} "
                f"{card.input.get('contrast', '')}); skipped.")
            continue
        volume = read_volume(entry["path"], metadata={k: entry[k] for k in ("modality", "contrast") if k in entry})
        result = run(card.task, volume, model=card.id, device=device)
        out_path = write_volume(result.volume, output / f"{card.id}.nii.gz")
        if card.task == "anomaly":  # the slice with the most candidate voxels, the map in colour above threshold
            amap = result.outputs["anomaly_map"]
            write_volume(result.outputs["mask"], output / f"{card.id}_mask.nii.gz")
            k = _busiest_slice(result.outputs["mask"].array)
            base = _grey(_middle(volume, k))
            heat = _overlay(base, _middle(amap, k), result.extras["threshold"])
            panels = [_panel(volume, base), _panel(volume, heat)]
        elif card.task == "segment":  # the slice with the most labelled voxels, labels tinted red
            k = _busiest_slice(result.volume.array)
            base = _grey(_middle(volume, k))
            panels = [_panel(volume, base), _panel(volume, _tint(base, _middle(result.volume, k) > 0))]
        else:
            panels = [_panel(volume), _panel(result.volume)]
        extra = "".join(f"  {k}={v:.3g}" for k, v in result.extras.items() if isinstance(v, float))
        rows.append((f"{card.id}: {entry['name']} -> {card.output.get('contrast') or card.output.get('modality')}"
                     f"{extra}", panels))
        log(f"- {card.id}: {entry['file']} -> {out_path} ({result.provenance['seconds']} s){extra}")
    if rows:
        montage = save_montage(rows, output / "montage.png")
        log(f"Montage: {montage}")
    return 0
