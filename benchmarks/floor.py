"""Compute floor: every installed model's arithmetic on the standard volume over this machine's matmul rate.

    python benchmarks/floor.py [--device auto] [--quick] [--models ID ...] [--slices-mr 32] [--slices-ct 16]

For each model found by ``MedGANLogic.models.registry.list_models``:

* FLOPs per output voxel of its whole task, counted with ``torch.utils.flop_counter.FlopCounterMode`` around a
  ``MedGANLogic.run`` call on one slice of the standard input (so work a task adds, such as the f-AnoGAN case
  score's critic passes, counts too; the network alone is reported beside it);
* times the output voxels of the standard volume (256x256x160 MR, 512x512x400 CT, the SR input at its thick
  spacing), over the ``torch.mm`` rate measured in this run in the precision the engine runs the model in
  = the compute floor: what the run would take if every FLOP ran at matmul speed;
* the engine end to end (``MedGANLogic.run``: checks, normalisation, inference, outputs) on the standard volume
  cut to ``--slices-*`` slices along the model's slice axis, its time scaled by full/used slices (the whole
  volume on CUDA), over the floor. Models above 3x get a torch.profiler breakdown of one batch.

Writes floor.json (see common.out_dir) with a markdown section for RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as bench  # noqa: E402

import MedGANLogic  # noqa: E402
from MedGANLogic.models import registry  # noqa: E402

TARGET_RATIO = 3.0


def run_task(card, volume, device: torch.device) -> MedGANLogic.RunResult:
    # native: the standard volume's own grid (1 mm MR, 0.8 mm CT), the work the figures have always measured
    return MedGANLogic.run(card.task, volume, model=card.id, device=str(device), force=True, native=True,
                          **bench.task_inputs(card, volume))


def network_flops_per_voxel(card, plane: tuple[int, int], device: torch.device) -> float:
    """FLOPs of one forward pass of the network alone on one slice of ``plane``, per output voxel."""
    net = registry.load_network(card, device)
    channels = 1 + 2 * card.context_slices
    m = int(getattr(net, "size_multiple", 1))
    padded = tuple(n + (-n) % m for n in plane)
    x = torch.zeros((1, channels) + padded, device=device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        y = net(x)
    return counter.get_total_flops() / float(np.prod(y.shape[2:]))


def measure_model(card, device: torch.device, rates: dict[str, float], args: argparse.Namespace) -> dict:
    precision = bench.card_precision(card, device)
    rate = rates[precision]
    shape = bench.standard_input_shape(card, args.quick)
    axis = card.slice_axis
    plane = tuple(n for a, n in enumerate(shape) if a != axis)
    out_voxels_full = float(np.prod(shape)) * float(np.prod(card.scale_factor))

    one, full_slices = bench.standard_input(card, args.quick, slices=1)
    run_task(card, one, device)  # loads and caches the network; not counted
    with FlopCounterMode(display=False) as counter:
        res = run_task(card, one, device)
    task_fpv = counter.get_total_flops() / float(np.prod(res.volume.shape))
    net_fpv = network_flops_per_voxel(card, plane, device)
    floor_s = task_fpv * out_voxels_full / rate

    want = None if (device.type == "cuda" and not args.quick) else (
        args.slices_ct if card.input.get("modality") == "CT" else args.slices_mr)
    vol, _ = bench.standard_input(card, args.quick, slices=want, seed=1)
    used = vol.shape[axis]
    warm, _ = bench.standard_input(card, args.quick, slices=min(2, used), seed=2)
    run_task(card, warm, device)  # kernel selection for this plane size
    best = float("inf")
    batch = None
    for _ in range(args.repeats):
        bench.sync(device)
        t0 = time.perf_counter()
        res = run_task(card, vol, device)
        bench.sync(device)
        best = min(best, time.perf_counter() - t0)
        batch = res.provenance["batch_size"]
    measured_full = best * full_slices / used
    ratio = measured_full / floor_s
    row = {"model": card.id, "task": card.task, "layout": f"{card.dims} axis {axis}" +
           (f" ctx {card.context_slices}" if card.context_slices else ""),
           "input (z,y,x)": "x".join(map(str, shape)), "kFLOP/voxel (task)": f"{task_fpv / 1e3:.1f}",
           "kFLOP/voxel (net)": f"{net_fpv / 1e3:.1f}", "precision": precision, "floor s": f"{floor_s:.2f}",
           "measured s": f"{measured_full:.2f}" + (f" ({used}/{full_slices} sl.)" if used < full_slices else ""),
           "batch": batch, "measured / floor": f"{ratio:.2f}", "within 3x": "yes" if ratio <= TARGET_RATIO else "NO"}
    info = {"row": row, "ratio": ratio, "floor_s": floor_s, "precision": precision, "rate_flops": rate,
            "measured_full_s": measured_full,
            "measured_s": best, "slices_used": used, "slices_full": full_slices,
            "task_flops_per_voxel": task_fpv, "net_flops_per_voxel": net_fpv, "output_voxels": out_voxels_full}
    if ratio > TARGET_RATIO:
        few, _ = bench.standard_input(card, args.quick, slices=max(1, min(used, batch or 1)), seed=3)
        info["profile"] = bench.profile_top_ops(lambda: run_task(card, few, device), rate)
    print(f"  {card.id}: floor {floor_s:.2f} s, measured {measured_full:.2f} s ({ratio:.2f}x)", flush=True)
    return info


def main() -> None:
    parser = bench.script_parser(__doc__)
    parser.add_argument("--slices-mr", type=int, default=32, help="slices of an MR standard input timed on CPU")
    parser.add_argument("--slices-ct", type=int, default=16, help="slices of the CT standard input timed on CPU")
    parser.add_argument("--repeats", type=int, default=2)
    args, device = bench.parse(parser, quick={"slices_mr": 4, "slices_ct": 2, "repeats": 1})
    rates = bench.precision_rates(device)
    cards = bench.selected_cards(args.models)
    print(f"{bench.device_name(device)}: {bench.describe_rates(rates)}; {len(cards)} model(s)", flush=True)
    results = [measure_model(card, device, rates, args) for card in cards]
    rows = [r["row"] for r in results]
    text = bench.table(rows, list(rows[0])) if rows else "(no model installed)"
    print(text)

    missed = [r for r in results if r["ratio"] > TARGET_RATIO]
    causes = []
    for r in missed:
        causes.append(f"{r['row']['model']}: {bench.describe_ops(r['profile'])}")
    worst = max((r["ratio"] for r in results), default=float("nan"))
    targets = [bench.target("floor: every task within 3x of its compute floor",
                      f"worst {worst:.2f}x over {len(results)} model(s)", not missed and bool(results),
                      "; ".join(causes))]
    md = [f"Device: {bench.device_name(device)}. Matmul rates measured in this run: **{bench.describe_rates(rates)}**. "
          f"Floor = FLOPs per output voxel (FlopCounterMode on one slice, the whole task) x output voxels of the "
          f"standard volume / the rate of the precision the engine runs that model in by default (bf16 where its "
          f"card allows it and the device has it natively, else fp32). Measured = MedGANLogic.run end to end"
          + (" on the slices shown, scaled to the full volume (best of "
             f"{args.repeats})." if device.type != "cuda" else " on the full standard volume."), "", text]
    if missed:
        md += ["", "Where the time goes in the models above 3x (torch.profiler self times over one batch run end to "
               "end; the convolutions' rate is the FLOPs counted for that run over their kernels' time):", ""]
        for r in missed:
            md.append(f"- **{r['row']['model']}**: " + bench.describe_ops(r["profile"], 6))
    bench.write_results("floor", args, device, targets, md, rates_flops=rates, models=results)


if __name__ == "__main__":
    main()
