"""Image-quality and detection metrics of the evaluation, one copy each, computed by MONAI.

Every function takes NumPy arrays and returns a Python float. Masks are boolean arrays of the image's shape.

* :func:`psnr`, :func:`mae`: MONAI ``PSNRMetric`` / ``MAEMetric`` over the voxels of a mask, with an explicit
  data range for PSNR (the air around a head, which every method gets right, does not inflate them).
* :func:`ssim`: MONAI ``compute_ssim_and_cs`` per axial slice (11 x 11 Gaussian window, sigma 1.5, k1 0.01,
  k2 0.03), its map averaged over the mask.
* :func:`dice`: MONAI ``compute_dice`` of two binary masks (1 when both are empty).
* :func:`hd95`: MONAI ``compute_hausdorff_distance`` at the 95th percentile, in mm.
* :func:`auroc`, :func:`average_precision`: MONAI ``compute_roc_auc`` / ``compute_average_precision`` of scores
  against binary labels; :func:`paired_auroc_interval`: a bootstrap interval of the AUROC over pairs.

Imports only NumPy, torch and MONAI, so training code may use it too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _masked(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.from_numpy(np.ascontiguousarray(pred[mask], dtype=np.float32))[None, None]
    t = torch.from_numpy(np.ascontiguousarray(target[mask], dtype=np.float32))[None, None]
    return p, t


def psnr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, data_range: float) -> float:
    """PSNR in dB over the voxels of ``mask`` (MONAI ``PSNRMetric``, max value = ``data_range``, the images' units)."""
    from monai.metrics import PSNRMetric

    p, t = _masked(pred, target, mask)
    return float(PSNRMetric(max_val=float(data_range))(p, t).mean())


def mae(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error over the voxels of ``mask`` (MONAI ``MAEMetric``), in the images' units."""
    from monai.metrics import MAEMetric

    p, t = _masked(pred, target, mask)
    return float(MAEMetric()(p, t).mean())


def ssim(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, data_range: float, win: int = 11) -> float:
    """Mean 2D SSIM of (z, y, x) images, per slice along axis 0, over the pixels of ``mask`` whose ``win`` x
    ``win`` window lies inside the image (MONAI ``compute_ssim_and_cs``, Gaussian sigma 1.5); in [-1, 1]."""
    from monai.metrics.regression import compute_ssim_and_cs

    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))[:, None]
    t = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))[:, None]
    ssim_map, _ = compute_ssim_and_cs(p, t, spatial_dims=2, kernel_size=(win, win), kernel_sigma=(1.5, 1.5),
                                      data_range=float(data_range))
    r = win // 2
    inner = mask[:, r:mask.shape[1] - r, r:mask.shape[2] - r]
    return float(ssim_map[:, 0].numpy()[inner].mean())


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2|P ∩ T| / (|P| + |T|) of two binary masks of the same shape, in [0, 1]; 1.0 when both are
    empty (MONAI ``compute_dice``)."""
    from monai.metrics import compute_dice

    if pred.shape != truth.shape:
        raise ValueError(f"dice: pred has shape {pred.shape} and truth {truth.shape}; they must be the same.")
    p = torch.from_numpy(np.asarray(pred, dtype=bool)[None, None])
    t = torch.from_numpy(np.asarray(truth, dtype=bool)[None, None])
    return float(compute_dice(p, t, include_background=True, ignore_empty=False)[0, 0])


def hd95(pred: np.ndarray, truth: np.ndarray, spacing_mm: float | Sequence[float]) -> float:
    """95 % Hausdorff distance in mm between two binary masks (MONAI ``compute_hausdorff_distance``, surface
    distances both ways); ``spacing_mm``: the voxel size, one value or one per axis. Infinite when ``pred`` is
    empty."""
    from monai.metrics import compute_hausdorff_distance

    if not pred.any():
        return float("inf")
    spacing = float(spacing_mm) if np.ndim(spacing_mm) == 0 else [float(s) for s in spacing_mm]  # MONAI: one type
    p = torch.from_numpy(np.stack([~pred, pred])[None].astype(np.float32))
    t = torch.from_numpy(np.stack([~truth, truth])[None].astype(np.float32))
    return float(compute_hausdorff_distance(p, t, include_background=False, percentile=95, spacing=spacing)[0, 0])


def _scores_labels(scores: np.ndarray | Sequence[float],
                   labels: np.ndarray | Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {tuple(s.shape)} and labels {tuple(y.shape)} must be 1D and of the same length.")
    return s, y


def auroc(scores: np.ndarray | Sequence[float], labels: np.ndarray | Sequence[float]) -> float:
    """Area under the ROC curve of ``scores`` (higher = more likely positive) for binary ``labels`` (1D, same
    length), in [0, 1]; 0.5 is chance (MONAI ``compute_roc_auc``)."""
    from monai.metrics import compute_roc_auc

    return float(compute_roc_auc(*_scores_labels(scores, labels)))


def average_precision(scores: np.ndarray | Sequence[float], labels: np.ndarray | Sequence[float]) -> float:
    """Average precision (area under the precision-recall curve) of ``scores`` for binary ``labels``, in [0, 1]
    (MONAI ``compute_average_precision``)."""
    from monai.metrics import compute_average_precision

    return float(compute_average_precision(*_scores_labels(scores, labels)))


def paired_auroc_interval(positives: Sequence[float], negatives: Sequence[float], level: float = 0.95,
                          resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval (``level``) of the AUROC of ``positives`` against ``negatives`` that come in
    pairs (a lesioned subject and its lesion-free twin, index for index): the pairs are resampled with replacement,
    ``resamples`` times from a fixed ``seed``. How far a case AUROC on a few pairs can be trusted."""
    pos, neg = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
    if pos.size != neg.size or pos.size == 0:
        raise ValueError(f"paired_auroc_interval needs pairs: got {pos.size} positives and {neg.size} negatives")
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(pos.size), np.zeros(pos.size)]
    values = [auroc(np.r_[pos[i], neg[i]], labels) for i in rng.integers(0, pos.size, (resamples, pos.size))]
    tail = 100.0 * (1.0 - level) / 2.0
    return float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, float]:
    """``a - b`` per subject, over the subjects where both are finite, and the paired Wilcoxon signed-rank p-value
    of those differences (1.0 when there are none or all are zero): with/without comparisons in the report."""
    from scipy.stats import wilcoxon

    d = np.array([x - y for x, y in zip(a, b) if np.isfinite(x) and np.isfinite(y)], dtype=np.float64)
    return d, float(wilcoxon(d).pvalue) if d.size and np.any(d != 0) else 1.0


def dice_verdict(what: str, d_dice: np.ndarray, p_dice: float, alpha: float = 0.05) -> str:
    """One sentence on whether ``what`` (the difference between two trainings) changes Dice significantly."""
    if d_dice.mean() > 0 and p_dice < alpha:
        return f"{what} helps: Dice is significantly higher with it"
    if d_dice.mean() < 0 and p_dice < alpha:
        return f"{what} hurts: Dice is significantly lower with it"
    return f"{what} makes no significant difference to Dice on these subjects"
