"""A montage of one phantom subject for people to look at: ``python -m MedGANLogic.simulate.montage OUT.png``.

Axial slices through the largest lesion: T1w, T2w, PD, FLAIR; CT (brain window W 120 / L 40) and bone window,
25 %-dose CT, thick-slice T2w (coronal, 4 mm slices) and the lesion mask over FLAIR.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .lowdose import simulate_low_dose
from .lowres import thick_slices
from .subjects import SPLITS, make_subject

SCALE = 3  # pixels per 2 mm voxel in the picture


def _grey(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    g = (np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _auto(a: np.ndarray) -> tuple[float, float]:
    return 0.0, float(np.percentile(a, 99.5))


def _picture(rgb: np.ndarray, aspect: float = 1.0) -> Image.Image:
    img = Image.fromarray(rgb[::-1])  # array row 0 is posterior/inferior: flip so anterior/superior is up
    return img.resize((rgb.shape[1] * SCALE, int(round(rgb.shape[0] * SCALE * aspect))), Image.BILINEAR)


def make_montage(path: str | Path, seed: int = SPLITS["test"][0]) -> Path:
    s = make_subject(seed)
    v = s.volumes
    mask = v["lesion_mask"].array > 0
    k = int(np.argmax(mask.sum(axis=(1, 2)))) if mask.any() else v["T1w"].shape[0] // 2
    panels = []
    for c in ("T1w", "T2w", "PD", "FLAIR"):
        a = v[c].array[k]
        panels.append((c, _picture(_grey(a, *_auto(v[c].array)))))
    ct = v["CT"].array[k]
    panels.append(("CT W120/L40", _picture(_grey(ct, -20, 100))))
    panels.append(("CT bone W2000/L500", _picture(_grey(ct, -500, 1500))))
    low = simulate_low_dose(ct, 0.25, seed=seed, pixel_mm=2.0)
    panels.append(("CT 25% dose W120/L40", _picture(_grey(low, -20, 100))))
    thick = thick_slices(v["T2w"], 2, axis=0)
    j = v["T2w"].shape[1] // 2 + 10
    panels.append(("T2w thick 4 mm (coronal)", _picture(_grey(thick.array[:, j, :], *_auto(thick.array)), aspect=2.0)))
    flair = _grey(v["FLAIR"].array[k], *_auto(v["FLAIR"].array)).astype(np.float32)
    overlay = flair.copy()
    overlay[mask[k]] = 0.45 * overlay[mask[k]] + 0.55 * np.array([255, 40, 40])
    panels.append(("FLAIR + lesion mask", _picture(overlay.astype(np.uint8))))
    cols, pad, label = 5, 6, 16
    w = max(p.width for _, p in panels)
    h = max(p.height for _, p in panels)
    rows = (len(panels) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + label + pad) + pad + 18), (15, 15, 15))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 3), f"MedGAN phantom subject {seed} (simulated from the MNI152 template; 2 mm; axial slice {k})",
              fill=(235, 235, 235))
    for n, (name, img) in enumerate(panels):
        x = pad + (n % cols) * (w + pad)
        y = 18 + pad + (n // cols) * (h + label + pad)
        draw.text((x, y), name, fill=(235, 235, 235))
        canvas.paste(img, (x, y + label))
    path = Path(path)
    canvas.save(path)
    return path


if __name__ == "__main__":
    print(make_montage(sys.argv[1] if len(sys.argv) > 1 else "Testing/Reports/simulate.png"))
