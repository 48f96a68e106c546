"""Torch datasets of phantom data: 2D slices, 2.5D slabs and 3D patches, paired or unpaired.

Every item is a dict of float32 tensors: ``source`` (C, H, W) or (1, D, H, W), ``target`` likewise with one
channel, and ``mask`` (the lesion mask on the source's grid). Volumes are normalised whole (``normalize``,
by default :func:`MedGANLogic.normalization.normalize` with the spec of :func:`default_spec`, the same
function inference uses), once per subject, and kept in memory, so a training step never waits on simulation.

Keys name what to take from a subject: "T1w", "T2w", "PD", "FLAIR", "CT", "lesion_mask", or "CT_dose25" /
"CT_dose10" (a low-dose reconstruction of the CT, made slice by slice and cached like the rest).

Example:
    >>> ds = PhantomSlices([0, 1], "T1w", "T2w", dims="2.5d", context=1)   # doctest: +SKIP
    >>> ds[0]["source"].shape                                               # doctest: +SKIP
    torch.Size([3, 116, 98])
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..normalization import normalize as engine_normalize
from .lowdose import low_dose_volume
from .subjects import make_subject

Normalizer = Callable[[np.ndarray, str], np.ndarray]


def default_spec(key: str) -> dict[str, Any]:
    """CT: HU window [-1000, 2000] -> [-1, 1]; MR: foreground 0.5-99.5 percentiles -> [-1, 1]."""
    if key.startswith("CT"):
        return {"kind": "ct_window", "window": [-1000, 2000], "range": [-1, 1]}
    if key == "lesion_mask":
        return {"kind": "none"}
    return {"kind": "mr_percentile", "percentiles": [0.5, 99.5], "range": [-1, 1]}


def default_normalize(array: np.ndarray, key: str) -> np.ndarray:
    return engine_normalize(array, default_spec(key))[0]


@functools.lru_cache(maxsize=64)
def subject_array(seed: int, key: str, spacing_mm: float = 2.0, healthy: bool = False) -> np.ndarray:
    """One (z, y, x) float32 array of a phantom subject, cached in memory (read-only)."""
    if key.startswith("CT_dose"):
        ct = _subject(seed, spacing_mm, healthy).volumes["CT"]
        arr = low_dose_volume(ct, int(key[len("CT_dose"):]) / 100.0, seed=seed)[0].array
    else:
        arr = _subject(seed, spacing_mm, healthy).volumes[key].array.astype(np.float32)
    arr.setflags(write=False)
    return arr


@functools.lru_cache(maxsize=8)
def _subject(seed: int, spacing_mm: float, healthy: bool):
    subject = make_subject(seed, spacing_mm=spacing_mm)
    return subject.healthy if healthy else subject


class _PhantomBase(Dataset):
    def __init__(self, seeds: Sequence[int], source: str, target: str | None, *, paired: bool = True,
                 spacing_mm: float = 2.0, healthy: bool = False, normalize: Normalizer | None = None,
                 augment: bool = True, seed: int = 0):
        if not seeds:
            raise ValueError("seeds must name at least one subject")
        self.seeds, self.source, self.target = list(seeds), source, target
        self.paired, self.spacing_mm, self.healthy = paired, spacing_mm, healthy
        self.normalize = normalize or default_normalize
        self.augment, self.seed = augment, seed
        # unpaired: sources from the first half of the subjects, targets from the second (different anatomy)
        half = max(1, len(self.seeds) // 2)
        self.source_seeds = self.seeds if paired else self.seeds[:half]
        self.target_seeds = self.seeds if paired else (self.seeds[half:] or self.seeds)
        self._cache: dict[tuple[int, str], np.ndarray] = {}

    def volume(self, seed: int, key: str) -> np.ndarray:
        if (seed, key) not in self._cache:
            raw = subject_array(seed, key, self.spacing_mm, self.healthy)
            self._cache[(seed, key)] = self.normalize(raw, key).astype(np.float32)
        return self._cache[(seed, key)]

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index])

    def _augment(self, arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        if not self.augment:
            return arrays
        if rng.random() < 0.5:  # left-right flip (the head is nearly symmetric)
            arrays = [a[..., ::-1] for a in arrays]
        gain = np.float32(1 + rng.uniform(-0.05, 0.05))
        return [arrays[0] * gain] + arrays[1:]


class PhantomSlices(_PhantomBase):
    """2D slices (``dims="2d"``) or 2.5D slabs (``"2.5d"``, ``context`` neighbours each side as channels).

    Slices are taken along ``axis`` of the (z, y, x) volumes, keeping those where at least ``min_foreground``
    of the source slice is not background.
    """

    def __init__(self, seeds: Sequence[int], source: str, target: str | None = None, *, dims: str = "2d",
                 context: int = 1, axis: int = 0, min_foreground: float = 0.1, **kwargs: Any):
        super().__init__(seeds, source, target, **kwargs)
        if dims not in ("2d", "2.5d"):
            raise ValueError(f"dims must be '2d' or '2.5d'; got {dims!r}")
        self.context = context if dims == "2.5d" else 0
        self.axis = axis
        self.index: list[tuple[int, int]] = []
        for s in self.source_seeds:
            vol = np.moveaxis(self.volume(s, source), axis, 0)
            low = float(vol.min())
            frac = (vol > low + 0.05 * (float(vol.max()) - low)).mean(axis=(1, 2))
            self.index += [(s, k) for k in np.flatnonzero(frac >= min_foreground)]

    def __len__(self) -> int:
        return len(self.index)

    def _slab(self, seed: int, key: str, k: int, context: int) -> np.ndarray:
        vol = np.moveaxis(self.volume(seed, key), self.axis, 0)
        ks = np.clip(np.arange(k - context, k + context + 1), 0, vol.shape[0] - 1)
        return vol[ks]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        seed, k = self.index[i]
        rng = self._rng(i)
        arrays = [self._slab(seed, self.source, k, self.context)]
        if self.target:
            if self.paired:
                arrays.append(self._slab(seed, self.target, k, 0))
            else:
                t_seed = self.target_seeds[int(rng.integers(len(self.target_seeds)))]
                depth = np.moveaxis(self.volume(t_seed, self.target), self.axis, 0).shape[0]
                arrays.append(self._slab(t_seed, self.target, min(k, depth - 1), 0))
        arrays.append(np.moveaxis(subject_array(seed, "lesion_mask", self.spacing_mm, self.healthy),
                                  self.axis, 0)[k][None].astype(np.float32))
        arrays = self._augment(arrays, rng)
        keys = ["source", "target", "mask"] if self.target else ["source", "mask"]
        return {key: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for key, a in zip(keys, arrays)}


class PhantomPatches3D(_PhantomBase):
    """Random 3D patches of ``patch`` (d, h, w) voxels; ``patches_per_subject`` items per subject."""

    def __init__(self, seeds: Sequence[int], source: str, target: str | None = None, *,
                 patch: tuple[int, int, int] = (32, 32, 32), patches_per_subject: int = 16, **kwargs: Any):
        super().__init__(seeds, source, target, **kwargs)
        self.patch, self.per_subject = tuple(patch), patches_per_subject

    def __len__(self) -> int:
        return len(self.source_seeds) * self.per_subject

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        seed = self.source_seeds[i // self.per_subject]
        rng = self._rng(i)
        src = self.volume(seed, self.source)
        corner = [int(rng.integers(0, max(n - p, 0) + 1)) for n, p in zip(src.shape, self.patch)]
        box = tuple(slice(c, c + p) for c, p in zip(corner, self.patch))
        arrays = [src[box][None]]
        if self.target:
            t_seed = seed if self.paired else self.target_seeds[int(rng.integers(len(self.target_seeds)))]
            arrays.append(self.volume(t_seed, self.target)[box][None])
        arrays.append(subject_array(seed, "lesion_mask", self.spacing_mm, self.healthy)[box][None].astype(np.float32))
        arrays = self._augment(arrays, rng)
        keys = ["source", "target", "mask"] if self.target else ["source", "mask"]
        return {key: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for key, a in zip(keys, arrays)}
