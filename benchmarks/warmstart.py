"""Warm start: time from a ``MedGANLogic.run`` call to its first progress callback, first and second call.

    python benchmarks/warmstart.py [--device auto] [--quick] [--models ID ...]

For each installed model, on its standard input volume (256x256x160 MR, 512x512x400 CT, the SR input at its
thick spacing): the network cache is emptied, then ``run`` is called twice; each call is cancelled from its first
progress callback (so no slice is computed) and the time from the call to that callback is kept. The first call
pays for reading and hashing the weights and building the network; the second finds the network in the
process cache (keyed by weights SHA-256 and device), as a second Apply in the Slicer panel does. Each pass of a
run first reports "preparing the input", then does the per-volume work before inference (the input checks, a CT's
body mask, resampling into the model's frame, the intensity normalisation: checks and normalisation timed alone
beside it), then reports its first inference progress; both times are kept (the second: "to the first batch").
Writes warmstart.json.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as bench  # noqa: E402

import MedGANLogic  # noqa: E402
from MedGANLogic.models import registry  # noqa: E402
from MedGANLogic.normalization import normalize  # noqa: E402
from MedGANLogic.pipeline import PREPARING, check_volume  # noqa: E402

TARGET_SECONDS = 1.0


def time_to_first_progress(card, volume, device) -> tuple[float, float]:
    """Seconds from calling run to its first progress callback (the run's "preparing the input"), and to its first
    progress of the inference (after the work on the input, before the first batch); the run is cancelled from the
    first callback and stops before its first batch."""
    stop = threading.Event()
    first: list[float] = []
    batches: list[float] = []

    def progress(fraction: float, message: str) -> None:
        now = time.perf_counter()
        if not first:
            first.append(now)
        if message != PREPARING and not batches:
            batches.append(now)
        stop.set()

    t0 = time.perf_counter()
    try:
        MedGANLogic.run(card.task, volume, model=card.id, device=str(device), progress=progress, cancel=stop,
                        force=True, native=True, **bench.task_inputs(card, volume))
    except MedGANLogic.CancelledError:
        pass
    if not first or not batches:
        raise RuntimeError(f"{card.id}: run returned without calling progress before and at its first batch")
    return first[0] - t0, batches[0] - t0


def best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    args, device = bench.parse(bench.script_parser(__doc__))
    cards = bench.selected_cards(args.models)
    print(f"{bench.device_name(device)}: {len(cards)} model(s)", flush=True)
    volumes: dict = {}
    rows, results = [], []
    for card in cards:
        key = (card.input.get("modality"), card.input.get("contrast"), card.scale_factor)
        if key not in volumes:
            volumes.clear()  # keep one standard volume alive at a time (the CT one is 420 MB)
            volumes[key] = bench.standard_input(card, args.quick)[0]
        volume = volumes[key]
        registry.clear_cache()
        cold = time_to_first_progress(card, volume, device)[0]
        calls = [time_to_first_progress(card, volume, device) for _ in range(2)]
        warm, prepared = min(c[0] for c in calls), min(c[1] for c in calls)
        spec = card.input["normalization"]
        checks = best_of(lambda v=volume: check_volume(v))
        norm = best_of(lambda v=volume, s=spec: normalize(v.array, s))
        results.append({"model": card.id, "shape": list(volume.shape), "cold_s": cold, "warm_s": warm,
                        "to_first_batch_s": prepared, "check_volume_s": checks, "normalize_s": norm})
        rows.append({"model": card.id, "input (z,y,x)": "x".join(map(str, volume.shape)),
                     "first call s": f"{cold:.3f}", "second call s": f"{warm:.3f}",
                     "second call, to the first batch s": f"{prepared:.3f}",
                     "checks s": f"{checks:.3f}", "normalisation s": f"{norm:.3f}",
                     "under 1 s": "yes" if warm < TARGET_SECONDS else "NO"})
        print(f"  {card.id}: cold {cold:.3f} s, warm {warm:.3f} s, to the first batch {prepared:.3f} s", flush=True)
    text = bench.table(rows, list(rows[0])) if rows else "(no model installed)"
    print(text)
    worst = max((r["warm_s"] for r in results), default=float("nan"))
    slow = [r for r in results if r["warm_s"] >= TARGET_SECONDS]
    cause = "; ".join(f"{r['model']}: checks {r['check_volume_s']:.2f} s + normalisation {r['normalize_s']:.2f} s "
                      f"of {r['warm_s']:.2f} s" for r in slow)
    prep = max(results, key=lambda r: r["to_first_batch_s"], default=None)
    measured = f"worst {worst:.3f} s" + (f" (to the first batch: worst {prep['to_first_batch_s']:.2f} s, "
                                         f"{prep['model']})" if prep else "")
    targets = [bench.target("warm start: second run to first progress < 1 s", measured,
                            bool(results) and not slow, cause)]
    md = [f"Device: {bench.device_name(device)}. Second call = best of two. First progress: the run's "
          f"\"{PREPARING}\" (before the work on the input); to the first batch: its first progress of the inference, "
          f"after that work (the CT body mask of ct-to-mr, resampling into the model's frame, normalisation). Checks "
          f"and normalisation timed alone (best of 3) on the same volume.", "", text]
    bench.write_results("warmstart", args, device, targets, md, models=results)


if __name__ == "__main__":
    main()
