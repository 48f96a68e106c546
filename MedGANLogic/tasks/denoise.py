"""Denoising (low-dose CT -> standard dose): same modality and units (HU), same grid."""

from __future__ import annotations

from . import TaskContext, image_output


def make_outputs(ctx: TaskContext):
    return {"image": image_output(ctx)}, {}
