"""`make bench`: run every benchmark script here and collect their tables into benchmarks/RESULTS.md.

    python benchmarks/run_all.py [--device auto] [--quick] [--only floor peers ...]

Issue 7's scripts (floor, peers, scaling, memory, warmstart) each write a JSON with a markdown section and their
targets; the older ones (inference, simulate) contribute their printed tables. RESULTS.md starts with the
device, the date, how busy the machine was with other processes during the run (their CPU time over this run's
wall time x cores: timings taken on a loaded machine are not to be trusted) and every target met or missed with
its measured cause. ``--quick`` runs tiny sizes into a temporary folder (``$MEDGAN_BENCH_OUT``, default
/tmp/medgan-bench-quick) to check that the scripts work, and skips simulate.py. ``--only floor warmstart --keep``
re-runs those scripts and keeps every other script's section, targets and wall time from the RESULTS.md already
there, each kept section marked with the date of the run that made it (without ``--keep``, ``--only`` writes
a RESULTS.md of those scripts alone).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ISSUE7 = ["floor", "peers", "scaling", "memory", "warmstart"]
JSON_SCRIPTS = ISSUE7 + ["startup", "adapt"]  # each writes <name>.json with a markdown section and its targets
OLDER = ["inference", "simulate"]
TITLES = {"floor": "Compute floor (floor.py)", "peers": "Peers: naive loop and plain MONAI (peers.py)",
          "scaling": "Scaling with voxels (scaling.py)", "memory": "Memory of a 512x512x400 CT denoise (memory.py)",
          "warmstart": "Warm start (warmstart.py)", "inference": "Engine vs naive on a small conv net (inference.py)",
          "simulate": "Phantom simulation (simulate.py)", "startup": "Start-up of the quick commands (startup.py)",
          "adapt": "Fit to this scan: speed and accuracy against the budget (adapt.py)"}


def cpu_ticks() -> dict[int, int]:
    """utime + stime (clock ticks) of every process now running."""
    ticks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return ticks


def others_busy(before: dict[int, int], after: dict[int, int], wall: float) -> float:
    """Fraction of all cores used by processes other than this one and its children during ``wall`` seconds."""
    me = os.getpid()
    used = sum(t - before.get(pid, 0) for pid, t in after.items() if pid != me)
    return used / os.sysconf("SC_CLK_TCK") / (wall * (os.cpu_count() or 1))


def split_results(text: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """(the run's date line, {script name: its section}, {script name: its row of the wall-time table}) of a
    RESULTS.md written by this script; sections already kept from an earlier run keep their first date."""
    made = next((line for line in text.splitlines() if line.startswith("Made by")), "")
    date = made.split(" on ", 1)[1].split(" UTC", 1)[0] if " on " in made and " UTC" in made else "an earlier run"
    by_title = {title: name for name, title in TITLES.items()}
    sections: dict[str, str] = {}
    last = None
    for chunk in text.split("\n## ")[1:]:
        heading, _, body = chunk.partition("\n")
        title = heading.split(" (kept from ", 1)[0]
        if title in by_title:
            last = by_title[title]
            kept = heading[len(title):] or f" (kept from the run of {date} UTC)"
            sections[last] = f"## {title}{kept}\n{body.rstrip()}\n"
        elif title in ("Targets (issue 7)", "Wall time per script"):  # written anew by every run
            last = None
        elif last is not None:  # a sub-heading of a script's own markdown
            sections[last] = sections[last] + f"\n## {heading}\n{body.rstrip()}\n"
    walls = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].endswith(".py") and cells[0][:-3] in TITLES:
            walls[cells[0][:-3]] = cells
    return date, sections, walls


def targets_table(targets: list[dict]) -> str:
    """RESULTS.md's table of targets: what each measured, whether it was met, and the measured cause of a miss."""
    from common import table

    rows = [{"target": t["target"], "measured": t["value"], "met": "yes" if t["met"] else "NO",
             "gap: measured cause": t.get("cause", "") if not t["met"] else ""} for t in targets]
    return table(rows, ["target", "measured", "met", "gap: measured cause"]) if rows else "(none measured)"


def json_section(name: str, data: dict) -> str:
    """RESULTS.md's section of a script that wrote ``data`` (its JSON) with a markdown part."""
    return f"## {TITLES[name]}\n\n{data['markdown']}\n"


def _text(output: bytes | str | None) -> str:
    """What a timed-out script printed (subprocess gives bytes there, even in text mode)."""
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", default=None,
                        help=f"scripts to run, of {', '.join(JSON_SCRIPTS + OLDER)}")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds each script may run; one that runs longer is stopped and reported as failed "
                             "(for a device lent for minutes)")
    parser.add_argument("--keep", action="store_true",
                        help="with --only: keep the other scripts' sections and targets from the RESULTS.md there")
    args = parser.parse_args()
    if args.keep and args.only is None:
        parser.error("--keep goes with --only (the scripts to re-run)")
    if args.quick:
        os.environ.setdefault("MEDGAN_BENCH_OUT", "/tmp/medgan-bench-quick")
    out = Path(os.environ.get("MEDGAN_BENCH_OUT", HERE))
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    import torch
    from common import device_name, machine

    from MedGANLogic.inference import resolve_device

    device = resolve_device(args.device)
    names = [n for n in JSON_SCRIPTS + OLDER if args.only is None or n in args.only]
    if args.quick and args.only is None:
        names.remove("simulate")
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.perf_counter()
    ticks0 = cpu_ticks()
    sections, targets, walls, status = [], [], [], 0
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py")]
        if name in JSON_SCRIPTS:
            cmd += ["--device", str(device)] + (["--quick"] if args.quick else [])
        elif name == "inference":
            cmd += ["--device", str(device)] + (["--slices", "8", "--repeats", "1"] if args.quick else [])
        print(f"== {name}", flush=True)
        t0, ticks = time.perf_counter(), cpu_ticks()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired as exc:
            proc = subprocess.CompletedProcess(cmd, 124, _text(exc.stdout), _text(exc.stderr) +
                                               f"\nstopped by --timeout after {args.timeout:g} s")
        seconds = time.perf_counter() - t0
        walls.append({"script": f"{name}.py", "seconds": f"{seconds:.1f}", "exit": proc.returncode,
                      "other processes' CPU": f"{100 * others_busy(ticks, cpu_ticks(), seconds):.0f}%"})
        print(proc.stdout, "\n".join(line for line in proc.stderr.splitlines() if "USDT" not in line), sep="\n",
              flush=True)
        status |= proc.returncode
        if proc.returncode:
            sections.append(f"## {TITLES[name]}\n\nFAILED (exit {proc.returncode}):\n\n```\n"
                            f"{proc.stderr.strip()[-2000:]}\n```\n")
            targets.append({"target": f"{name}.py ran", "value": f"exit {proc.returncode}", "met": False,
                            "cause": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""})
        elif name in JSON_SCRIPTS:
            data = json.loads((out / f"{name}.json").read_text())
            sections.append(json_section(name, data))
            targets += data["targets"]
        else:
            body = "\n".join(line for line in proc.stdout.strip().splitlines() if not line.startswith("wrote "))
            sections.append(f"## {TITLES[name]}\n\n```\n{body}\n```\n")
    wall = time.perf_counter() - t_start
    busy = others_busy(ticks0, cpu_ticks(), wall)
    kept_note = ""
    if args.keep and (out / "RESULTS.md").exists():
        _, old_sections, old_walls = split_results((out / "RESULTS.md").read_text())
        order = JSON_SCRIPTS + OLDER
        fresh = dict(zip(names, sections))
        kept = [n for n in order if n not in names and n in old_sections]
        sections = [fresh.get(n) or old_sections[n] for n in order if n in fresh or n in kept]
        for n in kept:
            if n in JSON_SCRIPTS and (out / f"{n}.json").exists():
                targets += json.loads((out / f"{n}.json").read_text())["targets"]
        walls += [dict(zip(["script", "seconds", "exit", "other processes' CPU"], old_walls[n])) for n in kept
                  if n in old_walls]
        kept_note = (f" Re-run now: {', '.join(names)}; the other sections ({', '.join(kept)}) are kept from "
                     f"the RESULTS.md that was here, each marked with its run's date.") if kept else ""

    from common import table

    m = machine()
    gpu = (f"GPU: {device_name(device)}." if device.type == "cuda" else
           "GPU: none. " + ("No CUDA GPU was available to this run, so the CUDA path (bf16 autocast for the models "
                            "whose card allows it, `--device cuda`) has no figures here; rerun `make bench` on a GPU "
                            "machine to add them." if not torch.cuda.is_available() else
                            "A CUDA GPU exists but this run used --device cpu."))
    load = (f"Other processes used {100 * busy:.0f}% of the machine's CPU time during this run"
            + (": the machine was LOADED and absolute timings (and ratios between paths timed at different "
               "moments) are unreliable." if busy > 0.15 else " (the machine was otherwise idle)."))
    quick = " --quick: tiny sizes, figures meaningless" if args.quick else ""
    head = [
        "# MedGAN benchmarks", "",
        f"Made by `make bench` (benchmarks/run_all.py{quick}) on {started.strftime('%Y-%m-%d %H:%M')} UTC "
        f"in {wall / 60:.1f} min. "
        f"Device: {device_name(device)} (torch {m['torch']}, Python {m['python']}). {gpu}{kept_note}", "",
        f"{load} Every ratio is against a baseline measured in the same run.", "",
        "## Targets (issue 7)", "", targets_table(targets), ""]
    tail = ["## Wall time per script", "", table(walls, ["script", "seconds", "exit", "other processes' CPU"]), ""]
    (out / "RESULTS.md").write_text("\n".join(head + sections + tail))
    print(f"wrote {out / 'RESULTS.md'} ({wall:.0f} s; other processes {100 * busy:.0f}% busy)")
    return status


if __name__ == "__main__":
    sys.exit(main())
