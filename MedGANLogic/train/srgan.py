"""SRGAN training: MR super-resolution with a pixel-loss pre-training and an adversarial fine-tuning.

After SRGAN (Ledig et al., CVPR 2017) and ESRGAN (Wang et al., 2018): the generator
(:mod:`MedGANLogic.models.srgan`) is first trained on the pixel loss alone for ``loss.pretrain_steps`` steps
(the PSNR-oriented network), then fine-tuned against a PatchGAN discriminator on high-resolution slices:

    loss_D = 0.5 * [adv(D(y), real) + adv(D(G(x)), fake)]                      (fine-tuning only)
    loss_G = w_pixel * |G(x) - y|_1 + w_adv * adv(D(G(x)), real)
             + w_fm * feature_matching(D(G(x)), D(y))  (+ w_vgg * VGG19(G(x), y) with user-supplied weights)

with a small adversarial weight (ESRGAN: 5e-3) so that the result stays faithful to the measured data;
discriminator feature matching is the perceptual term by default (VGG weights cannot be downloaded here).

Training pairs (low-resolution input simulated from each high-resolution volume, ``data.degrade``) and their
batches come from :mod:`MedGANLogic.train.data.superres`. The exported card names that acquisition
(``extras.degradation``, unless the recipe's card does): the engine keeps the input's measured data in the output
by it (:mod:`MedGANLogic.tasks.superres`).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from . import TRAINERS
from .data import build_sr_batches, card_context, plane_scale
from .loop import GANTrainer
from .losses import pixel_loss


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
        for entry in config.get("export") or []:  # the card names the acquisition its model learned to invert
            entry.get("card", {}).setdefault("extras", {}).setdefault(
                "degradation", d.get("degrade", self.DEFAULTS["data"]["degrade"]))
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
            context = card_context(card)
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
        self.add_gan(gen, int(getattr(gen, "out_channels", 1)))

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
            adv, fm = self.generator_adversarial("D", self.fake_B, self.real_B if w["feature_matching"] > 0 else None)
            terms["G_adv"] = (w["adversarial"], adv)
            terms.update(self.perceptual_terms(fm, self.fake_B, self.real_B))
        return self.weighted_update("G", terms)

    def sample_rows(self, batch: dict[str, torch.Tensor]) -> tuple[list[list[np.ndarray]], list[str]]:
        src, out, tgt = self.paired_samples(batch)
        sy, sx = tgt.shape[-2] // src.shape[-2], tgt.shape[-1] // src.shape[-1]
        rows = [[np.repeat(np.repeat(src[i], sy, axis=0), sx, axis=1), out[i], tgt[i], np.abs(out[i] - tgt[i]) * 4 - 1]
                for i in range(len(src))]
        return rows, ["input (nearest)", "super-resolved", "target", "|error| x4"]


__all__ = ["SRGANTrainer"]
