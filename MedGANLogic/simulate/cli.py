"""`medgan simulate`: write phantom subjects, low-dose CT and low-resolution MR, or regenerate the sample data.

    medgan simulate --subject 7 --output phantom/            # every contrast + lesion mask of subject 7
    medgan simulate --split test --contrasts T1w,T2w --output phantom/
    medgan simulate --subject 7 --dose 0.1 --output phantom/  # also a 10 %-dose CT
    medgan simulate --sample-data Resources/SampleData        # the bundled sample, bit for bit

Everything is checked before anything is written; a bad option ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import MedGANError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--subject", type=int, action="append", help="subject seed (repeatable)")
    group.add_argument("--split", choices=["train", "val", "test"], help="every subject of a split")
    group.add_argument("--sample-data", dest="sample_data", help="regenerate the bundled sample data in this folder")
    parser.add_argument("--output", help="output folder (for --subject/--split)")
    parser.add_argument("--contrasts", default="T1w,T2w,PD,FLAIR,CT", help="comma-separated: T1w,T2w,PD,FLAIR,CT")
    parser.add_argument("--dose", type=float, action="append", help="also a low-dose CT at this fraction (0, 1]")
    parser.add_argument("--snr", type=float, default=30.0, help="MR signal-to-noise ratio (default 30)")
    parser.add_argument("--spacing", type=float, default=2.0, help="isotropic voxel size in mm (default 2)")
    parser.add_argument("--lesions", type=int, default=3, help="number of lesions (0 for none)")
    parser.add_argument("--healthy", action="store_true", help="also write the lesion-free twin of each subject")
    parser.add_argument("--thick", type=int, action="append", help="also thick-slice versions (factor 2 or 4)")


def main(args: argparse.Namespace) -> int:
    try:
        return _main(args)
    except MedGANError as exc:
        print(f"medgan simulate: error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    from .subjects import SPLITS, validate_options

    contrasts = tuple(c.strip() for c in args.contrasts.split(",") if c.strip())
    validate_options(contrasts=contrasts, snr=args.snr, spacing_mm=args.spacing)
    for dose in args.dose or []:
        validate_options(dose=dose)
    for factor in args.thick or []:
        if factor not in (2, 3, 4):
            raise MedGANError(f"--thick must be 2, 3 or 4; got {factor}.")
    from .tissue import template_dir

    template_dir()  # a missing nilearn is reported before anything is written
    if args.sample_data:
        from .sample import write_sample_data

        for path in write_sample_data(args.sample_data):
            print(path)
        return 0
    if not args.output:
        raise MedGANError("--output is required with --subject or --split.")
    out = Path(args.output)
    seeds = SPLITS[args.split] if args.split else args.subject
    out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for path in write_subject(out, seed, contrasts, args):
            print(path)
    return 0


def write_subject(out: Path, seed: int, contrasts: tuple[str, ...], args: argparse.Namespace) -> list[Path]:
    from ..io import write_volume
    from .lowdose import low_dose_volume
    from .lowres import thick_slices
    from .subjects import make_subject

    subject = make_subject(seed, spacing_mm=args.spacing, n_lesions=args.lesions, snr=args.snr,
                           contrasts=contrasts)
    items = dict(subject.volumes)
    if args.healthy and subject.healthy is not None:
        items.update({f"{k}_healthy": v for k, v in subject.healthy.volumes.items() if k != "lesion_mask"})
    if args.dose and "CT" in subject.volumes:
        for dose in args.dose:
            items[f"CT_dose{round(dose * 100)}"] = low_dose_volume(subject.volumes["CT"], dose, seed=seed)[0]
    for factor in args.thick or []:
        for c in contrasts:
            if c != "CT":
                items[f"{c}_thick{factor}"] = thick_slices(subject.volumes[c], factor, axis=0)
    written = []
    try:
        for name, vol in items.items():
            written.append(write_volume(vol, out / f"sub-{seed:04d}_{name}.nii.gz"))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="medgan simulate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
