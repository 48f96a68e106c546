"""Real CT anatomy for the domain-randomised generator, from the real-image cache (``make eval-real``).

The real chest CT volumes that ship in the pyradiomics 3.0.1 source archive (``lung1``, ``lung2``: HU,
0.57-0.63 mm pixels, 5 mm slices) are read with the evaluation's loader (:mod:`MedGANLogic.evaluation.real_data`,
which checks every file's SHA-256). An axial slice, at its own pixel size or averaged 2 x 2, is the object that
:func:`.lowdose.simulate_low_dose` scans: the low-dose and the full-dose reconstructions come from the same
projection-domain pipeline as the phantom's. The slice already holds the real scan's own noise and kernel: the
"full-dose" target is the full-dose reconstruction of that object, not a noise-free truth.

``stent`` (imageio) is left out: its values are clipped to 0-2000, so air and fat read as water, not anatomy.
The files are never committed; when the cache has none of them, :func:`real_ct_status` says so and how to fetch
them, and the generator falls back on phantom anatomy.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..resampling import block_mean_2x2
from ..volume import Volume

log = logging.getLogger(__name__)

REAL_CT_NAMES = ("lung1", "lung2")


def _real_data():
    try:
        from ..evaluation import real_data
    except ImportError:  # the evaluation package is not installed with the Slicer module's engine
        return None
    return real_data


def real_ct_status(cache: str | Path | None = None) -> tuple[list[str], str]:
    """(names of the real CT volumes in the cache, a one-line message saying what the generator will use)."""
    real_data = _real_data()
    if real_data is None:
        return [], ("Real CT anatomy unavailable: MedGANLogic.evaluation.real_data (the real-image loader) is not "
                    "installed; the generator uses phantom CT anatomy only.")
    names = []
    for name in REAL_CT_NAMES:
        try:
            real_data.verified_path(real_data.IMAGES[name].file, cache)
            names.append(name)
        except real_data.RealDataMissingError:
            pass
    folder = real_data.cache_dir(cache)
    if not names:
        return [], (f"No real CT in {folder}: the generator uses phantom CT anatomy only. Run "
                    f"`{real_data.MAKE_TARGET}` once to fetch the real CT slices (pyradiomics lung1, lung2) there, "
                    f"or set ${real_data.CACHE_ENV} to a folder that has them.")
    return names, f"Real CT anatomy from {folder}: {', '.join(names)}."


@functools.lru_cache(maxsize=2)
def _load(names: tuple[str, ...], cache: str | None) -> tuple[Volume, ...]:
    real_data = _real_data()
    return tuple(real_data.load(n, cache) for n in names)


def real_ct_volumes(cache: str | Path | None = None) -> list[Volume]:
    """The real CT volumes of the cache (HU, their files' geometry); empty list (and one log line) if none."""
    names, message = real_ct_status(cache)
    if not names:
        log.warning(message)
        return []
    return list(_load(tuple(names), None if cache is None else str(cache)))


def random_real_slice(volumes: list[Volume], rng: np.random.Generator, pixel_mm: tuple[float, float]
                      ) -> tuple[np.ndarray, float, dict[str, Any]]:
    """(axial slice (y, x) in HU, its pixel size in mm, description) from a random real CT volume.

    The slice is averaged 2 x 2 when its native pixel is below the drawn ``pixel_mm`` range's midpoint and
    doubling stays within the range's top (coarser pixels, less noise per pixel after reconstruction).
    """
    if not volumes:
        raise InputError("No real CT volumes to draw from; run `make eval-real` to fetch them.")
    v = int(rng.integers(len(volumes)))
    volume = volumes[v]
    k = int(rng.integers(volume.shape[0]))
    slice_hu = np.asarray(volume.array[k], np.float32)
    native = float(np.mean(volume.spacing[:2]))
    wanted = float(rng.uniform(*pixel_mm))
    pooled = 2 * native <= pixel_mm[1] and wanted > 1.5 * native
    if pooled:
        slice_hu = block_mean_2x2(slice_hu).astype(np.float32)
    pixel = native * (2 if pooled else 1)
    name = volume.metadata.get("name", f"volume {v}")
    return slice_hu, pixel, {"name": name, "slice": k, "pixel_mm": round(pixel, 4),
                             "source": volume.metadata.get("source", "")}
