"""The options of a run: names, types and ranges, checked once (in :func:`MedGANLogic.pipeline.plan`).

Every option a caller may pass to ``MedGANLogic.run``/``plan`` (or the CLI) is described here, with the rule its
value must meet; :func:`validate_options` returns the options typed (``batch_size`` an ``int``, ``overlap`` a
``float``) or raises an :class:`~MedGANLogic.errors.InputError` that names the option, the rule and the value.
An option given as ``None`` (or an empty ``modality``/``contrast``, as a form field leaves it) counts as not
given. Card-dependent rules (``slice_axis`` against the model) are checked by the plan step once the model is
chosen.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from .errors import InputError
from .inference import PRECISIONS
from .lesion_types import LESION_TYPES
from .models.card import ENSEMBLE_COUNTS


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy's bool too


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not _is_bool(value) and math.isfinite(float(value))


def _text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


# name -> (does the value pass, what it must be, how to store it)
_Rule = tuple[Callable[[Any], bool], str, Callable[[Any], Any]]
RULES: dict[str, _Rule] = {
    "batch_size": (lambda v: _integer(v) and v >= 1, "a positive integer (slices or patches per pass)", int),
    "overlap": (lambda v: _real(v) and 0.0 <= v < 1.0, "a number in [0, 1) (the fraction of a tile shared with "
                                                         "its neighbour)", float),
    "slice_axis": (lambda v: _integer(v) and v in (0, 1, 2), "0 (z), 1 (y) or 2 (x)", int),
    "force": (_is_bool, "True or False", bool),
    "amp": (_is_bool, "True or False (amp=False is the older spelling of precision='fp32')", bool),
    "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}", str),
    "modality": (_text, "a modality name such as MR or CT", str),
    "contrast": (_text, "an MR contrast name such as T1w, T2w or FLAIR", str),
    "threshold": (lambda v: _real(v) and v >= 0, "a number >= 0 (anomaly map values are >= 0)", float),
    "smoothing_mm": (lambda v: _real(v) and 0 <= v <= 50, "a number of mm in [0, 50]", float),
    "edge_mm": (lambda v: _real(v) and 0 <= v <= 20, "a number of mm in [0, 20] (the brain's outer rim left out of "
                                                     "the anomaly map)", float),
    "detrend": (lambda v: _integer(v) and 0 <= v <= 3, "an integer in [0, 3] (the degree of the smooth polynomial "
                                                        "field taken out of the anomaly residual; 0: none)", int),
    "residual": (_is_bool, "True or False (True: output the signed residual and the reconstruction, to calibrate "
                           "an anomaly model)", bool),
    "min_probability": (lambda v: _real(v) and 0 <= v <= 1, "a probability in [0, 1]", float),
    "input_detail": (_is_bool, "True or False (super-resolution: where the input is resampled into the model's "
                               "voxel size, add back the detail finer than it from a spline on the input grid; "
                               "default True)", bool),
    "consistency": (_is_bool, "True or False (super-resolution: change the output as little as possible so that it "
                              "gives back the input when degraded the way the model's card says; default True)",
                    bool),
    "native": (_is_bool, "True or False (True: run on the input's own grid, no resampling or reorientation)", bool),
    "bias_correction": (_is_bool, "True or False (True: N4 bias-field correction of MR inputs)", bool),
    "adapt": (_is_bool, "True or False (True: fit a network to this scan instead of running a trained one)", bool),
    "adapt_budget_s": (lambda v: _real(v) and 0 < v <= 86400, "a number of seconds in (0, 86400] (the fitting "
                                                               "time)", float),
    "adapt_steps": (lambda v: _integer(v) and v >= 1, "a positive integer (the most fitting steps)", int),
    "adapt_seed": (lambda v: _integer(v) and v >= 0, "an integer >= 0 (seeds the fit)", int),
    "ensemble": (lambda v: _integer(v) and v in ENSEMBLE_COUNTS, "1, 2, 4 or 8 (the trained network averaged over "
                 "that many flips and transpositions of each slice: smoother, and that many times slower; default: "
                 "the model card's)", int),
    "planes": (_is_bool, "True or False (synthesis with a model whose card asks for it, extras.planes: average the "
                         "2D network's outputs over the axial, coronal and sagittal slices; default True there, False "
                         "runs on the card's slice axis only)", bool),
    "lesion_type": (lambda v: v in LESION_TYPES, f"one of {', '.join(LESION_TYPES)} (white-matter hyperintensity, "
                                                 f"tumour-like with oedema, ischaemic)", str),
}
#: Options every task takes; a task adds its own (``TaskSpec.options``).
COMMON_OPTIONS = ("batch_size", "overlap", "slice_axis", "force", "precision", "amp", "modality", "contrast", "native",
                  "bias_correction")


def validate_options(task: str, task_options: tuple[str, ...], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against :data:`RULES` for ``task`` (common options plus ``task_options``), typed.

    Raises:
        InputError: an unknown option (naming the allowed ones) or a value that breaks its rule.
    """
    allowed = COMMON_OPTIONS + tuple(task_options)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(f"Unknown option(s) {', '.join(unknown)} for task {task!r}; allowed: {', '.join(allowed)}.")
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if value is None or (name in ("modality", "contrast") and value == ""):
            continue
        passes, rule, convert = RULES[name]
        if not passes(value):
            raise InputError(f"{name} must be {rule}; got {value!r}.")
        checked[name] = convert(value)
    return checked


def requested_precision(options: dict[str, Any]) -> str:
    """The precision asked for: ``precision``, else "fp32" for ``amp=False``, else "auto"."""
    if "precision" in options:
        return str(options["precision"])
    return "auto" if options.get("amp", True) else "fp32"
