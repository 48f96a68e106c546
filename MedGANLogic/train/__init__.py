"""Training: one trainer per GAN family on a shared loop, driven by a config file or a named recipe.

    from MedGANLogic.train import load_config, train
    summary = train(load_config(recipe="mr-t1-to-t2"), run_dir="runs/mr-t1-to-t2", export_dir="my-models")

or from the shell: ``medgan train --recipe mr-t1-to-t2`` (``python -m MedGANLogic.train.cli`` works too), and
``torchrun --nproc_per_node=N -m MedGANLogic.train.cli --recipe ...`` for several GPUs or nodes.

Families (``config["family"]``): ``pix2pix`` (paired, U-Net + conditional PatchGAN), ``cyclegan`` (unpaired,
two ResNet generators, two PatchGANs, cycle consistency), ``ldct`` (low-dose CT denoising, residual generator +
WGAN-GP critic), ``srgan`` (super-resolution), ``fanogan`` (anomaly detection, f-AnoGAN), ``restore`` (anomaly
detection by restoration: U-Net + PatchGAN), ``segmentation`` (adversarial segmentation), ``lesion_inpaint``
(lesion synthesis). A new family subclasses :class:`~MedGANLogic.train.loop.GANTrainer` in its own module,
decorates it with ``@TRAINERS.register("name")`` and adds the module to :data:`TRAINERS`' ``modules``.

What lives where: ``loop.py`` (the shared loop and the building blocks families use), one module per family
(networks, losses and the steps), ``data/`` (volumes, slices, batches; nothing about networks), ``losses.py``,
``checkpoint.py``, ``monitor.py``, ``distributed.py``, ``config.py`` and ``cli.py``. Imports the engine's models
and simulator; nothing here imports Slicer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..registry import Registry

if TYPE_CHECKING:
    from .loop import GANTrainer

#: Training family name -> trainer class; importing a family module registers it (a missing one is an error).
TRAINERS: Registry[type[GANTrainer]] = Registry(
    "training family", package=__name__, error=InputError,
    modules=(".pix2pix", ".cyclegan", ".ldct", ".srgan", ".fanogan", ".segmentation", ".inpaint", ".restore"))


def trainer_class(family: str) -> type[GANTrainer]:
    """The trainer class of a family name (``pix2pix``, ``cyclegan``, ``ldct``, ...)."""
    return TRAINERS.get(family)


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
        export_dir: where model folders are written at the end (default ``<run_dir>/export``; without either a
            training run exports nothing, and an average, which makes nothing else, is refused).

    A config with a top-level ``average`` (a list of installed models) trains nothing: it exports the mean of
    their weights (:mod:`.average`).
    """
    from . import distributed as ddp
    from .checkpoint import latest_checkpoint, read_checkpoint

    if config is not None and "average" in config and not resume:  # a model soup: nothing to train (.average)
        from .average import average_models

        if not (export_dir or run_dir):  # it makes nothing but the export: say where, as training would default
            raise InputError("An average of installed models (config 'average') only exports: give export_dir "
                             "(--export) or run_dir (it then writes <run_dir>/export).")
        out = Path(export_dir) if export_dir else Path(run_dir) / "export"
        cards = average_models(config, out, command=command)
        return {"interrupted": False, "step": 0, "steps": 0, "train_seconds": 0.0,
                "exported": [str(c.folder) for c in cards]}
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


__all__ = ["TRAINERS", "trainer_class", "load_config", "train"]
