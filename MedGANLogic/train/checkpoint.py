"""Training checkpoints in safetensors: networks, optimiser state and run state, no pickle.

One file per checkpoint (``checkpoints/step_000500.safetensors``). Tensors are stored under

    net/<network>/<state-dict key>                  every network's state dict (float32, exact)
    opt/<optimizer>/<param index>/<state key>       optimiser state tensors (Adam moments and step counts)
    extra/<name>                                    anything else a trainer keeps (e.g. CycleGAN image pools)

and everything that is not a tensor (step, resolved config, optimiser ``param_groups`` and scalar state) is
JSON in the file's metadata under ``"medgan"``. Files are written to a temporary name and renamed, so an
interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import InputError

FORMAT = "medgan-checkpoint-1"
_NAME = re.compile(r"step_(\d+)\.safetensors$")


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "module") and isinstance(module.module, nn.Module) else module


def save_checkpoint(path: str | Path, *, step: int, networks: dict[str, nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], extra: dict[str, torch.Tensor | None] | None = None,
                    meta: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, net in networks.items():
        for key, value in _unwrap(net).state_dict().items():
            tensors[f"net/{name}/{key}"] = value.detach().cpu().contiguous().clone()
    opt_meta: dict[str, Any] = {}
    for name, opt in optimizers.items():
        state = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, entries in state["state"].items():
            for key, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"opt/{name}/{idx}/{key}"] = value.detach().cpu().contiguous().clone()
                else:
                    scalars.setdefault(str(idx), {})[key] = value
        opt_meta[name] = {"param_groups": state["param_groups"], "scalars": scalars}
    for name, value in (extra or {}).items():
        if value is not None:
            tensors[f"extra/{name}"] = value.detach().cpu().contiguous().clone()
    info = {"format": FORMAT, "step": int(step), "optimizers": opt_meta, **(meta or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"medgan": json.dumps(info, default=str)})
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Checkpoint {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("medgan", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path} is not a readable MedGAN checkpoint: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a MedGAN training checkpoint (format {meta.get('format')!r}).")
    return tensors, meta


def restore(tensors: dict[str, torch.Tensor], meta: dict[str, Any], networks: dict[str, nn.Module],
            optimizers: dict[str, torch.optim.Optimizer],
            device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Load networks and optimisers in place; returns the ``extra/`` tensors by name."""
    for name, net in networks.items():
        prefix = f"net/{name}/"
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not state:
            raise InputError(f"The checkpoint has no network {name!r}; was it written by another training family?")
        _unwrap(net).load_state_dict(state, strict=True)
    for name, opt in optimizers.items():
        info = meta["optimizers"].get(name)
        if info is None:
            raise InputError(f"The checkpoint has no optimiser {name!r}.")
        prefix = f"opt/{name}/"
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith(prefix):
                idx, field = key[len(prefix):].split("/", 1)
                state.setdefault(int(idx), {})[field] = value.to(device)
        for idx, scalars in info.get("scalars", {}).items():
            state.setdefault(int(idx), {}).update(scalars)
        opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    return {k[len("extra/"):]: v for k, v in tensors.items() if k.startswith("extra/")}


def checkpoint_step(path: str | Path) -> int:
    m = _NAME.search(str(path))
    return int(m.group(1)) if m else -1


def latest_checkpoint(run_dir_or_file: str | Path) -> Path:
    """The checkpoint file itself, or the one with the highest step in ``<run>/checkpoints/``."""
    p = Path(run_dir_or_file)
    if p.is_file():
        return p
    folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    found = sorted(folder.glob("step_*.safetensors"), key=checkpoint_step) if folder.is_dir() else []
    if not found:
        raise InputError(f"No checkpoint to resume from in {p} (expected {folder}/step_NNNNNN.safetensors).")
    return found[-1]
