"""Anomaly detection by restoration: a U-Net that puts healthy anatomy back, trained against a PatchGAN.

After Kascenas et al. (MIDL 2022, "Denoising autoencoders for unsupervised anomaly detection in brain MRI") with a
GAN refinement: the generator G (a pix2pix U-Net) sees a *healthy* slice x corrupted by coarse noise,
up(n) * head with n ~ N(0, sigma^2) on a grid ``scale`` times coarser than the image (sigma and scale drawn per
sample from ``anomaly.noise_sigma`` and ``anomaly.noise_scales``; ``head``: the non-background pixels), and then by
random blobs (:func:`random_blobs`, ``anomaly.blob_count`` per slice, semi-axes in ``anomaly.blob_radius_px``):
coarse noise alone teaches G to remove smooth changes only, and it copies a sharp-edged lesion as anatomy. G learns
to return x from that corrupted x~:

    loss_G = w_pixel * |G(x~) - x|  +  w_blob * mean_blobs |G(x~) - x|  +  w_adv * adv(D(G(x~)), real)
    loss_D = adv(D(x), real) + adv(D(G(x~)), fake)

(``w_blob`` = ``anomaly.blob_weight``: the blobs are a small part of a slice and would barely count otherwise.)
``anomaly.twins: true`` (default false) trains on pairs instead: the corrupted input is made from each sample's
slice *with* simulated lesions (``data.task: anomaly`` of the domain randomiser with ``n_lesions`` above 0) and the
target is its healthy twin (same appearance and noise), so G learns to remove those lesions too; where the twins
differ (:data:`TWIN_DIFFERENCE`) counts as blob. The
defaults are the shipped brain-anomaly-t2 settings, chosen on phantom validation subjects. ``anomaly.bright_weight``
(default 0: off) adds ``w_bright * mean_bright |G(x~) - x|`` over the slice's brightest healthy pixels outside the
blobs (at or above the ``anomaly.bright_percentile`` of its head): small bright normal structures (enhancing vessels,
choroid plexus) that G would otherwise erase like a bright blob, at little cost in the slice-wide L1.

**2.5D** (a card with ``dims: 2.5d`` and ``context_slices`` k; the generator's ``in_channels`` 2k + 1): G sees the
slice with k neighbours on each side and restores the middle one, so a dark region that runs on through the slices
above and below as sulcal CSF does can be told from one that does not. The data carry ``data.context_slices`` thin
slices on each side (at least :func:`slab_depth`); per sample a thickness f from ``anomaly.slab_factors`` (default
[1]) makes each channel the mean of f thin slices, f apart (:func:`thick_slabs`: on 2 mm data [1, 2, 3] gives the 2-6
mm slices of clinical scans, which the engine feeds at their own spacing), and the target is the clean middle
channel. The corruptions run through the slab: the coarse noise is the same in every channel and each blob is an
ellipsoid cut by every channel (:func:`random_blobs`). A one-channel config trains exactly as before.

D is an unconditional PatchGAN on healthy slices (as the f-AnoGAN critic, it knows what healthy anatomy looks like,
and the adversarial term keeps G's restorations sharp where a pixel loss alone would blur them). The coarse noise
stands in for "something that is not healthy tissue": blob-like brightening or darkening of a few millimetres to a
few centimetres. At test time G(x) keeps what looks like healthy anatomy (CSF, edges, cortex: reproduced through
the skip connections) and pulls what does not (a lesion) back towards healthy tissue, so x - G(x) is the anomaly
map (:mod:`MedGANLogic.tasks.anomaly`: brain mask, intensity matching, calibrated z-score). Unlike f-AnoGAN's
latent bottleneck, nothing forces G to redraw normal detail from a code, which is what made f-AnoGAN's residuals
as large in normal CSF as in lesions.

``loss.adversarial: 0`` is the non-GAN baseline (the denoising autoencoder itself): no D is built.

Export: G becomes an ``anomaly`` model (``forward = G(x)``, the healthy restoration); with
``data.calibration: {contrast: T2w}`` the card's map, threshold and case score are calibrated on phantom
validation subjects of that contrast (:mod:`.anomaly_calibration`), as for f-AnoGAN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from . import TRAINERS
from .data import card_context, data_context
from .fanogan import AnomalyFamily
from .losses import pixel_loss
from .pix2pix import Pix2PixTrainer

HEAD_MARGIN = 0.05  # a pixel more than this above the background level is head
RING_RIM_PX = (1.0, 3.0)  # a ring blob's rim: thickness in pixels,
RING_RIM_LEVEL = (0.4, 1.0)  # its level (bright: enhancement)
RING_CORE_LEVEL = (-0.9, 0.0)  # and the level inside it (dark: necrosis, cyst)
TWIN_DIFFERENCE = 0.02  # anomaly.twins: where a lesioned slice and its healthy twin differ by more, a lesion
BLOB_Z_OFFSET = 0.7  # 2.5D: a blob's widest section lies up to this share of its extent off the middle slice


def head_pixels(clean: torch.Tensor, background: float = -1.0) -> torch.Tensor:
    """Bool, ``clean``'s shape: its pixels above the background level (the head)."""
    return clean > background + HEAD_MARGIN


def masked_l1(fake: torch.Tensor, real: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of |fake - real| over ``weight`` (0..1 per pixel); 0 where the weight is empty."""
    return ((fake - real).abs() * weight).sum() / weight.sum().clamp(min=1.0)


def coarse_noise(clean: torch.Tensor, sigma: tuple[float, float], scales: list[int],
                 background: float = -1.0) -> torch.Tensor:
    """``clean`` (N, 1, H, W) plus smooth Gaussian noise inside the head (see the module docstring).

    Per sample: sigma uniform in ``sigma``, the noise grid ``H / s`` x ``W / s`` for ``s`` drawn from ``scales``,
    bilinearly up-sampled; zero where ``clean`` is background. Draws come from torch's global RNG (seeded per step
    by the loop).
    """
    n, _, h, w = clean.shape
    head = head_pixels(clean, background).to(clean.dtype)
    out = torch.empty_like(clean)
    sig = torch.empty(n).uniform_(*sigma)
    picks = torch.randint(len(scales), (n,))
    for i in range(n):
        s = int(scales[int(picks[i])])
        grid = torch.randn(1, 1, max(1, -(-h // s)), max(1, -(-w // s)), dtype=clean.dtype) * sig[i]
        noise = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False).to(clean.device)
        out[i] = clean[i] + noise[0] * head[i]
    return out


def random_blobs(clean: torch.Tensor, count: tuple[int, int], radius_px: tuple[float, float],
                 background: float = -1.0, ring_fraction: float = 0.0,
                 step_px: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``clean`` (N, C, H, W) with random blobs painted into the head: (corrupted, blob mask (N, 1, H, W)).

    Per sample, ``count`` (inclusive range) blobs, each an ellipse (semi-axes log-uniform in ``radius_px``, random
    angle) whose outline is pushed in and out by smooth noise (up to +-40 %), with a soft edge (0-1.5 px), centred
    on a random head pixel and cut to the head. Inside, the image is blended (opacity 0.3-1) towards a random level
    in [-0.9, 1] with a little texture: bright, dark, faint or solid, nothing specific to one kind of lesion.
    With probability ``ring_fraction`` a blob is a ring instead: its outer 1-3 px (:data:`RING_RIM_PX`) blended
    towards a bright level (:data:`RING_RIM_LEVEL`) and the rest towards a dark one (:data:`RING_CORE_LEVEL`), the
    look of a contrast-enhancing rim around a necrotic or cystic core on post-contrast T1w, which a dark core alone
    (CSF-like) does not have. ``ring_fraction`` 0 draws exactly what it drew before the option existed.
    A 2.5D slab (C = 2k + 1 channels: the slice in the middle, neighbours ``step_px[i]`` pixels apart on each side)
    gets each blob as an ellipsoid cut by every channel: its extent across the slices (semi-axis log-uniform in
    ``radius_px``) and the offset of its widest section from the middle slice (up to :data:`BLOB_Z_OFFSET` of that
    extent) are drawn, and the middle slice's section is the ellipse above. Centre and mask come from the middle
    channel. One channel draws exactly what it drew before 2.5D existed. Draws come from torch's global RNG.
    """
    n, c, h, w = clean.shape
    mid = c // 2
    if c > 1 and step_px is None:
        raise ValueError("random_blobs: a slab of several channels needs step_px, the distance between them")
    out, masks = clean.clone(), torch.zeros(n, 1, h, w, dtype=clean.dtype, device=clean.device)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=clean.dtype), torch.arange(w, dtype=clean.dtype), indexing="ij")
    for i in range(n):
        head = head_pixels(clean[i, mid], background).cpu()  # the blob is drawn on the CPU (global RNG), then moved
        where = head.flatten().nonzero()[:, 0]
        k = int(torch.randint(count[0], count[1] + 1, ()))
        if where.numel() == 0 or k == 0:
            continue
        for _ in range(k):
            centre = int(where[int(torch.randint(where.numel(), ()))])
            cy, cx = float(centre // w), float(centre % w)
            a, b = torch.exp(torch.empty(2).uniform_(*np.log(radius_px))).tolist()
            t = float(torch.rand(()) * np.pi)
            u = ((xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)) / a
            v = (-(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)) / b
            wobble = F.interpolate(torch.randn(1, 1, 4, 4), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            d = torch.sqrt(u ** 2 + v ** 2) * (1 + 0.4 * torch.tanh(wobble))
            soft = float(torch.rand(())) * 1.5 / max(a, b) + 1e-3
            level = float(torch.empty(()).uniform_(-0.9, 1.0))
            alpha = float(torch.empty(()).uniform_(0.3, 1.0))
            texture = torch.randn(h, w) * float(torch.rand(())) * 0.1
            ring = None
            if ring_fraction > 0 and float(torch.rand(())) < ring_fraction:
                rim = float(torch.empty(()).uniform_(*RING_RIM_PX)) / min(a, b)  # the rim's share of the radius
                ring = (rim, float(torch.empty(()).uniform_(*RING_RIM_LEVEL)),
                        float(torch.empty(()).uniform_(*RING_CORE_LEVEL)))
            sections = {mid: d}
            if c > 1:  # an ellipsoid: (z - dz)^2 / za^2 + d^2 = 1 + dz^2 / za^2 makes the middle section d
                za = float(torch.exp(torch.empty(()).uniform_(*np.log(radius_px))))
                dz = float(torch.empty(()).uniform_(-BLOB_Z_OFFSET, BLOB_Z_OFFSET)) * za
                for ch in range(c):
                    z = (ch - mid) * float(step_px[i])
                    sections[ch] = torch.sqrt((d ** 2 + ((z - dz) ** 2 - dz ** 2) / za ** 2).clamp(min=0.0))
            for ch, dc in sections.items():
                inside = head if ch == mid else head_pixels(clean[i, ch], background).cpu()
                m = torch.sigmoid((1 - dc) / soft) * inside
                fill = level + texture
                if ring is not None:
                    core = torch.sigmoid((1 - ring[0] - dc) / soft)  # 1 inside the rim
                    fill = core * ring[2] + (1 - core) * ring[1] + texture
                fill = fill.to(clean.device)
                mm = (alpha * m).to(clean.device)
                out[i, ch] = out[i, ch] * (1 - mm) + fill * mm
                if ch == mid:
                    masks[i, 0] = torch.maximum(masks[i, 0], m.to(clean.device))
    return out, masks


def thick_slabs(slab: torch.Tensor, factors: list[int], context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """2.5D training slabs of random thickness: ``slab`` (N, D, H, W), D thin slices centred on the middle one,
    -> ((N, 2 ``context`` + 1, H, W), the distance between the channels in thin slices (N,)).

    Per sample a factor f from ``factors``: channel j (-``context`` .. ``context``) is the mean of the f thin
    slices from j f - (f - 1) // 2 to j f + f // 2 around the middle, so f = 3 on 2 mm data gives 6 mm slices,
    6 mm apart, as a thick-slice scan has (partial volume through the slice included). Draws from torch's global RNG.
    """
    n, depth = slab.shape[:2]
    half = depth // 2
    picks = torch.randint(len(factors), (n,))
    steps = torch.tensor([float(factors[int(p)]) for p in picks])
    out = []
    for i in range(n):
        f = int(steps[i])
        starts = [half + j * f - (f - 1) // 2 for j in range(-context, context + 1)]
        if starts[0] < 0 or starts[-1] + f > depth:
            raise ValueError(f"thick_slabs: {depth} slices cannot give {2 * context + 1} slabs {f} slices thick")
        out.append(torch.stack([slab[i, s:s + f].mean(dim=0) for s in starts]))
    return torch.stack(out), steps


def slab_depth(factors: list[int], context: int) -> int:
    """Thin slices on each side of the middle that :func:`thick_slabs` needs for ``factors`` and ``context``."""
    return max(context * f + f // 2 for f in factors)


def bright_pixels(clean: torch.Tensor, percentile: float, background: float = -1.0) -> torch.Tensor:
    """1 where a slice of ``clean`` (N, 1, H, W) is at or above the ``percentile`` of its head (non-background)
    pixels, else 0; all 0 for a slice without head."""
    out = torch.zeros_like(clean)
    for i in range(clean.shape[0]):
        head = head_pixels(clean[i, 0], background)
        if head.any():
            level = torch.quantile(clean[i, 0][head].float(), percentile / 100.0)
            out[i, 0] = ((clean[i, 0] >= level) & head).to(clean.dtype)
    return out


@TRAINERS.register("restore")
class RestorationTrainer(AnomalyFamily, Pix2PixTrainer):
    FAMILY = "restore"
    SLABS_FROM_DATA = True
    DEFAULTS: dict[str, Any] = {
        "generator": {"name": "unet2d", "params": {"features": 32, "depth": 4, "norm": "instance",
                                                   "upsample": "bilinear", "final_activation": "none"}},
        "discriminator": {"conditional": False, "channels": 16, "layers": 3},
        "data": {"healthy": True, "augment": {"flip": True, "shift": 4}},
        "loss": {"gan_mode": "lsgan", "adversarial": 0.05, "pixel": 1.0, "pixel_kind": "l1",
                 "feature_matching": 0.0},
        "anomaly": {"noise_sigma": [0.0, 0.1], "noise_scales": [4, 8], "blob_count": [1, 4],
                    "blob_radius_px": [1.5, 12.0], "blob_weight": 3.0, "ring_fraction": 0.0, "twins": False,
                    "slab_factors": [1], "bright_weight": 0.0,
                    "bright_percentile": 99.0, "smoothing_mm": 2.0, "threshold_subjects": 3,
                    "healthy_percentile": 99.9},
    }

    def validate(self) -> None:
        super().validate()
        a = self.config["anomaly"]
        sigma = a.get("noise_sigma")
        if not (isinstance(sigma, (list, tuple)) and len(sigma) == 2 and 0 <= float(sigma[0]) <= float(sigma[1])):
            raise InputError(f"Training config: 'anomaly.noise_sigma' must be [low, high] with 0 <= low <= high; "
                             f"got {sigma!r}.")
        scales = a.get("noise_scales")
        if not (isinstance(scales, (list, tuple)) and scales and all(isinstance(s, int) and s >= 1 for s in scales)):
            raise InputError(f"Training config: 'anomaly.noise_scales' must be a list of integers >= 1 (how many "
                             f"times coarser than the image the noise grid is); got {scales!r}.")
        ring = a.get("ring_fraction")
        if not (isinstance(ring, (int, float)) and 0 <= ring <= 1):
            raise InputError(f"Training config: 'anomaly.ring_fraction' must be a number in [0, 1] (the share of "
                             f"blobs drawn as a bright rim around a dark core; 0: none); got {ring!r}.")
        if not isinstance(a.get("twins"), bool):
            raise InputError(f"Training config: 'anomaly.twins' must be true or false (true: learn to restore each "
                             f"sample's healthy twin from it, data.task anomaly with lesions); got {a.get('twins')!r}.")
        factors = a.get("slab_factors")
        if not (isinstance(factors, (list, tuple)) and factors
                and all(isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in factors)):
            raise InputError(f"Training config: 'anomaly.slab_factors' must be a list of integers >= 1 (2.5D: how "
                             f"many thin slices each channel averages; [1]: the data's own slices); got {factors!r}.")
        context = self.context_slices
        in_channels = int(self.config["generator"].get("params", {}).get("in_channels", 1))
        if in_channels != 2 * context + 1:
            raise InputError(f"Training config: the generator's in_channels ({in_channels}) must be 2 * the card's "
                             f"context_slices + 1 ({2 * context + 1}): the slice and its neighbours.")
        if context and a["twins"]:
            raise InputError("Training config: 'anomaly.twins' restores 2D slices only; leave it out of a 2.5d card "
                             "(context_slices > 0).")
        carried = data_context(self.config)
        if (context or max(factors) > 1) and carried < slab_depth(list(factors), context):
            raise InputError(f"Training config: slabs of {max(factors)} slices with {context} neighbours on each "
                             f"side need data.context_slices >= {slab_depth(list(factors), context)} (thin slices "
                             f"on each side of the middle one); got {carried}.")
        bright = a.get("bright_weight")
        if not (isinstance(bright, (int, float)) and bright >= 0):
            raise InputError(f"Training config: 'anomaly.bright_weight' must be a number >= 0 (0: off); "
                             f"got {bright!r}.")
        percentile = a.get("bright_percentile")
        if not (isinstance(percentile, (int, float)) and 0 <= percentile <= 100):
            raise InputError(f"Training config: 'anomaly.bright_percentile' must be a number in [0, 100] (of each "
                             f"slice's head); got {percentile!r}.")
        self.check_loss_weights("adversarial", "pixel")

    @property
    def adversarial_on(self) -> bool:
        return float(self.loss_cfg["adversarial"]) > 0

    def build(self) -> None:
        self.add_gan(self.make_generator(), 1 if self.adversarial_on else None)

    @property
    def context_slices(self) -> int:
        """Neighbours on each side that the exported model sees (2.5d cards), 0 for 2d."""
        return card_context(self.config["export"][0]["card"]) if self.config.get("export") else 0

    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        a = self.config["anomaly"]
        clean, steps, context = batch["source"], None, self.context_slices
        if clean.shape[1] > 1:  # 2.5D: slabs of random thickness, the target their clean middle; the channels' distance
            clean, steps = thick_slabs(clean, list(a["slab_factors"]), context)  # in thin slices = pixels (isotropic)
        self.real_B = batch["target"] if a["twins"] else clean[:, context:context + 1]
        noisy = coarse_noise(clean, tuple(a["noise_sigma"]), list(a["noise_scales"]))
        self.real_A, self.blobs = random_blobs(noisy, tuple(a["blob_count"]), tuple(a["blob_radius_px"]),
                                               ring_fraction=float(a["ring_fraction"]), step_px=steps)
        if a["twins"]:  # the simulated lesions (where the twins differ) weigh like the blobs
            lesions = ((batch["source"] - batch["target"]).abs() > TWIN_DIFFERENCE).to(self.blobs.dtype)
            self.blobs = torch.maximum(self.blobs, lesions)

    def optimize_discriminator(self) -> dict[str, float]:
        if not self.adversarial_on:
            return {}
        return super().optimize_discriminator()

    def optimize_generator(self) -> dict[str, float]:
        w = self.loss_cfg
        terms = {"G_pixel": (w["pixel"], pixel_loss(w["pixel_kind"], self.fake_B, self.real_B))}
        blob_weight = float(self.config["anomaly"]["blob_weight"])
        if blob_weight > 0:  # the blobs are a small part of a slice: their restoration weighs more
            terms["G_blob"] = (blob_weight, masked_l1(self.fake_B, self.real_B, self.blobs))
        bright_weight = float(self.config["anomaly"]["bright_weight"])
        if bright_weight > 0:  # the brightest healthy pixels are few: erasing them must cost what a blob left costs
            keep = bright_pixels(self.real_B, float(self.config["anomaly"]["bright_percentile"]))
            terms["G_bright"] = (bright_weight, masked_l1(self.fake_B, self.real_B, keep * (1.0 - self.blobs)))
        if self.adversarial_on:
            adv, _ = self.generator_adversarial("D", self.fake_B)
            terms["G_adv"] = (w["adversarial"], adv)
        return self.weighted_update("G", terms)

    def sample_rows(self, batch: dict[str, torch.Tensor]) -> tuple[list[list[np.ndarray]], list[str]]:
        self.set_input(batch)
        out = self.net("G")(self.real_A)
        mid = self.real_A[:, self.context_slices]
        rows = [[mid[i].cpu().numpy(), out[i, 0].cpu().numpy(), self.real_B[i, 0].cpu().numpy(),
                 (mid[i] - out[i, 0]).abs().cpu().numpy() * 2 - 1] for i in range(out.shape[0])]
        return rows, ["corrupted healthy", "G(x~)", "healthy", "|x~ - G(x~)|"]

    def export(self, out_root: str | Path, *, dtype: torch.dtype = torch.float16,
               command: str | None = None) -> list[Any]:
        cards = super().export(out_root, dtype=dtype, command=command)
        return self.finish_anomaly_export(cards, self.net("G").state_dict(), dtype)


__all__ = ["RestorationTrainer", "coarse_noise", "random_blobs", "thick_slabs"]
