"""What a run shows while it trains: a progress bar with losses and ETA, a CSV loss log (and TensorBoard when
it is installed), and PNG grids of samples."""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class TrainProgress:
    """``step/total [bar] losses | it/s | ETA``: redrawn in place on a terminal, one line per ``every`` steps in a
    log file (so a background run's log stays readable)."""

    def __init__(self, total: int, start: int = 0, stream: TextIO | None = None, every: int = 25,
                 enabled: bool = True):
        self.total, self.start_step = total, start
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every, self.enabled = max(1, every), enabled
        self.t0 = time.perf_counter()

    def line(self, step: int, losses: dict[str, float]) -> str:
        done = step - self.start_step
        elapsed = time.perf_counter() - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        width = 20
        fill = int(width * step / max(self.total, 1))
        parts = " ".join(f"{k} {v:.4g}" for k, v in losses.items())
        eta_s = format_seconds(eta) if eta == eta else "?"
        return (f"{step:>6d}/{self.total} [{'#' * fill}{'.' * (width - fill)}] {parts} | {rate:.2f} it/s | "
                f"elapsed {format_seconds(elapsed)} ETA {eta_s}")

    def update(self, step: int, losses: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + self.line(step, losses) + "   ")
            if step >= self.total:
                self.stream.write("\n")
        elif step % self.every == 0 or step >= self.total:
            self.stream.write(self.line(step, losses) + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            self.stream.write(("\n" if self.tty else "") + text + "\n")
            self.stream.flush()


class LossLog:
    """``losses.csv``: one row per logged step (step, seconds, lr_g, lr_d, then every loss by name).

    On resume the rows after the resumed step are dropped, so the log of a resumed run equals that of an
    uninterrupted one (apart from the timing column). TensorBoard scalars are written too if available.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None, tensorboard: bool = True):
        self.path = Path(path)
        self.fields: list[str] | None = None
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows:
                self.fields = list(rows[0].keys())
            kept = [r for r in rows if int(r["step"]) <= resume_step]
            self._rewrite(kept)
        elif self.path.exists():
            self.path.unlink()
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional dependency

                self.writer = SummaryWriter(str(self.path.parent / "tensorboard"))
            except (ImportError, ModuleNotFoundError):
                self.writer = None

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        if self.fields is None:
            return
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            w.writeheader()
            w.writerows(rows)

    def write(self, step: int, seconds: float, values: dict[str, float]) -> None:
        row = {"step": step, "seconds": round(seconds, 3), **{k: f"{v:.6g}" for k, v in values.items()}}
        if self.fields is None:
            self.fields = list(row)
            self._rewrite([])
        extra = [k for k in row if k not in self.fields]
        if extra:  # a loss appeared later (e.g. after a warm-up): widen the file
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            self.fields += extra
            self._rewrite(rows)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow(row)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def to_uint8(image: np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    lo, hi = value_range
    return (np.clip((np.asarray(image, dtype=np.float32) - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def save_grid(path: str | Path, rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str] = (),
              value_range: tuple[float, float] = (-1.0, 1.0), gap: int = 2) -> Path:
    """A PNG of 2D images in rows (all the same size), with optional column titles on top."""
    from PIL import Image, ImageDraw

    h, w = rows[0][0].shape
    ncol = max(len(r) for r in rows)
    top = 14 if titles else 0
    canvas = np.full((top + len(rows) * (h + gap), ncol * (w + gap)), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = top + i * (h + gap), j * (w + gap)
            canvas[y:y + h, x:x + w] = to_uint8(img, value_range)
    pil = Image.fromarray(canvas)
    if titles:
        draw = ImageDraw.Draw(pil)
        for j, t in enumerate(titles):
            draw.text((j * (w + gap) + 2, 1), str(t), fill=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.save(path)
    return path
