"""Memory: peak resident memory above the process baseline for a 512x512x400 CT denoise, per volume size.

    python benchmarks/memory.py [--device auto] [--quick] [--model ldct-denoise]

The model is ``ldct-denoise`` when installed; otherwise the same architecture built with random weights from its
recipe (MedGANLogic/train/recipes/ldct-denoise.yaml) in a temporary model folder (the table says which): memory
and speed do not depend on the weights' values. The input is a synthetic 512x512x400 float32 CT volume in HU.

Baseline: after the input volume exists and a two-slice warm-up run has loaded the network, with freed heap
handed back to the OS. Resident memory is sampled every 2 ms and its peak kept per phase of the run: checks and
normalisation (until the first progress call), inference (until the last), outputs (denormalisation, Volume).
The target is a peak of at most 3x the volume's float32 size. The same run's time is compared with its compute
floor (FLOPs counted on one slice x slices / the fp32 or bf16 ``torch.mm`` rate of this run). Writes memory.json.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as bench  # noqa: E402

import MedGANLogic  # noqa: E402
from MedGANLogic.models import build_network, registry  # noqa: E402

TARGET_MULTIPLE = 3.0
RECIPE = Path(MedGANLogic.__file__).resolve().parent / "train" / "recipes" / "ldct-denoise.yaml"
PHASES = ("checks + normalisation", "inference", "outputs")


def denoise_model(name: str, workdir: Path) -> tuple[str, str, Any]:
    """(model id or folder for MedGANLogic.run, description, installed card or None): the installed model, else
    random weights."""
    installed = {c.id: c for c in bench.selected_cards()}
    if name in installed:
        return name, f"{name} (installed weights)", installed[name]
    recipe = yaml.safe_load(RECIPE.read_text())
    export = recipe["export"][0]["card"]
    torch.manual_seed(0)
    net = build_network(recipe["generator"]["name"], recipe["generator"]["params"])
    card = dict(export, id=f"{export['id']}-random",
                architecture={"name": recipe["generator"]["name"], "params": recipe["generator"]["params"]})
    folder = workdir / card["id"]
    registry.save_model(folder, card, net.state_dict(), dtype=torch.float32)
    described = f"{recipe['generator']['name']} from {RECIPE.name} with random weights ({name} not installed)"
    return str(folder), described, None


def main() -> None:
    parser = bench.script_parser(__doc__)
    parser.add_argument("--model", default="ldct-denoise")
    args, device = bench.parse(parser)
    shape = (100, 128, 128) if args.quick else bench.STANDARD_SHAPES["CT"]
    with tempfile.TemporaryDirectory() as tmp:
        model, described, card = denoise_model(args.model, Path(tmp))
        rates = bench.precision_rates(device)
        rate_kind = bench.card_precision(card, device) if card is not None else "fp32"
        rate = rates[rate_kind]
        rate_kind += " torch.mm"
        print(f"{bench.device_name(device)}: {described}; {rate_kind} {rate / 1e9:.1f} GFLOP/s", flush=True)

        one = bench.synthetic_volume((1,) + shape[1:], "CT", seed=2)
        MedGANLogic.run("denoise", bench.synthetic_volume((2,) + shape[1:], "CT", seed=1), model=model,
                        device=str(device))  # loads the network, selects kernels for this plane
        with FlopCounterMode(display=False) as counter:
            MedGANLogic.run("denoise", one, model=model, device=str(device))
        floor_s = counter.get_total_flops() * shape[0] / rate

        volume = bench.synthetic_volume(shape, "CT")
        volume_bytes = volume.array.nbytes
        del one
        bench.trim_memory()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        base = bench.rss_bytes()
        phase = [0]
        peaks = [base] * len(PHASES)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peaks[phase[0]] = max(peaks[phase[0]], bench.rss_bytes())
                time.sleep(0.002)

        def progress(fraction: float, message: str) -> None:
            peaks[phase[0]] = max(peaks[phase[0]], bench.rss_bytes())
            phase[0] = 2 if fraction >= 1.0 else 1

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        bench.sync(device)
        t0 = time.perf_counter()
        result = MedGANLogic.run("denoise", volume, model=model, device=str(device), progress=progress)
        bench.sync(device)
        seconds = time.perf_counter() - t0
        peaks[phase[0]] = max(peaks[phase[0]], bench.rss_bytes())
        stop.set()
        sampler.join()
        held = bench.rss_bytes() - base
        out_bytes = result.volume.array.nbytes
        cuda_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        del result

    extra = [p - base for p in peaks]
    peak = max(extra)
    multiple = peak / volume_bytes
    rows = [{"phase": name, "peak extra MB": f"{e / 1e6:.0f}", "x volume": f"{e / volume_bytes:.2f}"}
            for name, e in zip(PHASES, extra)]
    rows.append({"phase": "whole run (peak)", "peak extra MB": f"{peak / 1e6:.0f}", "x volume": f"{multiple:.2f}"})
    rows.append({"phase": "after return (output Volume held)", "peak extra MB": f"{held / 1e6:.0f}",
                 "x volume": f"{held / volume_bytes:.2f}"})
    text = bench.table(rows, ["phase", "peak extra MB", "x volume"])
    summary = (f"{'x'.join(map(str, shape[::-1]))} (x*y*z) CT, float32 {volume_bytes / 1e6:.0f} MB; model "
               f"{described}; {seconds:.1f} s end to end = {seconds / floor_s:.2f}x its compute floor "
               f"({floor_s:.1f} s at {rate / 1e9:.1f} GFLOP/s {rate_kind})"
               + (f"; CUDA peak allocated {cuda_peak / 1e6:.0f} MB" if cuda_peak is not None else ""))
    print(summary)
    print(text)
    cause = ""
    if multiple > TARGET_MULTIPLE:
        worst = PHASES[int(np.argmax(extra))]
        cause = f"the peak is in '{worst}'"
    targets = [bench.target("memory: peak extra <= 3x the CT volume's float32 size", f"{multiple:.2f}x",
                      multiple <= TARGET_MULTIPLE, cause)]
    md = [f"Device: {bench.device_name(device)}. {summary}. The output image (float32, {out_bytes / 1e6:.0f} MB = 1x) "
          f"is part of the peak: it is what the run returns.", "", text]
    bench.write_results("memory", args, device, targets, md, model=described, shape=list(shape),
                        volume_bytes=volume_bytes, peak_extra_bytes=peak, multiple=multiple,
                        phases=dict(zip(PHASES, extra)), held_after_bytes=held, seconds=seconds, floor_s=floor_s,
                        rate_flops=rate, cuda_peak_bytes=cuda_peak)


if __name__ == "__main__":
    main()
