"""Anomaly maps (f-AnoGAN style): how far the input is from the model's reconstruction of healthy anatomy.

map = |x - G(E(x))| in the normalised intensity range, Gaussian-smoothed (``smoothing_mm``, default 2 mm) and
set to zero outside the head. The case score is the network's own ``anomaly_score`` if it has one (f-AnoGAN:
image residual + kappa * discriminator-feature residual, per slice, max over slices), else the 99th percentile
of the map inside the head. The candidate-lesion mask thresholds the map at ``threshold`` (default: the value
chosen on validation data and stored in the card's ``extras.threshold``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..modality import is_ct
from ..normalization import foreground_mask
from . import TaskContext, output_metadata


def make_outputs(ctx: TaskContext):
    recon = ctx.raw[0]
    residual = np.abs(ctx.normalized - recon)
    smoothing_mm = float(ctx.options.get("smoothing_mm", ctx.card.extras.get("smoothing_mm", 2.0)))
    if smoothing_mm > 0:
        sigma = [smoothing_mm / s for s in ctx.volume.spacing[::-1]]  # mm -> voxels along (z, y, x)
        residual = ndimage.gaussian_filter(residual, sigma=sigma)
    head = ctx.volume.array > -500 if is_ct(ctx.volume) else foreground_mask(ctx.volume.array)  # -500 HU: body
    head = ndimage.binary_closing(head, iterations=2)
    residual = np.where(head, residual, 0.0).astype(np.float32)
    if hasattr(ctx.net, "case_score") and ctx.options.get("case_score_from_net", True):
        score = float(ctx.net.case_score(ctx.normalized, recon))
    else:
        score = float(np.percentile(residual[head], 99)) if head.any() else 0.0
    threshold = ctx.options.get("threshold", ctx.card.extras.get("threshold"))
    if threshold is None:
        threshold = float(np.percentile(residual[head], 99)) if head.any() else 0.0
    threshold = float(threshold)
    meta = output_metadata(ctx, kind="anomaly_map")
    meta.update({"modality": "anomaly", "units": "normalised residual", "case_score": score,
                 "threshold": threshold})
    amap = ctx.volume.with_array(residual, metadata=meta)
    mask_meta = dict(meta, kind="mask", modality="mask", segment_names={1: "anomaly candidate"})
    mask = ctx.volume.with_array((residual > threshold).astype(np.uint8), metadata=mask_meta)
    extras = {"case_score": score, "threshold": threshold, "candidate_voxels": int(mask.array.sum())}
    return {"anomaly_map": amap, "mask": mask}, extras


def on_input_grid(outputs, extras, volume, card):
    """The map resampled onto the input grid: the mask is its threshold there, so mask == (map > threshold)."""
    amap, mask = outputs["anomaly_map"], outputs["mask"]
    mask.array = (amap.array > extras["threshold"]).astype(np.uint8)
    return dict(extras, candidate_voxels=int(mask.array.sum()))
