"""``python -m MedGANLogic.evaluation --report Testing/Reports [--subjects N] [--device cpu]
[--sections a,b [--update | --merge OTHER/evaluation.json]]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .report import ReportError, evaluate, merge_sections
from .sections import SECTIONS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m MedGANLogic.evaluation",
        description="``make eval``: the shipped models against simple baselines on the phantom's held-out test "
                    "subjects.")
    parser.add_argument("--report", default="Testing/Reports", help="output folder (default Testing/Reports)")
    parser.add_argument("--subjects", type=int, help="use only the first N test subjects (default: all)")
    parser.add_argument("--sections", help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    parser.add_argument("--update", action="store_true",
                        help="with --sections: run only those and keep the report's other sections as they are")
    parser.add_argument("--merge", metavar="EVALUATION_JSON",
                        help="with --sections: take those sections (and their panels) from another report's "
                             "evaluation.json instead of running them; keep the others")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if (args.update or args.merge) and not args.sections:
        parser.error("--update and --merge need --sections (the sections to run again or to take)")
    try:
        if args.merge:
            data = merge_sections(args.report, args.merge, args.sections.split(","))
        else:
            data = evaluate(args.report, subjects=args.subjects, device=args.device, update=args.update,
                            sections=args.sections.split(",") if args.sections else None)
    except ReportError as exc:  # an unknown section, a broken report: one line, nothing written
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(f"{data['targets_met']}/{data['targets_total']} targets met; report: {Path(args.report) / 'evaluation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
