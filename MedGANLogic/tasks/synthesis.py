"""Modality synthesis (T1w->T2w, MR->CT, ...): the output is a new contrast on the input's exact grid."""

from __future__ import annotations

from . import TaskContext, image_output


def make_outputs(ctx: TaskContext):
    return {"image": image_output(ctx)}, {}
