"""The fitting loop of per-scan learning: a budget in seconds and in steps, progress, cancel, a record.

:func:`fit_steps` calls ``step(k, fraction)`` until the step budget or the time budget runs out, whichever comes
first; ``fraction`` (0-1) is how much of the budget is spent, so a step can schedule its learning rate or switch
on an adversarial term half-way. Cancel is checked before every step (a step takes well under a second on the
defaults), and :class:`~MedGANLogic.errors.CancelledError` is raised at once. The returned :class:`FitRecord`
is what provenance keeps: steps, seconds, seed, device, why it stopped and a summary of the loss curve.

Reproducibility: with the same seed, the same step budget and a time budget that does not bind, a fit repeats
bit for bit on the same CPU and thread count (batches, masks and initial weights are functions of the seed and
the step). With a binding time budget the number of steps, and so the result, depends on the machine's speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import CancelledError, InputError
from ..inference import _is_cancelled

ProgressFn = Callable[[float, str], None]
CURVE_POINTS = 20


@dataclass(frozen=True)
class FitBudget:
    """How long fitting may run: ``seconds`` of wall time and at most ``max_steps`` optimiser steps."""

    seconds: float = 120.0
    max_steps: int = 2000

    def __post_init__(self) -> None:
        if not (isinstance(self.seconds, (int, float)) and self.seconds > 0):
            raise InputError(f"The fitting budget must be a positive number of seconds; got {self.seconds!r}.")
        if not (isinstance(self.max_steps, (int, np.integer)) and self.max_steps >= 1):
            raise InputError(f"max_steps must be an integer >= 1; got {self.max_steps!r}.")


@dataclass
class FitRecord:
    """What a fit did, for provenance (:meth:`summary` is JSON-ready).

    ``loss_curve``: the mean loss over up to 20 equal runs of consecutive steps, first to last.
    """

    method: str
    steps: int
    seconds: float
    seed: int
    device: str
    stopped_by: str  # "max_steps" | "time budget"
    budget: dict[str, float]
    loss_first: float
    loss_last: float
    loss_curve: list[float]
    init: str = "scratch"
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        return out


def loss_curve(losses: list[float], points: int = CURVE_POINTS) -> list[float]:
    """Mean loss over ``points`` equal runs of consecutive steps (fewer when there are fewer steps)."""
    if not losses:
        return []
    chunks = np.array_split(np.asarray(losses, dtype=np.float64), min(points, len(losses)))
    return [float(f"{c.mean():.6g}") for c in chunks]


def span_progress(progress: ProgressFn | None, start: float, end: float) -> ProgressFn:
    """``progress`` rescaled so that 0-1 maps onto ``start``-``end`` of the whole run (no-op when None)."""
    if progress is None:
        return lambda fraction, message: None
    return lambda fraction, message: progress(start + (end - start) * min(max(fraction, 0.0), 1.0), message)


def check_cancel(cancel: Any) -> None:
    """Raise :class:`CancelledError` if ``cancel`` (a callable or a ``threading.Event``) says so."""
    if _is_cancelled(cancel):
        raise CancelledError("Cancelled by the user while fitting to the scan; nothing was written.")


def fit_steps(step: Callable[[int, float], float], budget: FitBudget, *, progress: ProgressFn | None = None,
              cancel: Any = None, label: str = "fitting to this scan") -> tuple[list[float], float, str]:
    """Run ``step(k, fraction) -> loss`` for k = 0, 1, ... within ``budget``.

    Returns (the loss of every step, seconds spent, what stopped it: "max_steps" or "time budget").
    Raises CancelledError when ``cancel`` is set (checked before every step) and InputError if a loss is not
    finite (the fit diverged).
    """
    report = progress or (lambda fraction, message: None)
    losses: list[float] = []
    started = time.perf_counter()
    stopped_by = "max_steps"
    report(0.0, f"{label}: starting")
    for k in range(budget.max_steps):
        check_cancel(cancel)
        elapsed = time.perf_counter() - started
        if k and elapsed >= budget.seconds:
            stopped_by = "time budget"
            break
        fraction = max(k / budget.max_steps, elapsed / budget.seconds)
        loss = float(step(k, fraction))
        if not np.isfinite(loss):
            raise InputError(f"Fitting diverged at step {k} (loss {loss}); try another seed or a smaller "
                             f"learning rate.")
        losses.append(loss)
        done = max((k + 1) / budget.max_steps, (time.perf_counter() - started) / budget.seconds)
        report(min(done, 1.0), f"{label}: step {k + 1}, loss {np.mean(losses[-20:]):.4g}")
    return losses, time.perf_counter() - started, stopped_by


def learning_rate(lr: float | None, default: float) -> float:
    """The fit's Adam learning rate: ``lr``, or ``default`` when None; InputError unless it is > 0."""
    rate = default if lr is None else float(lr)
    if not rate > 0:
        raise InputError(f"lr (the fit's learning rate) must be > 0; got {rate}.")
    return rate


def schedule_lr(opt: torch.optim.Optimizer, lr: float, fraction: float) -> None:
    """The fits' learning rate at ``fraction`` (0-1) of the budget: ``lr``, then down to a tenth over the second
    half."""
    for group in opt.param_groups:
        group["lr"] = lr * (1.0 if fraction < 0.5 else 1.0 - 1.8 * (fraction - 0.5))


def optimise(opt: torch.optim.Optimizer, total: torch.Tensor) -> None:
    """One optimiser step on the loss ``total``."""
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()


def init_network(build: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """``build()`` with torch's global RNG seeded to ``seed`` and restored afterwards (the caller's stream
    is not disturbed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()
