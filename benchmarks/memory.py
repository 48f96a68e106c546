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

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    STANDARD_SHAPES,
    add_common_args,
    card_precision,
    device_name,
    precision_rates,
    rss_bytes,
    save,
    selected_cards,
    sync,
    synthetic_volume,
    table,
    target,
    trim_memory,
)

import MedGANLogic  # noqa: E402
from MedGANLogic.inference import resolve_device  # noqa: E402
from MedGANLogic.models import build_network, registry  # noqa: E402

TARGET_MULTIPLE = 3.0
RECIPE = Path(MedGANLogic.__file__).resolve().parent / "train" / "recipes" / "ldct-denoise.yaml"
PHASES = ("checks + normalisation", "inference", "outputs")


def denoise_model(name: str, workdir: Path) -> tuple[str, str]:
    """(model id or folder for MedGANLogic.run, description): the installed model, else random weights."""
    installed = {c.id for c in selected_cards()}
    if name in installed:
        return name, f"{name} (installed weights)"
    recipe = yaml.safe_load(RECIPE.read_text())
    export = recipe["export"][0]["card"]
    torch.manual_seed(0)
    net = build_network(recipe["generator"]["name"], recipe["generator"]["params"])
    card = dict(export, id=f"{export['id']}-random",
                architecture={"name": recipe["generator"]["name"], "params": recipe["generator"]["params"]})
    folder = workdir / card["id"]
    registry.save_model(folder, card, net.state_dict(), dtype=torch.float32)
    return str(folder), f"{recipe['generator']['name']} from {RECIPE.name} with random weights ({name} not installed)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--model", default="ldct-denoise")
    args = parser.parse_args()
    device = resolve_device(args.device)
    shape = (100, 128, 128) if args.quick else STANDARD_SHAPES["CT"]
    with tempfile.TemporaryDirectory() as tmp:
        model, described = denoise_model(args.model, Path(tmp))
        rates = precision_rates(device)
        installed = {c.id: c for c in selected_cards()}
        rate_kind = card_precision(installed[model], device) if model in installed else "fp32"
        rate = rates[rate_kind]
        rate_kind += " torch.mm"
        print(f"{device_name(device)}: {described}; {rate_kind} {rate / 1e9:.1f} GFLOP/s", flush=True)

        one = synthetic_volume((1,) + shape[1:], "CT", seed=2)
        MedGANLogic.run("denoise", synthetic_volume((2,) + shape[1:], "CT", seed=1), model=model,
                        device=str(device))  # loads the network, selects kernels for this plane
        with FlopCounterMode(display=False) as counter:
            MedGANLogic.run("denoise", one, model=model, device=str(device))
        floor_s = counter.get_total_flops() * shape[0] / rate

        volume = synthetic_volume(shape, "CT")
        volume_bytes = volume.array.nbytes
        del one
        trim_memory()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        base = rss_bytes()
        phase = [0]
        peaks = [base] * len(PHASES)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peaks[phase[0]] = max(peaks[phase[0]], rss_bytes())
                time.sleep(0.002)

        def progress(fraction: float, message: str) -> None:
            peaks[phase[0]] = max(peaks[phase[0]], rss_bytes())
            phase[0] = 2 if fraction >= 1.0 else 1

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sync(device)
        t0 = time.perf_counter()
        result = MedGANLogic.run("denoise", volume, model=model, device=str(device), progress=progress)
        sync(device)
        seconds = time.perf_counter() - t0
        peaks[phase[0]] = max(peaks[phase[0]], rss_bytes())
        stop.set()
        sampler.join()
        held = rss_bytes() - base
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
    text = table(rows, ["phase", "peak extra MB", "x volume"])
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
    targets = [target("memory: peak extra <= 3x the CT volume's float32 size", f"{multiple:.2f}x",
                      multiple <= TARGET_MULTIPLE, cause)]
    md = [f"Device: {device_name(device)}. {summary}. The output image (float32, {out_bytes / 1e6:.0f} MB = 1x) is "
          f"part of the peak: it is what the run returns.", "", text]
    payload = {"device": str(device), "device_name": device_name(device), "model": described, "quick": args.quick,
               "shape": list(shape), "volume_bytes": volume_bytes, "peak_extra_bytes": peak, "multiple": multiple,
               "phases": dict(zip(PHASES, extra)), "held_after_bytes": held, "seconds": seconds, "floor_s": floor_s,
               "rate_flops": rate, "cuda_peak_bytes": cuda_peak, "targets": targets, "markdown": "\n".join(md)}
    print(f"wrote {save('memory', payload)}")


if __name__ == "__main__":
    main()
