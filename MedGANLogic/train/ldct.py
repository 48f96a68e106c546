"""Low-dose CT denoising GAN: a residual generator trained against a Wasserstein critic.

After WGAN-VGG (Yang et al., IEEE TMI 2018) and RED-CNN (Chen et al., IEEE TMI 2017): the generator is the
residual encoder-decoder of :mod:`MedGANLogic.models.ldct` (it predicts the noise to remove), the critic is a
PatchGAN without normalisation trained with WGAN-GP (lambda 10), and the generator's loss is

    loss_G = w_pixel * |G(x) - y|  +  w_adv * (-D(G(x)))  +  w_fm * feature_matching  (or w_vgg * VGG19)

The pixel term keeps HU values right (it is what PSNR measures); the adversarial and perceptual terms, kept
small, restore the fine texture that pure pixel losses blur away. WGAN-VGG's VGG19 term needs user-supplied
weights (``loss.vgg_weights``); without them discriminator feature matching stands in for it.

Input and target are normalised with the same CT window (card output ``same_as_input``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import TRAINERS
from .pix2pix import Pix2PixTrainer


@TRAINERS.register("ldct")
class LowDoseCTTrainer(Pix2PixTrainer):
    FAMILY = "ldct"
    DEFAULTS: dict[str, Any] = {
        "generator": {"name": "red_cnn2d", "params": {"features": 32, "levels": 2}},
        "discriminator": {"conditional": False, "norm": "none", "channels": 32, "layers": 3},
        "loss": {"gan_mode": "wgan-gp", "adversarial": 0.05, "pixel": 100.0, "pixel_kind": "l1",
                 "feature_matching": 1.0, "gradient_penalty": 10.0, "critic_steps": 1},
        "optim": {"lr_g": 1.0e-4, "lr_d": 1.0e-4, "betas": [0.5, 0.9], "decay_from": 0.5},
    }

    def sample_rows(self, batch: dict[str, torch.Tensor]) -> tuple[list[list[np.ndarray]], list[str]]:
        rows, _ = super().sample_rows(batch)
        # |output - target| on the same scale, so residual noise shows
        rows = [r + [np.abs(r[1] - r[2]) * 4 - 1] for r in rows]
        return rows, ["low dose", "denoised", "full dose", "|error| x4"]
