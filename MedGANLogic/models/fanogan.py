"""f-AnoGAN: unsupervised anomaly detection with a GAN of healthy anatomy (Schlegl et al., MedIA 2019).

Stage 1 trains a Wasserstein GAN with gradient penalty on healthy slices only: the generator G learns to map
latent codes z to healthy anatomy, the critic D to score realism. Stage 2 freezes both and trains an encoder E
(the "izi_f" architecture: image -> z -> image) so that G(E(x)) reproduces x:

    L_izi_f(x) = mean (x - G(E(x)))^2  +  kappa * mean (f_D(x) - f_D(G(E(x))))^2

where f_D are the critic's last intermediate features. G can only draw healthy anatomy, so where x has a
lesion G(E(x)) shows what healthy tissue would look like there, and |x - G(E(x))| is the anomaly map.

MedGAN's latent code is a small *spatial* map (``latent_channels`` x H/2^levels x W/2^levels, values in
[-1, 1]: uniform noise in stage 1, tanh of the encoder in stage 2) rather than one vector: the network is then
fully convolutional, so the engine can run it on slices of any size (a multiple of ``2 ** levels``, which it
pads to), and a few channels per 32 mm cell at 2 mm voxels are too few to encode a lesion.

The case score (:meth:`FAnoGAN.case_score`) is the f-AnoGAN anomaly score of each slice (the izi_f loss above,
per slice over the slice's head pixels, not a batch mean) aggregated over the volume as the mean of the
highest ``top_fraction`` of slice scores (default 10 %): lesions occupy a few slices, so a mean over all
slices would dilute them and the single maximum would be at the mercy of one slice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_architecture

NORMS = ("batch", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {kind!r}")


def _widths(features: int, levels: int) -> list[int]:
    """Channels at resolution 1/2**i for i = 0..levels (doubling, capped at 8 * features)."""
    return [features * 2 ** min(i, 3) for i in range(levels + 1)]


@register_architecture("fanogan_generator2d")
class FAnoGANGenerator(nn.Module):
    """G: spatial latent code -> image.

    Shapes: ``(N, latent_channels, h, w)`` with values in [-1, 1] -> ``(N, out_channels, h * 2**levels,
    w * 2**levels)`` in (-1, 1) (tanh). Each level: nearest x2 up-sampling, two 3x3 convolutions, norm, LeakyReLU.

    Example:
        >>> g = FAnoGANGenerator(latent_channels=4, features=8, levels=3)
        >>> g(torch.zeros(2, 4, 6, 5)).shape
        torch.Size([2, 1, 48, 40])
    """

    def __init__(self, out_channels: int = 1, latent_channels: int = 16, features: int = 16, levels: int = 4,
                 norm: str = "batch"):
        super().__init__()
        w = _widths(features, levels)
        self.latent_channels, self.levels, self.out_channels = latent_channels, levels, out_channels
        self.size_multiple = 2 ** levels
        self.stem = nn.Sequential(nn.Conv2d(latent_channels, w[levels], 3, padding=1), _norm(norm, w[levels]),
                                  nn.LeakyReLU(0.2), nn.Conv2d(w[levels], w[levels], 3, padding=1),
                                  _norm(norm, w[levels]), nn.LeakyReLU(0.2))
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                         nn.Conv2d(w[i + 1], w[i], 3, padding=1), _norm(norm, w[i]), nn.LeakyReLU(0.2),
                                         nn.Conv2d(w[i], w[i], 3, padding=1), _norm(norm, w[i]), nn.LeakyReLU(0.2)))
        self.head = nn.Conv2d(w[0], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.stem(z)
        for up in self.up:
            x = up(x)
        return torch.tanh(self.head(x))

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(channels, h, w) of the code for an image of ``height`` x ``width`` (multiples of ``size_multiple``)."""
        m = self.size_multiple
        if height % m or width % m:
            raise ValueError(f"image size {height} x {width} must be a multiple of {m}")
        return self.latent_channels, height // m, width // m


@register_architecture("fanogan_encoder2d")
class FAnoGANEncoder(nn.Module):
    """E: image -> spatial latent code in [-1, 1] (tanh), the inverse mapping of :class:`FAnoGANGenerator`.

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, latent_channels, H / 2**levels, W / 2**levels)``. A 3x3 stem,
    then per level a 4x4 stride-2 convolution and a 3x3 convolution with LeakyReLU; no normalisation, so
    absolute intensities reach the code.

    Example:
        >>> e = FAnoGANEncoder(latent_channels=4, features=8, levels=3)
        >>> e(torch.zeros(2, 1, 48, 40)).shape
        torch.Size([2, 4, 6, 5])
    """

    def __init__(self, in_channels: int = 1, latent_channels: int = 16, features: int = 16, levels: int = 4):
        super().__init__()
        w = _widths(features, levels)
        self.size_multiple = 2 ** levels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, w[0], 3, padding=1), nn.LeakyReLU(0.2)]
        for i in range(levels):
            layers += [nn.Conv2d(w[i], w[i + 1], 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                       nn.Conv2d(w[i + 1], w[i + 1], 3, padding=1), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(w[levels], latent_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(x))


def make_critic(in_channels: int = 1, channels: int = 16, layers: int = 4) -> nn.Module:
    """The WGAN-GP critic: MONAI's PatchDiscriminator without normalisation (the gradient penalty is per sample).

    It returns ``[features..., scores]``; ``[-2]`` are the features f-AnoGAN compares.
    """
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(spatial_dims=2, channels=channels, in_channels=in_channels, num_layers_d=layers,
                              norm=None, bias=True)


@register_architecture("fanogan2d")
class FAnoGAN(nn.Module):
    """The inference network of an f-AnoGAN model: encoder, generator and critic together.

    ``forward(x) = G(E(x))``: ``(N, 1, H, W)`` normalised slices (H, W multiples of ``size_multiple``; the engine
    pads with the background value) -> their healthy-looking reconstruction, same shape and range.

    Args:
        generator, encoder: keyword arguments of :class:`FAnoGANGenerator` / :class:`FAnoGANEncoder`
            (``latent_channels`` and ``levels`` must agree).
        critic: keyword arguments of :func:`make_critic`.
        kappa: weight of the critic-feature residual in the anomaly score (f-AnoGAN: 1).
        slice_axis: the array axis the model was trained on (for :meth:`case_score` on whole volumes).
        top_fraction: fraction of the highest-scoring slices averaged into the case score.
        background: normalised background value (padding).
    """

    def __init__(self, generator: dict[str, Any] | None = None, encoder: dict[str, Any] | None = None,
                 critic: dict[str, Any] | None = None, kappa: float = 1.0, slice_axis: int = 0,
                 top_fraction: float = 0.1, background: float = -1.0):
        super().__init__()
        self.generator = FAnoGANGenerator(**(generator or {}))
        self.encoder = FAnoGANEncoder(**(encoder or {}))
        self.critic = make_critic(**(critic or {}))
        if self.encoder.size_multiple != self.generator.size_multiple:
            raise ValueError("encoder and generator need the same number of levels")
        self.size_multiple = self.generator.size_multiple
        self.out_channels = self.generator.out_channels
        self.kappa, self.slice_axis, self.top_fraction = float(kappa), int(slice_axis), float(top_fraction)
        self.background = float(background)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(self.encoder(x))

    def critic_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)[-2]

    def slice_scores(self, x: torch.Tensor, recon: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample f-AnoGAN score ``mean (x - recon)^2 + kappa * mean (f_D(x) - f_D(recon))^2``, shape (N,).

        ``weights`` (N, 1, H, W) restricts the image residual to a region (e.g. the head); default: all pixels.
        """
        sq = (x - recon) ** 2
        if weights is None:
            image = sq.flatten(1).mean(1)
        else:
            image = (sq * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp(min=1.0)
        feats = (self.critic_features(x) - self.critic_features(recon)) ** 2
        return image + self.kappa * feats.flatten(1).mean(1)

    @torch.no_grad()
    def case_score(self, normalized: np.ndarray, recon: np.ndarray, batch_size: int = 16) -> float:
        """The case's anomaly score from a normalised volume and its reconstruction, both (z, y, x).

        Slices along ``slice_axis`` with at least 5 % foreground are scored (:meth:`slice_scores`, image term
        inside the foreground), and the mean of the top ``top_fraction`` of them (at least one) is returned.
        """
        x_all = np.moveaxis(np.asarray(normalized, dtype=np.float32), self.slice_axis, 0)
        r_all = np.moveaxis(np.asarray(recon, dtype=np.float32), self.slice_axis, 0)
        fg_all = x_all > self.background + 0.1
        keep = np.flatnonzero(fg_all.reshape(len(fg_all), -1).mean(1) >= 0.05)
        if keep.size == 0:
            return 0.0
        device = next(self.parameters()).device
        m = self.size_multiple
        h, w = x_all.shape[1:]
        pad = (0, (-w) % m, 0, (-h) % m)
        scores = []
        for i in range(0, keep.size, batch_size):
            idx = keep[i:i + batch_size]
            x = F.pad(torch.from_numpy(x_all[idx])[:, None], pad, value=self.background).to(device)
            r = F.pad(torch.from_numpy(r_all[idx])[:, None], pad, value=self.background).to(device)
            fg = F.pad(torch.from_numpy(fg_all[idx].astype(np.float32))[:, None], pad).to(device)
            scores.append(self.slice_scores(x, r, fg).float().cpu())
        s = torch.cat(scores).numpy()
        k = max(1, int(np.ceil(self.top_fraction * s.size)))
        return float(np.sort(s)[-k:].mean())
