"""``medgan train``: train a GAN from a recipe or a config file, resume it, export its models.

    medgan train --list-recipes
    medgan train --recipe mr-t1-to-t2                          # reproduce a shipped model (runs/mr-t1-to-t2)
    medgan train --recipe mr-t1-to-t2 --export Resources/Models  # ... and write the model folder there
    medgan train --config my.yaml --source-dir T1/ --target-dir T2/ --set steps=5000 --set loss.pixel=50
    medgan train --resume runs/mr-t1-to-t2                     # continue after Ctrl-C, bit-exactly
    medgan train --recipe ldct-denoise --init ldct-denoise --source-dir LD/ --target-dir FD/  # fine-tune on yours
    torchrun --nproc_per_node=4 -m MedGANLogic.train.cli --recipe mr-t1-to-t2 --device cuda

``python -m MedGANLogic.train.cli`` takes the same arguments.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError, MedGANError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Train a GAN (pix2pix, CycleGAN, low-dose CT) from a recipe or config file."
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--recipe", help="name of a bundled recipe (see --list-recipes)")
    src.add_argument("--config", help="a YAML or JSON training config")
    parser.add_argument("--list-recipes", action="store_true", help="list the bundled recipes and exit")
    parser.add_argument("--resume", metavar="RUN_OR_CHECKPOINT",
                        help="continue a run: its folder (latest checkpoint) or a checkpoint file")
    parser.add_argument("--run-dir", help="folder for checkpoints, losses.csv and samples (default runs/NAME)")
    parser.add_argument("--export", dest="export_dir",
                        help="write the finished models here (default RUN_DIR/export); e.g. ~/.medgan/models")
    parser.add_argument("--steps", type=int, help="total training steps (overrides the config; extends a resume)")
    parser.add_argument("--seed", type=int, help="random seed (overrides the config)")
    parser.add_argument("--batch-size", type=int, dest="batch_size", help="slices per batch and process")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (under torchrun each process takes its GPU)")
    parser.add_argument("--source-dir", help="train on your volumes: the input folder (sets data.source=folders; "
                                             "no photographs beside them unless --set names them)")
    parser.add_argument("--target-dir", help="the target folder; paired by file name for pix2pix/ldct, "
                                             "unpaired for cyclegan")
    parser.add_argument("--init", action="append", default=[], metavar="[NET=]MODEL",
                        help="fine-tune: start the generator (or network NET) from an installed model's weights, "
                             "by id or model folder, e.g. --init ldct-denoise (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config value, e.g. --set loss.gan_mode=wgan-gp (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _overrides(args: argparse.Namespace) -> list[str]:
    # your folders replace the recipe's training data, its photographs included (data.natural_images,
    # data.natural_noisy_copies); a --set given here puts them back
    out = ["data.natural_images=0", "data.natural_noisy_copies=0"] if args.source_dir or args.target_dir else []
    out += args.overrides
    for key in ("steps", "seed", "batch_size", "device"):
        value = getattr(args, key, None)
        if value is not None:
            out.append(f"{key}={value}")
    for spec in args.init:
        net, sep, model = spec.partition("=")
        if not sep or "/" in net or "\\" in net:  # a bare model id or folder: the generator
            net, model = "G", spec
        out.append(f"init.{net.strip()}={model.strip()}")
    if args.source_dir or args.target_dir:
        out += ["data.source=folders", f"data.source_dir={args.source_dir}", f"data.target_dir={args.target_dir}"]
    return out


def main(args: argparse.Namespace) -> int:
    from . import train
    from .config import list_recipes, load_config

    if args.list_recipes:
        from .config import read_config_file, recipe_path

        for name in list_recipes():
            cfg = read_config_file(recipe_path(name))
            ids = ", ".join(e["card"]["id"] for e in cfg.get("export", []))
            print(f"{name:<16} {cfg.get('family', '?'):<9} -> {ids}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = None
    if args.init and args.resume:
        raise InputError("--init starts a new run from a model's weights; a resumed run continues from its "
                         "checkpoint. Drop --init, or start a new run (--recipe/--config) with it.")
    if args.recipe or args.config:
        config = load_config(recipe=args.recipe, path=args.config, overrides=_overrides(args))
        if "average" in config and (args.init or args.source_dir or args.target_dir):
            config.pop("average")  # fine-tuning a weight-averaged model: train as the recipe it extends does
    elif not args.resume:
        raise InputError("Give --recipe NAME or --config FILE (or --resume RUN_DIR); --list-recipes shows the "
                         "recipes.")
    elif args.steps is not None:
        config = {"steps": int(args.steps)}
    if args.resume:
        run_dir = Path(args.run_dir) if args.run_dir else _run_dir_of(Path(args.resume))
    else:
        assert config is not None
        run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / config["name"]
        if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
            raise InputError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, or choose "
                             f"another --run-dir.")
    argv = getattr(args, "argv", None)  # given to _standalone; else this process's own command line
    if argv is None:
        argv = sys.argv[1:] if sys.argv[1:2] != ["train"] else sys.argv[2:]
    command = "medgan train " + " ".join(shlex.quote(a) for a in argv)
    summary = train(config, run_dir, resume=args.resume, export_dir=args.export_dir, progress=not args.quiet,
                    command=command.strip())
    if summary["interrupted"]:
        print(f"Interrupted at step {summary['step']}/{summary['steps']}; resume with: medgan train --resume "
              f"{run_dir}", file=sys.stderr)
        return 130
    if summary.get("exported") and "average" in (config or {}):
        print(f"Averaged the weights of {', '.join(map(str, config['average']))}; models: "
              f"{', '.join(summary['exported'])}")
    elif summary.get("exported"):
        print(f"Trained {summary['step']} steps in {summary['train_seconds'] / 60:.1f} min; models: "
              f"{', '.join(summary['exported'])}")
    return 0


def _run_dir_of(resume: Path) -> Path:
    if resume.is_file():  # <run>/checkpoints/step_N.safetensors
        return resume.parent.parent if resume.parent.name == "checkpoints" else resume.parent
    return resume


def _standalone(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m MedGANLogic.train.cli")
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = None if argv is None else list(argv)
    try:
        return main(args)
    except MedGANError as exc:
        print(f"medgan train: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("medgan train: aborted without saving.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(_standalone())
