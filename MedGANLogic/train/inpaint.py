"""Lesion inpainting GAN: a U-Net fills a hidden region with a lesion; a global and a local PatchGAN judge it.

After Iizuka et al. ("Globally and locally consistent image completion", SIGGRAPH 2017), with PatchGANs for both
critics. The generator G (:class:`MedGANLogic.models.inpaint.LesionInpaintNet`) sees the lesion-free slice with
the hidden region zeroed, the region and the lesion type, and fills the region; the slice outside it is kept:

    fake = where(hidden, G(healthy, hidden, type), healthy)                  real = the slice with its lesion
    loss_D      = 0.5 * [adv(D([real, hidden]), real) + adv(D([fake, hidden]), fake)]     (the whole slice)
    loss_Dlocal = the same on ``loss.local_crop`` px crops around the region, with the type as channels
    loss_G      = w_pixel * L1(fake, real | hidden) + w_adv * [adv(D(fake), real) + adv(D_local(fake), real)] / 2

The L1 term is averaged over hidden voxels only (outside them fake equals the input). Training batches are
``data.crop`` px squares around each lesion (jittered), which is what a 2-core CPU can train in minutes; the
U-Net is convolutional and runs on whole slices at inference. Data: domain-randomised
heads with one synthetic lesion each (:mod:`MedGANLogic.train.data.lesion`), so the fill follows the contrast,
resolution and noise of whatever scan it is put into.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from . import TRAINERS
from .data.lesion import local_crops
from .loop import GANTrainer


@TRAINERS.register("lesion_inpaint")
class LesionInpaintTrainer(GANTrainer):
    FAMILY = "lesion_inpaint"
    DEFAULTS: dict[str, Any] = {
        "generator": {"name": "lesion_inpaint2d", "params": {"features": 32, "depth": 4}},
        "discriminator": {"channels": 32, "layers": 3, "norm": "instance"},
        "data": {"source": "randomized", "volumes": 120, "slices_per_volume": 6, "shape": [32, 112, 96],
                 "spacing_mm": 2.0, "canvas": [112, 96], "crop": [64, 64]},
        "loss": {"gan_mode": "lsgan", "adversarial": 1.0, "pixel": 50.0, "local_crop": 32},
        "optim": {"lr_g": 2.0e-4, "lr_d": 2.0e-4, "betas": [0.5, 0.999], "decay_from": 0.5},
    }
    healthy: torch.Tensor
    real: torch.Tensor
    hidden: torch.Tensor
    one_hot: torch.Tensor
    fake: torch.Tensor

    def __init__(self, config: dict[str, Any], run_dir: str | Path | None = None, **kwargs: Any):
        if kwargs.get("data") is None:
            from .data.lesion import InpaintingBatches

            d = config["data"]
            kwargs["data"] = InpaintingBatches(int(config["seed"]), int(d["volumes"]), int(config["batch_size"]),
                                               canvas=tuple(d["canvas"]), slices_per_volume=int(d["slices_per_volume"]),
                                               shape=tuple(d["shape"]), spacing_mm=float(d["spacing_mm"]),
                                               crop=int(d["crop"][0]) if d.get("crop") else None)
        super().__init__(config, run_dir, **kwargs)

    def validate(self) -> None:
        super().validate()
        self.check_loss_weights("pixel", "adversarial", "local_crop")
        depth = int(self.config["generator"].get("params", {}).get("depth", 4))
        for key in ("canvas", "crop"):
            if any(int(c) % 2 ** depth for c in self.config["data"].get(key) or []):
                raise InputError(f"Training config: data.{key} must be multiples of 2 ** generator depth "
                                 f"({2 ** depth}); got {self.config['data'][key]}.")

    def build(self) -> None:
        gen = self.make_generator()
        self.n_types = int(gen.n_types)
        self.add_gan(gen, 2)
        self.add_network("D_local", self.make_discriminator(2 + self.n_types))
        self.add_optimizer("D_local", ["D_local"], self.config["optim"]["lr_d"])

    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        self.real, self.healthy, self.hidden = batch["image"], batch["healthy"], batch["hidden"]
        self.one_hot = torch.nn.functional.one_hot(batch["type"].long(), self.n_types).float()

    def forward(self) -> None:
        fill = self.net("G").generate(self.healthy, self.hidden, self.one_hot)  # the raw fill: no marker round trip
        self.fake = torch.where(self.hidden > 0.5, fill, self.healthy)

    def _local(self, image: torch.Tensor) -> torch.Tensor:
        planes = self.one_hot[:, :, None, None].expand(-1, -1, *image.shape[-2:])
        crop_img, crop_hidden, crop_type = local_crops([image, self.hidden, planes], self.hidden,
                                                       int(self.loss_cfg["local_crop"]))
        return torch.cat([crop_img, crop_hidden, crop_type], dim=1)

    def optimize_discriminator(self) -> dict[str, float]:
        fake = self.fake.detach()
        loss, logs = self.discriminator_loss("D", torch.cat([self.real, self.hidden], 1),
                                             torch.cat([fake, self.hidden], 1))
        self.update("D", loss)
        loss_l, logs_l = self.discriminator_loss("D_local", self._local(self.real), self._local(fake))
        self.update("D_local", loss_l)
        return {**logs, **logs_l}

    def optimize_generator(self) -> dict[str, float]:
        count = self.hidden.sum().clamp(min=1)
        l1 = ((self.fake - self.real).abs() * self.hidden).sum() / count
        adv_g, _ = self.generator_adversarial("D", torch.cat([self.fake, self.hidden], 1))
        adv_l, _ = self.generator_adversarial("D_local", self._local(self.fake))
        w = self.loss_cfg
        return self.weighted_update("G", {"G_l1_hidden": (float(w["pixel"]), l1),
                                          "G_adv": (float(w["adversarial"]) / 2, adv_g),
                                          "G_adv_local": (float(w["adversarial"]) / 2, adv_l)})

    def sample_rows(self, batch: dict[str, torch.Tensor]) -> tuple[list[list[np.ndarray]], list[str]]:
        from ..models.inpaint import hide

        hidden, healthy = batch["hidden"], batch["healthy"]
        out = self.net("G")(hide(healthy, hidden, batch["type"]))
        rows = [[healthy[i, 0].cpu().numpy(), (healthy[i, 0] * (1 - hidden[i, 0])).cpu().numpy(),
                 out[i, 0].cpu().numpy(), batch["image"][i, 0].cpu().numpy()] for i in range(out.shape[0])]
        return rows, ["lesion-free", "hidden region", "inpainted", "true lesion"]


__all__ = ["LesionInpaintTrainer"]
