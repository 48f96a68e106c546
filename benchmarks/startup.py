"""Start-up: wall time of the quick `medgan` commands, as a ratio against `python -c pass` run alongside.

    python benchmarks/startup.py [--quick] [--repeats 7]

Each command runs as a fresh process (``python -m MedGANLogic.cli ...``, the checkout on ``PYTHONPATH``), in
interleaved rounds with ``python -c pass`` (the interpreter's own start-up) and ``python -c "import torch"`` (what
a command pays if it imports torch); the figure per command is the median over the rounds. A second run of each
command reports which heavy packages it imported (torch, monai). Writes startup.json.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import common as bench  # noqa: E402

TARGET_SECONDS = 1.0
SAMPLE = REPO / "Resources" / "SampleData" / "sample_T1w.nrrd"
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    'python -c "import torch"': ["-c", "import torch"],
    "medgan --help": ["-m", "MedGANLogic.cli", "--help"],
    "medgan models": ["-m", "MedGANLogic.cli", "models"],
    "medgan info sample_T1w.nrrd": ["-m", "MedGANLogic.cli", "info", str(SAMPLE)],
}
QUICK = ("medgan --help", "medgan models", "medgan info sample_T1w.nrrd")  # the commands the target is about
# Runs `medgan ARGS` in-process, then says which heavy packages it imported.
PROBE = ("import sys; from MedGANLogic.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
         "print('IMPORTED', *[m for m in ('torch', 'monai') if m in sys.modules])")


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def wall_time(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return seconds


def heavy_imports(args: list[str], env: dict[str, str]) -> str:
    if args[:2] != ["-m", "MedGANLogic.cli"]:
        return ""
    proc = subprocess.run([sys.executable, "-c", PROBE, *args[2:]], cwd=REPO, env=env, capture_output=True,
                          text=True)
    line = next((s for s in proc.stdout.splitlines() if s.startswith("IMPORTED")), "IMPORTED ?")
    return ", ".join(line.split()[1:]) or "none"


def main() -> None:
    parser = bench.script_parser(__doc__)  # --device and --models do not apply: start-up runs no model
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (default 7; --quick: 2)")
    args, device = bench.parse(parser, quick={"repeats": 2})
    env = environment()
    rounds = args.repeats
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for cmd in COMMANDS.values():  # warm the file cache once, untimed
        wall_time(cmd, env)
    loads = [bench.load_average()]
    for _ in range(rounds):
        for name, cmd in COMMANDS.items():
            times[name].append(wall_time(cmd, env))
        loads.append(bench.load_average())
    load, cores = statistics.mean(loads), os.cpu_count() or 1
    busy = (f"The machine was LOADED (1-minute load average {load:.1f} on {cores} cores): every process started "
            f"slowly, so the seconds are inflated; the ratios hold better." if load > 0.75 * cores else
            f"1-minute load average {load:.1f} on {cores} cores.")
    base = statistics.median(times["python -c pass"])
    rows, results = [], []
    for name, cmd in COMMANDS.items():
        median = statistics.median(times[name])
        imported = heavy_imports(cmd, env)
        results.append({"command": name, "median_s": median, "all_s": times[name], "ratio": median / base,
                        "imports": imported})
        rows.append({"command": name, "median s": f"{median:.3f}", "x python -c pass": f"{median / base:.1f}",
                     "imports torch/monai": imported or "-"})
        print(f"  {name}: {median:.3f} s ({median / base:.1f}x)", flush=True)
    text = bench.table(rows, list(rows[0]))
    print(text)
    quick = [r for r in results if r["command"] in QUICK]
    worst = max(quick, key=lambda r: r["median_s"])
    slow = [r for r in quick if r["median_s"] >= TARGET_SECONDS]
    cause = "; ".join(f"{r['command']} {r['median_s']:.2f} s, imports {r['imports']}" for r in slow)
    if slow and load > 0.75 * cores:
        cause += f" (load average {load:.1f} on {cores} cores: python -c pass took {base:.2f} s)"
    targets = [bench.target("start-up: medgan --help, models, info < 1 s", f"worst {worst['median_s']:.3f} s "
                      f"({worst['command']}, {worst['ratio']:.1f}x python -c pass)", not slow, cause)]
    md = [f"Median of {rounds} interleaved rounds, each command a fresh process; `python -c pass` "
          f"{base:.3f} s in the same rounds. {busy}", "", text]
    bench.write_results("startup", args, device, targets, md, rounds=rounds, load_average=load, commands=results)


if __name__ == "__main__":
    main()
