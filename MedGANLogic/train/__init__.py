"""Training: one trainer per GAN family on a shared loop, driven by a config file or a named recipe.

    from MedGANLogic.train import load_config, train
    summary = train(load_config(recipe="mr-t1-to-t2"), run_dir="runs/mr-t1-to-t2", export_dir="my-models")

or from the shell: ``medgan train --recipe mr-t1-to-t2`` (``python -m MedGANLogic.train.cli`` works too), and
``torchrun --nproc_per_node=N -m MedGANLogic.train.cli --recipe ...`` for several GPUs or nodes.

Families (``config["family"]``): ``pix2pix`` (paired, U-Net + conditional PatchGAN), ``cyclegan`` (unpaired,
two ResNet generators, two PatchGANs, cycle consistency), ``ldct`` (low-dose CT denoising, residual generator +
WGAN-GP critic). A new family subclasses :class:`~MedGANLogic.train.loop.GANTrainer` in its own module,
decorates it with ``@register_trainer("name")`` and adds the module name to :data:`FAMILY_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:
    from .loop import GANTrainer

TRAINERS: dict[str, type[GANTrainer]] = {}
# Modules that define families; missing ones (a later issue's) are skipped.
FAMILY_MODULES = ("pix2pix", "cyclegan", "ldct", "srgan", "fanogan", "segmentation")


def register_trainer(family: str) -> Callable[[type[GANTrainer]], type[GANTrainer]]:
    def wrap(cls: type[GANTrainer]) -> type[GANTrainer]:
        if family in TRAINERS and TRAINERS[family] is not cls:
            raise ValueError(f"training family {family!r} is registered twice")
        TRAINERS[family] = cls
        return cls

    return wrap


def _import_families() -> None:
    for name in FAMILY_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise


def trainer_class(family: str) -> type[GANTrainer]:
    """The trainer class of a family name (``pix2pix``, ``cyclegan``, ``ldct``, ...)."""
    _import_families()
    if family not in TRAINERS:
        raise InputError(f"Unknown training family {family!r}; known: {', '.join(sorted(TRAINERS))}.")
    return TRAINERS[family]


def load_config(recipe: str | None = None, path: str | Path | None = None,
                overrides: list[str] | None = None) -> dict[str, Any]:
    """The full config of a recipe or config file, with ``KEY=VALUE`` overrides (see :mod:`.config`)."""
    from .config import load_config as _load

    return _load(recipe=recipe, path=path, overrides=overrides)


def train(config: dict[str, Any] | None, run_dir: str | Path | None = None, *, resume: str | Path | None = None,
          export_dir: str | Path | None = None, progress: bool = True, command: str | None = None) -> dict[str, Any]:
    """Train (or resume) a run and, if it finished, export its models; returns the run summary.

    Args:
        config: a full config (:func:`load_config`). When resuming it may be None; otherwise only its
            ``steps`` is used: the checkpoint's own config is what makes the run continue exactly.
        run_dir: checkpoints, logs and samples go here.
        resume: a checkpoint file or a run folder (its latest checkpoint).
        export_dir: where model folders are written at the end (default ``<run_dir>/export``).
    """
    from . import distributed as ddp
    from .checkpoint import latest_checkpoint, read_checkpoint

    ckpt = latest_checkpoint(resume) if resume else None
    if ckpt is not None:
        saved = read_checkpoint(ckpt)[1]["config"]
        steps = (config or {}).get("steps")
        config = saved
    elif config is None:
        raise InputError("Nothing to train: give a config (or a recipe) or a checkpoint to resume.")
    cls = trainer_class(config["family"])
    ctx = ddp.init_distributed(config.get("device", "auto"))
    try:
        if ckpt is not None:
            trainer = cls.from_checkpoint(ckpt, run_dir, steps=steps, ctx=ctx, progress=progress)
        else:
            trainer = cls(config, run_dir, ctx=ctx, progress=progress)
        summary = trainer.fit()
        summary["exported"] = []
        if not summary["interrupted"] and ctx.is_main:
            out = Path(export_dir) if export_dir else (Path(run_dir) / "export" if run_dir else None)
            if out is not None and trainer.config["export"]:
                cards = trainer.export(out, command=command)
                summary["exported"] = [str(c.folder) for c in cards]
        ddp.barrier(ctx)
        return summary
    finally:
        ddp.shutdown(ctx)


__all__ = ["TRAINERS", "register_trainer", "trainer_class", "load_config", "train"]
