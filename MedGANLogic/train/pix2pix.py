"""pix2pix: a conditional GAN for paired image-to-image translation (Isola et al., CVPR 2017).

Generator G: source -> target (U-Net). Discriminator D: a PatchGAN that sees (source, image) pairs and
scores each patch real or generated, so it judges whether the output fits *this* input.

    loss_D = 0.5 * [adv(D(x, y), real) + adv(D(x, G(x)), fake)]          (+ gradient penalty for WGAN-GP)
    loss_G = w_adv * adv(D(x, G(x)), real) + w_pixel * |G(x) - y|_1
             + w_fm * feature_matching(D(x, G(x)), D(x, y)) + w_vgg * VGG(G(x), y)

Weights are ``loss.adversarial``, ``loss.pixel`` (pix2pix: 100), ``loss.feature_matching`` and ``loss.vgg``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import TRAINERS
from .loop import GANTrainer
from .losses import pixel_loss


@TRAINERS.register("pix2pix")
class Pix2PixTrainer(GANTrainer):
    FAMILY = "pix2pix"
    DEFAULTS: dict[str, Any] = {
        "generator": {"name": "unet2d", "params": {"features": 32, "depth": 4}},
        "discriminator": {"conditional": True},
        "loss": {"gan_mode": "lsgan", "pixel": 100.0, "pixel_kind": "l1", "feature_matching": 0.0},
    }
    real_A: torch.Tensor
    real_B: torch.Tensor
    fake_B: torch.Tensor

    def build(self) -> None:
        gen = self.make_generator()
        in_ch = int(self.config["generator"].get("params", {}).get("in_channels", 1))
        out_ch = int(getattr(gen, "out_channels", 1))
        conditional = bool(self.config["discriminator"].get("conditional", True))
        self.add_gan(gen, in_ch + out_ch if conditional else out_ch)

    def d_input(self, image: torch.Tensor) -> torch.Tensor:
        """What D sees: (source, image) stacked as channels for a conditional D, else the image alone."""
        if self.config["discriminator"].get("conditional", True):
            return torch.cat([self.real_A, image], dim=1)
        return image

    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        self.real_A, self.real_B = batch["source"], batch["target"]

    def forward(self) -> None:
        self.fake_B = self.nets["G"](self.real_A)

    def optimize_discriminator(self) -> dict[str, float]:
        loss, logs = self.discriminator_loss("D", self.d_input(self.real_B), self.d_input(self.fake_B.detach()))
        self.update("D", loss)
        return logs

    def optimize_generator(self) -> dict[str, float]:
        w = self.loss_cfg
        adv, fm = self.generator_adversarial("D", self.d_input(self.fake_B),
                                             self.d_input(self.real_B) if w["feature_matching"] > 0 else None)
        terms = {"G_adv": (w["adversarial"], adv)}
        if w["pixel"] > 0:
            terms["G_pixel"] = (w["pixel"], pixel_loss(w["pixel_kind"], self.fake_B, self.real_B))
        terms.update(self.perceptual_terms(fm, self.fake_B, self.real_B))
        return self.weighted_update("G", terms)

    def sample_rows(self, batch: dict[str, torch.Tensor]) -> tuple[list[list[np.ndarray]], list[str]]:
        src, out, tgt = self.paired_samples(batch)
        return [[src[i], out[i], tgt[i]] for i in range(len(src))], ["input", "output", "target"]
