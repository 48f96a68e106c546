"""`make bench`: run every benchmark script here and collect their tables into benchmarks/RESULTS.md."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["inference.py", "simulate.py"]


def main() -> int:
    sys.path.insert(0, str(HERE))
    from common import machine

    parts = [f"# MedGAN benchmarks\n\nMade by `make bench` on {datetime.date.today().isoformat()}; machine: "
             f"`{machine()}`.\nEvery figure is a ratio against a baseline measured in the same run.\n"]
    status = 0
    for name in SCRIPTS:
        script = HERE / name
        if not script.exists():
            continue
        print(f"== {name}", flush=True)
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        print(proc.stdout, proc.stderr, sep="\n")
        status |= proc.returncode
        parts.append(f"## {name}\n\n```\n{proc.stdout.strip()}\n```\n" if proc.returncode == 0 else
                     f"## {name}\n\nFAILED (exit {proc.returncode}):\n\n```\n{proc.stderr.strip()[-2000:]}\n```\n")
    (HERE / "RESULTS.md").write_text("\n".join(parts))
    print(f"wrote {HERE / 'RESULTS.md'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
