"""Model cards: what a model is, what it expects, how to normalise its input and what it may be used for.

A model is a folder holding ``card.json`` and ``weights.safetensors``. Example card::

    {
      "id": "mr-t1-to-t2", "version": "1.0.0", "task": "synthesize",
      "name": "T1w to T2w (pix2pix)",
      "architecture": {"name": "unet2d", "params": {"in_channels": 1, "out_channels": 1, "features": 32}},
      "dims": "2d", "slice_axis": 0, "context_slices": 0, "tile_size": [256, 256],
      "scale_factor": [1, 1, 1],
      "input": {"modality": "MR", "contrast": "T1w",
                "normalization": {"kind": "mr_percentile", "percentiles": [0.5, 99.5], "range": [-1, 1]}},
      "output": {"modality": "MR", "contrast": "T2w", "units": "a.u.",
                 "normalization": {"kind": "fixed", "window": [0, 1000], "range": [-1, 1]}},
      "weights": {"file": "weights.safetensors", "sha256": "<64 hex digits>"},
      "training_data": "...", "license": "...", "intended_use": "research, not for diagnosis"
    }

Fields:
  * ``task``: a name of the task table :data:`MedGANLogic.tasks.TASKS` (synthesize, denoise, superres, anomaly,
    segment).
  * ``dims``: ``2d`` (slice-wise along ``slice_axis`` of the (z, y, x) array), ``2.5d`` (2d with
    ``context_slices`` neighbours on each side stacked as channels) or ``3d`` (patches of ``tile_size``).
  * ``tile_size``: in-plane tile for 2d/2.5d (2 numbers, in the order of the remaining array axes) or a 3d patch.
  * ``scale_factor``: output/input voxel ratio along (z, y, x); 1 everywhere except super-resolution.
  * normalisation kinds: ``ct_window`` (HU window -> range, clipped), ``mr_percentile`` (foreground
    percentiles -> range), ``fixed`` (a fixed intensity window -> range), ``same_as_input`` (output only:
    undo the input's normalisation, for denoising and super-resolution), ``none``.
  * ``input.spacing_mm`` / ``input.fov_mm`` (optional): ``[min, max]`` voxel size and field of view in mm that
    the model was trained for; the Slicer panel warns outside them.
  * ``input.body_part`` (optional): ``"head"`` for a model made for heads only; a CT that is plainly not a head
    (lungs or bowel gas: :func:`MedGANLogic.modality.body_part_problem`) is refused unless forced.
  * ``mixed_precision`` (optional): ``"bf16"`` when the model's outputs were checked to stay close to fp32 in
    bf16 (``Testing/Python/test_precision.py``); the engine then runs it in bf16 on devices that compute bf16
    natively. Absent or ``"none"``: always fp32 (instance norm over empty slices amplifies bf16 rounding).
  * ``extras``: task-specific values (e.g. the anomaly threshold chosen on validation data, segment names).
  * ``extras.planes`` (optional, 2D models that keep the voxel size): three weights summing to 1; the network runs
    slicing along each axis (z, y, x) of the model's frame and the outputs are averaged with them (axial, coronal
    and sagittal slices of a model trained on all three; :func:`plane_weights`).
  * ``weights.file``: a file name inside the model folder (no path; a link may not lead outside the folder).

Sizes are bounded so that a card cannot ask for terabytes: in-plane tiles of at most 2048 voxels a side, 3d patches
of at most 512 a side and 256^3 voxels, scale factors of at most 8, at most 32 context slices, network widths
(``features``, ``*channels``, ``num_classes``) of 1..1024, depths (``depth``, ``levels``, ``*blocks``, ``layers``,
``n_down``, ``convs_per_level``) of 0..64, and any other whole number in ``architecture.params`` of at most 4096.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ..degradation import SR_DEGRADATIONS
from ..errors import ModelError
from ..modality import describe_modality
from ..tasks import TASKS

DIMS = ("2d", "2.5d", "3d")
#: How many flips and transpositions of each slice a 2D network may be averaged over (:mod:`.ensemble`).
ENSEMBLE_COUNTS = (1, 2, 4, 8)
NORMALIZATION_KINDS = ("ct_window", "mr_percentile", "fixed", "same_as_input", "none")
REQUIRED = ("id", "version", "task", "architecture", "dims", "input", "output", "weights", "license",
            "intended_use", "training_data")
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")

MAX_TILE_2D = 2048  # voxels a side of an in-plane tile
MAX_TILE_3D = 512  # voxels a side of a 3d patch ...
MAX_PATCH_VOXELS = 256 ** 3  # ... and in all
MAX_SCALE = 8
MAX_CONTEXT_SLICES = 32
MAX_WIDTH = 1024  # channels of a layer
MAX_DEPTH = 64  # levels, blocks or layers
MAX_OTHER_INT = 4096
_WIDTH = re.compile(r"^(features|num_classes|.*channels|n[gd]f)$")
_DEPTH = re.compile(r"^(depth|levels|.*blocks|layers|n_down|convs_per_level)$")


@dataclass
class ModelCard:
    """A validated model card; ``folder`` is where card.json and the weights live."""

    data: dict[str, Any]
    folder: Path | None = None
    source: str = "user"  # "builtin" (Resources/Models) or "user" (MEDGAN_MODELS_DIR)
    extras: dict[str, Any] = field(init=False)

    shadows: Path | None = field(default=None, init=False)  # the built-in folder a user model of this id hides

    def __post_init__(self) -> None:
        where = str(self.folder or "card")
        validate_card(self.data, where=where)
        if self.folder is not None:
            _check_weights_inside(self.folder, self.data["weights"].get("file", "weights.safetensors"), where)
        self.extras = dict(self.data.get("extras", {}))

    # convenient views of the card's fields
    id = property(lambda self: self.data["id"])
    version = property(lambda self: self.data["version"])
    task = property(lambda self: self.data["task"])
    dims = property(lambda self: self.data["dims"])
    architecture = property(lambda self: self.data["architecture"]["name"])
    arch_params = property(lambda self: dict(self.data["architecture"].get("params", {})))
    slice_axis = property(lambda self: int(self.data.get("slice_axis", 0)))
    context_slices = property(lambda self: int(self.data.get("context_slices", 0)))
    tile_size = property(lambda self: tuple(self.data.get("tile_size") or ()))
    scale_factor = property(lambda self: tuple(float(s) for s in self.data.get("scale_factor", (1, 1, 1))))
    input = property(lambda self: self.data["input"])
    output = property(lambda self: self.data["output"])
    sha256 = property(lambda self: self.data["weights"]["sha256"])
    name = property(lambda self: self.data.get("name", self.data["id"]))

    @property
    def weights_path(self) -> Path:
        if self.folder is None:
            raise ModelError(f"Model {self.id} has no folder; its weights cannot be found.")
        return self.folder / self.data["weights"].get("file", "weights.safetensors")

    def summary(self) -> dict[str, Any]:
        size = self.weights_path.stat().st_size if self.folder and self.weights_path.exists() else None
        return {
            "id": self.id, "version": self.version, "task": self.task, "name": self.name,
            "modality_in": describe_modality(self.input), "modality_out": describe_modality(self.output),
            "dims": self.dims, "scale_factor": list(self.scale_factor), "size_bytes": size,
            "source": self.source, "folder": str(self.folder) if self.folder else None,
            "shadows": str(self.shadows) if self.shadows else None,
            "intended_use": self.data["intended_use"], "training_data": self.data["training_data"],
        }

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=False)


def _fail(where: str, field_name: str, problem: str) -> None:
    raise ModelError(f"Invalid model card {where}: field '{field_name}' {problem}.")


def _check_normalization(where: str, name: str, norm: Any, output: bool) -> None:
    if not isinstance(norm, dict) or norm.get("kind") not in NORMALIZATION_KINDS:
        _fail(where, name + ".kind", f"must be one of {', '.join(NORMALIZATION_KINDS)}")
    kind = norm["kind"]
    if kind == "same_as_input" and not output:
        _fail(where, name + ".kind", "'same_as_input' is only allowed for the output")
    if kind in ("ct_window", "fixed"):
        window = norm.get("window")
        if not (isinstance(window, list) and len(window) == 2 and window[0] < window[1]):
            _fail(where, name + ".window", "must be [low, high] with low < high (HU for CT)")
    if "knots" in norm:
        _check_knots(where, name, norm)
    if kind == "mr_percentile":
        pct = norm.get("percentiles", [0.5, 99.5])
        if not (isinstance(pct, list) and len(pct) == 2 and 0 <= pct[0] < pct[1] <= 100):
            _fail(where, name + ".percentiles", "must be [low, high] with 0 <= low < high <= 100")
    if kind in ("mr_percentile", "fixed") and not isinstance(norm.get("zero_based", False), bool):
        _fail(where, name + ".zero_based", "must be true or false")
    if kind != "none":
        rng = norm.get("range", [-1, 1])
        if not (isinstance(rng, list) and len(rng) == 2 and rng[0] < rng[1]):
            _fail(where, name + ".range", "must be [low, high] with low < high")


def _check_knots(where: str, name: str, norm: dict[str, Any]) -> None:
    """A piecewise-linear ``ct_window``: ``knots`` [[HU, value], ...] from [window low, range low] to [window high,
    range high], strictly increasing in both."""
    if norm["kind"] != "ct_window":
        _fail(where, name + ".knots", "is only allowed with kind ct_window")
    knots, window, rng = norm["knots"], norm["window"], norm.get("range", [-1, 1])
    ok = (isinstance(knots, list) and len(knots) >= 2
          and all(isinstance(k, list) and len(k) == 2 and all(isinstance(v, (int, float)) for v in k) for k in knots))
    if not ok:
        _fail(where, name + ".knots", "must be a list of at least two [HU, value] pairs")
    hu, values = [k[0] for k in knots], [k[1] for k in knots]
    if any(b <= a for a, b in zip(hu, hu[1:])) or any(b <= a for a, b in zip(values, values[1:])):
        _fail(where, name + ".knots", "must increase strictly in HU and in value")
    if [hu[0], hu[-1]] != list(window) or [values[0], values[-1]] != list(rng):
        _fail(where, name + ".knots", f"must run from [{window[0]}, {rng[0]}] to [{window[1]}, {rng[1]}] (the "
              f"window's ends onto the range's ends); got {knots[0]} to {knots[-1]}")


def _check_weights_inside(folder: Path, name: str, where: str) -> None:
    """A weights file reached through a link must still lie inside the model folder."""
    path = folder / name
    if path.is_symlink() or path.exists():
        target, home = path.resolve(), folder.resolve()
        if not target.is_relative_to(home):
            _fail(where, "weights.file", f"is a link leading outside the model folder (to {target}); put the weights "
                  f"file itself in the folder")


def _check_weights_name(where: str, name: Any) -> None:
    plain = (isinstance(name, str) and name not in ("", ".", "..") and PurePosixPath(name).name == name
             and PureWindowsPath(name).name == name)
    if not plain:
        _fail(where, "weights.file", f"must be a file name inside the model folder, like \"weights.safetensors\", "
              f"not a path (got {name!r})")


def _check_sizes(where: str, data: dict[str, Any]) -> None:
    """Bound tile, patch, scale and context sizes (a card must not ask for terabytes)."""
    tile = data.get("tile_size")
    if tile is not None:
        if data["dims"] == "3d" and (max(tile) > MAX_TILE_3D or math.prod(tile) > MAX_PATCH_VOXELS):
            _fail(where, "tile_size", f"asks for a {tile} patch; a 3d patch is at most {MAX_TILE_3D} voxels a side "
                  f"and 256^3 = {MAX_PATCH_VOXELS} voxels in all")
        if data["dims"] != "3d" and max(tile) > MAX_TILE_2D:
            _fail(where, "tile_size", f"asks for a {tile} tile; an in-plane tile is at most {MAX_TILE_2D} voxels "
                  f"a side")
    scale = data.get("scale_factor", [1, 1, 1])
    if max(scale) > MAX_SCALE:
        _fail(where, "scale_factor", f"asks for {scale}; a factor is at most {MAX_SCALE} along each axis")
    if data.get("context_slices", 0) > MAX_CONTEXT_SLICES:
        _fail(where, "context_slices", f"is at most {MAX_CONTEXT_SLICES} slices on each side")


def _check_params(where: str, name: str, value: Any) -> None:
    """Bound every whole number in architecture.params: widths, depths, and anything else."""
    key = name.rsplit(".", 1)[-1]
    if isinstance(value, dict):
        for k, v in value.items():
            _check_params(where, f"{name}.{k}", v)
    elif isinstance(value, list):
        for v in value:
            _check_params(where, name, v)
    elif isinstance(value, int) and not isinstance(value, bool):
        if _WIDTH.match(key) and not 1 <= value <= MAX_WIDTH:
            _fail(where, name, f"is a network width: it must be 1..{MAX_WIDTH} channels (got {value})")
        if _DEPTH.match(key) and not 0 <= value <= MAX_DEPTH:
            _fail(where, name, f"is a network depth: it must be 0..{MAX_DEPTH} (got {value})")
        if abs(value) > MAX_OTHER_INT:
            _fail(where, name, f"must be at most {MAX_OTHER_INT} in size (got {value})")


def self_ensemble(extras: dict[str, Any], device: Any = "cpu") -> Any:
    """The passes a card's ``extras.self_ensemble`` asks for on ``device``: a count, or ``{"cpu": n, "cuda": m}``
    (a cheaper default where the passes cost minutes); 1 when it says nothing."""
    value = extras.get("self_ensemble", 1)
    if isinstance(value, dict):
        value = value.get("cuda" if str(device).startswith("cuda") else "cpu", 1)
    return value


def ensemble_transposes(scale: list[float], axis: int) -> bool:
    """Whether a 2D model slicing along ``axis`` with ``scale`` may be averaged over transposed slices too (8
    passes): its output zooms both of the slice's axes alike. Flips (2 or 4 passes) suit any 2D model."""
    plane = [s for i, s in enumerate(scale) if i != axis]
    return plane[0] == plane[1]


def ensemble_limit(count: int, dims: str, scale: list[float], axis: int) -> str | None:
    """Why ``count`` passes of the geometric self-ensemble do not suit a model (``dims``, ``scale``, slicing along
    ``axis``): ``"3d"`` (any count above 1: it flips each slice, a 2D model's), ``"transpose"`` (above 4: the
    transposed passes, see :func:`ensemble_transposes`), or None where they suit it. The card check and the run's
    option check share it and word their own messages."""
    if count > 1 and dims == "3d":
        return "3d"
    if count > 4 and not ensemble_transposes(scale, axis):
        return "transpose"
    return None


def _check_self_ensemble(where: str, data: dict[str, Any], scale: list[float], axis: int) -> None:
    extras = data.get("extras", {})
    if not isinstance(extras, dict):
        return
    counts = [self_ensemble(extras, device) for device in ("cpu", "cuda")]
    if not all(isinstance(c, int) and not isinstance(c, bool) and c in ENSEMBLE_COUNTS for c in counts):
        _fail(where, "extras.self_ensemble", f"must be one of {ENSEMBLE_COUNTS}, or {{\"cpu\": n, \"cuda\": m}} "
                                             f"with each one of them; got {extras.get('self_ensemble')!r}")
    limit = ensemble_limit(max(counts), data["dims"], scale, axis)
    if limit == "3d":
        _fail(where, "extras.self_ensemble", "needs a 2D model (it flips each slice); this one is 3d, so it must be 1")
    if limit == "transpose":
        _fail(where, "extras.self_ensemble", f"8 passes transpose each slice, which needs a model that zooms both of "
                                             f"the slice's axes alike; this one has scale {list(scale)}, so at most "
                                             f"4 (the flips)")
    if counts[0] != counts[1] and "calibration" in extras:
        _fail(where, "extras.self_ensemble", f"a calibrated anomaly map holds for the passes it was calibrated with, "
                                             f"so it must be one count for every device; got {counts[0]} on a CPU "
                                             f"and {counts[1]} on a GPU")


def plane_weights(extras: dict[str, Any]) -> list[float] | None:
    """A card's ``extras.planes``: the weights of the 2D network's outputs sliced along each axis (z, y, x) of the
    model's frame, averaged (axial, coronal and sagittal slices of a model trained on all three); None when the card
    asks for its slice axis only."""
    weights = extras.get("planes") if isinstance(extras, dict) else None
    return [float(w) for w in weights] if weights is not None else None


def _check_planes(where: str, data: dict[str, Any], scale: list[float]) -> None:
    extras = data.get("extras", {})
    if not isinstance(extras, dict) or extras.get("planes") is None:
        return
    weights = extras["planes"]
    if not (isinstance(weights, list) and len(weights) == 3
            and all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights)
            and abs(sum(weights) - 1.0) < 1e-6):
        _fail(where, "extras.planes", f"must be three weights >= 0 summing to 1 (slicing along z, y, x of the "
                                      f"model's frame); got {weights!r}")
    if data["dims"] == "3d" or any(s != 1 for s in scale):
        _fail(where, "extras.planes", "averages a 2D model's outputs along each axis; it needs a 2D model that keeps "
                                      "the voxel size (scale_factor 1)")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _check_degradation(where: str, data: dict[str, Any], scale: list[float]) -> None:
    """``extras.degradation`` (super-resolution, tasks/superres.py finish): the acquisition the model inverts, one
    of :data:`MedGANLogic.degradation.SR_DEGRADATIONS`, on integer factors it can make."""
    extras = data.get("extras", {})
    kind = extras.get("degradation") if isinstance(extras, dict) else None
    if kind is None:
        return
    scaled = [s for s in scale if s != 1]
    if data["task"] != "superres":
        _fail(where, "extras.degradation", "is for superres models only")
    if kind not in SR_DEGRADATIONS:
        _fail(where, "extras.degradation", f"must be one of {', '.join(SR_DEGRADATIONS)}; got {kind!r}")
    if any(s != int(s) for s in scaled) or len(set(scaled)) != 1:
        _fail(where, "extras.degradation", f"needs one integer factor on every scaled axis; scale_factor is {scale}")
    if kind == "thick_slices" and len(scaled) != 1:
        _fail(where, "extras.degradation", "thick_slices scales one axis (the slice direction); use kspace_truncate")


def _bins_ok(cal: Any) -> bool:
    """An anomaly calibration's bins (tasks/anomaly.py calibrated_z): edges (n + 1) and median and scale lists of n;
    with grad_edges (m + 1), median and scale are n lists of m."""
    if not (isinstance(cal, dict) and all(isinstance(cal.get(k), list) for k in ("edges", "median", "scale"))
            and len(cal["median"]) == len(cal["scale"]) == len(cal["edges"]) - 1 > 0):
        return False
    if "grad_edges" not in cal:
        return True
    grad = cal["grad_edges"]
    return (isinstance(grad, list) and len(grad) >= 2
            and all(isinstance(row, list) and len(row) == len(grad) - 1 for row in cal["median"] + cal["scale"]))


def _check_slice_calibrations(where: str, extras: Any) -> None:
    """``extras.calibration`` and ``extras.slice_calibrations`` (anomaly models, tasks/anomaly.py for_slices): the
    bins of each (:func:`_bins_ok`), and a list of sets, each with a positive ``slice_mm`` and what it replaces: a
    calibration, a threshold, a case score."""
    if not isinstance(extras, dict):
        return
    if "calibration" in extras and not _bins_ok(extras["calibration"]):
        _fail(where, "extras.calibration", "must hold edges (n + 1), median (n) and scale (n) lists; with grad_edges "
                                           "(m + 1), median and scale n lists of m")
    if "calibration_slice_mm" in extras and not _positive(extras["calibration_slice_mm"]):
        _fail(where, "extras.calibration_slice_mm", f"must be a positive thickness in mm; got "
                                                    f"{extras['calibration_slice_mm']!r}")
    if "slice_calibrations" not in extras:
        return
    sets = extras["slice_calibrations"]
    if not isinstance(sets, list):
        _fail(where, "extras.slice_calibrations", f"must be a list of calibration sets; got {type(sets).__name__}")
    for i, item in enumerate(sets):
        name = f"extras.slice_calibrations[{i}]"
        if not isinstance(item, dict) or not _positive(item.get("slice_mm")):
            _fail(where, name, "must be an object with a positive slice_mm (the slice thickness it was measured at)")
        if not _bins_ok(item.get("calibration")):
            _fail(where, f"{name}.calibration", "must hold edges (n + 1), median (n) and scale (n) lists; with "
                                                "grad_edges (m + 1), median and scale n lists of m")
        if not isinstance(item.get("threshold"), (int, float)) or not isinstance(item.get("case_score"), dict):
            _fail(where, name, "must hold a numeric threshold and a case_score object")


def validate_card(data: dict[str, Any], where: str = "card") -> None:
    """Raise :class:`ModelError` naming the first invalid field."""
    if not isinstance(data, dict):
        raise ModelError(f"Invalid model card {where}: expected a JSON object.")
    for key in REQUIRED:
        if key not in data:
            _fail(where, key, "is missing")
    if not isinstance(data["id"], str) or not _ID.match(data["id"]):
        _fail(where, "id", "must be 2-64 lower-case letters, digits, '.', '_' or '-'")
    if data["task"] not in TASKS:
        _fail(where, "task", f"must be one of {', '.join(TASKS.names())} (got {data['task']!r})")
    if data["dims"] not in DIMS:
        _fail(where, "dims", f"must be one of {', '.join(DIMS)} (got {data['dims']!r})")
    arch = data["architecture"]
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        _fail(where, "architecture.name", "must name a registered architecture")
    if not isinstance(arch.get("params", {}), dict):
        _fail(where, "architecture.params", "must be an object of keyword arguments")
    _check_params(where, "architecture.params", arch.get("params", {}))
    axis = data.get("slice_axis", 0)
    if axis not in (0, 1, 2):
        _fail(where, "slice_axis", "must be 0 (z, axial), 1 (y, coronal) or 2 (x, sagittal)")
    ctx = data.get("context_slices", 0)
    if not isinstance(ctx, int) or ctx < 0 or (data["dims"] != "2.5d" and ctx != 0):
        _fail(where, "context_slices", "must be a non-negative integer, and non-zero only for 2.5d models")
    if data["dims"] == "2.5d" and ctx < 1:
        _fail(where, "context_slices", "must be at least 1 for a 2.5d model")
    tile = data.get("tile_size")
    want = 3 if data["dims"] == "3d" else 2
    if tile is not None and not (isinstance(tile, list) and len(tile) == want
                                 and all(isinstance(t, int) and t > 0 for t in tile)):
        _fail(where, "tile_size", f"must be a list of {want} positive integers for a {data['dims']} model")
    if data["dims"] == "3d" and tile is None:
        _fail(where, "tile_size", "is required for a 3d model")
    scale = data.get("scale_factor", [1, 1, 1])
    if not (isinstance(scale, list) and len(scale) == 3 and all(isinstance(s, (int, float)) and s >= 1 for s in scale)):
        _fail(where, "scale_factor", "must be three numbers >= 1 along (z, y, x)")
    if data["task"] == "superres" and all(s == 1 for s in scale):
        _fail(where, "scale_factor", "must be > 1 along at least one axis for a superres model")
    if data["task"] != "superres" and any(s != 1 for s in scale):
        _fail(where, "scale_factor", "must be [1, 1, 1] unless the task is superres")
    if data["dims"] in ("2d", "2.5d") and scale[int(axis)] != 1:
        _fail(where, "scale_factor", "cannot scale along the slice axis of a 2d model; slice along another axis")
    _check_sizes(where, data)
    _check_self_ensemble(where, data, scale, int(axis))
    _check_planes(where, data, scale)
    _check_slice_calibrations(where, data.get("extras", {}))
    _check_degradation(where, data, scale)
    if data.get("mixed_precision", "none") not in ("none", "bf16"):
        _fail(where, "mixed_precision", "must be \"bf16\" (checked in bf16) or \"none\"")
    for side in ("input", "output"):
        spec = data[side]
        if not isinstance(spec, dict):
            _fail(where, side, "must be an object with modality and normalization")
        if spec.get("modality") not in ("MR", "CT", "any", "mask", "anomaly"):
            _fail(where, f"{side}.modality", "must be MR, CT, any, mask or anomaly")
        if spec.get("body_part", "head") != "head":
            _fail(where, f"{side}.body_part", "must be \"head\" (or absent: any body part)")
        for key in ("spacing_mm", "fov_mm"):
            rng = spec.get(key)
            if rng is not None and not (isinstance(rng, list) and len(rng) == 2 and 0 < rng[0] <= rng[1]):
                _fail(where, f"{side}.{key}", "must be [min, max] in mm with 0 < min <= max")
        if side == "input" or data["task"] not in ("segment", "anomaly"):
            _check_normalization(where, f"{side}.normalization", spec.get("normalization"), side == "output")
    weights = data["weights"]
    if not isinstance(weights, dict) or not isinstance(weights.get("sha256"), str) or not _SHA.match(weights["sha256"]):
        _fail(where, "weights.sha256", "must be the 64-hex-digit SHA-256 of the weights file")
    _check_weights_name(where, weights.get("file", "weights.safetensors"))
    if not str(weights.get("file", "weights.safetensors")).endswith(".safetensors"):
        _fail(where, "weights.file", "must be a .safetensors file (pickled checkpoints are never loaded; "
              "convert them with `medgan import`)")
    if "not for diagnosis" not in str(data["intended_use"]).lower():
        _fail(where, "intended_use", "must state 'research, not for diagnosis' for these models")


def load_card(folder: str | Path, source: str = "user") -> ModelCard:
    folder = Path(folder)
    path = folder / "card.json"
    if not path.is_file():
        raise ModelError(f"{folder} is not a model folder: card.json is missing.")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ModelError(f"Invalid model card {path}: not valid JSON ({exc}).") from exc
    return ModelCard(copy.deepcopy(data), folder=folder, source=source)
