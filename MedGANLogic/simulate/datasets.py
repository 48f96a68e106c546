"""Torch datasets of phantom data: 2D slices, 2.5D slabs and 3D patches; paired or unpaired.

Items are dicts of float32 tensors:
  * ``source``: (C, H, W) for 2D (C = 1) and 2.5D (C = 2 * ``context`` + 1; the centre channel is the slice
    itself, the others its neighbours, repeated at the volume's ends), or (1, D, H, W) for 3D patches;
  * ``target`` (when a target key is given): (1, H', W') or (1, D', H', W'); the same size as the source except
    for super-resolution pairs, where it is the high-resolution grid (H' = s H, ...);
  * ``mask``: (1, H', W') or (1, D', H', W'), the ``mask`` volume (lesion mask by default) of the source
    subject on the target's grid (the high-resolution one; the source's when there is no target or they
    share a grid); absent with ``mask=None``.

Keys name what to take from a phantom subject (:func:`MedGANLogic.simulate.make_subject`):
  * "T1w", "T2w", "PD", "FLAIR" (MR), "CT" (pseudo-CT, HU), "lesion_mask", "head_mask";
  * "CT_dose<p>": the projection-domain reconstruction at p % dose (e.g. "CT_dose25"); "CT_dose100" is the
    full-dose reconstruction of the same pipeline (the denoising target: the pair differs only by noise);
  * "<contrast>_thick<f>": thick slices (``f`` z-slices averaged, z spacing x ``f``), "<contrast>_kspace<f>":
    k-space truncation in-plane (y, x) by ``f``: low-resolution inputs for super-resolution, paired with
    "<contrast>". Every volume of a subject is then cropped to a multiple of ``f`` so grids align exactly;
    2D slices of a through-plane pair must be taken along y or x (``axis=1`` or 2).

Normalisation: each volume is normalised once, whole, by ``normalize(array, spec)`` (default: the engine's
:func:`MedGANLogic.normalization.normalize`) with ``specs[key]`` or :func:`default_spec` (MR: foreground
0.5-99.5 percentiles -> [-1, 1]; CT: window [-1000, 2000] HU -> [-1, 1]); a target spec
``{"kind": "same_as_input"}`` reuses the source's intensity window (denoising, super-resolution). Pass a model
card's ``input.normalization`` / ``output.normalization`` as ``specs`` to train on exactly what inference feeds.

Speed: every subject of the dataset is simulated and normalised when the dataset is built (about 4 s per subject
at 2 mm on one core; a process pays it once per subject, see ``cache``), so ``__getitem__`` only slices arrays in
memory (tens of microseconds) and DataLoader workers share them. Unpaired datasets draw sources from the first
half of ``seeds`` and targets from the second half: two domains from disjoint subjects.

Augmentation (``augment=True``; reproducible from ``seed`` and the item index): a left-right flip with
probability 1/2 (the head is nearly symmetric) applied to every array of the item, and a small intensity gain
(1 +- ``intensity_jitter``) on the source, also applied to the target when both are the same contrast
(denoising, super-resolution), so an identity-like mapping stays one.

Example:
    >>> ds = PhantomSlices(SPLITS["train"][:4], "T1w", "T2w", dims="2.5d", context=1)   # doctest: +SKIP
    >>> ds[0]["source"].shape, ds[0]["target"].shape                                   # doctest: +SKIP
    (torch.Size([3, 116, 98]), torch.Size([1, 116, 98]))
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..normalization import intensity_window
from ..normalization import normalize as engine_normalize
from .lowdose import low_dose_volume
from .lowres import kspace_truncate, thick_slices
from .mri import CONTRASTS
from .subjects import Subject, make_subject

Normalizer = Callable[[np.ndarray, dict], np.ndarray]
_DERIVED = re.compile(r"^(?P<base>T1w|T2w|PD|FLAIR|CT)_(?P<kind>thick|kspace)(?P<factor>[2-9])$")
_DOSE = re.compile(r"^CT_dose(?P<percent>\d{1,3})$")
PLAIN_KEYS = (*CONTRASTS, "CT", "lesion_mask", "head_mask")


def default_spec(key: str) -> dict[str, Any]:
    """CT keys: HU window [-1000, 2000] -> [-1, 1]; masks: none; MR: foreground 0.5-99.5 percentiles -> [-1, 1]."""
    if key.startswith("CT"):
        return {"kind": "ct_window", "window": [-1000, 2000], "range": [-1, 1]}
    if key.endswith("_mask"):
        return {"kind": "none"}
    return {"kind": "mr_percentile", "percentiles": [0.5, 99.5], "range": [-1, 1]}


def default_normalize(array: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """The engine's normalisation (what inference applies), array only."""
    return engine_normalize(array, spec)[0]


def parse_key(key: str) -> tuple[str, str | None, int]:
    """(base key, derivation, factor or dose percent): "T2w_thick2" -> ("T2w", "thick", 2); "CT_dose25" ->
    ("CT", "dose", 25); "T1w" -> ("T1w", None, 1). Raises ValueError naming the valid keys."""
    if key in PLAIN_KEYS:
        return key, None, 1
    m = _DERIVED.match(key)
    if m:
        return m["base"], m["kind"], int(m["factor"])
    m = _DOSE.match(key)
    if m and 1 <= int(m["percent"]) <= 100:
        return "CT", "dose", int(m["percent"])
    raise ValueError(f"unknown phantom key {key!r}; use one of {', '.join(PLAIN_KEYS)}, CT_dose<1-100> "
                     f"(e.g. CT_dose25), <contrast>_thick<2-9> or <contrast>_kspace<2-9> (e.g. T2w_thick4)")


def grid_scale(key: str) -> tuple[float, float, float]:
    """Voxels per high-resolution voxel along (z, y, x): 1 except for the low-resolution keys."""
    _, kind, factor = parse_key(key)
    if kind == "thick":
        return (1 / factor, 1.0, 1.0)
    if kind == "kspace":
        return (1.0, 1 / factor, 1 / factor)
    return (1.0, 1.0, 1.0)


@functools.lru_cache(maxsize=2)
def _subject(seed: int, spacing_mm: float, options: tuple) -> Subject:
    return make_subject(seed, spacing_mm=spacing_mm, **dict(options))


@functools.lru_cache(maxsize=8)
def _dose_pair(seed: int, spacing_mm: float, healthy: bool, percent: int, options: tuple
               ) -> tuple[np.ndarray, np.ndarray]:
    subject = _subject(seed, spacing_mm, options)
    ct = (subject.healthy if healthy else subject).volumes["CT"]
    low, full = low_dose_volume(ct, percent / 100.0, seed=seed)
    return low.array, full.array


def subject_arrays(seed: int, keys: Sequence[str], *, spacing_mm: float = 2.0, healthy: bool = False,
                   subject_options: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Raw float32 (z, y, x) arrays of one phantom subject for ``keys`` (see the module docstring).

    MR in a.u., CT in HU, masks 0/1. With a low-resolution key every array is first cropped to a multiple of the
    largest factor along the axes it reduces (trailing voxels dropped), so all grids align. ``subject_options``
    are passed to :func:`make_subject` (e.g. {"snr": 20, "n_lesions": 5}); the last two subjects are cached.
    """
    parsed = {k: parse_key(k) for k in keys}
    options = tuple(sorted((subject_options or {}).items()))
    subject = _subject(seed, spacing_mm, options)
    subject = subject.healthy if healthy else subject
    thick = max([f for _, kind, f in parsed.values() if kind == "thick"], default=1)
    kspace = max([f for _, kind, f in parsed.values() if kind == "kspace"], default=1)
    factors = (thick, kspace, kspace)

    def cropped(arr: np.ndarray) -> np.ndarray:
        return np.asarray(arr[tuple(slice(0, n - n % f) for n, f in zip(arr.shape, factors))], np.float32)

    # the full-dose image of a pair does not depend on the dose fraction: one simulation serves both keys
    low_doses = sorted({f for _, kind, f in parsed.values() if kind == "dose" and f < 100})
    pair_percent = low_doses[0] if low_doses else 100
    out: dict[str, np.ndarray] = {}
    for key, (base, kind, factor) in parsed.items():
        if base == "head_mask":
            out[key] = cropped(subject.head_mask)
        elif kind is None:
            out[key] = cropped(subject.volumes[base].array)
        elif kind == "dose":
            low, full = _dose_pair(seed, spacing_mm, healthy, pair_percent if factor == 100 else factor, options)
            out[key] = cropped(full if factor == 100 else low)
        else:
            vol = subject.volumes[base].with_array(cropped(subject.volumes[base].array))  # origin unchanged
            low_res = thick_slices(vol, factor, axis=0) if kind == "thick" else kspace_truncate(vol, factor)
            out[key] = low_res.array
    return out


class _PhantomBase(Dataset):
    def __init__(self, seeds: Sequence[int], source: str, target: str | None = None, *, paired: bool = True,
                 mask: str | None = "lesion_mask", spacing_mm: float = 2.0, healthy: bool = False,
                 normalize: Normalizer | None = None, specs: dict[str, dict[str, Any]] | None = None,
                 augment: bool = True, intensity_jitter: float = 0.05, seed: int = 0,
                 subject_options: dict[str, Any] | None = None):
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds must name at least one subject (see MedGANLogic.simulate.SPLITS)")
        if not paired and (target is None or len(seeds) < 2):
            raise ValueError("an unpaired dataset needs a target key and at least two seeds (disjoint domains)")
        for key in (source, target, mask):
            if key is not None:
                parse_key(key)
        if mask is not None and target is None and grid_scale(source) != (1.0, 1.0, 1.0):
            raise ValueError(f"the mask is on the high-resolution grid, which {source} alone does not have: give "
                             "its high-resolution target or mask=None")
        self.source, self.target, self.mask_key, self.paired = source, target, mask, paired
        self.scale_s, self.scale_t = grid_scale(source), grid_scale(target or source)
        self.normalize = normalize or default_normalize
        self.specs = dict(specs or {})
        self.augment, self.intensity_jitter, self.seed = augment, float(intensity_jitter), int(seed)
        base_s, base_t = parse_key(source)[0], parse_key(target or source)[0]
        self.jitter_target = target is not None and base_s == base_t
        # unpaired: sources from the first half of the subjects, targets from the second (different anatomy)
        half = len(seeds) // 2
        self.source_seeds = seeds if paired else seeds[:half]
        self.target_seeds = seeds if paired else seeds[half:]
        self.arrays: dict[tuple[int, str], np.ndarray] = {}
        options = dict(spacing_mm=spacing_mm, healthy=healthy, subject_options=subject_options)
        for s in sorted(set(self.source_seeds) | set(self.target_seeds)):
            keys = []
            if s in self.source_seeds:
                keys += [source] + ([mask] if mask else [])
            if target is not None and s in self.target_seeds:
                keys.append(target)
            if target is not None and self.specs.get(target, {}).get("kind") == "same_as_input":
                keys.append(source)
            raw = subject_arrays(s, sorted(set(keys)), **options)
            self._store(s, raw)

    def _spec(self, key: str) -> dict[str, Any]:
        return self.specs.get(key) or default_spec(key)

    def _store(self, seed: int, raw: dict[str, np.ndarray]) -> None:
        for key, arr in raw.items():
            spec = self._spec(key)
            if spec.get("kind") == "same_as_input":
                src_spec = self._spec(self.source)
                window = intensity_window(raw[self.source], src_spec)
                spec = {"kind": "fixed", "window": [window["low"], window["high"]],
                        "range": src_spec.get("range", [-1.0, 1.0])}
            if key == self.mask_key:
                spec = {"kind": "none"}
            out = np.ascontiguousarray(self.normalize(arr, spec), dtype=np.float32)
            out.setflags(write=False)
            self.arrays[(seed, key)] = out

    def volume(self, seed: int, key: str) -> np.ndarray:
        """The normalised (z, y, x) array of ``key`` for subject ``seed`` (read-only)."""
        return self.arrays[(seed, key)]

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(index)])

    def _finish(self, arrays: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if self.augment:
            if rng.random() < 0.5:  # left-right flip (x is the last axis of every array)
                arrays = {k: a[..., ::-1] for k, a in arrays.items()}
            gain = np.float32(1 + rng.uniform(-self.intensity_jitter, self.intensity_jitter))
            arrays["source"] = arrays["source"] * gain
            if self.jitter_target:
                arrays["target"] = arrays["target"] * gain
        return {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in arrays.items()}

    def _target_seed(self, seed: int, rng: np.random.Generator) -> int:
        return seed if self.paired else self.target_seeds[int(rng.integers(len(self.target_seeds)))]


class PhantomSlices(_PhantomBase):
    """2D slices (``dims="2d"``) or 2.5D slabs (``dims="2.5d"``, ``context`` neighbours on each side as channels)
    along array ``axis`` (0 axial, 1 coronal, 2 sagittal) of the (z, y, x) volumes.

    Only slices where at least ``min_foreground`` of the source slice is above 5 % of its volume's range are
    used. Other keyword arguments: see the module docstring (``paired``, ``mask``, ``spacing_mm``, ``healthy``,
    ``normalize``, ``specs``, ``augment``, ``intensity_jitter``, ``seed``, ``subject_options``).
    """

    def __init__(self, seeds: Sequence[int], source: str, target: str | None = None, *, dims: str = "2d",
                 context: int = 1, axis: int = 0, min_foreground: float = 0.1, **kwargs: Any):
        if dims not in ("2d", "2.5d"):
            raise ValueError(f"dims must be '2d' or '2.5d'; got {dims!r}")
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0 (axial), 1 (coronal) or 2 (sagittal); got {axis}")
        if grid_scale(source)[axis] != grid_scale(target or source)[axis]:
            raise ValueError(f"{source} -> {target} changes the grid along axis {axis}: take 2D slices along an "
                             "axis the pair shares (axis=1 or 2 for thick slices, 0 for k-space truncation)")
        super().__init__(seeds, source, target, **kwargs)
        self.context = int(context) if dims == "2.5d" else 0
        self.axis = axis
        self.index: list[tuple[int, int]] = []
        for s in self.source_seeds:
            vol = np.moveaxis(self.volume(s, source), axis, 0)
            low = float(vol.min())
            frac = (vol > low + 0.05 * (float(vol.max()) - low)).mean(axis=(1, 2))
            self.index += [(s, int(k)) for k in np.flatnonzero(frac >= min_foreground)]

    def __len__(self) -> int:
        return len(self.index)

    def _slab(self, seed: int, key: str, k: int, context: int) -> np.ndarray:
        vol = np.moveaxis(self.volume(seed, key), self.axis, 0)
        ks = np.clip(np.arange(k - context, k + context + 1), 0, vol.shape[0] - 1)
        return vol[ks]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        seed, k = self.index[i]
        rng = self._rng(i)
        arrays = {"source": self._slab(seed, self.source, k, self.context)}
        if self.target:
            t_seed = self._target_seed(seed, rng)
            depth = self.volume(t_seed, self.target).shape[self.axis]
            arrays["target"] = self._slab(t_seed, self.target, min(k, depth - 1), 0)
        if self.mask_key:
            arrays["mask"] = self._slab(seed, self.mask_key, k, 0)
        return self._finish(arrays, rng)


class PhantomPatches3D(_PhantomBase):
    """Random 3D patches of ``patch`` (d, h, w) source voxels, ``patches_per_subject`` items per source subject.

    Patch centres are drawn inside the head (so few patches are all air); super-resolution targets are the
    matching high-resolution patch (``patch`` times the scale factor along each axis).
    """

    def __init__(self, seeds: Sequence[int], source: str, target: str | None = None, *,
                 patch: tuple[int, int, int] = (32, 32, 32), patches_per_subject: int = 16, **kwargs: Any):
        super().__init__(seeds, source, target, **kwargs)
        self.patch, self.per_subject = tuple(int(p) for p in patch), int(patches_per_subject)
        if len(self.patch) != 3 or min(self.patch) < 1:
            raise ValueError(f"patch must be three positive sizes (d, h, w); got {patch}")
        self.ratio = tuple(round(t / s) for s, t in zip(self.scale_s, self.scale_t))
        if any(not math.isclose(r * s, t) for r, s, t in zip(self.ratio, self.scale_s, self.scale_t)):
            raise ValueError(f"{source} -> {target}: the target grid must be an integer multiple of the source's")
        self._centres = {s: np.argwhere(self.volume(s, source) > self._threshold(s)) for s in self.source_seeds}

    def _threshold(self, seed: int) -> float:
        vol = self.volume(seed, self.source)
        low = float(vol.min())
        return low + 0.05 * (float(vol.max()) - low)

    def __len__(self) -> int:
        return len(self.source_seeds) * self.per_subject

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        seed = self.source_seeds[i // self.per_subject]
        rng = self._rng(i)
        src = self.volume(seed, self.source)
        centres = self._centres[seed]
        centre = centres[rng.integers(len(centres))] if len(centres) else np.array(src.shape) // 2
        corner = [int(np.clip(c - p // 2, 0, max(n - p, 0))) for c, p, n in zip(centre, self.patch, src.shape)]
        box = tuple(slice(c, c + p) for c, p in zip(corner, self.patch))
        arrays = {"source": src[box][None]}
        if self.target:
            tgt = self.volume(self._target_seed(seed, rng), self.target)
            arrays["target"] = tgt[tuple(slice(c * r, (c + p) * r)
                                         for c, p, r in zip(corner, self.patch, self.ratio))][None]
        if self.mask_key:
            arrays["mask"] = self.volume(seed, self.mask_key)[tuple(
                slice(c * r, (c + p) * r) for c, p, r in zip(corner, self.patch, self.ratio))][None]
        return self._finish(arrays, rng)


# --- domain-randomised samples (MedGANLogic.simulate.randomize) ----------------------------------------------------
def randomized_volumes(data: dict[str, Any], split: str, paired: bool, seed: int
                       ) -> tuple[dict[str, list[np.ndarray]], dict[str, list[str]]]:
    """Raw (source, target) volumes of a recipe's ``data.source: randomized`` for the slice trainers.

    ``data``: ``task`` (synthesize, denoise, anomaly: tasks whose input and target share a grid; superres: the
    high-resolution targets alone, for the super-resolution trainer, which degrades them itself),
    ``options`` (the task's options, e.g. {source: any, target: T2w}), ``samples`` ({train: 64, val: 4}),
    ``shape`` [z, y, x] and ``spacing_mm`` of the target grid, ``ranges`` (overrides of
    :class:`.randomize.DomainRanges`), ``planes`` (array axes a 2D model may slice along, default [0]: axial; with
    several, each sample is turned so that a random one of them comes first, and the model sees axial, coronal or
    sagittal slices). Sample ``i`` of ``split`` is :meth:`DomainRandomizer.sample` ``i`` with
    seed ``seed`` (train) or ``seed + 1`` (val), drawn by worker processes for 16 samples or more
    (:func:`.randomize.sample_workers`; the same arrays however many draw them). Unpaired: sources from the first
    half of the samples, targets from the second. Returns ({"source": [...], "target": [...]}, {role: names}),
    arrays (z, y, x) in their own units.
    """
    from .randomize import DomainRandomizer

    task = data.get("task", "synthesize")
    if task == "superres" and not paired:
        raise ValueError("data.source randomized with task superres serves the super-resolution trainer (paired): "
                         "it degrades the high-resolution targets itself")
    count = int((data.get("samples") or {}).get(split, 64 if split == "train" else 4))
    generator = DomainRandomizer(seed + (split != "train"), data.get("ranges"),
                                 shape=tuple(data.get("shape", (96, 112, 96))),
                                 spacing_mm=float(data.get("spacing_mm", 2.0)))
    volumes: dict[str, list[np.ndarray]] = {"source": [], "target": []}
    names: dict[str, list[str]] = {"source": [], "target": []}
    planes = [int(a) for a in data.get("planes", [0])]
    if not planes or any(a not in (0, 1, 2) for a in planes):
        raise ValueError(f"data.planes must list array axes 0, 1 or 2; got {data.get('planes')!r}")
    half = count // 2
    # super-resolution: the sample's high-resolution target is both roles (the trainer makes its own
    # low-resolution input from it with the card's scale and data.degrade)
    source_key = "target" if task == "superres" else "input"
    draws = generator.arrays(task, count, sorted({source_key, "target"}), **dict(data.get("options") or {}))
    for i, sample in enumerate(draws):
        plane = planes[int(np.random.default_rng([seed + (split != "train"), i, 7]).integers(len(planes)))]
        for role, key in (("source", source_key), ("target", "target")):
            if paired or (role == "source") == (i < half):
                volumes[role].append(np.ascontiguousarray(np.moveaxis(sample[key], plane, 0)))
                names[role].append(f"randomized-{split}-{i}/{key}" + (f"/plane{plane}" if plane else ""))
    return volumes, names


class RandomizedSlices(Dataset):
    """Domain-randomised 2D slices (``context`` 0) or 2.5D slabs, one new random sample per item.

    Item ``i`` is sample ``i`` of :class:`.randomize.DomainRandomizer` (``seed``, ``ranges``, ``shape``,
    ``spacing_mm``) for ``task`` with ``options``; its input and target are normalised whole (``specs`` by role,
    else :func:`default_spec` of their modality) and the middle slice along ``axis`` is returned: ``source``
    (1 + 2 ``context``, H, W), ``target`` (1, H', W'), ``mask`` (1, H', W') the lesion label. Inputs on a coarser
    grid (super-resolution) give the slice at the same physical position. Each item builds a 3D sample (about a
    second at 2 mm): for long training, cache items or use :func:`randomized_volumes`.
    """

    def __init__(self, task: str, length: int, *, seed: int = 0, ranges: Any = None,
                 shape: tuple[int, int, int] = (24, 112, 96), spacing_mm: float = 2.0, axis: int = 0,
                 context: int = 0, normalize: Normalizer | None = None,
                 specs: dict[str, dict[str, Any]] | None = None, **options: Any):
        from .randomize import DomainRandomizer

        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0 (axial), 1 (coronal) or 2 (sagittal); got {axis}")
        self.generator = DomainRandomizer(seed, ranges, shape=shape, spacing_mm=spacing_mm)
        self.task, self.length, self.axis, self.context = task, int(length), axis, int(context)
        self.normalize, self.specs, self.options = normalize or default_normalize, dict(specs or {}), options

    def __len__(self) -> int:
        return self.length

    def _slab(self, array: np.ndarray, k: int, context: int) -> np.ndarray:
        vol = np.moveaxis(array, self.axis, 0)
        return vol[np.clip(np.arange(k - context, k + context + 1), 0, vol.shape[0] - 1)]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        from .tissue import LESION

        sample = self.generator.sample(self.task, int(i), **self.options)
        target = sample["target"]
        k = target.shape[self.axis] // 2
        out = {}
        for role, key, context in (("source", "input", self.context), ("target", "target", 0)):
            vol = sample[key]
            spec = self.specs.get(role) or default_spec("CT" if vol.metadata.get("modality") == "CT" else "MR")
            array = self.normalize(vol.array, spec)
            index = min(int(k * vol.shape[self.axis] / target.shape[self.axis]), vol.shape[self.axis] - 1)
            out[role] = self._slab(array, index, context)
        labels = sample["labels"].array
        if labels.shape == target.shape:
            out["mask"] = self._slab((labels == LESION).astype(np.float32), k, 0)
        return {key: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for key, a in out.items()}
