"""Super-resolution training pairs: high-resolution volumes -> simulated low-resolution inputs -> aligned crops.

The low-resolution input is simulated from each high-resolution volume with
:func:`MedGANLogic.simulate.superres_pair` (``data.degrade``: ``thick_slices`` averages ``factor`` slices along
the scaled axis, as a thick 2D acquisition integrates its slab; ``kspace_truncate`` keeps the central 1/``factor``
of k-space along the scaled axes, as a smaller acquisition matrix measures), with the factors and axes of the
export card's ``scale_factor``: the same function the phantom sample data and the evaluation use. Both are
normalised with the input's window (card output ``same_as_input``), cut into slices along ``data.slice_axis``
(the card's) and cropped at random aligned positions: an input crop of ``data.crop`` pixels and the target crop
exactly covering it. With ``data.noisy_input`` the input is simulated from each sample's noisy acquisition (the
source volume, e.g. Rician noise at a drawn SNR) and the target is the clean one: the model learns to leave the noise
out, as a real scan's input holds it. With ``data.noisy_target`` both come from the noisy acquisition (the input its
degraded copy, the target the acquisition itself): a real high-resolution scan holds its own noise, of which the
low-resolution input measured the part it keeps (for ``kspace_truncate``, exactly its central k-space) and no model
can predict the rest; trained so, the model keeps what the input measured and adds only the detail the noise does not
hide, instead of sharpening noise into structure (the expected target over noise draws is the clean image's detail).
With ``data.natural_images`` (a fraction in [0, 1)) that share of the training crops comes from photographs that
ship inside scikit-image (:mod:`.natural`), degraded and normalised the same way: generic detail beside the phantom's
(each photograph one slice along the slice axis: for through-plane models its rows are z).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ...errors import InputError
from ...volume import Volume
from .slices import SampleStream, card_context, normalize_for_training, place, range_low, volume_slices
from .sources import load_volumes


class ScaledPairBatches:
    """Deterministic batches of (low-resolution, high-resolution) slice crops, a pure function of the step.

    Args:
        low: per volume, (S, C, h, w) normalised input slices (C = 1 + 2 * context).
        high: per volume, (S, 1, h * scale[0], w * scale[1]) target slices.
        scale: in-plane factors (H, W) of the slices.
        crop: [h, w] size of the input crops (the target crop is ``scale`` times larger).
        min_foreground: slices with less foreground (input centre channel) are skipped; crops are drawn up to
            four times to find one with at least 30 % foreground.
    """

    def __init__(self, low: list[np.ndarray], high: list[np.ndarray], *, scale: tuple[int, int], batch_size: int,
                 seed: int, crop: list[int], background: float = -1.0, min_foreground: float = 0.1,
                 augment: dict[str, Any] | None = None, substeps: int = 1,
                 val: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
                 extra: tuple[list[np.ndarray], list[np.ndarray]] | None = None, extra_fraction: float = 0.0):
        self.scale, self.batch_size, self.seed = tuple(int(s) for s in scale), int(batch_size), int(seed)
        self.crop = (int(crop[0]), int(crop[1]))
        self.background, self.substeps = float(background), int(substeps)
        self.augment = dict(augment or {})
        self.low, self.high = low, high
        self.index = self._index(low, min_foreground)
        self.val_index = self._index(val[0], min_foreground) if val else []
        self.val = val
        self.stream = SampleStream(len(self.index), self.seed, 0)
        self.hw = self.crop
        # a share of the crops from other images (data.natural_images): drawn per sample, from their own stream
        self.extra, self.extra_fraction = extra, float(extra_fraction if extra else 0.0)
        self.extra_index = self._index(extra[0], min_foreground) if extra else []
        if self.extra_fraction and not self.extra_index:
            raise InputError("data.natural_images: none of the images has enough foreground for a crop.")
        self.extra_stream = SampleStream(len(self.extra_index), self.seed, 1) if self.extra_index else None

    def _index(self, low: list[np.ndarray], min_fg: float) -> list[tuple[int, int]]:
        out = []
        for v, slices in enumerate(low):
            centre = slices[:, slices.shape[1] // 2]
            frac = (centre > self.background + 0.1).reshape(len(centre), -1).mean(1)
            out += [(v, int(k)) for k in np.flatnonzero(frac >= min_fg)]
        return out

    def _pair(self, low: np.ndarray, high: np.ndarray, offset: tuple[int, int], flip: bool) -> tuple[np.ndarray, ...]:
        sy, sx = self.scale
        ch, cw = self.crop
        x = place(low, (ch, cw), (-offset[0], -offset[1]), self.background)
        y = place(high, (ch * sy, cw * sx), (-offset[0] * sy, -offset[1] * sx), self.background)
        return (x[:, :, ::-1], y[:, :, ::-1]) if flip else (x, y)

    def _offset(self, rng: np.random.Generator, low: np.ndarray) -> tuple[int, int]:
        h, w = low.shape[1:]
        centre = low[low.shape[0] // 2]
        best, best_fg = (0, 0), -1.0
        for _ in range(4):
            oy = int(rng.integers(0, max(h - self.crop[0], 0) + 1))
            ox = int(rng.integers(0, max(w - self.crop[1], 0) + 1))
            fg = float((centre[oy:oy + self.crop[0], ox:ox + self.crop[1]] > self.background + 0.1).mean())
            if fg > best_fg:
                best, best_fg = (oy, ox), fg
            if fg >= 0.3:
                break
        return best

    def batch(self, step: int, sub: int = 0, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        """The batch of training step ``step`` (sub-step ``sub``) for DDP rank ``rank`` of ``world``."""
        first = ((step * self.substeps + sub) * world + rank) * self.batch_size
        xs, ys = [], []
        for j in range(self.batch_size):
            sample = first + j
            lows, highs = self.low, self.high
            if self.extra_fraction and np.random.default_rng([self.seed, 11, sample]).random() < self.extra_fraction:
                lows, highs = self.extra  # type: ignore[misc]
                v, k = self.extra_index[self.extra_stream.index(sample)]  # type: ignore[union-attr]
            else:
                v, k = self.index[self.stream.index(sample)]
            rng = np.random.default_rng([self.seed, 7, sample])
            flip = bool(self.augment.get("flip", True)) and bool(rng.integers(2))
            low = lows[v][k]
            x, y = self._pair(low, highs[v][k], self._offset(rng, low), flip)
            xs.append(x)
            ys.append(y)
        return {"source": torch.from_numpy(np.ascontiguousarray(np.stack(xs))),
                "target": torch.from_numpy(np.ascontiguousarray(np.stack(ys)))}

    def sample_batch(self, n: int = 4) -> dict[str, torch.Tensor]:
        """Fixed centred crops of validation slices (else training slices) for the sample grids."""
        low, high = self.val if self.val and self.val_index else (self.low, self.high)
        index = self.val_index if self.val and self.val_index else self.index
        picks = np.linspace(0, len(index) - 1, num=min(n, len(index))).round().astype(int)
        xs, ys = [], []
        for i in picks:
            v, k = index[i]
            h, w = low[v][k].shape[1:]
            offset = (max(h - self.crop[0], 0) // 2, max(w - self.crop[1], 0) // 2)
            x, y = self._pair(low[v][k], high[v][k], offset, False)
            xs.append(x)
            ys.append(y)
        return {"source": torch.from_numpy(np.stack(xs)), "target": torch.from_numpy(np.stack(ys))}

    def describe(self) -> dict[str, Any]:
        out = {"slices": len(self.index), "val_slices": len(self.val_index), "crop": list(self.crop),
               "scale": list(self.scale)}
        if self.extra_fraction:
            out.update(natural_slices=len(self.extra_index), natural_fraction=self.extra_fraction)
        return out


def plane_scale(card: dict[str, Any], axis: int) -> tuple[int, int]:
    """In-plane (H, W) factors of slices along ``axis`` from a card's (z, y, x) ``scale_factor``."""
    scale = card.get("scale_factor", [1, 1, 1])
    if any(float(s) != int(s) for s in scale):
        raise InputError(f"Super-resolution training needs integer scale factors; the card has {scale}.")
    if int(scale[axis]) != 1:
        raise InputError(f"The card scales axis {axis}, which is data.slice_axis: a 2d model cannot scale along its "
                         f"slice axis. Slice along another axis (through-plane SR of axial slices: 1 or 2).")
    plane = [int(s) for a, s in enumerate(scale) if a != axis]
    return plane[0], plane[1]


def build_sr_batches(config: dict[str, Any], volumes: Any = None) -> ScaledPairBatches:
    """High-resolution volumes (``data``) -> simulated low-resolution inputs -> :class:`ScaledPairBatches`."""
    if not config["export"]:
        raise InputError("The config has no export card: its scale_factor and normalisation define the training "
                         "pairs. Add an export entry (see the bundled recipes).")
    card = config["export"][0]["card"]
    data = config["data"]
    axis = int(data.get("slice_axis", 0))
    scale = tuple(int(s) for s in card.get("scale_factor", [1, 1, 1]))
    plane = plane_scale(card, axis)
    context = card_context(card)
    spec = copy.deepcopy(card["input"]["normalization"])
    if card["output"]["normalization"].get("kind") != "same_as_input":
        raise InputError("Super-resolution cards need output normalization same_as_input (the output keeps the "
                         "input's intensities).")
    crop = data.get("crop")
    if not crop:
        raise InputError("Super-resolution training draws random crops: set data.crop to [height, width] of the "
                         "low-resolution input crops (e.g. [32, 48]).")
    from ...simulate.lowres import SR_DEGRADATIONS, superres_pair  # the simulator loads on demand

    kind = data.get("degrade", "thick_slices")
    if kind not in SR_DEGRADATIONS:
        raise InputError(f"data.degrade must be one of {', '.join(SR_DEGRADATIONS)}; got {kind!r}.")
    both = bool(data.get("noisy_target", False))
    noisy = both or bool(data.get("noisy_input", False))
    key = "data.noisy_target" if both else "data.noisy_input"
    if noisy and data.get("source") == "randomized" and data.get("task") == "superres":
        raise InputError(f"{key} {'takes input and target from' if both else 'degrades'} each sample's noisy "
                         "acquisition (its source volume), which "
                         "task superres does not serve; use data.task denoise (noisy source and clean target on "
                         "one grid).")
    fraction = natural_fraction(data)
    train_v, val_v = volumes or load_volumes(config, paired=True)

    def slices(low: Volume, high: Volume, lows: list[np.ndarray], highs: list[np.ndarray]) -> None:
        """Append a pair's normalised slices (the target on the input's window)."""
        low_n, stats = normalize_for_training(low.array, spec)
        lows.append(volume_slices(low_n, axis, context))
        highs.append(volume_slices(normalize_for_training(high.array, spec, stats)[0], axis, 0))

    def prepare(vset) -> tuple[list[np.ndarray], list[np.ndarray]]:
        lows: list[np.ndarray] = []
        highs: list[np.ndarray] = []
        targets = vset.volumes["target"] if vset else []
        sources = vset.volumes["source"] if (vset and noisy) else [None] * len(targets)
        for array, acquired in zip(targets, sources):
            low, high = superres_pair(Volume(np.asarray(array, dtype=np.float32)), scale, kind)
            if acquired is not None:  # the input from the noisy acquisition, the target from the clean one or it too
                if np.shape(acquired) != np.shape(array):
                    raise InputError(f"{key} needs source and target volumes on one grid; got "
                                     f"{np.shape(acquired)} and {np.shape(array)}.")
                noisy_pair = superres_pair(Volume(np.asarray(acquired, dtype=np.float32)), scale, kind)
                low, high = noisy_pair if both else (noisy_pair[0], high)
            slices(low, high, lows, highs)
        return lows, highs

    low, high = prepare(train_v)
    val = prepare(val_v) if val_v and val_v.volumes["target"] else None
    extra = None
    if fraction:  # photographs: one slice each along the slice axis
        from .natural import natural_images

        extra = ([], [])
        for image in natural_images():
            slices(*superres_pair(Volume(photograph_volume(image, axis)), scale, kind), *extra)
    return ScaledPairBatches(low, high, scale=plane, batch_size=int(config["batch_size"]), seed=int(config["seed"]),
                             crop=list(crop), background=range_low(spec),
                             min_foreground=float(data.get("min_foreground", 0.1)), augment=data.get("augment"),
                             substeps=int(config["loss"]["critic_steps"]), val=val, extra=extra,
                             extra_fraction=fraction)


def natural_fraction(data: dict[str, Any]) -> float:
    """``data.natural_images`` checked: a fraction in [0, 1) of the crops, for models of 2D slices (a photograph is
    one slice: an axial one for in-plane models, a coronal or sagittal one, its rows along z, for through-plane
    models, whose slice axis is 1 or 2)."""
    value = data.get("natural_images", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise InputError(f"data.natural_images must be a fraction of the training crops in [0, 1); got {value!r}.")
    return float(value)


def photograph_volume(image: np.ndarray, axis: int) -> np.ndarray:
    """A photograph (H, W) as a one-slice (z, y, x) volume along ``axis``: (1, H, W) for axial slices, (H, 1, W)
    or (H, W, 1) for coronal or sagittal ones (the photograph's rows along z)."""
    return np.expand_dims(image, axis)
