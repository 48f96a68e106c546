"""The ``medgan`` command.

    medgan models [--json] [--task TASK]
    medgan run --task TASK --input IN --output OUT [--model ID] [--device DEV] [--mask-output PATH] ...
    medgan run --task lesion --input IN --mask MASK [--lesion-type wmh|tumour|ischaemic] --output OUT ...
    medgan augment --images DIR [--labels DIR] --count N --output DIR [--seed N] [--lesion-type ...]
    medgan info FILE [--json]
    medgan demo [--output DIR]
    medgan doctor [--json]   (versions, devices, models verified, what is missing and how to install it)
    medgan simulate ...      (phantom data; see `medgan simulate --help`)
    medgan train ...         (train a GAN from a recipe or config)
    medgan import ...        (convert a pytorch-CycleGAN-and-pix2pix checkpoint, or install a model folder)
    medgan augment ...       (image/label pairs with synthetic lesions, seeded; see `medgan augment --help`)

Every error ends the command with a non-zero exit and one line saying what is wrong and what to do.
Output files are written whole or not at all.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import MedGANError
from .lesion_types import LESION_TYPES
from .models.card import ENSEMBLE_COUNTS
from .tasks import TASKS

EXIT_ERROR = 1
EXIT_USAGE = 2


class ProgressBar:
    """A one-line progress bar on a terminal (stderr); silent when stderr is not a terminal."""

    def __init__(self, label: str, stream=sys.stderr, enabled: bool | None = None):
        self.label, self.stream = label, stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.start = time.perf_counter()

    def __call__(self, fraction: float, message: str = "") -> None:
        if not self.enabled:
            return
        width = 30
        done = int(round(fraction * width))
        elapsed = time.perf_counter() - self.start
        eta = f" ETA {elapsed * (1 - fraction) / fraction:5.1f}s" if 0 < fraction < 1 else ""
        self.stream.write(f"\r{self.label} [{'#' * done}{'.' * (width - done)}] {fraction * 100:5.1f}% "
                          f"{message}{eta}   ")
        if fraction >= 1:
            self.stream.write("\n")
        self.stream.flush()


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


# --- subcommands ---------------------------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    from .models.registry import builtin_models_dir, list_models, user_models_dir

    cards = list_models(args.task)
    rows = [c.summary() for c in cards]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print(f"No models installed (looked in {builtin_models_dir()} and {user_models_dir()}).")
        return 0
    header = (f"{'id':<24} {'task':<10} {'input':<10} {'output':<10} {'dims':<5} {'size':>9}  {'version':<8} "
              f"from")
    print(header)
    print("-" * len(header))
    for r in rows:
        size = f"{r['size_bytes'] / 1e6:.1f} MB" if r["size_bytes"] else "?"
        origin = "built-in" if r["source"] == "builtin" else r["folder"]
        print(f"{r['id']:<24} {r['task']:<10} {r['modality_in']:<10} {r['modality_out']:<10} {r['dims']:<5} "
              f"{size:>9}  {r['version']:<8} {origin}")
    for r in rows:
        if r["shadows"]:
            print(f"Note: the user model {r['id']} ({r['folder']}) shadows the built-in model of the same id "
                  f"({r['shadows']}); `--model {r['id']}` runs the user one. Rename or remove it to use the built-in.")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .io import describe, read_volume

    info = describe(read_volume(args.file, component=args.component, frame=args.frame, series=args.series))
    if args.json:
        _print_json(info)
        return 0
    print(f"file:      {args.file}")
    print(f"shape:     {info['shape_zyx']} (z, y, x)   dtype {info['dtype']}")
    print(f"spacing:   {info['spacing_xyz_mm']} mm (x, y, z)")
    print(f"origin:    {info['origin_xyz_lps_mm']} mm (LPS)")
    print(f"direction: {info['direction']}")
    print(f"range:     {info['min']} .. {info['max']} (mean {info['mean']})")
    if info["non_finite_voxels"]:
        print(f"WARNING:   {info['non_finite_voxels']} NaN/Inf voxels")
    if info["metadata"]:
        print(f"metadata:  {info['metadata']}")
    return 0


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name in ("batch_size", "overlap", "slice_axis", "threshold", "modality", "contrast", "precision",
                 "adapt_budget_s", "adapt_steps", "adapt_seed", "lesion_type", "ensemble"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    for flag in ("force", "native", "bias_correction", "adapt"):
        if getattr(args, flag):
            options[flag] = True
    if args.no_input_detail:
        options["input_detail"] = False
    if args.no_consistency:
        options["consistency"] = False
    if args.no_planes:
        options["planes"] = False
    if not args.adapt and any(k in options for k in ("adapt_budget_s", "adapt_steps", "adapt_seed")):
        raise MedGANError("--adapt-budget, --adapt-steps and --adapt-seed apply with --adapt only.")
    if args.mask is not None:
        options["mask"] = args.mask
    return options


def cmd_run(args: argparse.Namespace) -> int:
    from .io import check_output_paths, read_volume, write_volumes
    from .pipeline import execute, plan

    # Outputs: known extensions, existing folders, none the input nor each other (before any work is done).
    outputs = check_output_paths([args.output] + ([args.mask_output] if args.mask_output else []),
                                 inputs=[args.input] + ([args.mask] if args.mask else []))
    if args.mask_output and args.task not in ("anomaly", "lesion"):
        raise MedGANError("--mask-output applies to --task anomaly and --task lesion only.")
    if (args.mask or args.lesion_type) and args.task != "lesion":
        raise MedGANError("--mask and --lesion-type apply to --task lesion only.")
    if args.save_fit and not args.adapt:
        raise MedGANError("--save-fit applies with --adapt only.")
    volume = read_volume(args.input, component=args.component, frame=args.frame, series=args.series)
    run_plan = plan(args.task, volume, model=args.model, device=args.device, **_run_options(args))
    for message in run_plan.warnings:  # the same warnings Python callers get as MedGANWarning
        print(f"warning: {message}", file=sys.stderr)
    for message in run_plan.notes if not args.quiet else ():  # what the engine does to meet the model
        print(f"note: {message}", file=sys.stderr)
    bar = ProgressBar(f"{args.task}", enabled=None if not args.quiet else False)
    result = execute(run_plan, progress=bar)
    # Every output or none: on failure the files that were there before are still there.
    volumes = [result.volume] + ([result.outputs["mask"]] if args.mask_output else [])
    write_volumes(dict(zip(outputs, volumes)), sources=[args.input] + ([args.mask] if args.mask else []))
    if args.save_fit:
        from .adapt import save_fitted_model

        save_fitted_model(result.extras["fitted"], args.save_fit)
    summary = {"output": str(outputs[0]), "model": result.provenance["model"],
               "device": result.provenance["device"], "seconds": result.provenance["seconds"]}
    summary.update({k: v for k, v in result.extras.items() if isinstance(v, (int, float, str))})
    if not args.quiet:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.output), device=args.device)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    return run_doctor(as_json=args.json)


def _delegate(module: str, args: argparse.Namespace) -> int:
    return int(importlib.import_module(module).main(args) or 0)


# --- parser ----------------------------------------------------------------------------------------------------
_DELEGATED = {"simulate": ("MedGANLogic.simulate.cli",
                           "make phantom data (MNI152-derived MR, CT, lesions, low-dose CT)"),
              "train": ("MedGANLogic.train.cli", "train a GAN from a recipe or config file"),
              "import": ("MedGANLogic.models.importer", "import a model: pytorch-CycleGAN-and-pix2pix checkpoint or "
                                                      "a model folder"),
              "augment": ("MedGANLogic.augment", "make image/label pairs with synthetic lesions (seeded, "
                                                 "reproducible)")}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``medgan`` parser. The delegated commands (simulate, train, import) import their modules, and with
    them torch, to add their arguments: only ``command``'s is built in full when it is given, so that
    ``medgan --help``, ``models`` and ``info`` start without torch."""
    parser = argparse.ArgumentParser(prog="medgan", description="Generative adversarial networks for medical "
                                     "volumes (research use, not for diagnosis).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list installed models")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--task", choices=TASKS.names())
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("run", help="run a task on one volume")
    p.add_argument("--task", required=True, choices=TASKS.names())
    p.add_argument("--input", required=True, help="volume file (.nii.gz, .nrrd, .mha, .mhd) or DICOM folder")
    p.add_argument("--output", required=True, help="output file (.nii.gz, .nrrd, .mha)")
    p.add_argument("--model", help="model id (see `medgan models`) or model folder; default: first that fits")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="auto (default): bf16 where the model allows it and the device has it natively; else fp32")
    p.add_argument("--overlap", type=float, help="tile overlap fraction in [0, 1) (default 0.25)")
    p.add_argument("--slice-axis", type=int, dest="slice_axis", choices=[0, 1, 2],
                   help="for 2D models: 0 axial (z), 1 coronal (y), 2 sagittal (x)")
    p.add_argument("--ensemble", type=int, choices=list(ENSEMBLE_COUNTS),
                   help="denoise, synthesize, superres, anomaly: average the network over this many flips and "
                        "transpositions of each slice (default: the model card's; 1 = once, fastest; 8 transposes, "
                        "which a model zooming one axis of the slice cannot)")
    p.add_argument("--threshold", type=float, help="anomaly: threshold of the candidate mask (>= 0)")
    p.add_argument("--mask-output", dest="mask_output",
                   help="anomaly: also write the thresholded mask here; lesion: the inserted lesion's label map")
    p.add_argument("--mask", help="lesion: where to put the lesion (a mask or one-label label map file, on the "
                                  "input's grid or overlapping it)")
    p.add_argument("--lesion-type", dest="lesion_type", choices=list(LESION_TYPES),
                   help="lesion: wmh (white-matter hyperintensity, default), tumour (with oedema), ischaemic")
    p.add_argument("--modality", choices=["MR", "CT", "PT", "US"],
                   help="declare the input's modality if the file does not say (PT = PET, US = ultrasound: "
                        "--adapt denoising only)")
    p.add_argument("--contrast", help="declare the MR contrast, e.g. T1w, T2w, FLAIR")
    p.add_argument("--force", action="store_true", help="run even if the model expects another modality")
    p.add_argument("--adapt", action="store_true",
                   help="denoise/superres: fit a network to this scan itself (no training data; starts from a "
                        "fitting model if one is installed, or --model; superres of a scan without thick slices, or "
                        "with an in-plane --model such as mr-sr-x2-inplane, fine-tunes that model on the scan)")
    p.add_argument("--adapt-budget", type=float, dest="adapt_budget_s", metavar="SECONDS",
                   help="with --adapt: seconds of fitting (default 90 for denoise, 120 for ultrasound, 300 for CT "
                        "and PET denoise, 120 for superres; ultrasound denoising also stops after 750 steps, CT "
                        "fine-tuning ldct-denoise after 1500, PET and CT from scratch after 6000, in-plane superres "
                        "after 50, see --adapt-steps)")
    p.add_argument("--adapt-steps", type=int, dest="adapt_steps", metavar="N",
                   help="with --adapt: at most N fitting steps (reproducible with the same --adapt-seed); replaces "
                        "the step cap of ultrasound (750), CT (1500 fine-tuning ldct-denoise, else 6000) and PET "
                        "(6000) denoising and of in-plane super-resolution (50)")
    p.add_argument("--adapt-seed", type=int, dest="adapt_seed", metavar="N", help="with --adapt: seed (default 0)")
    p.add_argument("--save-fit", dest="save_fit", metavar="FOLDER",
                   help="with --adapt: also save the fitted network as a model folder (its card names this scan)")
    p.add_argument("--native", action="store_true",
                   help="run on the input's own grid: no resampling into the model's voxel size or orientation")
    p.add_argument("--no-input-detail", action="store_true", dest="no_input_detail",
                   help="superres: where the input is resampled into the model's voxel size, do not add back the "
                        "detail finer than it (from a cubic B-spline on the input grid)")
    p.add_argument("--no-consistency", action="store_true", dest="no_consistency",
                   help="superres: leave the output as the model made it, instead of changed as little as possible "
                        "to give back the input when degraded the way the model's card says (its measured data kept)")
    p.add_argument("--no-planes", action="store_true", dest="no_planes",
                   help="synthesize: run a model whose card averages its axial, coronal and sagittal slices "
                        "(mr-t1-to-t2) on its axial slices only (a third of the time)")
    p.add_argument("--bias-correction", action="store_true", dest="bias_correction",
                   help="MR: N4 bias-field correction of the input before the model sees it")
    p.add_argument("--component", type=int, help="vector images: which component to use")
    p.add_argument("--frame", type=int, help="4D images: which frame to use")
    p.add_argument("--series", help="DICOM folder with several series: the SeriesInstanceUID to use "
                   "(default: the largest, with a warning listing the others)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("info", help="shape, spacing, origin, direction and intensity range of a volume")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--component", type=int)
    p.add_argument("--frame", type=int)
    p.add_argument("--series", help="DICOM folder with several series: the SeriesInstanceUID to describe")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="run every available task on the bundled sample data")
    p.add_argument("--output", default="demo_out")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("doctor", help="check Python, packages, devices and installed models; say what is missing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_doctor)

    for name, (module, help_text) in _DELEGATED.items():
        p = sub.add_parser(name, help=help_text)
        if command is not None and name != command:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not exc.name or not exc.name.startswith("MedGANLogic"):
                raise
            p.set_defaults(func=lambda a, n=name: _missing(n))
            continue
        mod.add_arguments(p)
        p.set_defaults(func=lambda a, m=module: _delegate(m, a))
    return parser


def _missing(name: str) -> int:
    raise MedGANError(f"`medgan {name}` is not available in this installation.")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), "")  # medgan has no options before the command
    parser = build_parser(command)
    args = parser.parse_args(argv)

    def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"medgan {args.command}: warning: {message}".splitlines()[0], file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            return int(args.func(args) or 0)
    except MedGANError as exc:
        print(f"medgan {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, MemoryError, RuntimeError, ValueError) as exc:
        # Unexpected failures still end in one line; MEDGAN_DEBUG=1 shows the traceback.
        if os.environ.get("MEDGAN_DEBUG"):
            raise
        print(f"medgan {args.command}: error: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"medgan {args.command}: interrupted; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
