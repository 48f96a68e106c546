"""Intensities and training patches of per-scan fitting.

* The network works in a unit range: the volume's 0.5-99.5 percentile window mapped linearly onto [-1, 1],
  without clipping (what the scan holds beyond the window, bright vessels or bone, must come back unchanged).
* :class:`PatchSampler`: random square patches of a volume's slices, a pure function of (seed, step), drawn
  preferably where there is signal (air-only patches teach nothing).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..train.data.slices import place
from ..volume import Volume

Window = tuple[float, float]
FOREGROUND = -0.9  # unit-range level above which a pixel counts as signal


def unit_window(array: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> Window:
    """(low, high) intensities that map onto -1 and 1: percentiles of (a strided sample of) ``array``."""
    a = np.asarray(array)
    step = max(1, a.size // 2_000_000)
    low, high = np.percentile(a.ravel()[::step], percentiles)
    if not high > low:
        raise InputError(f"The volume has no intensity range to learn from (its {percentiles[0]}-{percentiles[1]} "
                         f"percentiles are both {low:g}); check that the right image was loaded.")
    return float(low), float(high)


def to_unit(array: np.ndarray, window: Window) -> np.ndarray:
    """``array`` mapped linearly so that ``window`` becomes [-1, 1] (float32, not clipped, a new array)."""
    low, high = window
    out = np.array(array, dtype=np.float32)
    out -= np.float32(low)
    out *= np.float32(2.0 / (high - low))
    out -= np.float32(1.0)
    return out


def from_unit(array: np.ndarray, window: Window) -> np.ndarray:
    """The inverse of :func:`to_unit` (float32, a new array)."""
    low, high = window
    out = np.array(array, dtype=np.float32)
    out += np.float32(1.0)
    out *= np.float32((high - low) / 2.0)
    out += np.float32(low)
    return out


def through_plane_axis(volume: Volume) -> int:
    """The array axis (0 = z, 1 = y, 2 = x) with the largest voxel spacing; 0 when all are equal."""
    spacing_zyx = np.asarray(volume.spacing[::-1])
    return int(np.argmax(spacing_zyx)) if spacing_zyx.max() > spacing_zyx.min() * 1.0001 else 0


class PatchSampler:
    """Batches of random patches of ``slices`` (S, H, W) in the unit range: ``batch(step)`` is (B, 1, h, w).

    Slices are drawn in proportion to their signal (plus a floor, so every slice can appear); each patch
    position is drawn up to four times to find one that is at least 30 % signal. Slices smaller than the
    patch are padded with the unit range's low end. Random flips and 90-degree rotations (square patches)
    augment the few hundred slices of one scan.
    """

    def __init__(self, slices: np.ndarray, size: int, batch_size: int, seed: int, augment: bool = True):
        if slices.ndim != 3 or not len(slices):
            raise InputError(f"Expected slices (S, H, W); got shape {slices.shape}.")
        self.slices, self.size, self.batch_size = slices, int(size), int(batch_size)
        self.seed, self.augment = int(seed), augment
        signal = (slices > FOREGROUND).reshape(len(slices), -1).mean(1)
        weights = signal + 0.02
        self.p = weights / weights.sum()

    def _offset(self, rng: np.random.Generator, image: np.ndarray) -> tuple[int, int]:
        h, w = image.shape
        best, best_fg = (0, 0), -1.0
        for _ in range(4):
            oy = int(rng.integers(0, max(h - self.size, 0) + 1))
            ox = int(rng.integers(0, max(w - self.size, 0) + 1))
            fg = float((image[oy:oy + self.size, ox:ox + self.size] > FOREGROUND).mean())
            if fg > best_fg:
                best, best_fg = (oy, ox), fg
            if fg >= 0.3:
                break
        return best

    def batch(self, step: int) -> np.ndarray:
        return self.batch_with_transforms(step)[0]

    def batch_with_transforms(self, step: int) -> tuple[np.ndarray, list[tuple[int, bool]]]:
        """:meth:`batch`, and each patch's augmentation: (quarter turns, then mirrored left-right), for
        :func:`augment_like`."""
        rng = np.random.default_rng([self.seed, 11, int(step)])
        out = np.empty((self.batch_size, 1, self.size, self.size), np.float32)
        transforms = []
        for b in range(self.batch_size):
            image = self.slices[int(rng.choice(len(self.slices), p=self.p))]
            oy, ox = self._offset(rng, image)
            patch = place(image[None], (self.size, self.size), (-oy, -ox), -1.0)[0]
            turns, mirror = 0, False
            if self.augment:
                turns = int(rng.integers(4))
                patch = np.rot90(patch, turns)
                mirror = bool(rng.integers(2))
                if mirror:
                    patch = patch[:, ::-1]
            out[b, 0] = patch
            transforms.append((turns, mirror))
        return out, transforms


def augment_like(batch: torch.Tensor, transforms: list[tuple[int, bool]]) -> torch.Tensor:
    """Each item of ``batch`` (B, C, h, h) turned and mirrored as :meth:`PatchSampler.batch_with_transforms` did its
    patch: noise drawn in the scan's own orientation, carried into each augmented patch's."""
    items = []
    for item, (turns, mirror) in zip(batch, transforms):
        item = torch.rot90(item, turns, dims=(-2, -1))
        items.append(torch.flip(item, dims=(-1,)) if mirror else item)
    return torch.stack(items)
