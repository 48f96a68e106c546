"""A montage of one phantom subject for people to look at: ``python -m MedGANLogic.simulate.montage [OUT.png]``.

Writes ``Testing/Reports/simulate.png`` by default. Top row, axial slice through the largest lesion: T1w, T2w,
PD, FLAIR, the lesion mask over FLAIR, and a sagittal T1w. Bottom row: CT in the brain window (W 80 / L 40) and
the bone window (W 2000 / L 500), the full-dose and 25 %-dose filtered back-projections (brain window), thick
slices (4 z-slices averaged: 8 mm, coronal view) and in-plane k-space truncation by 2 (axial) of the T2w.
Pixels are drawn at their physical aspect (anisotropic grids stretched), anterior/superior up.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .lowdose import simulate_low_dose
from .lowres import kspace_truncate, thick_slices
from .subjects import SPLITS, make_subject

MM_PER_PIXEL = 2.0 / 3  # picture scale: a 2 mm voxel is 3 pixels wide


def _grey(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    g = (np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _mr_window(volume: np.ndarray) -> tuple[float, float]:
    return 0.0, float(np.percentile(volume, 99.5))


def _picture(rgb: np.ndarray, row_mm: float, col_mm: float) -> Image.Image:
    img = Image.fromarray(np.ascontiguousarray(rgb[::-1]))  # array row 0 is posterior/inferior: flip it up
    size = (int(round(rgb.shape[1] * col_mm / MM_PER_PIXEL)), int(round(rgb.shape[0] * row_mm / MM_PER_PIXEL)))
    return img.resize(size, Image.BILINEAR)


def make_montage(path: str | Path = "Testing/Reports/simulate.png", seed: int = SPLITS["test"][0]) -> Path:
    """Draw the montage of phantom subject ``seed`` (2 mm) into ``path`` (PNG); returns the path."""
    s = make_subject(seed)
    v = s.volumes
    sz, sy, sx = v["T1w"].spacing[::-1]
    mask = v["lesion_mask"].array > 0
    k = int(np.argmax(mask.sum(axis=(1, 2)))) if mask.any() else v["T1w"].shape[0] // 2
    top, bottom = [], []
    for c in ("T1w", "T2w", "PD", "FLAIR"):
        top.append((c, _picture(_grey(v[c].array[k], *_mr_window(v[c].array)), sy, sx)))
    flair = _grey(v["FLAIR"].array[k], *_mr_window(v["FLAIR"].array)).astype(np.float32)
    flair[mask[k]] = 0.5 * flair[mask[k]] + 0.5 * np.array([255, 40, 40])
    top.append(("FLAIR + lesion mask (red)", _picture(flair.astype(np.uint8), sy, sx)))
    x_mid = v["T1w"].shape[2] // 2 + 4  # just off the midline
    top.append(("T1w sagittal", _picture(_grey(v["T1w"].array[:, :, x_mid], *_mr_window(v["T1w"].array)), sz, sy)))

    ct = v["CT"].array[k]
    low, full = simulate_low_dose(ct, 0.25, seed=seed, pixel_mm=sx)
    bottom.append(("CT (pseudo-CT) W80/L40", _picture(_grey(ct, 0, 80), sy, sx)))
    bottom.append(("CT bone W2000/L500", _picture(_grey(ct, -500, 1500), sy, sx)))
    bottom.append(("full-dose FBP W80/L40", _picture(_grey(full, 0, 80), sy, sx)))
    bottom.append(("25% dose FBP W80/L40", _picture(_grey(low, 0, 80), sy, sx)))
    thick = thick_slices(v["T2w"], 4, axis=0)
    j = v["T2w"].shape[1] // 2 + 8
    tz = thick.spacing[2]
    bottom.append(("T2w thick x4 (8 mm), coronal", _picture(_grey(thick.array[:, j, :], *_mr_window(thick.array)),
                                                            tz, sx)))
    ks = kspace_truncate(v["T2w"], 2, axes=(1, 2))
    ksy, ksx = ks.spacing[1], ks.spacing[0]
    bottom.append(("T2w k-space x2 (4 mm in-plane)", _picture(_grey(ks.array[k], *_mr_window(ks.array)), ksy, ksx)))

    pad, label, title = 6, 16, 20
    cols = max(len(top), len(bottom))
    w = max(p.width for _, p in top + bottom)
    heights = [max(p.height for _, p in row) for row in (top, bottom)]
    canvas = Image.new("RGB", (cols * (w + pad) + pad, title + sum(h + label + pad for h in heights) + pad),
                       (15, 15, 15))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 4), f"MedGAN phantom subject {seed} (test split), simulated from the MNI ICBM152 2009a template; "
                        f"2 mm grid; axial slice {k}. Not an image of a person.", fill=(235, 235, 235))
    y = title
    for row, h in zip((top, bottom), heights):
        for n, (name, img) in enumerate(row):
            x = pad + n * (w + pad)
            draw.text((x, y), name, fill=(235, 235, 235))
            canvas.paste(img, (x + (w - img.width) // 2, y + label + (h - img.height) // 2))
        y += h + label + pad
    path = Path(path)
    canvas.save(path)
    return path


if __name__ == "__main__":
    print(make_montage(*sys.argv[1:2]))
