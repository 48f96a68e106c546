"""Scaling: time and peak memory of one task at 1x, 2x and 4x the voxels; the fitted exponents.

    python benchmarks/scaling.py [--device auto] [--quick] [--model mr-t1-to-t2]

Two series through ``MedGANLogic.run`` end to end, starting from 40 slices of the standard 256x256 MR plane:
more slices (40, 80, 160 = the whole standard volume) and larger slices (256x256, 256x512, 512x512; 40
slices). Each point: a warm-up on two slices of the same plane (kernel selection), then a timed run with its
peak resident memory above the baseline (input volume allocated, freed heap returned to the OS); ``--repeats``
interleaved rounds over all points, the best time of each kept. The
exponent b of time ~ voxels^b is a least-squares fit in log-log; linear is 1. Every run is one plane
(``planes=False``): a 1 mm isotropic whole head (the 160-slice point) would otherwise run a model whose card asks for
it in three planes and average them (three times the slices through the network, 2026-12-07: exponent 1.79), so the
series would compare different work, not the engine's scaling. Writes scaling.json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as bench  # noqa: E402

import MedGANLogic  # noqa: E402

TARGET_EXPONENT = 1.1


def pick_model(name: str | None):
    cards = bench.selected_cards([name] if name else None)
    if name:
        return cards[0]
    fits = [c for c in cards if c.dims == "2d" and c.input.get("modality") == "MR" and c.task == "synthesize"]
    fits = fits or [c for c in cards if c.dims != "3d" and c.input.get("modality") == "MR"] or cards
    if not fits:
        raise SystemExit("No model installed.")
    preferred = [c for c in fits if c.id == "mr-t1-to-t2"]
    return (preferred or fits)[0]


def time_point(card, shape: tuple[int, int, int], device: torch.device) -> dict:
    contrast = card.input.get("contrast")
    warm = bench.synthetic_volume((2,) + shape[1:], "MR", contrast, seed=1)
    MedGANLogic.run(card.task, warm, model=card.id, device=str(device), force=True, native=True, planes=False)
    vol = bench.synthetic_volume(shape, "MR", contrast)
    del warm
    bench.trim_memory()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with bench.peak_rss() as mem:
        bench.sync(device)
        t0 = time.perf_counter()
        MedGANLogic.run(card.task, vol, model=card.id, device=str(device), force=True, native=True, planes=False)
        bench.sync(device)
        seconds = time.perf_counter() - t0
    point = {"shape": list(shape), "voxels": int(np.prod(shape)), "seconds": seconds,
             "peak_extra_bytes": mem["peak_extra"], "volume_bytes": vol.array.nbytes}
    if device.type == "cuda":
        point["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device)
    print(f"  {shape}: {seconds:.2f} s, peak extra {mem['peak_extra'] / 1e6:.0f} MB", flush=True)
    return point


def exponent(points: list[dict], key: str) -> float:
    v = np.log([p["voxels"] for p in points])
    y = np.log([max(float(p[key]), 1e-9) for p in points])
    return float(np.polyfit(v, y, 1)[0])


def main() -> None:
    parser = bench.script_parser(__doc__)
    parser.add_argument("--model", default=None, help="model id (default: mr-t1-to-t2 or the first MR model)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best time of each point")
    args, device = bench.parse(parser, quick={"repeats": 1})
    card = pick_model(args.model or (args.models[0] if args.models else None))
    z, n = (4, 64) if args.quick else (40, 256)
    series = {"slices": [(z, n, n), (2 * z, n, n), (4 * z, n, n)],
              "in-plane": [(z, n, n), (z, n, 2 * n), (z, 2 * n, 2 * n)]}
    print(f"{bench.device_name(device)}: {card.id} ({card.task})", flush=True)
    # Interleaved rounds (every shape once per round, best time kept): a drift in the machine's speed during the
    # run (a shared VM's clock varies by +-10 % from minute to minute) then touches every point alike.
    shapes = list(dict.fromkeys(shape for series_shapes in series.values() for shape in series_shapes))
    timed: dict[tuple, dict] = {}
    for _ in range(args.repeats):
        for shape in shapes:
            p = time_point(card, shape, device)
            if shape in timed:
                p["seconds"] = min(p["seconds"], timed[shape]["seconds"])
                p["peak_extra_bytes"] = max(p["peak_extra_bytes"], timed[shape]["peak_extra_bytes"])
            timed[shape] = p
    results, rows = {}, []
    for name, series_shapes in series.items():
        points = [timed[shape] for shape in series_shapes]
        b_time, b_mem = exponent(points, "seconds"), exponent(points, "peak_extra_bytes")
        results[name] = {"points": points, "time_exponent": b_time, "memory_exponent": b_mem}
        for factor, p in zip((1, 2, 4), points):
            rows.append({"series": name, "voxels": f"{factor}x", "shape (z,y,x)": "x".join(map(str, p["shape"])),
                         "seconds": f"{p['seconds']:.2f}", "s / Mvoxel": f"{p['seconds'] / p['voxels'] * 1e6:.3f}",
                         "peak extra MB": f"{p['peak_extra_bytes'] / 1e6:.0f}",
                         "peak / volume": f"{p['peak_extra_bytes'] / p['volume_bytes']:.2f}",
                         "time exponent": f"{b_time:.3f}" if factor == 4 else "",
                         "memory exponent": f"{b_mem:.3f}" if factor == 4 else ""})
    text = bench.table(rows, list(rows[0]))
    print(text)
    worst = max(r["time_exponent"] for r in results.values())
    targets = [bench.target("scaling: time grows linearly with voxels (exponent <= 1.1)",
                      ", ".join(f"{k} {v['time_exponent']:.3f}" for k, v in results.items()),
                      worst <= TARGET_EXPONENT)]
    md = [f"Device: {bench.device_name(device)}; model {card.id} ({card.task}, {card.dims}); MedGANLogic.run end to "
          f"end, best of {args.repeats} interleaved rounds per point, each after a warm-up on the same plane; "
          f"exponents fitted in log-log over the three points of each series.", "", text]
    bench.write_results("scaling", args, device, targets, md, model=card.id, series=results)


if __name__ == "__main__":
    main()
