"""GAN losses, each named and weighted in one place.

* :class:`AdversarialLoss`: ``lsgan`` (least squares, Mao et al. 2017; the default), ``vanilla`` (logits
  through a sigmoid and binary cross-entropy, Goodfellow et al. 2014) -- both via MONAI's
  ``PatchAdversarialLoss`` -- and ``wgan-gp`` (Wasserstein critic with gradient penalty, Gulrajani et al. 2017).
* :func:`gradient_penalty`: WGAN-GP's (||grad D(x_hat)|| - 1)^2 on random interpolates of real and fake.
* :func:`feature_matching_loss`: L1 between discriminator features of real and generated images (Salimans et
  al. 2016; pix2pixHD). The default perceptual loss: it needs no pretrained network.
* :class:`VGGPerceptualLoss`: L1 (or MSE) between VGG19 features (Johnson et al. 2016; WGAN-VGG for low-dose
  CT), from a VGG19 safetensors file the user supplies (torchvision key names), since weights cannot be
  downloaded here.
* :class:`ImagePool`: a history of generated images shown to the discriminator (Shrivastava et al. 2017;
  CycleGAN), with its contents saved in checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss

from ..errors import InputError


class AdversarialLoss:
    """The discriminator's and the generator's adversarial loss for one GAN mode.

    Inputs are the discriminator's raw outputs (patch logits of any shape ``(N, 1, h, w)``).

    Example:
        >>> loss = AdversarialLoss("lsgan")
        >>> float(loss.discriminator(torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)))
        0.0
    """

    def __init__(self, mode: str = "lsgan"):
        if mode not in ("lsgan", "vanilla", "wgan-gp"):
            raise InputError(f"GAN mode must be lsgan, vanilla or wgan-gp; got {mode!r}.")
        self.mode = mode
        self._patch = None
        if mode == "lsgan":
            self._patch = PatchAdversarialLoss(criterion="least_squares", no_activation_leastsq=True)
        elif mode == "vanilla":
            self._patch = PatchAdversarialLoss(criterion="bce")

    @property
    def is_wasserstein(self) -> bool:
        return self.mode == "wgan-gp"

    def discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Loss of D: real scored real, fake scored fake (0.5 * (real + fake) as in pix2pix/CycleGAN)."""
        if self._patch is None:
            return fake.mean() - real.mean()  # the critic's negative Wasserstein estimate
        return 0.5 * (self._patch(real, target_is_real=True, for_discriminator=True)
                      + self._patch(fake, target_is_real=False, for_discriminator=True))

    def generator(self, fake: torch.Tensor) -> torch.Tensor:
        """Loss of G: its outputs scored real."""
        if self._patch is None:
            return -fake.mean()
        return self._patch(fake, target_is_real=True, for_discriminator=False)


def interpolates(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Random points on the lines between real and fake samples (one uniform weight per sample)."""
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    return (eps * real + (1 - eps) * fake).requires_grad_(True)


def gradient_penalty(critic_out: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """mean over samples of (||d critic_out / d x_hat||_2 - 1)^2, with a graph for the critic's update."""
    grads, = torch.autograd.grad(critic_out.sum(), x_hat, create_graph=True)
    norms = grads.flatten(1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()


def feature_matching_loss(fake_features: Sequence[torch.Tensor], real_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the L1 distance between discriminator features; real features are not differentiated."""
    if len(fake_features) != len(real_features) or not fake_features:
        raise ValueError("feature matching needs the same, non-empty list of layers for real and fake")
    terms = [F.l1_loss(f, r.detach()) for f, r in zip(fake_features, real_features)]
    return torch.stack(terms).mean()


# VGG19 feature extractor, torchvision layer numbering ("features.N"): 16 convolutions with ReLU, 5 max-pools.
_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def vgg19_features(layers: int = 36) -> nn.Sequential:
    """The first ``layers`` modules of VGG19's ``features`` (36 = up to relu5_4), untrained."""
    mods: list[nn.Module] = []
    cin = 3
    for v in _VGG19:
        if v == "M":
            mods.append(nn.MaxPool2d(2, 2))
        else:
            mods += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU()]
            cin = int(v)
    if not 1 <= layers <= len(mods):
        raise InputError(f"loss.vgg_layer must be between 1 and {len(mods)}; got {layers}.")
    return nn.Sequential(*mods[:layers])


class VGGPerceptualLoss(nn.Module):
    """Distance between VGG19 features of two images in a normalised range (grey -> RGB, ImageNet statistics).

    Args:
        weights: a safetensors file with torchvision VGG19 keys (``features.0.weight``, ... or without the
            ``features.`` prefix); only the layers used must be present.
        layers: how many ``features`` modules to keep (36: up to relu5_4, as in WGAN-VGG).
        value_range: the images' range, mapped to [0, 1] before ImageNet normalisation.
    """

    def __init__(self, weights: str | Path, layers: int = 36, value_range: tuple[float, float] = (-1.0, 1.0),
                 kind: str = "l1"):
        super().__init__()
        from safetensors.torch import load_file

        path = Path(weights)
        if not path.is_file():
            raise InputError(f"VGG19 weights {path} not found (loss.vgg_weights). Convert torchvision's vgg19 "
                             f"state dict to safetensors, or use loss.feature_matching instead.")
        if path.suffix != ".safetensors":
            raise InputError(f"VGG19 weights must be a .safetensors file (pickles are never loaded); got {path.name}.")
        self.features = vgg19_features(layers)
        state = {k.removeprefix("features."): v.float() for k, v in load_file(str(path)).items()
                 if not k.startswith("classifier.")}
        wanted = self.features.state_dict()
        missing = [k for k in wanted if k not in state]
        if missing:
            raise InputError(f"{path.name} is not a VGG19 feature extractor: missing {missing[:3]} "
                             f"(expected torchvision key names such as features.0.weight).")
        bad = [k for k in wanted if state[k].shape != wanted[k].shape]
        if bad:
            raise InputError(f"{path.name} does not have VGG19 shapes at {bad[:3]}.")
        self.features.load_state_dict({k: state[k] for k in wanted})
        self.features.eval().requires_grad_(False)
        self.value_range = value_range
        self.kind = kind
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.value_range
        x = ((x[:, :1] - lo) / (hi - lo)).clamp(0, 1).repeat(1, 3, 1, 1)
        return (x - self.mean) / self.std

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        f = self.features(self._prep(fake))
        with torch.no_grad():
            r = self.features(self._prep(real))
        return F.l1_loss(f, r) if self.kind == "l1" else F.mse_loss(f, r)


class ImagePool:
    """A buffer of up to ``size`` generated images; ``query`` returns, per image, either it or (with p = 0.5,
    once the pool is full) a stored older one that it replaces. ``size=0`` disables the pool."""

    def __init__(self, size: int = 50):
        self.size = int(size)
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand(())) > 0.5:
                i = int(torch.randint(0, self.size, ()))
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_tensor(self) -> torch.Tensor | None:
        return torch.cat(self.images, 0).cpu() if self.images else None

    def load_state_tensor(self, tensor: torch.Tensor | None, device: torch.device | str = "cpu") -> None:
        self.images = [t.unsqueeze(0).to(device) for t in tensor] if tensor is not None else []


def pixel_loss(kind: str, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L1 (pix2pix; sharper, robust to outliers) or MSE (what PSNR measures)."""
    return F.l1_loss(fake, real) if kind == "l1" else F.mse_loss(fake, real)
