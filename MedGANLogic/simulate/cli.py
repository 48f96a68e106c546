"""`medgan simulate`: write phantom subjects, low-dose CT and low-resolution MR, or regenerate the sample data.

    medgan simulate --subject 7 --output phantom/                # every contrast + lesion mask of subject 7
    medgan simulate --split test --contrasts T1w,T2w --output phantom/
    medgan simulate --subject 7 --dose 0.25 --dose 0.1 --output phantom/   # also 25 % and 10 %-dose CT pairs
    medgan simulate --subject 7 --dose 0.25 --kernel hann --kernel-cutoff 0.8 --output phantom/   # a soft kernel
    medgan simulate --subject 7 --thick 4 --kspace 2 --output phantom/     # also low-resolution MR
    medgan simulate --sample-data Resources/SampleData            # the bundled sample, bit for bit

Files: ``sub-<seed>_<name>.nii.gz`` (MR in a.u., CT in HU, masks uint8), ``sub-<seed>.json`` naming each
file's modality, contrast and derivation, with the subject's lesions and options, and ``LICENSE-MNI152.txt``,
the notice of the template everything derives from.

Every option is checked before anything is written, and files are written into a hidden staging folder that
is moved into place only when all of them are done: a bad option, a missing nilearn or a failure on the way
ends with one line on stderr, exit code 2, and nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError, MedGANError

DEFAULTS = {"contrasts": "T1w,T2w,PD,FLAIR,CT", "snr": 30.0, "spacing": 2.0, "lesions": 3}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `medgan simulate` (see the module docstring)."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--subject", type=int, action="append", metavar="SEED",
                       help="subject seed, >= 0 (repeatable); see MedGANLogic.simulate.SPLITS")
    group.add_argument("--split", choices=["train", "val", "test"], help="every subject of a split")
    group.add_argument("--sample-data", dest="sample_data", metavar="DIR",
                       help="regenerate the bundled sample data (Resources/SampleData) in DIR; takes no other option")
    parser.add_argument("--output", metavar="DIR", help="output folder (for --subject/--split)")
    parser.add_argument("--contrasts", help="comma-separated, from T1w,T2w,PD,FLAIR,CT (default: all)")
    parser.add_argument("--dose", type=float, action="append", metavar="FRACTION",
                        help="also a low-dose / full-dose CT pair at this dose fraction in (0, 1] (repeatable)")
    parser.add_argument("--kernel", help="reconstruction kernel of the --dose pairs: ramp (default), shepp-logan, "
                        "cosine, hamming or hann (soft-tissue kernels: the ramp times that window)")
    parser.add_argument("--kernel-cutoff", type=float, dest="kernel_cutoff", metavar="FRACTION",
                        help="the kernel's cutoff, a fraction of the Nyquist frequency in [0.1, 1] (default 1)")
    parser.add_argument("--snr", type=float, help=f"MR signal-to-noise ratio, > 0 (default {DEFAULTS['snr']:g})")
    parser.add_argument("--spacing", type=float, help=f"isotropic voxel size in mm (default {DEFAULTS['spacing']:g})")
    parser.add_argument("--lesions", type=int, help=f"number of lesions, >= 0 (default {DEFAULTS['lesions']})")
    parser.add_argument("--healthy", action="store_true", help="also write the lesion-free twin of each subject")
    parser.add_argument("--thick", type=int, action="append", metavar="FACTOR",
                        help="also thick-slice versions (FACTOR z-slices averaged: 2, 3 or 4; repeatable)")
    parser.add_argument("--kspace", type=int, action="append", metavar="FACTOR",
                        help="also in-plane k-space-truncated versions (FACTOR 2, 3 or 4; repeatable)")


def main(args: argparse.Namespace) -> int:
    """Run `medgan simulate`; 0 on success, 2 (one line on stderr, nothing written) on any error."""
    try:
        return _main(args)
    except (MedGANError, OSError) as exc:
        print(f"medgan simulate: error: {exc}", file=sys.stderr)
        return 2


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """Validated options; raises InputError naming the first problem."""
    from .lowdose import check_kernel
    from .subjects import validate_options

    if args.sample_data:
        given = [f"--{name.replace('_', '-')}" for name in ("output", "contrasts", "dose", "kernel", "kernel_cutoff",
                                                            "snr", "spacing", "lesions", "thick", "kspace")
                 if getattr(args, name, None) is not None]
        if getattr(args, "healthy", False):
            given.append("--healthy")
        if given:
            raise InputError(f"--sample-data makes the fixed sample set and takes no other option; drop "
                             f"{', '.join(given)}.")
        return {}
    opts = {k: getattr(args, k) if getattr(args, k, None) is not None else v for k, v in DEFAULTS.items()}
    contrasts = tuple(c.strip() for c in opts["contrasts"].split(",") if c.strip())
    if not contrasts:
        raise InputError("--contrasts names no contrast; give e.g. --contrasts T1w,T2w.")
    validate_options(contrasts=contrasts, snr=opts["snr"], spacing_mm=opts["spacing"])
    for dose in args.dose or []:
        validate_options(dose=dose)
    if args.dose and "CT" not in contrasts:
        raise InputError("--dose makes low-dose CT from the pseudo-CT; add CT to --contrasts.")
    kernel, cutoff = getattr(args, "kernel", None), getattr(args, "kernel_cutoff", None)
    if (kernel is not None or cutoff is not None) and not args.dose:
        raise InputError("--kernel and --kernel-cutoff set the reconstruction of the low-dose CT pairs; add --dose.")
    recon = {"kernel": kernel or "ramp", "cutoff": 1.0 if cutoff is None else cutoff}
    check_kernel(**recon)
    for name in ("thick", "kspace"):
        for factor in getattr(args, name, None) or []:
            if factor not in (2, 3, 4):
                raise InputError(f"--{name} must be 2, 3 or 4; got {factor}.")
    if opts["lesions"] < 0:
        raise InputError(f"--lesions must be >= 0; got {opts['lesions']}.")
    seeds = list(args.subject or [])
    if any(s < 0 for s in seeds):
        raise InputError(f"subject seeds must be >= 0; got {min(seeds)}.")
    if not args.output:
        raise InputError("--output is required with --subject or --split.")
    return dict(opts, contrasts=contrasts, recon=recon)


def _main(args: argparse.Namespace) -> int:
    from .sample import write_staged
    from .subjects import SPLITS
    from .tissue import template_dir

    opts = _options(args)
    template_dir()  # a missing nilearn is reported before anything is written
    if args.sample_data:
        from .sample import write_sample_data

        for path in write_sample_data(args.sample_data):
            print(path)
        return 0
    out = Path(args.output)
    seeds = SPLITS[args.split] if args.split else args.subject
    for path in write_staged(out, lambda stage: [p for seed in seeds
                                                 for p in write_subject(stage, seed, opts, args)]):
        print(path)
    return 0


def write_subject(folder: Path, seed: int, opts: dict[str, Any], args: argparse.Namespace) -> list[Path]:
    """Write one subject's volumes and its ``sub-<seed>.json`` into ``folder``; returns the paths."""
    from ..io import write_volume
    from .lowdose import low_dose_volume
    from .lowres import kspace_truncate, thick_slices
    from .subjects import make_subject

    contrasts = opts["contrasts"]
    subject = make_subject(seed, spacing_mm=opts["spacing"], n_lesions=opts["lesions"], snr=opts["snr"],
                           contrasts=contrasts)
    items: dict[str, tuple[Any, dict[str, Any]]] = {}

    def add(name: str, volume, **entry: Any) -> None:
        meta = volume.metadata
        entry = {"modality": meta.get("modality"), **({"contrast": meta["contrast"]} if "contrast" in meta else {}),
                 **({"units": meta["units"]} if "units" in meta else {}), **entry}
        items[name] = (volume, entry)

    for name, vol in subject.volumes.items():
        add(name, vol)
    if args.healthy:
        for name, vol in subject.healthy.volumes.items():
            if name != "lesion_mask":
                add(f"{name}_healthy", vol, description="the same subject without lesions")
    for dose in args.dose or []:
        low, full = low_dose_volume(subject.volumes["CT"], dose, seed=seed, **opts["recon"])
        pct = f"{dose * 100:g}".replace(".", "p")
        add(f"CT_dose{pct}", low, dose_fraction=dose, description="low-dose FBP (projection-domain simulation)",
            **opts["recon"])
        add("CT_fulldose", full, dose_fraction=1.0, description="full-dose FBP, same pipeline and seed",
            **opts["recon"])
    for factor in args.thick or []:
        for c in contrasts:
            add(f"{c}_thick{factor}", thick_slices(subject.volumes[c], factor, axis=0),
                description=f"thick slices: {factor} z-slices averaged")
    for factor in args.kspace or []:
        for c in contrasts:
            add(f"{c}_kspace{factor}", kspace_truncate(subject.volumes[c], factor, axes=(1, 2)),
                description=f"in-plane k-space truncation by {factor}")

    written = []
    files = {}
    for name, (vol, entry) in items.items():
        path = write_volume(vol, folder / f"sub-{seed:04d}_{name}.nii.gz")
        written.append(path)
        files[path.name] = entry
    record = {"subject_seed": seed, "spacing_mm": opts["spacing"], "snr": opts["snr"],
              "lesions": subject.lesions, "files": files,
              "source": "MedGAN phantom from the MNI ICBM152 2009a template (see LICENSE-MNI152.txt)"}
    sidecar = folder / f"sub-{seed:04d}.json"
    sidecar.write_text(json.dumps(record, indent=2) + "\n")
    return written + [sidecar]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="medgan simulate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
