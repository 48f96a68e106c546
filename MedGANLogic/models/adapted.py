"""Networks fitted to one scan (:mod:`MedGANLogic.adapt`), wrapped with the intensity transform they were fitted in.

A per-scan network works in a unit range of a variance-stabilised domain: MR magnitudes as they are (the output
corrected for the Rician bias), PET counts through the generalised Anscombe transform, ultrasound envelopes
through a logarithm, CT in HU. :class:`ScanFittedNetwork` carries that transform and the scan's window, so it
maps raw intensities to raw intensities: a saved model folder runs through the ordinary engine with
``normalization: none`` on both sides, and the fit itself applies the same module, so both give the same voxels.

Transforms (``transform``; constants in ``constants``):
  * ``identity`` (CT, super-resolution): x.
  * ``rician`` (MR): forward x; inverse maps a mean magnitude m to the signal whose Rician mean is m (noise
    sigma ``sigma``); means below sigma sqrt(pi/2) (air) map to 0.
  * ``anscombe`` (PET): forward 2 sqrt(x / gain + 3/8); inverse: the closed-form unbiased inverse of Makitalo and
    Foi (IEEE TIP 2011) times ``gain``.
  * ``log`` (ultrasound): forward log(x + eps); inverse (exp(y) - eps) x ``out_gain`` (the gain that restores
    the mean envelope the log domain biases).

An inner network with two output channels is a blind-spot denoiser that predicts, for each pixel, the mean and
the log-variance of its value from the pixels around it (:class:`~MedGANLogic.models.blindspot.BlindSpotUNet`).
The pixel's own noisy value is then weighed in, as in Laine et al. (NeurIPS 2019): with noise variance s2
(``constants["noise_var"]``, unit range) and predicted variance v = s2 + prior variance p, the estimate is the
posterior mean (s2 x mean + p x pixel) / (s2 + p), so the pixel itself counts wherever its surroundings cannot
predict it (edges, fine detail) and the surroundings count where they can.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import build_network, register_architecture
from .ensemble import dihedral_mean, ensemble_count

TRANSFORMS = ("identity", "rician", "anscombe", "log")
_SQRT_3_2 = math.sqrt(1.5)


def rician_mean_ratio(nu: torch.Tensor) -> torch.Tensor:
    """E[magnitude] / sigma of a Rician variable whose signal is ``nu`` sigma (exponentially scaled Bessels)."""
    x = nu ** 2 / 4.0
    return math.sqrt(math.pi / 2.0) * ((1.0 + 2.0 * x) * torch.special.i0e(x) + 2.0 * x * torch.special.i1e(x))


def forward_transform(x: torch.Tensor, transform: str, c: dict[str, float]) -> torch.Tensor:
    """Raw intensities -> the domain where the noise is additive and even (see the module docstring)."""
    if transform == "anscombe":
        return 2.0 * torch.sqrt(x.clamp_min(0) / c["gain"] + 0.375)
    if transform == "log":
        return torch.log(x.clamp_min(0) + c["eps"])
    return x


def inverse_transform(y: torch.Tensor, transform: str, c: dict[str, float], table: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """The inverse of :func:`forward_transform` for an estimate of the transformed signal's mean."""
    if transform == "anscombe":
        # the transform of zero counts, 2 sqrt(3/8), is the inverse's zero; below it the closed form's 1 / y^3
        # terms turn back up (y = 0.3 would give 14 counts), so estimates below it are zero counts
        y = y.clamp_min(2.0 * math.sqrt(0.375))
        counts = 0.25 * y ** 2 + 0.25 * _SQRT_3_2 / y - 1.375 / y ** 2 + 0.625 * _SQRT_3_2 / y ** 3 - 0.125
        return counts.clamp_min(0) * c["gain"]
    if transform == "log":
        return (torch.exp(y) - c["eps"]).clamp_min(0) * c.get("out_gain", 1.0)
    if transform == "rician" and c.get("sigma", 0) > 0:
        nu, mean = table if table is not None else _rician_table(y.device)
        ratio = y / c["sigma"]
        i = torch.searchsorted(mean, ratio.clamp(mean[0], mean[-1]).contiguous()).clamp(1, len(mean) - 1)
        w = (ratio.clamp(mean[0], mean[-1]) - mean[i - 1]) / (mean[i] - mean[i - 1])
        inside = (nu[i - 1] + w * (nu[i] - nu[i - 1])) * c["sigma"]
        beyond = torch.sqrt((y ** 2 - c["sigma"] ** 2).clamp_min(0))  # above the table: bias sigma^2 / (2 m)
        return torch.where(ratio > mean[-1], beyond, inside)
    return y


def posterior_mean(pixel: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor, noise_var: float) -> torch.Tensor:
    """Gaussian posterior mean of a pixel's clean value from its noisy value and a prediction from its surroundings
    (``mean``, total variance exp(``log_var``) = noise variance + prior variance)."""
    total = torch.exp(log_var.clamp(-30.0, 10.0))
    prior = (total - noise_var).clamp_min(0.0)
    return (noise_var * mean + prior * pixel) / (noise_var + prior).clamp_min(1e-12)


def _rician_table(device: torch.device | str | None = None) -> torch.Tensor:
    """(2, n): signal / sigma and the Rician mean / sigma, for inverting the mean (made where ``device`` says, or
    on the current default device: the registry lays networks out on the meta device)."""
    nu = torch.linspace(0.0, 60.0, 6001, dtype=torch.float64, device=device)
    return torch.stack([nu, rician_mean_ratio(nu)]).float()


@register_architecture("scan_fitted2d")
class ScanFittedNetwork(nn.Module):
    """A 2D network fitted to one scan, between its intensity transform and the transform's inverse.

    Shapes: those of ``inner`` (``(N, 1, H, W)`` -> ``(N, 1, H', W')``), in the scan's own intensities.

    Args:
        inner: ``{"name": architecture, "params": {...}}`` of the network that works in the unit range.
        transform: one of :data:`TRANSFORMS`.
        window: ``[low, high]`` of the transformed intensities that map onto [-1, 1] (not clipped).
        constants: the transform's constants (``sigma``, ``gain``, ``eps``, ``out_gain``).
        transpose: swap H and W around ``inner`` (a super-resolution network fitted with its low-resolution axis
            along H, saved for slices whose low-resolution axis is W).
        self_ensemble: average ``inner`` over flips and transpositions of its input (the geometric self-ensemble of
            Lim et al., EDSR 2017; :func:`~MedGANLogic.models.ensemble.dihedral_mean`): a count of variants (1, 2,
            4 or 8; ``True`` means 8, ``False`` 1), that many times the work for a smoother, less
            orientation-bound estimate. For denoisers (same-size output) only.

    Example:
        >>> net = ScanFittedNetwork({"name": "conv2d", "params": {"features": 4, "depth": 2}}, "log", [0.0, 5.0],
        ...                         {"eps": 1.0})
        >>> net(torch.ones(1, 1, 8, 8)).shape
        torch.Size([1, 1, 8, 8])
    """

    def __init__(self, inner: dict[str, Any], transform: str = "identity", window: tuple[float, float] = (-1.0, 1.0),
                 constants: dict[str, float] | None = None, transpose: bool = False, self_ensemble: bool | int = False):
        super().__init__()
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}; got {transform!r}")
        low, high = (float(w) for w in window)
        if not high > low:
            raise ValueError(f"window must be [low, high] with low < high; got {window}")
        self.inner = build_network(inner["name"], dict(inner.get("params", {})))
        self.transform, self.low, self.high = transform, low, high
        self.constants = {k: float(v) for k, v in (constants or {}).items()}
        self.inner_multiple = int(getattr(self.inner, "size_multiple", 1))
        self.size_multiple = 1  # pads itself, with the edge values, rather than with the engine's constant
        self.posterior = int(getattr(self.inner, "out_channels", 1)) == 2  # (mean, log-variance): weigh the pixel in
        self.out_channels = 1
        self.transpose = bool(transpose)
        self.self_ensemble = ensemble_count(self_ensemble)
        self.register_buffer("table", _rician_table() if transform == "rician" else torch.zeros(2, 1),
                             persistent=False)

    def to_unit(self, transformed: torch.Tensor) -> torch.Tensor:
        return (transformed - self.low) * (2.0 / (self.high - self.low)) - 1.0

    def from_unit(self, unit: torch.Tensor) -> torch.Tensor:
        return (unit + 1.0) * ((self.high - self.low) / 2.0) + self.low

    def ensemble(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of ``inner`` over the first ``self_ensemble`` flips and transpositions of ``x`` (each undone on
        its output)."""
        return dihedral_mean(self.inner, x, self.self_ensemble)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unit = self.to_unit(forward_transform(x, self.transform, self.constants))
        if self.transpose:
            unit = unit.transpose(-1, -2)
        h, w = unit.shape[-2:]
        m = self.inner_multiple
        padded = F.pad(unit, (0, (-w) % m, 0, (-h) % m), mode="replicate") if (h % m or w % m) else unit
        y = self.ensemble(padded)  # one pass when self_ensemble is 1
        zoom = (y.shape[-2] // padded.shape[-2], y.shape[-1] // padded.shape[-1])
        y = y[..., : h * zoom[0], : w * zoom[1]]
        if self.posterior:
            y = posterior_mean(unit, y[:, :1], y[:, 1:2], self.constants.get("noise_var", 0.0))
        y = self.from_unit(y.transpose(-1, -2) if self.transpose else y)
        return inverse_transform(y, self.transform, self.constants, self.table if self.transform == "rician" else None)
