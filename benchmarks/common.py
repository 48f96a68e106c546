"""What the benchmark scripts share: their set-up (command line, device), wall time, peak resident memory, tables,
JSON, and the naive slice loop they time the engine against.

A script starts with::

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common as bench

    parser = bench.script_parser(__doc__)           # --device, --quick, --models
    args, device = bench.parse(parser, quick={"repeats": 1})

Every figure a benchmark reports is a ratio against a baseline measured in the same process, so a busy or
slow machine still gives a comparison that can be trusted. Nothing here is used by the tests; the naive loop
is the tests' own reference (``Testing/Python/reference.py``), so the baseline timed is the one checked.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from MedGANLogic.volume import Volume

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "Testing" / "Python"))
from reference import naive_loop as naive_loop  # noqa: E402  (re-exported: the loop the tests check against)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_rss(interval: float = 0.002):
    """Samples resident memory in a thread; yields a dict whose 'peak_extra' is set on exit (bytes above start)."""
    out: dict[str, int] = {}
    base = rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join()
        peak[0] = max(peak[0], rss_bytes())
        out["peak_extra"] = peak[0] - base


def measure(fn: Callable[[], Any], repeats: int = 3) -> dict[str, Any]:
    """Best-of-``repeats`` wall time and the peak extra resident memory of one call."""
    times = []
    result = None
    with peak_rss() as mem:
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
    return {"seconds": min(times), "all_seconds": times, "peak_extra_bytes": mem["peak_extra"], "result": result}


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "cpu": cpu_model(), "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    line = " | ".join(c.ljust(w) for c, w in zip(columns, widths))
    sep = "-|-".join("-" * w for w in widths)
    body = [" | ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(["| " + line + " |", "|-" + sep + "-|"] + ["| " + b + " |" for b in body])


def save(name: str, payload: dict[str, Any]) -> Path:
    path = out_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(payload, machine=machine())
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Shared by floor.py, peers.py, scaling.py, memory.py and warmstart.py (issue 7).

#: Standard volumes of issue 7 as (z, y, x) arrays: 256x256x160 MR, 512x512x400 CT.
STANDARD_SHAPES = {"MR": (160, 256, 256), "CT": (400, 512, 512)}
STANDARD_SPACING = {"MR": (1.0, 1.0, 1.0), "CT": (0.8, 0.8, 1.25)}  # (x, y, z) mm
#: --quick: every dimension a quarter of the standard one (a smoke test of the code paths, not a measurement).
QUICK_DIVISOR = 4


def out_dir() -> Path:
    """Where JSON (and RESULTS.md) go: ``$MEDGAN_BENCH_OUT`` (run_all --quick sets it) or this folder."""
    return Path(os.environ.get("MEDGAN_BENCH_OUT", HERE))


def script_parser(doc: str | None) -> argparse.ArgumentParser:
    """The command line every measuring script starts from: ``doc`` as its help, --device, --quick, --models."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda or cuda:N")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, one repeat: checks that the script works; its figures mean nothing")
    parser.add_argument("--models", nargs="*", default=None, help="model ids to run (default: every installed one)")
    return parser


def parse(parser: argparse.ArgumentParser,
          quick: dict[str, Any] | None = None) -> tuple[argparse.Namespace, torch.device]:
    """(arguments, device): ``quick`` (argument name -> value) replaces arguments under --quick; the device is
    the one the engine resolves --device to."""
    from MedGANLogic.inference import resolve_device

    args = parser.parse_args()
    if args.quick:
        for name, value in (quick or {}).items():
            setattr(args, name, value)
    return args, resolve_device(args.device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                repeats: int = 7) -> float:
    """The machine's dense matrix-multiply rate in FLOP/s: best of ``repeats`` n x n ``torch.mm`` calls."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)  # warm-up: thread pool, kernel choice
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def precision_rates(device: torch.device) -> dict[str, float]:
    """The matmul rate of each precision the engine may run in here: fp32, and bf16 where the device has it natively."""
    from MedGANLogic.inference import native_bf16

    rates = {"fp32": matmul_rate(device, torch.float32)}
    if native_bf16(device):
        rates["bf16"] = matmul_rate(device, torch.bfloat16)
    return rates


def describe_rates(rates: dict[str, float]) -> str:
    return ", ".join(f"{k} torch.mm {v / 1e9:.1f} GFLOP/s" for k, v in rates.items())


def card_precision(card, device: torch.device) -> str:
    """What the engine computes ``card``'s model in on ``device`` by default (``precision="auto"``)."""
    from MedGANLogic.inference import InferenceLayout, choose_precision

    return choose_precision("auto", device, InferenceLayout.from_card(card))


def trim_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so the next resident-memory baseline is honest."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the baseline may include some freed heap
        pass


def load_average() -> float:
    return os.getloadavg()[0]


def synthetic_volume(shape: tuple[int, int, int], modality: str = "MR", contrast: str | None = None,
                     spacing: tuple[float, float, float] | None = None, seed: int = 0) -> Volume:
    """A head-like test volume, float32 (z, y, x): an ellipsoid with smooth texture and noise.

    MR: background ~ |noise| (a.u.), head 250-750 a.u.; CT: air -1000 HU, a 6 mm-ish skull at about 1000 HU,
    soft tissue 20-60 HU, noise sigma 20 HU. Filled in slabs, so the only whole-volume allocation is the result.
    Content does not change the speed of any model here; it only makes normalisation windows realistic.
    """
    z, y, x = shape
    spacing = spacing or STANDARD_SPACING[modality]
    rng = np.random.default_rng(seed)
    arr = np.empty(shape, dtype=np.float32)
    yy = ((np.arange(y, dtype=np.float32) - (y - 1) / 2) / (0.42 * y))[:, None]
    xx = ((np.arange(x, dtype=np.float32) - (x - 1) / 2) / (0.36 * x))[None, :]
    texture = (np.sin(np.arange(y, dtype=np.float32) / 5.0)[:, None] * np.cos(np.arange(x, dtype=np.float32) / 7.0))
    step = max(1, (1 << 24) // (y * x))  # ~64 MB of float32 per slab
    for k0 in range(0, z, step):
        k1 = min(z, k0 + step)
        zz = ((np.arange(k0, k1, dtype=np.float32) - (z - 1) / 2) / (0.48 * z))[:, None, None]
        r2 = zz ** 2 + yy ** 2 + xx ** 2
        noise = rng.standard_normal((k1 - k0, y, x), dtype=np.float32)
        if modality == "CT":
            slab = np.where(r2 < 0.85, 40.0 + 20.0 * texture, np.where(r2 < 1.0, 1000.0, -1000.0))
            arr[k0:k1] = slab + 20.0 * noise
        else:
            head = r2 < 1.0
            arr[k0:k1] = np.where(head, 500.0 + 250.0 * texture * (1.0 - r2), 0.0) + np.abs(5.0 * noise)
    meta = {"modality": modality, "name": f"synthetic {modality} {x}x{y}x{z}"}
    if contrast:
        meta["contrast"] = contrast
    return Volume(arr, spacing=spacing, origin=(0.0, 0.0, 0.0), direction=np.eye(3), metadata=meta)


def input_modality(card: Any) -> str:
    return "CT" if card.input.get("modality") == "CT" else "MR"


def standard_input_shape(card: Any, quick: bool = False) -> tuple[int, int, int]:
    """The (z, y, x) input of a card's task on the standard volume: the SR input at its thick spacing."""
    shape = STANDARD_SHAPES[input_modality(card)]
    if quick:
        shape = tuple(max(8, n // QUICK_DIVISOR) for n in shape)
    return tuple(max(1, int(round(n / s))) for n, s in zip(shape, card.scale_factor))  # type: ignore[return-value]


def standard_input(card: Any, quick: bool = False, slices: int | None = None, seed: int = 0) -> tuple[Volume, int]:
    """The standard input volume for ``card``, cut to ``slices`` along its slice axis (None: all).

    Returns (volume, the full number of slices along that axis), so a time measured on a cut can be scaled.
    """
    shape = list(standard_input_shape(card, quick))
    axis = card.slice_axis if card.dims != "3d" else 0
    full = shape[axis]
    if slices is not None:
        shape[axis] = max(1, min(full, int(slices)))
    modality = input_modality(card)
    spacing = tuple(s * f for s, f in zip(STANDARD_SPACING[modality], card.scale_factor[::-1]))
    contrast = card.input.get("contrast")
    return synthetic_volume(tuple(shape), modality, contrast, spacing, seed), full  # type: ignore[arg-type]


def task_inputs(card: Any, volume: Volume) -> dict[str, Volume]:
    """The second volumes ``card``'s task needs besides the image (``TASKS[task].inputs``): for the lesion task a
    mask, a ball of radius 8 voxels in the middle of ``volume``, so every model can be run by the same loop."""
    from MedGANLogic.tasks import TASKS

    names = TASKS.get(card.task).inputs
    if not names:
        return {}
    grid = np.indices(volume.shape, dtype=np.float32)
    centre = [(n - 1) / 2.0 for n in volume.shape]
    ball = (sum((g - c) ** 2 for g, c in zip(grid, centre)) <= 8.0 ** 2).astype(np.uint8)
    return {name: volume.with_array(ball, metadata={"kind": "labels"}) for name in names}


def selected_cards(names: list[str] | None = None) -> list[Any]:
    """Installed model cards (``MedGANLogic.models.registry.list_models``), optionally only ``names``."""
    from MedGANLogic.models import registry

    cards = registry.list_models()
    if names:
        missing = sorted(set(names) - {c.id for c in cards})
        if missing:
            raise SystemExit(f"Not installed: {', '.join(missing)}; installed: {', '.join(c.id for c in cards)}.")
        cards = [c for c in cards if c.id in names]
    return cards


def profile_top_ops(fn: Callable[[], Any], rate: float, top: int = 6) -> dict[str, Any]:
    """Run ``fn`` under torch.profiler: the ops with the most self time and where the time goes.

    ``fn`` runs three times: a warm-up, once under ``FlopCounterMode`` (its FLOPs) and once profiled. Returns
    ``ops`` (name, self ms, share of the time), ``conv_share`` (share of the time in convolution kernels) and
    ``conv_rate`` (the counted FLOPs over that time, FLOP/s: how fast the arithmetic itself ran, to compare with
    the matmul ``rate``).
    """
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    fn()
    with FlopCounterMode(display=False) as counter:
        fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    conv_us = sum(e.self_cpu_time_total for e in events if "conv" in e.key)
    ops = [{"op": e.key.replace("aten::", ""), "self_ms": round(e.self_cpu_time_total / 1e3, 1),
            "share": round(e.self_cpu_time_total / total, 3)} for e in events[:top]]
    conv_rate = counter.get_total_flops() / (conv_us * 1e-6) if conv_us else float("nan")
    return {"ops": ops, "conv_share": conv_us / total, "conv_rate": conv_rate, "rate": rate,
            "flops": counter.get_total_flops()}


def describe_ops(profile: dict[str, Any], n: int = 4) -> str:
    """One line: how much time the convolutions take and how fast they ran, then the top ops."""
    top = ", ".join(f"{r['op']} {100 * r['share']:.0f}%" for r in profile["ops"][:n])
    return (f"convolutions take {100 * profile['conv_share']:.0f}% of the time at {profile['conv_rate'] / 1e9:.0f} "
            f"GFLOP/s ({100 * profile['conv_rate'] / profile['rate']:.0f}% of the matmul rate); top ops by self "
            f"time: {top}")


def gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def write_results(name: str, args: argparse.Namespace, device: torch.device, targets: list[dict[str, Any]],
                  markdown: list[str], **fields: Any) -> Path:
    """Write ``<name>.json`` (see :func:`out_dir`): the device, --quick, ``fields``, the targets and the markdown
    section run_all.py puts into RESULTS.md; print where it went."""
    payload = {"device": str(device), "device_name": device_name(device), "quick": args.quick, **fields,
               "targets": targets, "markdown": "\n".join(markdown)}
    path = save(name, payload)
    print(f"wrote {path}")
    return path


def write_table_results(name: str, args: argparse.Namespace, device: torch.device, targets: list[dict[str, Any]],
                        description: str, rows: list[dict[str, Any]], columns: list[str]) -> Path:
    """Print and :func:`write_results` a benchmark whose result is one table: the device line, ``description``, the
    ``rows`` under ``columns``; keys of a row that start with "_" are working values, left out of the JSON."""
    md = [f"Device: {device_name(device)}{' (--quick)' if args.quick else ''}. {description}", "",
          table(rows, columns), ""]
    print("\n".join(md))
    return write_results(name, args, device, targets, md,
                         rows=[{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])


def target(name: str, value: str, met: bool, cause: str = "") -> dict[str, Any]:
    """One line of the targets table in RESULTS.md."""
    return {"target": name, "value": value, "met": bool(met), "cause": cause}
