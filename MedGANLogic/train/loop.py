"""The shared training loop every MedGAN GAN family uses.

A family subclasses :class:`GANTrainer` and writes four short methods, as in pytorch-CycleGAN-and-pix2pix:

    build()                    create networks (add_network) and optimisers (add_optimizer)
    set_input(batch)           take a batch dict of tensors
    forward()                  run the generator(s)
    optimize_discriminator()   one update of the discriminator(s); returns the losses to log
    optimize_generator()       one update of the generator(s); returns the losses to log

and optionally ``sample_rows()`` (what the sample grid shows), ``extra_state()``/``load_extra_state()`` (state
beyond networks and optimisers, e.g. image pools) and ``EXPORT_DOMAINS`` (which generator becomes which model).
Building blocks for those methods: ``add_gan`` (G and a PatchGAN D with their optimisers), ``discriminator_loss``,
``generator_adversarial`` (runs the frozen D), ``perceptual_terms`` (feature matching, VGG) and ``weighted_update``
(one optimiser step on named, weighted loss terms, which are also what gets logged).

The loop does the rest, identically for every family: seeds, alternating updates (``loss.critic_steps``
discriminator updates, each on its own batch, then one generator update), a learning rate constant for the
first ``optim.decay_from`` of the steps and then decaying linearly to zero, a progress bar, a CSV loss log,
sample grids, checkpoints (safetensors, with optimiser state) every ``log.checkpoint_every`` steps and on
Ctrl-C, bit-exact ``--resume``, DistributedDataParallel under torchrun, and export to model folders.

Determinism: before each step the global torch RNG is seeded from (seed, step, rank), and batches are a
function of (seed, step, rank) (see :mod:`MedGANLogic.train.data`). A run resumed from a checkpoint therefore
continues exactly as the uninterrupted run would have (single process, same device and thread count).
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from ..errors import InputError, MedGANError
from ..models import build_network
from . import distributed as ddp
from .checkpoint import checkpoint_step, read_checkpoint, restore, save_checkpoint
from .config import dump_config
from .data import SliceBatches, VolumeSet, build_batches
from .losses import AdversarialLoss, VGGPerceptualLoss, feature_matching_loss, gradient_penalty, interpolates
from .monitor import LossLog, TrainProgress, save_grid

log = logging.getLogger(__name__)

_D_NORMS = {"instance": "INSTANCE", "batch": "BATCH", "none": None}


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The torch seed of one training step: distinct per step and rank, independent of the run's history."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] % (2 ** 63))


def set_requires_grad(nets: nn.Module | Iterable[nn.Module], flag: bool) -> None:
    for net in [nets] if isinstance(nets, nn.Module) else nets:
        for p in net.parameters():
            p.requires_grad_(flag)


@contextmanager
def frozen(nets: nn.Module | Iterable[nn.Module]) -> Iterator[None]:
    """No gradients for ``nets``' parameters inside the block (a discriminator while its generator learns)."""
    set_requires_grad(nets, False)
    try:
        yield
    finally:
        set_requires_grad(nets, True)


class GANTrainer:
    """Base class of the GAN families (see the module docstring for what a family implements).

    Args:
        config: a full config (:func:`MedGANLogic.train.config.load_config`); copied, and ``auto`` windows
            in its export cards are resolved from the training data.
        run_dir: where checkpoints, ``losses.csv``, ``samples/`` and ``config.yaml`` go (None: nothing written).
        ctx: the distributed context (default: from the environment, see :mod:`.distributed`).
        data: prepared batches (default: built from ``config["data"]``).
        volumes: (train, val) raw volumes to use instead of loading them from the data source.
        progress: show the progress bar (rank 0 only).
        initialise: load the weights ``config["init"]`` names (False: a checkpoint will replace them; only the
            record of what the run started from is kept).
    """

    FAMILY: ClassVar[str] = "base"
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    PAIRED: ClassVar[bool] = True
    ROLES: ClassVar[tuple[str, str]] = ("source", "target")
    EXPORT_DOMAINS: ClassVar[dict[str, tuple[str, str]]] = {"G": ("source", "target")}
    SLABS_FROM_DATA: ClassVar[bool] = False  # makes its own 2.5D slabs from data.context_slices thin slices

    def __init__(self, config: dict[str, Any], run_dir: str | Path | None = None, *,
                 ctx: ddp.DistContext | None = None, data: SliceBatches | None = None,
                 volumes: tuple[VolumeSet, VolumeSet | None] | None = None, progress: bool = True,
                 stream: Any = None, initialise: bool = True):
        self.config = copy.deepcopy(config)
        if self.config.get("family") != self.FAMILY:
            raise InputError(f"Config family {self.config.get('family')!r} given to the {self.FAMILY} trainer.")
        self.ctx = ctx or ddp.init_distributed(self.config.get("device", "auto"))
        self.device = self.ctx.device
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.show_progress, self.stream = progress, stream
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._base_lr: dict[str, float] = {}
        self.step = 0
        self.train_seconds = 0.0
        self._stop = False
        self.loss_cfg = self.config["loss"]
        self.validate()
        torch.manual_seed(int(self.config["seed"]))  # the networks' initial weights
        self.build()
        self.init_record: dict[str, dict[str, str]] = {}
        if self.config.get("init"):
            self.init_record = self.load_init(initialise)
        self.adversarial = AdversarialLoss(self.loss_cfg["gan_mode"])
        self.vgg = None
        if self.loss_cfg["vgg"] > 0:
            self.vgg = VGGPerceptualLoss(self.loss_cfg["vgg_weights"], int(self.loss_cfg["vgg_layer"]),
                                         kind=self.loss_cfg.get("pixel_kind", "l1")).to(self.device)
        self.data = data or build_batches(self.config, paired=self.PAIRED, size_multiple=self.size_multiple,
                                          domains=self.EXPORT_DOMAINS, roles=self.ROLES, volumes=volumes)

    # --- what a family implements ------------------------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def set_input(self, batch: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def forward(self) -> None:
        raise NotImplementedError

    def optimize_discriminator(self) -> dict[str, float]:
        raise NotImplementedError

    def optimize_generator(self) -> dict[str, float]:
        raise NotImplementedError

    def sample_rows(self, batch: dict[str, torch.Tensor]) -> tuple[list[list[np.ndarray]], list[str]]:
        """Rows of 2D images (normalised range) for the sample grid of ``batch``, and column titles."""
        return [], []

    def paired_samples(self, batch: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For ``sample_rows`` of paired families: (input centre channel (N, h, w), G's output (N, H, W), target
        (N, H, W)) of a sample batch, as arrays."""
        src, tgt = batch["source"], batch["target"]
        out = self.net("G")(src)
        return (src[:, src.shape[1] // 2].cpu().numpy(), out[:, 0].cpu().numpy(), tgt[:, 0].cpu().numpy())

    def extra_state(self) -> dict[str, torch.Tensor | None]:
        return {}

    def load_extra_state(self, extra: dict[str, torch.Tensor]) -> None:
        pass

    def validate(self) -> None:
        """Family-specific config checks (raise InputError naming the key)."""
        if "context_slices" in self.config["data"] and not self.SLABS_FROM_DATA:
            raise InputError(f"Training config: 'data.context_slices' is for trainers that make their own 2.5D slabs "
                             f"(restore); the {self.FAMILY} trainer gives its network the neighbours its card's "
                             f"context_slices names: leave data.context_slices out.")
        d = self.config["discriminator"]
        if d.get("norm") not in _D_NORMS:
            raise InputError(f"Training config: 'discriminator.norm' must be instance, batch or none; got "
                             f"{d.get('norm')!r}.")
        if self.loss_cfg["gan_mode"] == "wgan-gp" and d["norm"] == "batch":
            raise InputError("Training config: WGAN-GP penalises per-sample gradients, which batch norm mixes; set "
                             "discriminator.norm to instance or none.")

    def load_init(self, load: bool = True) -> dict[str, dict[str, str]]:
        """Start the networks ``config["init"]`` names from installed models' weights (fine-tuning); returns the
        record the exported cards keep: network -> model id, version and weights SHA-256."""
        from ..models.registry import get_model, read_weights

        record = {}
        for name, model in self.config["init"].items():
            if name not in self.nets:
                raise InputError(f"Training config: 'init.{name}': the {self.FAMILY} trainer has no network {name!r} "
                                 f"(it has {', '.join(self.nets)}).")
            if name not in self.EXPORT_DOMAINS:
                raise InputError(f"Training config: 'init.{name}': only generators start from a model "
                                 f"({', '.join(n for n in self.EXPORT_DOMAINS if n in self.nets)}).")
            card, want = get_model(model), self.generator_config(name)
            have = {"name": card.architecture, "params": card.arch_params}
            blocks = self._grown_blocks(want, have) if self.config.get("init_grow") else None
            grow = blocks is not None
            if not grow and (want["name"], dict(want.get("params", {}))) != (have["name"], have["params"]):
                raise InputError(f"Training config: 'init.{name}': model {card.id} is a {have['name']} with params "
                                 f"{have['params']}, the run's generator a {want['name']} with params "
                                 f"{dict(want.get('params', {}))}. Set 'generator' to the model's architecture "
                                 f"(its card.json 'architecture'), or start from scratch.")
            if load and grow:  # the added blocks start as the identity
                self.net(name).grow_from(read_weights(card))
            elif load:
                self.net(name).load_state_dict(read_weights(card))
            record[name] = {"model": card.id, "version": card.version, "weights_sha256": card.sha256}
            if grow:
                record[name]["grown"] = {"n_blocks": list(blocks)}
        return record

    @staticmethod
    def _grown_blocks(want: dict[str, Any], have: dict[str, Any]) -> tuple[int, int] | None:
        """(the init model's residual blocks, the run's) when the run's generator ``want`` is the init model's
        architecture ``have`` with more residual blocks (``n_blocks``) and otherwise the same (``init_grow``: it starts
        as the model, the added blocks identity), else None. A parameter left out is the architecture's default."""
        import inspect

        from ..models import ARCHITECTURES

        build = ARCHITECTURES.get(want["name"])
        if want["name"] != have["name"] or not hasattr(build, "grow_from"):
            return None
        defaults = {k: p.default for k, p in inspect.signature(build).parameters.items()
                    if p.default is not inspect.Parameter.empty}

        def filled(params: dict[str, Any]) -> dict[str, Any]:  # tuples as lists: a card's JSON holds lists
            return {k: list(v) if isinstance(v, tuple) else v for k, v in {**defaults, **params}.items()}

        mine, theirs = filled(want.get("params", {})), filled(have["params"])
        if {k: v for k, v in mine.items() if k != "n_blocks"} != {k: v for k, v in theirs.items() if k != "n_blocks"}:
            return None
        blocks = int(theirs["n_blocks"]), int(mine["n_blocks"])
        return blocks if blocks[1] > blocks[0] else None

    # --- building blocks for families --------------------------------------------------------------------------
    def add_network(self, name: str, net: nn.Module) -> nn.Module:
        self.nets[name] = ddp.wrap(net, self.ctx)
        return self.nets[name]

    def net(self, name: str) -> nn.Module:
        """The network itself (not its DDP wrapper): for forwards that must not synchronise gradients."""
        return ddp.unwrap(self.nets[name])

    def add_optimizer(self, name: str, networks: list[str], lr: float) -> torch.optim.Optimizer:
        params = [p for n in networks for p in self.nets[n].parameters()]
        opt = torch.optim.Adam(params, lr=float(lr), betas=tuple(self.config["optim"]["betas"]))
        self.optimizers[name] = opt
        self._base_lr[name] = float(lr)
        return opt

    def add_gan(self, generator: nn.Module, d_in_channels: int | None) -> None:
        """Network ``G`` with its Adam optimiser (``optim.lr_g``) and, unless ``d_in_channels`` is None, a PatchGAN
        ``D`` seeing that many channels (:meth:`make_discriminator`) with its own (``optim.lr_d``)."""
        optim = self.config["optim"]
        self.add_network("G", generator)
        self.add_optimizer("G", ["G"], optim["lr_g"])
        if d_in_channels is not None:
            self.add_network("D", self.make_discriminator(d_in_channels))
            self.add_optimizer("D", ["D"], optim["lr_d"])

    def check_loss_weights(self, *keys: str) -> None:
        """Raise :class:`InputError` unless every ``loss.<key>`` is a number >= 0."""
        for key in keys:
            v = self.loss_cfg.get(key)
            if not isinstance(v, (int, float)) or v < 0:
                raise InputError(f"Training config: 'loss.{key}' must be a number >= 0.")

    def make_generator(self, override: dict[str, Any] | None = None) -> nn.Module:
        cfg = override or self.config["generator"]
        return build_network(cfg["name"], dict(cfg.get("params", {})))

    def make_discriminator(self, in_channels: int) -> nn.Module:
        """MONAI's PatchDiscriminator (returns [features..., logits]); norm from ``discriminator.norm``."""
        from monai.networks.nets import PatchDiscriminator

        d = self.config["discriminator"]
        norm = _D_NORMS[d["norm"]]
        return PatchDiscriminator(spatial_dims=2, channels=int(d["channels"]), in_channels=in_channels,
                                  num_layers_d=int(d["layers"]), norm=norm, bias=norm != "BATCH")

    @property
    def size_multiple(self) -> int:
        names = [n for n in self.EXPORT_DOMAINS if n in self.nets] or list(self.nets)
        return max(int(getattr(self.net(n), "size_multiple", 1)) for n in names)

    def discriminator_loss(self, d_name: str, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The discriminator's loss on real and (detached) fake inputs, gradient penalty included for WGAN-GP.

        Real, fake (and interpolates) go through the discriminator in one batch: one forward per update, which
        is what DDP expects (the default instance norm keeps samples independent).
        """
        n = real.shape[0]
        if self.adversarial.is_wasserstein:
            x_hat = interpolates(real, fake)
            logits = self.nets[d_name](torch.cat([real, fake, x_hat]))[-1]
            loss = self.adversarial.discriminator(logits[:n], logits[n:2 * n])
            gp = gradient_penalty(logits[2 * n:], x_hat)
            total = loss + float(self.loss_cfg["gradient_penalty"]) * gp
            return total, {d_name: total.item(), f"{d_name}_wdist": -loss.item(), f"{d_name}_gp": gp.item()}
        logits = self.nets[d_name](torch.cat([real, fake]))[-1]
        loss = self.adversarial.discriminator(logits[:n], logits[n:])
        return loss, {d_name: loss.item()}

    def generator_adversarial(self, d_name: str, fake_in: torch.Tensor, real_in: torch.Tensor | None = None,
                              batch_mean: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(adversarial loss of G, feature-matching loss or None) from one pass of the discriminator, frozen.

        Feature matching is computed when ``real_in`` is given: the discriminator's features of ``fake_in`` against
        those of ``real_in`` (batch means when ``batch_mean``: unpaired data match statistics, not samples).
        """
        disc = self.net(d_name)
        with frozen(disc):
            out = disc(fake_in)
            adv = self.adversarial.generator(out[-1])
            fm = None
            if real_in is not None:
                with torch.no_grad():
                    real_out = disc(real_in)
                fake_f, real_f = out[:-1], real_out[:-1]
                if batch_mean:
                    fake_f = [f.mean(0, keepdim=True) for f in fake_f]
                    real_f = [f.mean(0, keepdim=True) for f in real_f]
                fm = feature_matching_loss(fake_f, real_f)
        return adv, fm

    def perceptual_terms(self, fm: torch.Tensor | None, fake: torch.Tensor,
                         real: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        """G's perceptual loss terms: ``G_fm`` (feature matching ``fm``, if computed) weighted by
        ``loss.feature_matching``, and ``G_vgg`` (VGG19 of ``fake`` vs ``real``, if enabled) by ``loss.vgg``."""
        terms = {}
        if fm is not None:
            terms["G_fm"] = (self.loss_cfg["feature_matching"], fm)
        if self.vgg is not None:
            terms["G_vgg"] = (self.loss_cfg["vgg"], self.vgg(fake, real))
        return terms

    def weighted_update(self, opt_name: str, terms: dict[str, tuple[float, torch.Tensor]]) -> dict[str, float]:
        """One step of optimiser ``opt_name`` on the weighted sum of ``terms`` (name -> (weight, loss)).

        Returns what is logged: the total under ``opt_name`` and each term unweighted under its name.
        """
        total = sum(weight * value for weight, value in terms.values())
        self.update(opt_name, total)
        return {opt_name: total.item(), **{k: v.item() for k, (_, v) in terms.items()}}

    def update(self, opt_name: str, loss: torch.Tensor) -> None:
        opt = self.optimizers[opt_name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # --- the loop ---------------------------------------------------------------------------------------------------
    def lr_factor(self, step: int) -> float:
        """The learning rate at ``step`` over its base: 1 for the first ``optim.decay_from`` of the steps, then a
        linear decay to 0 at the last. With ``optim.restart_at`` N the run is one that was planned to end at step
        N and then extended (``--resume RUN --steps M``): until N the schedule of an N-step run, then, from the
        base rate again, the schedule of an M-step run; so one uninterrupted run reproduces it."""
        total = int(self.config["steps"])
        restart = self.config["optim"].get("restart_at")
        if restart is not None and step < int(restart):
            total = int(restart)
        start = float(self.config["optim"].get("decay_from", 1.0)) * total
        if step < start or total <= start:
            return 1.0
        return max(0.0, (total - step) / (total - start))

    def train_step(self) -> dict[str, float]:
        """One generator update preceded by ``critic_steps`` discriminator updates; advances ``self.step``."""
        torch.manual_seed(step_seed(int(self.config["seed"]), self.step, self.ctx.rank))
        factor = self.lr_factor(self.step)
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = self._base_lr[name] * factor
        logs: dict[str, float] = {}
        critic = int(self.loss_cfg["critic_steps"])
        for k in range(critic):
            batch = self.data.batch(self.step, k, self.ctx.rank, self.ctx.world_size)
            self.set_input({key: v.to(self.device) for key, v in batch.items()})
            if k < critic - 1:
                with torch.no_grad():
                    self.forward()
            else:
                self.forward()
            logs.update(self.optimize_discriminator())
        logs.update(self.optimize_generator())
        bad = [k for k, v in logs.items() if not np.isfinite(v)]
        if bad:
            raise MedGANError(f"Training diverged at step {self.step}: {', '.join(bad)} is not finite. Lower "
                              f"optim.lr_g/lr_d or the adversarial weight, and resume from the last checkpoint.")
        self.step += 1
        return logs

    def fit(self, steps: int | None = None) -> dict[str, Any]:
        """Train until ``steps`` (default ``config["steps"]``); returns a summary dict.

        Ctrl-C (SIGINT) finishes the current step, saves a checkpoint and returns with ``interrupted=True``;
        a second Ctrl-C aborts at once without saving.
        """
        total = int(steps or self.config["steps"])
        main = self.ctx.is_main and self.run_dir is not None
        losslog = None
        if main:
            assert self.run_dir is not None
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(self.config, self.run_dir / "config.yaml")
            logcfg = self.config["log"]
            losslog = LossLog(self.run_dir / "losses.csv", resume_step=self.step if self.step else None,
                              tensorboard=bool(logcfg.get("tensorboard", True)))
        logcfg = self.config["log"]
        bar = TrainProgress(total, self.step, stream=self.stream, every=int(logcfg["every"]),
                            enabled=self.show_progress and self.ctx.is_main)
        previous = self._install_sigint(bar)
        started = time.perf_counter()
        seconds0 = self.train_seconds
        interrupted = False
        last: dict[str, float] = {}
        checkpoint: Path | None = None
        try:
            while self.step < total:
                last = self.train_step()
                self.train_seconds = seconds0 + time.perf_counter() - started
                stop = ddp.any_rank(self._stop, self.ctx) if self.ctx.enabled else self._stop
                if self.step % int(logcfg["every"]) == 0 or self.step == total or stop:
                    values = ddp.average(dict(last, lr=self._base_lr.get("G", 0.0) * self.lr_factor(self.step - 1)),
                                         self.ctx)
                    if losslog is not None:
                        losslog.write(self.step, self.train_seconds, values)
                bar.update(self.step, last)
                if main and (self.step % int(logcfg["sample_every"]) == 0 or self.step == total):
                    self.save_samples()
                if self.step % int(logcfg["checkpoint_every"]) == 0 or self.step == total or stop:
                    checkpoint = self.save_checkpoint()
                if stop:
                    interrupted = True
                    bar.message(f"Stopped at step {self.step}; checkpoint saved"
                                f"{' to ' + str(checkpoint) if checkpoint else ''}. Continue with --resume "
                                f"{self.run_dir or 'RUN_DIR'}.")
                    break
        finally:
            self._restore_sigint(previous)
            if losslog is not None:
                losslog.close()
        return {"step": self.step, "steps": total, "interrupted": interrupted, "train_seconds": self.train_seconds,
                "losses": last, "checkpoint": str(checkpoint) if checkpoint else None}

    def _install_sigint(self, bar: TrainProgress) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):  # noqa: ARG001
            if self._stop:
                raise KeyboardInterrupt
            self._stop = True
            bar.message("Ctrl-C: stopping after this step and saving a checkpoint (press again to abort without "
                        "saving).")

        return signal.signal(signal.SIGINT, handler)

    @staticmethod
    def _restore_sigint(previous: Any) -> None:
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)

    # --- samples, checkpoints, export --------------------------------------------------------------------------------
    def save_samples(self) -> Path | None:
        if self.run_dir is None:
            return None
        batch = {k: v.to(self.device) for k, v in self.data.sample_batch(4).items()}
        for net in self.nets.values():
            net.eval()
        try:
            with torch.no_grad():
                rows, titles = self.sample_rows(batch)
        finally:
            for net in self.nets.values():
                net.train()
        if not rows:
            return None
        return save_grid(self.run_dir / "samples" / f"step_{self.step:06d}.png", rows, titles)

    def checkpoint_meta(self) -> dict[str, Any]:
        from .. import __version__

        return {"family": self.FAMILY, "config": self.config, "train_seconds": self.train_seconds,
                "medgan": __version__, "world_size": self.ctx.world_size,
                "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}

    def save_checkpoint(self, path: str | Path | None = None) -> Path | None:
        """Write a checkpoint (rank 0 only); default ``<run>/checkpoints/step_NNNNNN.safetensors``."""
        if not self.ctx.is_main or (path is None and self.run_dir is None):
            return None
        path = Path(path) if path else self.run_dir / "checkpoints" / f"step_{self.step:06d}.safetensors"
        out = save_checkpoint(path, step=self.step, networks=self.nets, optimizers=self.optimizers,
                              extra=self.extra_state(), meta=self.checkpoint_meta())
        keep = int(self.config["log"].get("keep_checkpoints", 2))
        if keep > 0 and path.parent.name == "checkpoints":
            olds = sorted(path.parent.glob("step_*.safetensors"), key=checkpoint_step)
            for old in olds[:-keep]:
                old.unlink(missing_ok=True)
        return out

    def load_checkpoint(self, path: str | Path) -> None:
        tensors, meta = read_checkpoint(path)
        if meta.get("family") != self.FAMILY:
            raise InputError(f"Checkpoint {path} is from a {meta.get('family')!r} run, not {self.FAMILY!r}.")
        extra = restore(tensors, meta, self.nets, self.optimizers, self.device)
        self.load_extra_state(extra)
        self.step = int(meta["step"])
        self.train_seconds = float(meta.get("train_seconds", 0.0))

    @classmethod
    def from_checkpoint(cls, path: str | Path, run_dir: str | Path | None = None, *, steps: int | None = None,
                        **kwargs: Any) -> GANTrainer:
        """A trainer with the checkpoint's own (resolved) config, networks, optimisers and step."""
        _, meta = read_checkpoint(path)
        config = copy.deepcopy(meta["config"])
        if steps is not None:
            config["steps"] = int(steps)
        trainer = cls(config, run_dir, initialise=False, **kwargs)
        trainer.load_checkpoint(path)
        return trainer

    def export(self, out_root: str | Path, *, dtype: torch.dtype = torch.float16,
               command: str | None = None) -> list[Any]:
        """Write each ``config["export"]`` entry as a model folder ``out_root/<id>`` (card + safetensors).

        The card gets ``architecture`` (the generator's config) and a ``training`` record (family, steps, seed,
        wall time, the command to reproduce it); the folder is usable at once by ``medgan run`` and the
        registry. Returns the :class:`~MedGANLogic.models.card.ModelCard` of each.
        """
        from ..models.registry import save_model

        cards = []
        config_hash = hashlib.sha256(json.dumps(self.config, sort_keys=True, default=str).encode()).hexdigest()
        for entry in self.config["export"]:
            gen_name = entry.get("generator") or next(iter(self.EXPORT_DOMAINS))
            if gen_name not in self.nets:
                raise InputError(f"export generator {gen_name!r} is not a network of the {self.FAMILY} trainer "
                                 f"(it has {', '.join(self.nets)}).")
            card = copy.deepcopy(entry["card"])
            gen_cfg = self.generator_config(gen_name)
            card["architecture"] = {"name": gen_cfg["name"], "params": dict(gen_cfg.get("params", {}))}
            card.setdefault("slice_axis", int(self.config["data"].get("slice_axis", 0)))
            card.setdefault("weights", {"file": "weights.safetensors", "sha256": "0" * 64})
            card["training"] = {
                "family": self.FAMILY, "run": self.config["name"], "generator": gen_name, "steps": self.step,
                "seed": self.config["seed"], "batch_size": self.config["batch_size"],
                "gan_mode": self.loss_cfg["gan_mode"], "world_size": self.ctx.world_size,
                "device": str(self.device), "wall_time_s": round(self.train_seconds, 1),
                "command": command or f"medgan train --recipe {self.config['name']}",
                "config_sha256": config_hash, "data": self.data.describe(),
            }
            if self.init_record:
                card["training"]["init"] = copy.deepcopy(self.init_record)
            state = self.net(gen_name).state_dict()
            cards.append(save_model(Path(out_root) / card["id"], card, state, dtype=dtype))
        return cards

    def generator_config(self, name: str) -> dict[str, Any]:
        return self.config["generator"]
