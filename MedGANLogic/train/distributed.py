"""DistributedDataParallel set-up: the same training script runs alone or under ``torchrun``.

``torchrun --nproc_per_node=N -m MedGANLogic.train.cli --recipe NAME`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT`` in their environment; :func:`init_distributed` then
joins the process group (NCCL when each process has a CUDA device, gloo on CPU) and gives each process its
device. Each rank draws its own batches (see :mod:`MedGANLogic.train.data`), so the effective batch is
``batch_size * N``; gradients are averaged by DDP. Only rank 0 writes checkpoints, logs and samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from ..inference import resolve_device


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistContext:
    """Join the torchrun process group if there is one; otherwise a single-process context on ``device``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=resolve_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    want = resolve_device(device)
    if want.type == "cuda":
        dev = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=10))
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev, backend=backend)


def wrap(module: nn.Module, ctx: DistContext) -> nn.Module:
    """``module`` on the context's device, wrapped in DDP when several processes train together."""
    module = module.to(ctx.device)
    if not ctx.enabled or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def average(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Mean of scalar logs over ranks (for the loss log); identity when not distributed."""
    if not ctx.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64,
                     device=ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, t.tolist())}


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank if it is True on any (e.g. Ctrl-C seen by one process: all stop at the same step)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return bool(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
