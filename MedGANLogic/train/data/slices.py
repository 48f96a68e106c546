"""Normalised slices of whole volumes and deterministic batches of them (paired or unpaired domains).

Batches are a pure function of (seed, step, sub-step, rank); see the package docstring.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...errors import InputError
from ...normalization import intensity_window, normalize
from .sources import VolumeSet, load_volumes

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


# --- normalisation: the one place training normalises intensities ---------------------------------------------
def normalize_for_training(array: np.ndarray, spec: dict[str, Any],
                           stats: dict[str, float] | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """Normalise a whole volume exactly as inference will (card ``normalization`` spec); returns (array, window)."""
    return normalize(array, spec, stats)


def auto_window(volumes: list[np.ndarray], spec: dict[str, Any]) -> list[float]:
    """A ``fixed`` window for a population: the median foreground percentile window of ``volumes`` (from 0 with
    ``zero_based``: an MR magnitude scale, whose dark tissue and air a window from the foreground's 0.5th
    percentile would floor there)."""
    pct = {"kind": "mr_percentile", "percentiles": spec.get("percentiles", [0.5, 99.5]),
           "zero_based": bool(spec.get("zero_based", False))}
    windows = np.array([[w["low"], w["high"]] for w in (intensity_window(v, pct) for v in volumes)])
    low, high = np.median(windows, axis=0)
    return [round(float(low), 2), round(float(high), 2)]


def range_low(spec: dict[str, Any]) -> float:
    """The background value of a normalised image (low end of the spec's range)."""
    return 0.0 if spec.get("kind") == "none" else float(spec.get("range", [-1.0, 1.0])[0])


# --- slices ---------------------------------------------------------------------------------------------------
def card_context(card: dict[str, Any]) -> int:
    """Neighbours on each side a card's network sees (``context_slices`` of a ``2.5d`` card; 0 otherwise)."""
    return int(card.get("context_slices", 0)) if card.get("dims") == "2.5d" else 0


def data_context(config: dict[str, Any]) -> int:
    """Neighbours on each side the training slices carry: ``data.context_slices`` (a trainer that makes its own
    slabs from thin slices) or else the export card's :func:`card_context` (0 without an export card)."""
    card = config["export"][0]["card"] if config.get("export") else {}
    return int(config["data"].get("context_slices", card_context(card)))


def volume_slices(array: np.ndarray, axis: int, context: int = 0) -> np.ndarray:
    """(z, y, x) volume -> (S, 1 + 2*context, H, W) slices along ``axis``; edge slices repeat at the ends."""
    slices = np.moveaxis(array, axis, 0)
    if context:
        slices = np.pad(slices, ((context, context), (0, 0), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(slices, 2 * context + 1, axis=0)
    return np.ascontiguousarray(windows.transpose(0, 3, 1, 2), dtype=np.float32)


def foreground_fraction(slices: np.ndarray, background: float, width: float) -> np.ndarray:
    """Per slice, the fraction of pixels of the centre channel above the background (5 % of the range)."""
    centre = slices[:, slices.shape[1] // 2]
    return (centre > background + 0.05 * width).reshape(len(centre), -1).mean(axis=1)


@dataclass
class SliceSet:
    """Normalised slices of one domain: a list of (C, h, w) float32 arrays (sizes may differ between volumes)."""

    slices: list[np.ndarray]
    background: float = -1.0
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def channels(self) -> int:
        return int(self.slices[0].shape[0])

    @property
    def max_hw(self) -> tuple[int, int]:
        return (max(s.shape[1] for s in self.slices), max(s.shape[2] for s in self.slices))


def canvas_size(hw: tuple[int, int], multiple: int, crop: list[int] | None) -> tuple[int, int]:
    if crop:
        if crop[0] % multiple or crop[1] % multiple:
            raise InputError(f"data.crop {crop} must be a multiple of the generator's size multiple ({multiple}).")
        return int(crop[0]), int(crop[1])
    return tuple(-(-s // multiple) * multiple for s in hw)  # type: ignore[return-value]


def place(image: np.ndarray, out_hw: tuple[int, int], offset: tuple[int, int], background: float) -> np.ndarray:
    """Put ``image`` (C, h, w) into an (C, H, W) canvas of background at ``offset`` (dy, dx); negative offsets crop."""
    c, h, w = image.shape
    out = np.full((c, out_hw[0], out_hw[1]), background, dtype=np.float32)
    dy, dx = offset
    sy0, sx0 = max(0, -dy), max(0, -dx)
    ty0, tx0 = max(0, dy), max(0, dx)
    hh = min(h - sy0, out_hw[0] - ty0)
    ww = min(w - sx0, out_hw[1] - tx0)
    out[:, ty0:ty0 + hh, tx0:tx0 + ww] = image[:, sy0:sy0 + hh, sx0:sx0 + ww]
    return out


class SampleStream:
    """Sample numbers -> slice indices: a fresh seeded permutation of all slices per epoch."""

    def __init__(self, n: int, seed: int, stream: int):
        if n == 0:
            raise InputError("No training slices: every slice was background. Check the data and "
                             "data.min_foreground.")
        self.n, self.seed, self.stream = n, seed, stream
        self._perms: dict[int, np.ndarray] = {}

    def index(self, sample: int) -> int:
        epoch, pos = divmod(sample, self.n)
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, self.stream, epoch]).permutation(self.n)
        return int(self._perms[epoch][pos])


class SliceBatches:
    """Deterministic batches of one or two domains.

    Args:
        domains: {"source": SliceSet, "target": SliceSet} (paired: same length, slices correspond) or
            {"A": SliceSet, "B": SliceSet} (unpaired).
        paired: whether the domains are drawn together (same index, same augmentation).
        batch_size: slices per batch and rank.
        size_multiple: canvas sides are multiples of it (the generator's down-sampling factor).
        crop: [h, w] random crops instead of whole padded slices.
        augment: {"flip": bool (left-right), "shift": int (extra random placement, pixels)}.
        substeps: batches drawn per training step (critic steps), so each gets its own sample numbers.
    """

    def __init__(self, domains: dict[str, SliceSet], *, paired: bool, batch_size: int, seed: int,
                 size_multiple: int = 1, crop: list[int] | None = None, augment: dict[str, Any] | None = None,
                 substeps: int = 1, val: dict[str, SliceSet] | None = None):
        self.domains, self.paired, self.batch_size, self.seed = domains, paired, batch_size, seed
        self.augment = dict(augment or {})
        self.substeps = substeps
        self.val = val or {}
        names = list(domains)
        if paired and len({len(domains[n]) for n in names}) != 1:
            raise InputError(f"Paired data need the same number of slices in {' and '.join(names)}.")
        hw = tuple(max(domains[n].max_hw[i] for n in names) for i in range(2))
        self.hw = canvas_size(hw, size_multiple, crop)  # type: ignore[arg-type]
        self.crop = bool(crop)
        self.streams = {n: SampleStream(len(domains[n]), seed, 0 if paired else i) for i, n in enumerate(names)}

    def _offset(self, rng: np.random.Generator, hw: tuple[int, int]) -> tuple[int, int]:
        shift = int(self.augment.get("shift", 0))
        out = []
        for size, canvas in zip(hw, self.hw):
            lo, hi = min(0, canvas - size), max(0, canvas - size)  # crop window or padding slack
            centre = (lo + hi) // 2
            if self.crop or shift:
                lo2, hi2 = (lo, hi) if self.crop else (max(lo, centre - shift), min(hi, centre + shift))
                out.append(int(rng.integers(lo2, hi2 + 1)))
            else:
                out.append(centre)
        return out[0], out[1]

    def batch(self, step: int, sub: int = 0, rank: int = 0, world: int = 1) -> Batch:
        """The batch of training step ``step`` (sub-step ``sub``) for DDP rank ``rank`` of ``world``."""
        first = ((step * self.substeps + sub) * world + rank) * self.batch_size
        out: dict[str, list[np.ndarray]] = {n: [] for n in self.domains}
        for j in range(self.batch_size):
            sample = first + j
            groups = [list(self.domains)] if self.paired else [[n] for n in self.domains]
            for g, group in enumerate(groups):
                idx = self.streams[group[0]].index(sample)
                rng = np.random.default_rng([self.seed, 7, g, sample])
                flip = bool(self.augment.get("flip")) and bool(rng.integers(2))
                shape = self.domains[group[0]].slices[idx].shape[1:]
                offset = self._offset(rng, shape)
                for name in group:
                    dom = self.domains[name]
                    img = place(dom.slices[idx], self.hw, offset, dom.background)
                    out[name].append(img[:, :, ::-1] if flip else img)
        return {n: torch.from_numpy(np.ascontiguousarray(np.stack(v))) for n, v in out.items()}

    def sample_batch(self, n: int = 4) -> Batch:
        """A fixed batch for sample grids: the first slices of the validation set (else of training), centred."""
        source = self.val or self.domains
        out = {}
        for name, dom in source.items():
            picks = np.linspace(0, len(dom) - 1, num=min(n, len(dom))).round().astype(int)
            imgs = [place(dom.slices[i], self.hw, self._centre(dom.slices[i].shape[1:]), dom.background)
                    for i in picks]
            out[name] = torch.from_numpy(np.stack(imgs))
        return out

    def _centre(self, hw: tuple[int, int]) -> tuple[int, int]:
        return tuple((c - s) // 2 for s, c in zip(hw, self.hw))  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        return {"slices": {n: len(d) for n, d in self.domains.items()}, "canvas": list(self.hw),
                "val_slices": {n: len(d) for n, d in self.val.items()}}


def resolve_auto_windows(config: dict[str, Any], volumes: VolumeSet, domains: dict[str, tuple[str, str]]) -> None:
    """Replace ``"window": "auto"`` of ``fixed`` normalisations in the export cards by numbers (in place).

    ``domains`` maps an export entry's generator name to the (input, output) roles of the volumes.
    """
    for entry in config["export"]:
        roles = domains.get(entry.get("generator", ""), ("source", "target"))
        for side, role in zip(("input", "output"), roles):
            spec = entry["card"][side].get("normalization", {})
            if spec.get("kind") == "fixed" and spec.get("window") == "auto":
                spec["window"] = auto_window(volumes.volumes[role], spec)
                log.info("auto window of %s %s: %s", entry["card"]["id"], side, spec["window"])


def to_slices(volumes: list[np.ndarray], spec: dict[str, Any], axis: int, context: int,
              stats_from: list[dict[str, float]] | None = None) -> tuple[list[np.ndarray], list[dict[str, float]]]:
    """Normalise each volume whole, then slice it: returns (per-volume (S, C, H, W) arrays, per-volume windows)."""
    out, windows = [], []
    for i, vol in enumerate(volumes):
        norm, stats = normalize_for_training(vol, spec, stats_from[i] if stats_from else None)
        out.append(volume_slices(norm, axis, context))
        windows.append(stats)
    return out, windows


def build_slice_sets(vset: VolumeSet, specs: dict[str, dict[str, Any]], data: dict[str, Any], paired: bool,
                     contexts: dict[str, int]) -> dict[str, SliceSet]:
    """Normalised slice sets per role; paired slices are kept where the source has enough foreground."""
    axis = int(data.get("slice_axis", 0))
    min_fg = float(data.get("min_foreground", 0.1))
    sets: dict[str, SliceSet] = {}
    per_vol: dict[str, list[np.ndarray]] = {}
    windows: dict[str, list[dict[str, float]]] = {}
    for role in ("source", "target"):
        spec = specs[role]
        stats_from = None
        if spec.get("kind") == "same_as_input":
            spec, stats_from = specs["source"], windows["source"]
        per_vol[role], windows[role] = to_slices(vset.volumes[role], spec, axis, contexts.get(role, 0), stats_from)
        specs = dict(specs, **{role: spec})
    for role in ("source", "target"):
        spec = specs[role]
        bg = range_low(spec)
        width = float(np.subtract(*spec.get("range", [-1.0, 1.0])[::-1])) if spec.get("kind") != "none" else 2.0
        kept: list[np.ndarray] = []
        names: list[str] = []
        for v, (arr, name) in enumerate(zip(per_vol[role], vset.names[role])):
            ref = per_vol["source"][v] if paired else arr
            ref_spec = specs["source"] if paired else spec
            keep = foreground_fraction(ref, range_low(ref_spec), width) >= min_fg
            kept.extend(arr[keep])
            names.extend(f"{name}:{i}" for i in np.flatnonzero(keep))
        sets[role] = SliceSet(kept, background=bg, names=names)
    return sets


def with_noisy_photographs(vset: VolumeSet, data: dict[str, Any], paired: bool) -> VolumeSet:
    """``vset`` and, with ``data.natural_noisy_copies`` N > 0 (denoising), N noisy copies of each photograph as
    one-slice volumes after the heads: MR, Rician noise at ``data.ranges.snr`` (:func:`.natural.noisy_natural_pairs`);
    CT, each copy a CT slice scanned at low and full dose as the heads are (:func:`.natural.noisy_natural_ct_pairs`,
    at ``data.ranges``' CT pixel sizes, noise levels, doses and kernels)."""
    if data.get("natural_images"):
        raise InputError("data.natural_images serves super-resolution (a share of its crops); for denoising give "
                         "data.natural_noisy_copies (noisy copies of each photograph) instead.")
    copies = data.get("natural_noisy_copies", 0)
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
        raise InputError(f"data.natural_noisy_copies must be a whole number of noisy copies per photograph (0: "
                         f"none); got {copies!r}.")
    if not copies:
        return vset
    options = data.get("options") or {}
    if not paired or data.get("task") != "denoise" or options.get("modality") not in ("MR", "CT"):
        raise InputError("data.natural_noisy_copies serves denoising (paired data.task denoise with "
                         "data.options.modality MR or CT: the copies get that modality's noise); remove it for this "
                         "recipe.")
    from ...simulate.randomize import DomainRanges
    from .natural import noisy_natural_ct_pairs, noisy_natural_pairs

    ranges = DomainRanges.from_dict(data.get("ranges"))
    if options["modality"] == "CT":
        sources, targets, names = noisy_natural_ct_pairs(copies, ranges)
    else:
        sources, targets, names = noisy_natural_pairs(copies, ranges.snr)
    return VolumeSet({"source": vset.volumes["source"] + sources, "target": vset.volumes["target"] + targets},
                     {"source": vset.names["source"] + names, "target": vset.names["target"] + names})


def build_batches(config: dict[str, Any], *, paired: bool, size_multiple: int,
                  domains: dict[str, tuple[str, str]], roles: tuple[str, str] = ("source", "target"),
                  volumes: tuple[VolumeSet, VolumeSet | None] | None = None) -> SliceBatches:
    """Everything from the config to a :class:`SliceBatches`; resolves ``auto`` windows into ``config`` first.

    ``roles`` renames the two domains in the batches (("A", "B") for CycleGAN).
    """
    if not config["export"]:
        raise InputError("The config has no export card: the card's input/output normalisation defines how the "
                         "training data are normalised. Add an export entry (see the bundled recipes).")
    train_v, val_v = volumes or load_volumes(config, paired)
    train_v = with_noisy_photographs(train_v, config["data"], paired)
    resolve_auto_windows(config, train_v, domains)
    card = config["export"][0]["card"]
    specs = {"source": copy.deepcopy(card["input"]["normalization"]),
             "target": copy.deepcopy(card["output"]["normalization"])}
    data = config["data"]
    contexts = {"source": data_context(config), "target": 0}
    train_sets = build_slice_sets(train_v, specs, data, paired, contexts)
    val_sets = build_slice_sets(val_v, specs, data, paired, contexts) if val_v and val_v.volumes["source"] else {}
    rename = dict(zip(("source", "target"), roles))
    return SliceBatches({rename[k]: v for k, v in train_sets.items()}, paired=paired,
                        batch_size=int(config["batch_size"]), seed=int(config["seed"]),
                        size_multiple=size_multiple, crop=data.get("crop"), augment=data.get("augment"),
                        substeps=int(config["loss"]["critic_steps"]),
                        val={rename[k]: v for k, v in val_sets.items() if len(v)})
