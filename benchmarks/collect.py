"""Write RESULTS.md from the JSON files that measuring scripts left in a folder, without running anything.

    python benchmarks/collect.py FOLDER [--note TEXT]

For a device lent for minutes: when ``run_all.py`` was stopped before it wrote RESULTS.md, the JSON of every
script that finished is still there (each holds its markdown, its targets and the machine it ran on). Scripts
without a JSON in FOLDER are listed as not measured; ``--note`` adds what the person collecting knows of why.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_all import JSON_SCRIPTS, json_section, targets_table  # noqa: E402


def collect(folder: Path, note: str = "") -> str:
    found = {name: json.loads((folder / f"{name}.json").read_text()) for name in JSON_SCRIPTS
             if (folder / f"{name}.json").is_file()}
    if not found:
        raise SystemExit(f"no benchmark JSON in {folder}")
    machine = next(iter(found.values()))["machine"]
    device = next((d["device_name"] for d in found.values() if d.get("device_name")), machine.get("cuda") or "CPU")
    missing = [n for n in JSON_SCRIPTS if n not in found]
    head = ["# MedGAN benchmarks", "",
            f"Collected by `benchmarks/collect.py` from the JSON files of {', '.join(found)}. Device: {device} "
            f"(torch {machine['torch']}, Python {machine['python']}, {machine['cpu_count']} CPU cores: "
            f"{machine['cpu']}). Not measured here: {', '.join(missing) or 'none'}." + (f" {note}" if note else ""),
            "", "## Targets (issue 7)", "", targets_table([t for d in found.values() for t in d["targets"]]), ""]
    return "\n".join(head + [json_section(n, d) for n, d in found.items()])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    (args.folder / "RESULTS.md").write_text(collect(args.folder, args.note))
    print(f"wrote {args.folder / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
