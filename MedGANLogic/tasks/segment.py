"""Segmentation: per-voxel class = argmax of the network's logits, a label map on the input grid."""

from __future__ import annotations

import numpy as np

from . import TaskContext, output_metadata


def make_outputs(ctx: TaskContext):
    raw = ctx.raw
    if raw.shape[0] == 1:  # a single logit channel: foreground where sigmoid > 0.5
        labels = (raw[0] > 0).astype(np.uint8)
    else:
        labels = raw.argmax(axis=0).astype(np.uint8)
    names = {int(k): v for k, v in ctx.card.extras.get("labels", {"1": "lesion"}).items()}
    meta = output_metadata(ctx, kind="labels")
    meta.update({"modality": "mask", "segment_names": names})
    meta.pop("units", None)
    volumes = {int(v): int((labels == v).sum()) for v in names}
    return {"labels": ctx.volume.with_array(labels, metadata=meta)}, {"voxels_per_label": volumes}
