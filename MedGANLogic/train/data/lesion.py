"""Training data of the lesion-inpainting GAN: domain-randomised heads with one synthetic lesion, as 2D slices.

One sample (:func:`inpainting_volume`) draws a lesion-free random anatomy (:mod:`MedGANLogic.simulate.anatomy`),
a lesion of a type (:mod:`MedGANLogic.simulate.lesions`, location priors from the tissue map), renders the head
with and without it in one random MR appearance and acquisition (contrast ordering, resolution, slice profile,
bias, Rician noise: :mod:`MedGANLogic.simulate.randomize`), and normalises both with the window of the lesion-free
image (what the inference engine sees: the scan before the lesion is drawn in). The hidden region is the lesion
grown by :data:`~MedGANLogic.models.inpaint.HIDDEN_RIM_VOXELS` in-plane, as the task hides the user's mask
(:mod:`MedGANLogic.tasks.lesion`).

:class:`InpaintingBatches` cuts the axial slices through each lesion into a bank, padded to a common canvas, and
serves deterministic batches {"image": the slice with its lesion (N, 1, H, W), "healthy": the same slice without
(what the generator sees outside the hidden region, as a scan before a lesion is drawn in), "hidden": (N, 1, H, W)
0/1, "type": (N,) int}, a function of (seed, step, sub-step, rank) alone, as the shared loop requires.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ...models.inpaint import hidden_region
from ...normalization import normalize
from ...simulate.anatomy import sample_anatomy
from ...simulate.lesions import LESION_TYPES, lesion_relaxation, priors_from_tissues, random_lesion_mask
from ...simulate.randomize import DomainRanges, random_sample
from ...simulate.tissue import LESION

NORMALIZATION = {"kind": "mr_percentile", "percentiles": [0.5, 99.5], "range": [-1, 1]}


def inpainting_volume(rng: np.random.Generator, lesion_type: str | None = None,
                      shape: tuple[int, int, int] = (32, 112, 96), spacing_mm: float = 2.0,
                      ranges: DomainRanges | None = None) -> dict[str, Any]:
    """One random head slab with one lesion: {"image" (with lesion), "healthy" (without), both normalised float32
    (z, y, x) in [-1, 1] with the healthy image's window; "labels" uint8 (0, 1 lesion, 2 tumour core); "type"}.
    """
    ranges = ranges or DomainRanges(n_lesions=(0, 0), partial_fov=0.0)
    lesion_type = lesion_type or LESION_TYPES[int(rng.integers(len(LESION_TYPES)))]
    anatomy = sample_anatomy(np.random.default_rng(int(rng.integers(2 ** 62))), ranges, shape, spacing_mm)
    priors = priors_from_tissues(anatomy.fractions, (spacing_mm,) * 3)
    labels, described = random_lesion_mask(lesion_type, priors, rng)
    relaxation, hu = lesion_relaxation(labels, lesion_type, rng)
    lesioned = anatomy.fractions.copy()
    inside = labels > 0
    lesioned[:, inside] = 0.0
    lesioned[LESION, inside] = 1.0
    with_lesion = dataclasses.replace(anatomy, fractions=lesioned, healthy=anatomy.fractions,
                                      lesion_labels=labels.astype(np.int16), lesion_relaxation=relaxation,
                                      lesion_hu=hu, lesions=[described])
    sample = random_sample("anomaly", rng, ranges=ranges, anatomy=with_lesion)
    healthy, stats = normalize(sample["target"].array, NORMALIZATION)
    image, _ = normalize(sample["input"].array, NORMALIZATION, stats)
    return {"image": image, "healthy": healthy, "labels": labels, "type": lesion_type,
            "meta": {"lesion": described, "appearance": sample["meta"]["appearance"]}}


def local_crops(tensors: list[torch.Tensor], hidden: torch.Tensor, size: int,
                jitter: np.ndarray | None = None) -> list[torch.Tensor]:
    """``size`` x ``size`` crops of each (N, C, H, W) tensor centred on each sample's hidden region (its
    bounding-box centre, plus ``jitter[i]`` (dy, dx) px, moved inside the slice)."""
    n, _, h, w = hidden.shape
    size_h, size_w = min(size, h), min(size, w)
    out: list[list[torch.Tensor]] = [[] for _ in tensors]
    for i in range(n):
        where = torch.nonzero(hidden[i, 0] > 0.5)
        cy, cx = ((where.min(0).values + where.max(0).values) // 2).tolist() if len(where) else (h // 2, w // 2)
        if jitter is not None:
            cy, cx = cy + int(jitter[i][0]), cx + int(jitter[i][1])
        y0 = int(min(max(cy - size_h // 2, 0), h - size_h))
        x0 = int(min(max(cx - size_w // 2, 0), w - size_w))
        for k, t in enumerate(tensors):
            out[k].append(t[i:i + 1, :, y0:y0 + size_h, x0:x0 + size_w])
    return [torch.cat(parts) for parts in out]


def _pad_to(a: np.ndarray, canvas: tuple[int, int], value: float) -> np.ndarray:
    pads = [(0, 0)] * (a.ndim - 2) + [((c - n) // 2, c - n - (c - n) // 2) for n, c in zip(a.shape[-2:], canvas)]
    return np.pad(a, pads, constant_values=value)


class InpaintingBatches:
    """A bank of lesion slices from ``volumes`` random heads and the deterministic batches drawn from it.

    Args:
        seed: the bank's seed (volume ``i`` uses ``default_rng([seed, i])``) and the batches'.
        volumes: heads to draw (each gives its axial slices through the lesion, at most ``slices_per_volume``).
        batch_size: slices per batch.
        canvas: (H, W) every slice is padded to (a multiple of the generator's ``size_multiple``).
        crop: batches of ``crop`` x ``crop`` px around each lesion (jittered by up to a quarter of it), or None
            for whole slices.
    """

    def __init__(self, seed: int, volumes: int, batch_size: int, canvas: tuple[int, int] = (112, 96),
                 slices_per_volume: int = 6, shape: tuple[int, int, int] = (32, 112, 96), spacing_mm: float = 2.0,
                 ranges: DomainRanges | None = None, types: tuple[str, ...] = LESION_TYPES, crop: int | None = None):
        self.seed, self.batch_size, self.canvas, self.crop = int(seed), int(batch_size), tuple(canvas), crop
        images, healthy, hidden, kinds = [], [], [], []
        for i in range(int(volumes)):
            rng = np.random.default_rng([self.seed, i])
            vol = inpainting_volume(rng, types[i % len(types)], shape, spacing_mm, ranges)
            region = hidden_region(vol["labels"])
            zs = np.flatnonzero(region.any(axis=(1, 2)))
            zs = zs[np.argsort(-region[zs].sum(axis=(1, 2)), kind="stable")][:slices_per_volume]
            for z in sorted(zs):
                images.append(_pad_to(vol["image"][z], self.canvas, -1.0))
                healthy.append(_pad_to(vol["healthy"][z], self.canvas, -1.0))
                hidden.append(_pad_to(region[z], self.canvas, 0))
                kinds.append(LESION_TYPES.index(vol["type"]))
        self.images = torch.from_numpy(np.stack(images)[:, None].astype(np.float32))
        self.healthy = torch.from_numpy(np.stack(healthy)[:, None].astype(np.float32))
        self.hidden = torch.from_numpy(np.stack(hidden)[:, None].astype(np.float32))
        self.types = torch.tensor(kinds, dtype=torch.long)
        self.volumes = int(volumes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, step: int, sub: int = 0, rank: int = 0, world_size: int = 1) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step, sub, rank, world_size])
        idx = rng.integers(len(self), size=self.batch_size)
        flip = torch.from_numpy(rng.random(self.batch_size) < 0.5)
        out = {"image": self.images[idx].clone(), "healthy": self.healthy[idx].clone(),
               "hidden": self.hidden[idx].clone()}
        for value in out.values():
            value[flip] = value[flip].flip(-1)
        if self.crop:
            jitter = rng.integers(-(self.crop // 4), self.crop // 4 + 1, size=(self.batch_size, 2))
            keys = list(out)
            out = dict(zip(keys, local_crops([out[k] for k in keys], out["hidden"], self.crop, jitter)))
        return dict(out, type=self.types[idx])

    def sample_batch(self, n: int = 4) -> dict[str, torch.Tensor]:
        idx = np.linspace(0, len(self) - 1, n).astype(int)
        return {"image": self.images[idx], "healthy": self.healthy[idx], "hidden": self.hidden[idx],
                "type": self.types[idx]}

    def describe(self) -> dict[str, Any]:
        counts = torch.bincount(self.types, minlength=len(LESION_TYPES)).tolist()
        return {"volumes": self.volumes, "slices": len(self), "canvas": list(self.canvas), "crop": self.crop,
                "slices_per_type": dict(zip(LESION_TYPES, counts))}
