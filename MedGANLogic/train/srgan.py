"""SRGAN training: MR super-resolution with a pixel-loss pre-training and an adversarial fine-tuning.

After SRGAN (Ledig et al., CVPR 2017) and ESRGAN (Wang et al., 2018): the generator
(:mod:`MedGANLogic.models.srgan`) is first trained on the pixel loss alone for ``loss.pretrain_steps`` steps
(the PSNR-oriented network), then fine-tuned against a PatchGAN discriminator on high-resolution slices:

    loss_D = 0.5 * [adv(D(y), real) + adv(D(G(x)), fake)]                      (fine-tuning only)
    loss_G = w_pixel * |G(x) - y|_1 + w_adv * adv(D(G(x)), real)
             + w_fm * feature_matching(D(G(x)), D(y))  (+ w_vgg * VGG19(G(x), y) with user-supplied weights)

with a small adversarial weight (ESRGAN: 5e-3) so that the result stays faithful to the measured data;
discriminator feature matching is the perceptual term by default (VGG weights cannot be downloaded here).

Training pairs are made from high-resolution volumes: the low-resolution input is simulated from each one
(``data.degrade``: ``thick_slices`` averages ``factor`` slices along the scaled axis, as a thick 2D acquisition
integrates its slab; ``kspace_truncate`` keeps the central 1/``factor`` of k-space along the scaled axes, as a
smaller acquisition matrix measures), with the factors and axes of the export card's ``scale_factor``. Both are
normalised with the input's window (card output ``same_as_input``), cut into slices along ``data.slice_axis``
(the card's) and cropped at random aligned positions: an input crop of ``data.crop`` pixels and the target
crop exactly covering it.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..volume import Volume
from . import TRAINERS
from .data import _Stream, load_volumes, normalize_for_training, place, range_low, volume_slices
from .loop import GANTrainer, set_requires_grad
from .losses import pixel_loss

DEGRADATIONS = ("thick_slices", "kspace_truncate")


def degrade(array: np.ndarray, scale: tuple[int, int, int], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(low-resolution input, high-resolution target cropped to a multiple of the factor), both (z, y, x).

    ``scale`` is the card's integer ``scale_factor`` along (z, y, x); ``kind`` one of :data:`DEGRADATIONS`.
    """
    from ..simulate import kspace_truncate, thick_slices
    from ..simulate.lowres import crop_to_multiple

    axes = tuple(a for a in range(3) if scale[a] > 1)
    factors = {scale[a] for a in axes}
    if len(factors) != 1:
        raise InputError(f"Super-resolution training needs one factor on all scaled axes; scale_factor is {scale}.")
    factor = factors.pop()
    vol = Volume(array, spacing=(1.0, 1.0, 1.0))
    if kind == "thick_slices":
        if len(axes) != 1:
            raise InputError("data.degrade thick_slices scales one axis (the slice direction); use kspace_truncate "
                             "for in-plane super-resolution.")
        low = thick_slices(vol, factor, axes[0])
    elif kind == "kspace_truncate":
        low = kspace_truncate(vol, factor, axes)
    else:
        raise InputError(f"data.degrade must be one of {', '.join(DEGRADATIONS)}; got {kind!r}.")
    return low.array, crop_to_multiple(vol, factor, axes).array


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
                 val: tuple[list[np.ndarray], list[np.ndarray]] | None = None):
        self.scale, self.batch_size, self.seed = tuple(int(s) for s in scale), int(batch_size), int(seed)
        self.crop = (int(crop[0]), int(crop[1]))
        self.background, self.substeps = float(background), int(substeps)
        self.augment = dict(augment or {})
        self.low, self.high = low, high
        self.index = self._index(low, min_foreground)
        self.val_index = self._index(val[0], min_foreground) if val else []
        self.val = val
        self.stream = _Stream(len(self.index), self.seed, 0)
        self.hw = self.crop

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
            v, k = self.index[self.stream.index(sample)]
            rng = np.random.default_rng([self.seed, 7, sample])
            flip = bool(self.augment.get("flip", True)) and bool(rng.integers(2))
            low = self.low[v][k]
            x, y = self._pair(low, self.high[v][k], self._offset(rng, low), flip)
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
        return {"slices": len(self.index), "val_slices": len(self.val_index), "crop": list(self.crop),
                "scale": list(self.scale)}


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
    context = int(card.get("context_slices", 0)) if card.get("dims") == "2.5d" else 0
    spec = copy.deepcopy(card["input"]["normalization"])
    if card["output"]["normalization"].get("kind") != "same_as_input":
        raise InputError("Super-resolution cards need output normalization same_as_input (the output keeps the "
                         "input's intensities).")
    crop = data.get("crop")
    if not crop:
        raise InputError("Super-resolution training draws random crops: set data.crop to [height, width] of the "
                         "low-resolution input crops (e.g. [32, 48]).")
    train_v, val_v = volumes or load_volumes(config, paired=True)
    kind = data.get("degrade", "thick_slices")

    def prepare(vset) -> tuple[list[np.ndarray], list[np.ndarray]]:
        lows, highs = [], []
        for array in (vset.volumes["target"] if vset else []):
            low, high = degrade(np.asarray(array, dtype=np.float32), scale, kind)
            low_n, stats = normalize_for_training(low, spec)
            high_n, _ = normalize_for_training(high, spec, stats)
            lows.append(volume_slices(low_n, axis, context))
            highs.append(volume_slices(high_n, axis, 0))
        return lows, highs

    low, high = prepare(train_v)
    val = prepare(val_v) if val_v and val_v.volumes["target"] else None
    return ScaledPairBatches(low, high, scale=plane, batch_size=int(config["batch_size"]), seed=int(config["seed"]),
                             crop=list(crop), background=range_low(spec),
                             min_foreground=float(data.get("min_foreground", 0.1)), augment=data.get("augment"),
                             substeps=int(config["loss"]["critic_steps"]), val=val)


@TRAINERS.register("srgan")
class SRGANTrainer(GANTrainer):
    FAMILY = "srgan"
    DEFAULTS: dict[str, Any] = {
        "generator": {"name": "srresnet2d", "params": {"features": 32, "n_blocks": 8}},
        "discriminator": {"channels": 32, "layers": 3, "norm": "instance", "conditional": False},
        "data": {"degrade": "thick_slices", "crop": [32, 32], "augment": {"flip": True}},
        "loss": {"gan_mode": "lsgan", "adversarial": 5.0e-3, "pixel": 1.0, "pixel_kind": "l1",
                 "feature_matching": 0.05, "pretrain_steps": 500},
        "optim": {"lr_g": 2.0e-4, "lr_d": 2.0e-4, "betas": [0.9, 0.999], "decay_from": 0.5},
    }
    PAIRED = True
    EXPORT_DOMAINS = {"G": ("source", "target")}

    real_A: torch.Tensor
    real_B: torch.Tensor
    fake_B: torch.Tensor

    def __init__(self, config: dict[str, Any], run_dir: Any = None, *, data: Any = None, volumes: Any = None,
                 **kwargs: Any):
        config = copy.deepcopy(config)
        d = config.get("data", {})
        d.setdefault("target", d.get("input"))  # the target is the high-resolution input itself
        if d.get("source_dir") and not d.get("target_dir"):
            d["target_dir"] = d["source_dir"]
        if data is None and config.get("family") == self.FAMILY:
            data = build_sr_batches(config, volumes)
        super().__init__(config, run_dir, data=data, **kwargs)

    def validate(self) -> None:
        super().validate()
        card = self.config["export"][0]["card"] if self.config["export"] else {}
        axis = int(self.config["data"].get("slice_axis", 0))
        params = self.config["generator"].get("params", {})
        if card and self.config["generator"]["name"] == "srresnet2d":
            want = list(plane_scale(card, axis))
            if [int(s) for s in params.get("scale", want)] != want:
                raise InputError(f"Training config: generator.params.scale {params.get('scale')} does not match the "
                                 f"card's scale_factor {card.get('scale_factor')} seen from slice axis {axis} "
                                 f"(expected {want}).")
            context = int(card.get("context_slices", 0)) if card.get("dims") == "2.5d" else 0
            if int(params.get("in_channels", 1)) != 1 + 2 * context:
                raise InputError(f"Training config: generator.params.in_channels must be {1 + 2 * context} for a "
                                 f"{card.get('dims')} card with context_slices {context}.")
        pre = self.loss_cfg.get("pretrain_steps", 0)
        if not isinstance(pre, int) or pre < 0:
            raise InputError("Training config: 'loss.pretrain_steps' must be an integer >= 0.")

    @property
    def adversarial_phase(self) -> bool:
        """False during the pixel-loss pre-training, True during the adversarial fine-tuning."""
        return self.step >= int(self.loss_cfg.get("pretrain_steps", 0)) and float(self.loss_cfg["adversarial"]) > 0

    def build(self) -> None:
        gen = self.make_generator()
        self.add_network("G", gen)
        self.add_network("D", self.make_discriminator(int(getattr(gen, "out_channels", 1))))
        self.add_optimizer("G", ["G"], self.config["optim"]["lr_g"])
        self.add_optimizer("D", ["D"], self.config["optim"]["lr_d"])

    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        self.real_A, self.real_B = batch["source"], batch["target"]

    def forward(self) -> None:
        self.fake_B = self.nets["G"](self.real_A)

    def optimize_discriminator(self) -> dict[str, float]:
        if not self.adversarial_phase:
            return {}
        loss, logs = self.discriminator_loss("D", self.real_B, self.fake_B.detach())
        self.update("D", loss)
        return logs

    def optimize_generator(self) -> dict[str, float]:
        w = self.loss_cfg
        terms = {"G_pixel": (w["pixel"], pixel_loss(w["pixel_kind"], self.fake_B, self.real_B))}
        if self.adversarial_phase:
            set_requires_grad(self.net("D"), False)
            try:
                adv, fm = self.generator_adversarial("D", self.fake_B,
                                                     self.real_B if w["feature_matching"] > 0 else None)
            finally:
                set_requires_grad(self.net("D"), True)
            terms["G_adv"] = (w["adversarial"], adv)
            if fm is not None:
                terms["G_fm"] = (w["feature_matching"], fm)
            if self.vgg is not None:
                terms["G_vgg"] = (w["vgg"], self.vgg(self.fake_B, self.real_B))
        total = sum(weight * value for weight, value in terms.values())
        self.update("G", total)
        return {"G": total.item(), **{k: v.item() for k, (_, v) in terms.items()}}

    def sample_rows(self, batch: dict[str, torch.Tensor]) -> tuple[list[list[np.ndarray]], list[str]]:
        src, tgt = batch["source"], batch["target"]
        out = self.net("G")(src)
        c = src.shape[1] // 2
        sy, sx = tgt.shape[-2] // src.shape[-2], tgt.shape[-1] // src.shape[-1]
        rows = []
        for i in range(src.shape[0]):
            nearest = np.repeat(np.repeat(src[i, c].cpu().numpy(), sy, axis=0), sx, axis=1)
            rows.append([nearest, out[i, 0].cpu().numpy(), tgt[i, 0].cpu().numpy(),
                         (out[i, 0] - tgt[i, 0]).abs().cpu().numpy() * 4 - 1])
        return rows, ["input (nearest)", "super-resolved", "target", "|error| x4"]


__all__ = ["SRGANTrainer", "ScaledPairBatches", "build_sr_batches", "degrade", "plane_scale", "DEGRADATIONS"]
