"""Adversarial segmentation: a U-Net trained with Dice + cross-entropy and a PatchGAN critic of (image, mask) pairs.

After Luc et al. ("Semantic segmentation using adversarial networks", NIPS workshop 2016) and SegAN (Xue et al.,
Neuroinformatics 2018): the segmenter S (:mod:`MedGANLogic.models.segmentation`) predicts class logits; a
conditional PatchGAN D sees the image with a lesion mask stacked as a second channel and learns to tell the
true mask from S's predicted lesion probability. S is trained to segment and to fool D:

    loss_D = 0.5 * [adv(D(x, m), real) + adv(D(x, p(x)), fake)]              p(x) = softmax(S(x))[lesion]
    loss_S = w_dice * Dice(S(x), m) + w_ce * CE(S(x), m) + w_adv * adv(D(x, p(x)), real)

The adversarial term rewards masks whose shapes look like real ones (no speckle, plausible outlines), which
per-pixel losses do not see. ``loss.adversarial: 0`` trains the same U-Net on the same batches without D: the
ablation that tells whether the adversarial term helps (``brain-lesion-seg-noadv`` recipe).

Data: ``data.input`` an MR contrast (FLAIR for lesions), ``data.target`` a label map (``lesion_mask`` of the
phantom, or a folder of masks matched by file name); the card's output normalisation is ``none``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError
from . import TRAINERS
from .loop import GANTrainer


@TRAINERS.register("segmentation")
class SegmentationGANTrainer(GANTrainer):
    FAMILY = "segmentation"
    DEFAULTS: dict[str, Any] = {
        "generator": {"name": "seg_unet2d", "params": {"in_channels": 1, "num_classes": 2,
                                                       "features": [16, 16, 32, 64, 128, 16]}},
        "discriminator": {"channels": 32, "layers": 3, "norm": "instance", "conditional": True},
        "data": {"target": "lesion_mask", "augment": {"flip": True, "shift": 4}},
        "loss": {"gan_mode": "lsgan", "adversarial": 0.05, "dice": 1.0, "cross_entropy": 1.0, "pixel": 0.0},
        "optim": {"lr_g": 1.0e-3, "lr_d": 2.0e-4, "betas": [0.5, 0.999], "decay_from": 0.5},
    }
    image: torch.Tensor
    mask: torch.Tensor
    logits: torch.Tensor

    def validate(self) -> None:
        super().validate()
        self.check_loss_weights("dice", "cross_entropy")
        if self.loss_cfg["dice"] + self.loss_cfg["cross_entropy"] <= 0:
            raise InputError("Training config: loss.dice and loss.cross_entropy cannot both be 0: the segmenter "
                             "needs a supervised loss.")
        for i, entry in enumerate(self.config["export"]):
            if entry["card"].get("output", {}).get("normalization", {}).get("kind") != "none":
                raise InputError(f"Training config: export[{i}].card.output.normalization must be {{kind: none}} "
                                 f"for a segmentation model (the targets are label maps).")

    @property
    def adversarial_on(self) -> bool:
        return float(self.loss_cfg["adversarial"]) > 0

    def build(self) -> None:
        from monai.losses import DiceCELoss

        seg = self.make_generator()
        self.num_classes = int(getattr(seg, "out_channels", 2))
        in_ch = int(self.config["generator"].get("params", {}).get("in_channels", 1))
        # the ablation trains the same U-Net without any discriminator
        self.add_gan(seg, in_ch + self.num_classes - 1 if self.adversarial_on else None)
        w = self.loss_cfg
        self.seg_loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, lambda_dice=float(w["dice"]),
                                   lambda_ce=float(w["cross_entropy"]))

    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        self.image = batch["source"]
        self.mask = batch["target"].round().clamp(0, self.num_classes - 1)

    def forward(self) -> None:
        self.logits = self.nets["G"](self.image)

    def d_input(self, masks: torch.Tensor) -> torch.Tensor:
        """What D sees: the image and the foreground class maps (probabilities or one-hot truth) as channels."""
        return torch.cat([self.image, masks], dim=1)

    def one_hot_foreground(self) -> torch.Tensor:
        labels = self.mask[:, 0].long()
        return torch.nn.functional.one_hot(labels, self.num_classes).permute(0, 3, 1, 2)[:, 1:].float()

    def optimize_discriminator(self) -> dict[str, float]:
        if not self.adversarial_on:
            return {}
        probs = torch.softmax(self.logits.detach(), dim=1)[:, 1:]
        loss, logs = self.discriminator_loss("D", self.d_input(self.one_hot_foreground()), self.d_input(probs))
        self.update("D", loss)
        return logs

    def optimize_generator(self) -> dict[str, float]:
        terms = {"S_dicece": (1.0, self.seg_loss(self.logits, self.mask))}  # Dice + CE, weighted inside
        if self.adversarial_on:
            adv, _ = self.generator_adversarial("D", self.d_input(torch.softmax(self.logits, dim=1)[:, 1:]))
            terms["G_adv"] = (float(self.loss_cfg["adversarial"]), adv)
        return self.weighted_update("G", terms)

    def sample_rows(self, batch: dict[str, torch.Tensor]) -> tuple[list[list[np.ndarray]], list[str]]:
        x, m = batch["source"], batch["target"]
        probs = torch.softmax(self.net("G")(x), dim=1)
        c = x.shape[1] // 2
        rows = [[x[i, c].cpu().numpy(), probs[i, 1].cpu().numpy() * 2 - 1, m[i, 0].cpu().numpy() * 2 - 1]
                for i in range(x.shape[0])]
        return rows, ["image", "lesion probability", "true mask"]


__all__ = ["SegmentationGANTrainer"]
