"""The simple methods each model must beat, as plain functions and small fitted classes over (z, y, x) arrays.

* :func:`histogram_matching` (MR contrast synthesis): the source's head intensities mapped onto a reference
  image's histogram (skimage ``match_histograms``).
* :class:`ThresholdMapping` (MR <-> CT): tissue classes by multi-Otsu thresholds, each set to its mean target
  value on paired training subjects (bulk density, as MR-only radiotherapy planning does it).
* :func:`nlm_denoise` (low-dose CT): non-local means per axial slice (skimage ``denoise_nl_means``).
* :func:`bspline_upsample` (super-resolution): cubic B-spline interpolation onto the output grid (SimpleITK).
* :class:`RobustZScore` (anomaly maps): voxel-wise robust z-scores against a healthy population.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..volume import Volume


def histogram_matching(source: np.ndarray, mask: np.ndarray, reference: np.ndarray, ref_mask: np.ndarray) -> np.ndarray:
    """Map the source's head intensities (``mask``) onto the histogram of ``reference`` inside ``ref_mask``
    (skimage ``match_histograms``); 0 outside ``mask``, float32."""
    from skimage.exposure import match_histograms

    out = np.zeros_like(source, dtype=np.float32)
    out[mask] = match_histograms(source[mask], reference[ref_mask])
    return out


class ThresholdMapping:
    """Tissue classes by intensity thresholds of the source, each class set to its mean target value.

    Between MR and CT this is the bulk-density assignment of MR-only radiotherapy planning: segment tissue
    classes by thresholds, give each a fixed density (here the mean HU of the class on paired training
    subjects). Thresholds are multi-Otsu on the training sources (MR first mapped to [0, 1] by its own 0.5-99.5
    percentile window, since MR has no absolute scale).
    """

    def __init__(self, classes: int = 4, mr_source: bool = True):
        self.classes, self.mr_source = classes, mr_source

    def _scale(self, src: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if not self.mr_source:
            return src
        lo, hi = np.percentile(src[mask], [0.5, 99.5])
        return (src - lo) / max(hi - lo, 1e-6)

    def fit(self, sources: list[np.ndarray], targets: list[np.ndarray], masks: list[np.ndarray]) -> ThresholdMapping:
        """Thresholds from the ``sources``' voxels in ``masks``; each class's value: its mean in ``targets``."""
        from skimage.filters import threshold_multiotsu

        values = np.concatenate([self._scale(s, m)[m] for s, m in zip(sources, masks)])
        tvals = np.concatenate([t[m] for t, m in zip(targets, masks)])
        self.thresholds = threshold_multiotsu(values, classes=self.classes)
        labels = np.digitize(values, self.thresholds)
        self.values = np.array([tvals[labels == k].mean() if np.any(labels == k) else tvals.mean()
                                for k in range(self.classes)], dtype=np.float32)
        return self

    def predict(self, source: np.ndarray, mask: np.ndarray, background: float) -> np.ndarray:
        """The class values of ``source`` inside ``mask``, ``background`` outside; float32."""
        out = np.full(source.shape, background, dtype=np.float32)
        out[mask] = self.values[np.digitize(self._scale(source, mask)[mask], self.thresholds)]
        return out


def nlm_denoise(ct_hu: np.ndarray, h: float) -> np.ndarray:
    """Non-local means per axial slice (skimage ``denoise_nl_means``, patch 5, search distance 6), strength ``h`` HU."""
    from skimage.restoration import denoise_nl_means

    out = np.empty_like(ct_hu, dtype=np.float32)
    for z in range(ct_hu.shape[0]):
        out[z] = denoise_nl_means(ct_hu[z].astype(np.float64), h=float(h), patch_size=5, patch_distance=6,
                                  fast_mode=True)
    return out


def bspline_upsample(low: Volume, grid: Volume) -> np.ndarray:
    """Cubic B-spline interpolation (SimpleITK ``sitkBSpline``) of ``low`` at the voxel centres of ``grid``.

    Outside the outermost input voxel centres (half an input voxel at each end) the nearest value is used.
    Returns a float32 array of ``grid``'s shape (:func:`MedGANLogic.resampling.bspline_onto`).
    """
    from ..resampling import bspline_onto, grid_of

    return bspline_onto(low, grid_of(grid))


class RobustZScore:
    """Voxel-wise robust z-scores against a healthy population: |x - median| / (1.4826 MAD + eps).

    Every volume (population and case) is first normalised by the model card's input normalisation, so the
    baseline sees the intensities the model sees; the map is then smoothed and masked like the model's.
    """

    def __init__(self, spec: dict[str, Any], smoothing_mm: float, spacing_mm: float):
        self.spec, self.smoothing_mm, self.spacing_mm = spec, smoothing_mm, spacing_mm

    def fit(self, healthy: list[np.ndarray]) -> RobustZScore:
        """Voxel-wise median and MAD of the normalised ``healthy`` volumes (all of one shape)."""
        from ..normalization import normalize

        stack = np.stack([normalize(v, self.spec)[0] for v in healthy])
        self.median = np.median(stack, axis=0)
        self.scale = 1.4826 * np.median(np.abs(stack - self.median), axis=0) + 0.02  # floor: ~ the noise level
        return self

    def map(self, volume: np.ndarray, head: np.ndarray) -> np.ndarray:
        """The |z| map of ``volume``, Gaussian-smoothed by ``smoothing_mm``, 0 outside ``head``; float32."""
        from scipy import ndimage

        from ..normalization import normalize

        z = np.abs(normalize(volume, self.spec)[0] - self.median) / self.scale
        if self.smoothing_mm > 0:
            z = ndimage.gaussian_filter(z, sigma=self.smoothing_mm / self.spacing_mm)
        return np.where(head, z, 0.0).astype(np.float32)

    @staticmethod
    def case_score(amap: np.ndarray, head: np.ndarray) -> float:
        """The case's score: the mean of the top 1 % of ``amap`` inside ``head``."""
        values = np.sort(amap[head])
        return float(values[-max(1, values.size // 100):].mean())
