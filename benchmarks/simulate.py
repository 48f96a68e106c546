"""Phantom simulation speed: one subject with every contrast, and one 256x256 low-dose CT slice pair.

    python benchmarks/simulate.py

Prints a table and writes benchmarks/simulate.json. The template is loaded once first (its cost is reported
separately, as a process pays it once).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402

from MedGANLogic.simulate import make_subject, simulate_low_dose  # noqa: E402
from MedGANLogic.simulate.tissue import template_tissues  # noqa: E402


def timed(fn, repeats=3):
    best = float("inf")
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    rows = []
    t0 = time.perf_counter()
    template_tissues()
    rows.append({"what": "load MNI152 template + tissue model (once per process)",
                 "seconds": f"{time.perf_counter() - t0:.2f}"})
    for spacing in (2.0, 1.0):
        make_subject(0, spacing_mm=spacing)  # warm the per-spacing cache
        sec, s = timed(lambda spacing=spacing: make_subject(1, spacing_mm=spacing), repeats=2 if spacing == 2.0 else 1)
        rows.append({"what": f"one subject, T1w+T2w+PD+FLAIR+CT+mask + lesion-free twin, {spacing:g} mm "
                             f"{s.volumes['T1w'].shape}", "seconds": f"{sec:.2f}"})
    ct = make_subject(1).volumes["CT"].array
    k = ct.shape[0] // 2
    slice256 = ndimage.zoom(ct[k], (256 / ct.shape[1], 256 / ct.shape[2]), order=1)
    sec, _ = timed(lambda: simulate_low_dose(slice256, 0.25, seed=0, pixel_mm=0.9))
    rows.append({"what": "one 256x256 low-dose/full-dose CT slice pair (256 views, FBP)", "seconds": f"{sec:.3f}"})
    print(table(rows, ["what", "seconds"]))
    print(f"wrote {save('simulate', {'rows': rows, 'slice_hu_mean': float(np.mean(slice256))})}")


if __name__ == "__main__":
    main()
