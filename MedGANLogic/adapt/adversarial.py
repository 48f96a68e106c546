"""The optional adversarial term of per-scan fitting: a PatchGAN discriminator trained alongside the network.

As in the SRGAN family (:mod:`MedGANLogic.train.srgan`): MONAI's ``PatchDiscriminator`` and the project's
:class:`~MedGANLogic.train.losses.AdversarialLoss` (least squares by default), a small weight (ESRGAN: 5e-3) and
only in the second half of the budget, after the pixel loss has found a faithful solution. What counts as
"real" depends on the task: high-resolution in-plane patches for super-resolution; for denoising, where no
clean image exists, the noisy scan itself against the network's output plus noise re-sampled from the scan's
own residuals (AmbientGAN's idea: compare in the measured domain), which penalises over-smoothing.
"""

from __future__ import annotations

import torch

from ..train.losses import AdversarialLoss

START_FRACTION = 0.5  # of the budget: the pixel loss alone before


class AdversarialTerm:
    """A discriminator, its optimiser and the generator's adversarial loss.

    Args:
        weight: weight of the generator's adversarial loss (0 disables the term).
        device: where the discriminator runs.
        channels, layers: PatchDiscriminator width and depth (3 layers: 70x70-like receptive field).
    """

    def __init__(self, weight: float, device: torch.device, channels: int = 32, layers: int = 3,
                 mode: str = "lsgan", lr: float = 2e-4):
        from monai.networks.nets import PatchDiscriminator

        self.weight = float(weight)
        self.loss = AdversarialLoss(mode)
        self.net = PatchDiscriminator(spatial_dims=2, channels=channels, in_channels=1, num_layers_d=layers,
                                      norm="INSTANCE", bias=True).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr, betas=(0.5, 0.999))

    def active(self, fraction: float) -> bool:
        return self.weight > 0 and fraction >= START_FRACTION

    def update_discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        """One discriminator step on real and (detached) fake patches; returns its loss."""
        logits = self.net(torch.cat([real, fake.detach()]))[-1]
        n = real.shape[0]
        loss = self.loss.discriminator(logits[:n], logits[n:])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.item())

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Weighted adversarial loss of the generator (the discriminator's parameters get no gradient)."""
        for p in self.net.parameters():
            p.requires_grad_(False)
        try:
            return self.weight * self.loss.generator(self.net(fake)[-1])
        finally:
            for p in self.net.parameters():
                p.requires_grad_(True)
