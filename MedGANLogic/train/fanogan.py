"""f-AnoGAN training: a WGAN-GP of healthy slices, then an izi_f encoder (Schlegl et al., MedIA 2019).

One run, two stages on the shared loop (the step counter says which stage a step belongs to, so ``--resume``
works in either):

* Stage 1, steps ``[0, anomaly.gan_steps)``: WGAN-GP on healthy slices only. ``loss.critic_steps`` critic
  updates (5, as in f-AnoGAN) on real slices vs G(z), z uniform in [-1, 1] (a spatial code, see
  :mod:`MedGANLogic.models.fanogan`), gradient penalty lambda ``loss.gradient_penalty`` (10), then one
  generator update on -D(G(z)). Adam 1e-4, betas (0, 0.9).
* Stage 2, the remaining steps: G and D frozen (G in eval mode), the encoder E trained on healthy slices with
  the izi_f loss ``mean (x - G(E(x)))^2 + kappa * mean (f_D(x) - f_D(G(E(x))))^2`` (kappa ``anomaly.kappa``,
  1 in f-AnoGAN).

The non-GAN baseline (``anomaly.autoencoder: true``): the same encoder and generator trained together as a plain
autoencoder on ``mean (x - G(E(x)))^2`` for all steps (no critic, no stage 1), on the same data; it exports the
same ``fanogan2d`` network (its critic untrained and unused), so both run through the same anomaly map.

On export the encoder, generator and critic become one ``fanogan2d`` network (``forward = G(E(x))`` and the
f-AnoGAN case score). With ``data.calibration: {contrast: T2w}`` the card's map and case score are then
calibrated on phantom validation subjects of that contrast (:mod:`.anomaly_calibration`). Otherwise the card
gets ``extras.threshold``, the anomaly-map threshold chosen on validation data:
with lesion masks (phantom validation subjects with lesions) the value maximising the mean Dice of the
thresholded map; without them the ``anomaly.healthy_percentile`` (99.9) percentile of the maps of healthy
validation volumes inside the head (a false-positive-rate criterion).

Data: ``data.input`` (e.g. T2w) from healthy subjects (``data.healthy: true`` for the phantom; for your own
data, a folder of healthy volumes in ``data.source_dir``). The reconstruction target is the input itself.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from . import TRAINERS
from .loop import GANTrainer, set_requires_grad

log = logging.getLogger(__name__)


class AnomalyFamily:
    """What the anomaly families (f-AnoGAN, :mod:`.restore`) share, mixed into a :class:`~.loop.GANTrainer` subclass.

    Data: they reconstruct their (healthy) input, so the "target" of the paired slices is the input itself
    (``data.target`` defaults to ``data.input``, ``data.target_dir`` to ``data.source_dir``). Export: with
    ``data.calibration: {contrast: T2w}`` each exported card is calibrated on phantom validation subjects of that
    contrast (:mod:`.anomaly_calibration`); otherwise it gets ``extras.threshold`` chosen on validation data
    (:meth:`choose_threshold`).
    """

    config: dict[str, Any]
    device: torch.device

    def __init__(self, config: dict[str, Any], run_dir: str | Path | None = None, **kwargs: Any):
        config = copy.deepcopy(config)
        data = config.get("data", {})
        data.setdefault("target", data.get("input"))
        if data.get("source_dir") and not data.get("target_dir"):
            data["target_dir"] = data["source_dir"]
        super().__init__(config, run_dir, **kwargs)

    def finish_anomaly_export(self, cards: list[Any], state: dict[str, torch.Tensor],
                              dtype: torch.dtype) -> list[Any]:
        """The exported ``cards`` (weights ``state``) calibrated or given a threshold; returns the final cards."""
        from ..models import registry
        from ..models.registry import save_model

        out = []
        calibration = self.config["data"].get("calibration")
        for card in cards:
            extras = dict(card.data.get("extras", {}))
            extras.setdefault("smoothing_mm", float(self.config["anomaly"].get("smoothing_mm", 2.0)))
            if calibration:  # the calibrated map (tasks/anomaly.py) on phantom validation subjects of the contrast
                from .anomaly_calibration import calibrate_model

                registry.clear_cache()
                save_model(card.folder, dict(card.data, extras=extras), state, dtype=dtype)
                calibrate_model(card.folder, str(calibration["contrast"]), tuple(calibration.get("slices_mm", ())),
                                int(calibration.get("check_case", 0)), device=str(self.device))
                out.append(registry.get_model(card.folder))
                continue
            threshold, how = self.choose_threshold(card.folder, extras["smoothing_mm"])
            extras.update({"threshold": threshold, "threshold_selection": how})
            out.append(save_model(card.folder, dict(card.data, extras=extras), state, dtype=dtype))
        return out

    def validation_cases(self) -> tuple[list[np.ndarray], list[np.ndarray | None], float]:
        """(volumes, lesion masks or None, spacing in mm) for choosing the threshold."""
        from .data import load_volumes, phantom_subject_arrays, split_seeds

        data = self.config["data"]
        a = self.config["anomaly"]
        if data["source"] == "phantom":
            spacing = float(data.get("spacing_mm", 2.0))
            seeds = split_seeds("val", int(a.get("threshold_subjects", 3)))
            arrays = [phantom_subject_arrays(s, [data["input"], "lesion_mask"], spacing) for s in seeds]
            return [a_[data["input"]] for a_ in arrays], [a_["lesion_mask"].astype(bool) for a_ in arrays], spacing
        _, val = load_volumes(self.config, paired=True)
        vols = list(val.volumes["source"]) if val else []
        if not vols:
            raise InputError("Choosing the anomaly threshold needs validation volumes: add healthy volumes to "
                             "data.source_dir (data.val_fraction holds the last ones out).")
        return vols, [None] * len(vols), float(data.get("spacing_mm", 1.0))

    def choose_threshold(self, model_folder: str | Path, smoothing_mm: float) -> tuple[float, dict[str, Any]]:
        """The anomaly-map threshold of the exported model, from validation data (see the module docstring)."""
        from ..models import registry
        from ..pipeline import run
        from ..volume import Volume

        vols, masks, spacing = self.validation_cases()
        spec = self.config["export"][0]["card"]["input"]
        maps, heads = [], []
        for vol in vols:
            v = Volume(vol, spacing=(spacing,) * 3, metadata={k: spec[k] for k in ("modality", "contrast")
                                                              if spec.get(k)})
            result = run("anomaly", v, model=str(model_folder), device=str(self.device), smoothing_mm=smoothing_mm)
            maps.append(result.outputs["anomaly_map"].array)
            heads.append(maps[-1] > 0)
        registry.clear_cache()  # the folder is about to be rewritten with the threshold in its card
        if all(m is not None and m.any() for m in masks):
            threshold, dice = best_dice_threshold(maps, masks)  # type: ignore[arg-type]
            return threshold, {"criterion": "max mean Dice on validation subjects with lesions",
                               "validation_subjects": len(vols), "validation_dice": round(dice, 4)}
        pct = float(self.config["anomaly"].get("healthy_percentile", 99.9))
        values = np.concatenate([m[h] for m, h in zip(maps, heads)])
        if values.size == 0:
            raise InputError("The anomaly maps of the validation volumes are empty (no head found in them), so no "
                             "threshold can be chosen; check the validation data in data.source_dir.")
        return float(np.percentile(values, pct)), {"criterion": f"{pct} percentile of healthy validation maps",
                                                   "validation_volumes": len(vols)}


@TRAINERS.register("fanogan")
class FAnoGANTrainer(AnomalyFamily, GANTrainer):
    FAMILY = "fanogan"
    DEFAULTS: dict[str, Any] = {
        "generator": {"name": "fanogan_generator2d",
                      "params": {"latent_channels": 16, "features": 16, "levels": 4, "norm": "batch"}},
        "encoder": {"features": 16},
        "discriminator": {"channels": 16, "layers": 4, "norm": "none", "conditional": False},
        "data": {"healthy": True, "augment": {"flip": True, "shift": 4}},
        "loss": {"gan_mode": "wgan-gp", "gradient_penalty": 10.0, "critic_steps": 5, "adversarial": 1.0,
                 "pixel": 1.0, "pixel_kind": "mse"},
        "optim": {"lr_g": 1.0e-4, "lr_d": 1.0e-4, "lr_e": 1.0e-4, "betas": [0.0, 0.9], "decay_from": 1.0},
        "anomaly": {"gan_steps": 1000, "kappa": 1.0, "top_fraction": 0.1, "smoothing_mm": 2.0,
                    "threshold_subjects": 3, "healthy_percentile": 99.9},
    }
    PAIRED = True
    EXPORT_DOMAINS = {"fanogan": ("source", "target")}

    real: torch.Tensor
    fake: torch.Tensor

    # --- configuration ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        super().validate()
        a = self.config["anomaly"]
        if a.get("autoencoder"):
            return
        if self.loss_cfg["gan_mode"] != "wgan-gp":
            raise InputError("Training config: f-AnoGAN trains a Wasserstein GAN; set loss.gan_mode to wgan-gp.")
        if not (isinstance(a.get("gan_steps"), int) and 1 <= a["gan_steps"] < int(self.config["steps"])):
            raise InputError(f"Training config: 'anomaly.gan_steps' (stage 1, the WGAN-GP) must be an integer in "
                             f"[1, steps) so that stage 2 (the encoder) has steps left; got {a.get('gan_steps')!r} "
                             f"with steps = {self.config['steps']}.")
        if not (isinstance(a.get("kappa"), (int, float)) and a["kappa"] >= 0):
            raise InputError("Training config: 'anomaly.kappa' must be a number >= 0.")
        if not 0 < float(a.get("top_fraction", 0.1)) <= 1:
            raise InputError("Training config: 'anomaly.top_fraction' must be in (0, 1].")

    @property
    def autoencoder(self) -> bool:
        """True for the non-GAN baseline: E and G trained together on the image residual alone."""
        return bool(self.config["anomaly"].get("autoencoder", False))

    @property
    def gan_steps(self) -> int:
        return 0 if self.autoencoder else int(self.config["anomaly"]["gan_steps"])

    @property
    def stage(self) -> int:
        """1 while the WGAN-GP trains, 2 while the encoder trains (a function of the step alone)."""
        return 1 if self.step < self.gan_steps else 2

    def encoder_params(self) -> dict[str, Any]:
        g = self.config["generator"].get("params", {})
        e = dict(self.config.get("encoder", {}))
        e.update({"latent_channels": int(g.get("latent_channels", 16)), "levels": int(g.get("levels", 4)),
                  "in_channels": 1})
        return e

    def critic_params(self) -> dict[str, Any]:
        d = self.config["discriminator"]
        return {"in_channels": 1, "channels": int(d["channels"]), "layers": int(d["layers"])}

    # --- the four steps ------------------------------------------------------------------------------------------
    def build(self) -> None:
        from ..models.fanogan import FAnoGANEncoder, make_critic

        self.add_network("G", self.make_generator())
        self.add_network("D", make_critic(**self.critic_params()))
        self.add_network("E", FAnoGANEncoder(**self.encoder_params()))
        optim = self.config["optim"]
        self.add_optimizer("G", ["G"], optim["lr_g"])
        self.add_optimizer("D", ["D"], optim["lr_d"])
        self.add_optimizer("E", ["E", "G"] if self.autoencoder else ["E"], optim.get("lr_e", optim["lr_g"]))

    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        self.real = batch["source"]
        if self.stage == 2 and not self.autoencoder:  # G, D fixed from here on; G's batch norm: running statistics
            self.net("G").eval()
            set_requires_grad([self.net("G"), self.net("D")], False)

    def sample_latent(self, n: int, height: int, width: int) -> torch.Tensor:
        shape = self.net("G").latent_shape(height, width)
        return torch.rand((n, *shape), device=self.device) * 2 - 1

    def forward(self) -> None:
        if self.stage == 1:
            z = self.sample_latent(self.real.shape[0], *self.real.shape[-2:])
            self.fake = self.nets["G"](z)

    def optimize_discriminator(self) -> dict[str, float]:
        if self.stage == 2:
            return {}
        loss, logs = self.discriminator_loss("D", self.real, self.fake.detach())
        self.update("D", loss)
        return logs

    def optimize_generator(self) -> dict[str, float]:
        if self.stage == 1:
            adv, _ = self.generator_adversarial("D", self.fake)
            self.update("G", adv)
            return {"G": adv.item()}
        return self.optimize_encoder()

    def izi_f_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, image residual, feature residual) of the izi_f objective on a batch (means over all)."""
        recon = self.net("G")(self.nets["E"](x))
        image = F.mse_loss(recon, x)
        critic = self.net("D")
        with torch.no_grad():
            real_f = critic(x)[-2]
        feat = F.mse_loss(critic(recon)[-2], real_f)
        return image + float(self.config["anomaly"]["kappa"]) * feat, image, feat

    def optimize_encoder(self) -> dict[str, float]:
        if self.autoencoder:
            image = F.mse_loss(self.nets["G"](self.nets["E"](self.real)), self.real)
            self.update("E", image)
            return {"E": image.item(), "E_image": image.item()}
        total, image, feat = self.izi_f_loss(self.real)
        self.update("E", total)
        return {"E": total.item(), "E_image": image.item(), "E_feature": feat.item()}

    def sample_rows(self, batch: dict[str, torch.Tensor]) -> tuple[list[list[np.ndarray]], list[str]]:
        x = batch["source"]
        recon = self.net("G")(self.net("E")(x))
        fake = self.net("G")(self.sample_latent(x.shape[0], *x.shape[-2:]))
        rows = [[x[i, 0].cpu().numpy(), recon[i, 0].cpu().numpy(),
                 (x[i, 0] - recon[i, 0]).abs().cpu().numpy() * 2 - 1, fake[i, 0].cpu().numpy()]
                for i in range(x.shape[0])]
        return rows, ["healthy input", "G(E(x))", "|x - G(E(x))|", "G(z)"]

    # --- export: one network, and the threshold chosen on validation data ----------------------------------------
    def generator_config(self, name: str) -> dict[str, Any]:
        if name != "fanogan":
            return super().generator_config(name)
        a = self.config["anomaly"]
        g = dict(self.config["generator"].get("params", {}))
        return {"name": "fanogan2d", "params": {
            "generator": g, "encoder": self.encoder_params(), "critic": self.critic_params(),
            "kappa": float(a["kappa"]), "slice_axis": int(self.config["data"].get("slice_axis", 0)),
            "top_fraction": float(a.get("top_fraction", 0.1)), "background": -1.0}}

    def composite(self) -> torch.nn.Module:
        """The inference network (``fanogan2d``) holding copies of the trained E, G and D, in eval mode."""
        from ..models import build_network

        cfg = self.generator_config("fanogan")
        net = build_network(cfg["name"], cfg["params"])
        net.generator.load_state_dict(self.net("G").state_dict())
        net.encoder.load_state_dict(self.net("E").state_dict())
        net.critic.load_state_dict(self.net("D").state_dict())
        return net.eval().requires_grad_(False)

    def export(self, out_root: str | Path, *, dtype: torch.dtype = torch.float16,
               command: str | None = None) -> list[Any]:
        self.nets["fanogan"] = self.composite()
        try:
            cards = super().export(out_root, dtype=dtype, command=command)
        finally:
            del self.nets["fanogan"]
        return self.finish_anomaly_export(cards, self.composite().state_dict(), dtype)


def best_dice_threshold(maps: list[np.ndarray], masks: list[np.ndarray],
                        max_candidates: int = 200_000) -> tuple[float, float]:
    """The threshold t maximising the mean over cases of Dice(map > t, mask); returns (t, that mean Dice).

    Every distinct map value above the 80th percentile of the non-zero values is a candidate (thinned evenly to
    ``max_candidates``); Dice for all candidates comes from sorted counts, and t is placed half-way to the next
    candidate so that it sits inside the gap it was chosen for.
    """
    nonzero = np.concatenate([m[m > 0] for m in maps])
    if nonzero.size == 0:
        raise InputError("The validation anomaly maps are all zero: no threshold can be chosen.")
    values = np.unique(nonzero[nonzero >= np.quantile(nonzero, 0.8)])
    if values.size > max_candidates:
        values = values[np.linspace(0, values.size - 1, max_candidates).round().astype(int)]
    scores = np.zeros(values.size)
    for amap, mask in zip(maps, masks):
        everything, lesion = np.sort(amap.ravel()), np.sort(amap[mask])
        predicted = everything.size - np.searchsorted(everything, values, side="right")  # voxels above t
        hits = lesion.size - np.searchsorted(lesion, values, side="right")
        denom = predicted + lesion.size
        scores += np.where(denom > 0, 2.0 * hits / np.maximum(denom, 1), 1.0)
    scores /= len(maps)
    i = int(np.argmax(scores))
    threshold = 0.5 * (values[i] + values[i + 1]) if i + 1 < values.size else values[i]
    return float(threshold), float(scores[i])


__all__ = ["AnomalyFamily", "FAnoGANTrainer", "best_dice_threshold"]
