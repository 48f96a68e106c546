"""Measuring helpers shared by the benchmark scripts: wall time, peak resident memory, tables, JSON.

Every figure a benchmark reports is a ratio against a baseline measured in the same process, so a busy or
slow machine still gives a comparison that can be trusted. Nothing here is used by the tests.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent


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
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    line = " | ".join(c.ljust(w) for c, w in zip(columns, widths))
    sep = "-|-".join("-" * w for w in widths)
    body = [" | ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(["| " + line + " |", "|-" + sep + "-|"] + ["| " + b + " |" for b in body])


def save(name: str, payload: dict[str, Any]) -> Path:
    path = HERE / f"{name}.json"
    payload = dict(payload, machine=machine())
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
