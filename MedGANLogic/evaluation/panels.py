"""The report's PNG panels: one row per method, one column per image (input | output | target | |error|)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_panel(path: Path, rows: list[tuple[str, list[np.ndarray]]], windows: list[tuple[float, float]],
               titles: list[str]) -> str:
    """Write a greyscale PNG: one row per ``(label, images)`` (label at left), column ``j`` shown in
    ``windows[j]`` (low, high) under ``titles[j]``; images are 2D (y, x), drawn superior up. Returns the file name."""
    from PIL import Image, ImageDraw

    h, w = rows[0][1][0].shape
    label_w, top, gap = 70, 14, 2
    canvas = Image.new("L", (label_w + len(titles) * (w + gap), top + len(rows) * (h + gap)), 255)
    draw = ImageDraw.Draw(canvas)
    for j, t in enumerate(titles):
        draw.text((label_w + j * (w + gap) + 2, 1), t, fill=0)
    for i, (label, images) in enumerate(rows):
        y = top + i * (h + gap)
        draw.text((2, y + h // 2 - 5), label, fill=0)
        for j, (img, (lo, hi)) in enumerate(zip(images, windows)):
            g = (np.clip((img - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
            canvas.paste(Image.fromarray(g[::-1]), (label_w + j * (w + gap), y))  # superior up
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path.name


def central_slice(mask: np.ndarray) -> int:
    """The axial slice in the middle of those where ``mask`` (z, y, x) covers at least 90 % of its largest area."""
    counts = mask.reshape(mask.shape[0], -1).sum(1)
    return int(np.argmax(counts >= 0.9 * counts.max()) + np.sum(counts >= 0.9 * counts.max()) // 2)


def fullest_slice(mask: np.ndarray, axis: int) -> int:
    """The index along ``axis`` of the slice with the most ``mask`` voxels (the first of equals)."""
    counts = np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).sum(1)
    return int(np.argmax(counts))


def translation_panel(report_dir: Path, name: str, src: np.ndarray, out: np.ndarray, base: np.ndarray,
                      target: np.ndarray, mask: np.ndarray, src_win: tuple[float, float],
                      tgt_win: tuple[float, float], err_max: float, baseline_label: str) -> str:
    """``panel_<name>.png`` of the central head slice: the model's row and the baseline's, output and |error|
    inside ``mask``."""
    z = central_slice(mask)
    m = mask[z]
    rows = [("model", [src[z], out[z] * m, target[z], np.abs(out[z] - target[z]) * m]),
            (baseline_label, [src[z], base[z] * m, target[z], np.abs(base[z] - target[z]) * m])]
    return save_panel(report_dir / f"panel_{name}.png", rows, [src_win, tgt_win, tgt_win, (0, err_max)],
                      ["input", "output", "target", "|error|"])
