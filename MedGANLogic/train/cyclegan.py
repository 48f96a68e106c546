"""CycleGAN: unpaired image-to-image translation (Zhu et al., ICCV 2017).

Generators G_AB: A -> B and G_BA: B -> A (ResNet generators), discriminators D_A (real A vs G_BA(b)) and D_B
(real B vs G_AB(a)). With no pairs to compare against, the translation is tied to its input by cycle
consistency: a -> G_AB -> G_BA must give a back, and likewise for b.

    loss_D = adv_D(D_A; a, pool(G_BA(b))) + adv_D(D_B; b, pool(G_AB(a)))
    loss_G = w_adv * [adv(D_B(G_AB(a))) + adv(D_A(G_BA(b)))]
             + w_cycle * [|G_BA(G_AB(a)) - a| + |G_AB(G_BA(b)) - b|]
             + w_identity * w_cycle * [|G_AB(b) - b| + |G_BA(a) - a|]
             + w_fm * feature matching (batch-mean discriminator features; there are no pairs)

``loss.cycle`` (10), ``loss.identity`` (0.5; set 0 between modalities whose intensities mean different things,
such as MR and CT, where "translate a CT to CT unchanged" is not a meaningful constraint), ``loss.pool_size``
(50: discriminators also see older fakes, which damps oscillation).

Both directions become models on export: ``export`` entries name ``generator: G_AB`` or ``G_BA``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from . import TRAINERS
from .loop import GANTrainer
from .losses import ImagePool


@TRAINERS.register("cyclegan")
class CycleGANTrainer(GANTrainer):
    FAMILY = "cyclegan"
    DEFAULTS: dict[str, Any] = {
        "generator": {"name": "resnet2d", "params": {"features": 16, "n_blocks": 6, "upsample": "resize"}},
        "discriminator": {"conditional": False, "norm": "instance"},
        "loss": {"gan_mode": "lsgan", "pixel": 0.0, "cycle": 10.0, "identity": 0.5, "pool_size": 50},
    }
    PAIRED = False
    ROLES = ("A", "B")
    EXPORT_DOMAINS = {"G_AB": ("source", "target"), "G_BA": ("target", "source")}

    real_A: torch.Tensor
    real_B: torch.Tensor

    def validate(self) -> None:
        super().validate()
        self.check_loss_weights("cycle", "identity")
        if self.config["discriminator"].get("conditional"):
            raise InputError("Training config: CycleGAN's discriminators cannot be conditional (there are no "
                             "pairs); set discriminator.conditional to false.")

    def build(self) -> None:
        self.add_network("G_AB", self.make_generator())
        self.add_network("G_BA", self.make_generator(self.config.get("generator_ba")))
        self.add_network("D_A", self.make_discriminator(self._channels("G_BA")))
        self.add_network("D_B", self.make_discriminator(self._channels("G_AB")))
        self.add_optimizer("G", ["G_AB", "G_BA"], self.config["optim"]["lr_g"])
        self.add_optimizer("D", ["D_A", "D_B"], self.config["optim"]["lr_d"])
        size = int(self.loss_cfg.get("pool_size", 50))
        self.pool_A, self.pool_B = ImagePool(size), ImagePool(size)

    def _channels(self, gen: str) -> int:
        return int(getattr(self.net(gen), "out_channels", 1))

    def generator_config(self, name: str) -> dict[str, Any]:
        return self.config.get("generator_ba") or self.config["generator"] if name == "G_BA" \
            else self.config["generator"]

    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        self.real_A, self.real_B = batch["A"], batch["B"]

    def forward(self) -> None:
        self.fake_B = self.nets["G_AB"](self.real_A)
        self.rec_A = self.nets["G_BA"](self.fake_B)
        self.fake_A = self.nets["G_BA"](self.real_B)
        self.rec_B = self.nets["G_AB"](self.fake_A)

    def optimize_discriminator(self) -> dict[str, float]:
        loss_a, logs_a = self.discriminator_loss("D_A", self.real_A, self.pool_A.query(self.fake_A))
        loss_b, logs_b = self.discriminator_loss("D_B", self.real_B, self.pool_B.query(self.fake_B))
        self.update("D", loss_a + loss_b)
        return {**logs_a, **logs_b}

    def optimize_generator(self) -> dict[str, float]:
        w = self.loss_cfg
        want_fm = w["feature_matching"] > 0
        adv_ab, fm_b = self.generator_adversarial("D_B", self.fake_B, self.real_B if want_fm else None, True)
        adv_ba, fm_a = self.generator_adversarial("D_A", self.fake_A, self.real_A if want_fm else None, True)
        terms = {"G_adv": (w["adversarial"], adv_ab + adv_ba),
                 "G_cycle": (w["cycle"], F.l1_loss(self.rec_A, self.real_A) + F.l1_loss(self.rec_B, self.real_B))}
        if w["identity"] > 0:
            idt = F.l1_loss(self.nets["G_AB"](self.real_B), self.real_B) \
                + F.l1_loss(self.nets["G_BA"](self.real_A), self.real_A)
            terms["G_identity"] = (w["identity"] * w["cycle"], idt)
        if want_fm:
            terms["G_fm"] = (w["feature_matching"], fm_a + fm_b)
        return self.weighted_update("G", terms)

    def extra_state(self) -> dict[str, torch.Tensor | None]:
        return {"pool_A": self.pool_A.state_tensor(), "pool_B": self.pool_B.state_tensor()}

    def load_extra_state(self, extra: dict[str, torch.Tensor]) -> None:
        self.pool_A.load_state_tensor(extra.get("pool_A"), self.device)
        self.pool_B.load_state_tensor(extra.get("pool_B"), self.device)

    def sample_rows(self, batch: dict[str, torch.Tensor]) -> tuple[list[list[np.ndarray]], list[str]]:
        rows = []
        for real, g, f in ((batch["A"], "G_AB", "G_BA"), (batch["B"], "G_BA", "G_AB")):
            fake = self.net(g)(real)
            rec = self.net(f)(fake)
            rows += [[real[i, 0].cpu().numpy(), fake[i, 0].cpu().numpy(), rec[i, 0].cpu().numpy()]
                     for i in range(real.shape[0])]
        return rows, ["real", "translated", "reconstructed"]
