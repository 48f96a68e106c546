"""``medgan import``: bring a model you already have.

1. A generator checkpoint of pytorch-CycleGAN-and-pix2pix (``latest_net_G.pth`` of pix2pix,
   ``latest_net_G_A.pth`` / ``latest_net_G_B.pth`` of CycleGAN; ``unet_256``, ``unet_128``, ``resnet_9blocks``,
   ``resnet_6blocks``; batch or instance norm) becomes a MedGAN model folder (card.json + fp16 safetensors)::

       medgan import latest_net_G_A.pth --id my-t1-to-t2 --input-modality MR --input-contrast T1w \\
           --output-modality MR --output-contrast T2w --output-window 0 1000 --install

   The architecture, its width and depth and the norm type are read from the state dict itself (override
   with ``--arch``/``--norm``); ``module.`` prefixes (DataParallel) are stripped and ``num_batches_tracked``
   dropped. This is the one place MedGAN reads a pickle-based ``.pth`` file, and it does so with
   ``torch.load(weights_only=True)``, which only rebuilds tensors and refuses code. Their models map [-1, 1]
   to [-1, 1]; the card's normalisations say what those are in your images' units.

2. A MedGAN model folder (``card.json`` + ``weights.safetensors``) is verified (SHA-256, network built) and
   copied to the user model folder (``$MEDGAN_MODELS_DIR``, default ``~/.medgan/models``)::

       medgan import path/to/model-folder
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import InputError, ModelError

ARCHS = ("auto", "unet_256", "unet_128", "resnet_9blocks", "resnet_6blocks")


def read_pix2pix_checkpoint(path: str | Path) -> OrderedDict[str, torch.Tensor]:
    """The state dict of a ``.pth`` file, tensors only (``weights_only=True``), ``module.`` stripped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Checkpoint {path} does not exist.")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise InputError(f"{path.name} could not be read as a tensors-only PyTorch checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}). MedGAN loads no pickled code; "
                         f"re-save the generator's state_dict() with torch.save.") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise InputError(f"{path.name} is not a generator state dict (a mapping of names to tensors).")
    return clean_state_dict(obj)


def clean_state_dict(state: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Strip ``module.`` prefixes (DataParallel/DDP) and drop batch norm's ``num_batches_tracked`` counters."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        if key.endswith("num_batches_tracked"):
            continue
        out[key] = value
    return out


def pix2pix_keys(kind: str, size: int, norm: str, dropout: bool = False) -> list[str]:
    """The state-dict keys, in order, of a pytorch-CycleGAN-and-pix2pix generator.

    ``kind`` ``"unet"`` with ``size`` levels (``unet_256``: 8) or ``"resnet"`` with ``size`` residual blocks;
    ``norm`` ``"batch"`` (affine and running statistics, convolutions without bias) or ``"instance"`` (no norm
    tensors, convolutions with bias); ``dropout``: ResNet blocks with a dropout layer (one index further on).
    ``num_batches_tracked`` counters are left out, as :func:`clean_state_dict` drops them.
    """
    bias = norm == "instance"
    keys: list[str] = []

    def conv(prefix: str, with_bias: bool = bias) -> None:
        keys.extend([prefix + "weight"] + ([prefix + "bias"] if with_bias else []))

    def norm_layer(prefix: str) -> None:
        if norm == "batch":
            keys.extend(prefix + name for name in ("weight", "bias", "running_mean", "running_var"))

    def unet_level(prefix: str, level: int) -> None:
        seq = prefix + "model."
        if level == 0:  # outermost: down conv, the inner levels, up conv (with bias) to the output
            conv(seq + "0.")
            unet_level(seq + "1.", 1)
            conv(seq + "3.", True)
        elif level == size - 1:  # innermost: no norm after its down conv
            conv(seq + "1.")
            conv(seq + "3.")
            norm_layer(seq + "4.")
        else:
            conv(seq + "1.")
            norm_layer(seq + "2.")
            unet_level(seq + "3.", level + 1)
            conv(seq + "5.")
            norm_layer(seq + "6.")

    if kind == "unet":
        unet_level("model.", 0)
        return keys
    for index in (1, 4, 7):  # 7x7 conv and two stride-2 convs, each followed by its norm
        conv(f"model.{index}.")
        norm_layer(f"model.{index + 1}.")
    second = 6 if dropout else 5
    for b in range(size):
        block = f"model.{10 + b}.conv_block."
        conv(block + "1.")
        norm_layer(block + "2.")
        conv(block + f"{second}.")
        norm_layer(block + f"{second + 1}.")
    up = 10 + size
    for index in (up, up + 3):  # two transposed convs, each followed by its norm
        conv(f"model.{index}.")
        norm_layer(f"model.{index + 1}.")
    conv(f"model.{up + 7}.", True)
    return keys


def _layers(keys: list[str], most: int = 6) -> str:
    """``model.3 (weight, bias), model.4 (weight)``: keys grouped by layer, the first ``most`` layers."""
    layers: dict[str, list[str]] = {}
    for key in keys:
        layer, _, name = key.rpartition(".")
        layers.setdefault(layer, []).append(name)
    shown = [f"{layer} ({', '.join(names)})" for layer, names in list(layers.items())[:most]]
    more = len(layers) - most
    return ", ".join(shown) + (f" and {more} more layer{'s' * (more > 1)}" if more > 0 else "")


def check_complete(state: dict[str, torch.Tensor], expected: list[str], what: str) -> None:
    """Raise :class:`InputError` naming the layers whose tensors are missing from ``state`` or foreign to it."""
    missing = [k for k in expected if k not in state]
    known = set(expected)
    foreign = [k for k in state if k not in known]
    if not (missing or foreign):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} of its {len(expected)} tensors are missing: {_layers(missing)}")
    if foreign:
        problems.append(f"{len(foreign)} tensors do not belong to it: {_layers(foreign)}")
    raise InputError(f"The checkpoint is not a complete {what}: {'; '.join(problems)}. Was the save cut short? "
                     f"Re-save the generator's whole state_dict(), or pass --arch/--norm if they were detected "
                     f"wrongly.")


def detect_layout(state: dict[str, torch.Tensor], arch: str = "auto", norm: str = "auto") -> tuple[str, dict]:
    """(architecture name, params) of the MedGAN generator matching a pytorch-CycleGAN-and-pix2pix state dict.

    Every tensor the detected generator has must be in ``state`` and nothing else: otherwise an
    :class:`InputError` names the missing and foreign layers.
    """
    keys = list(state)
    if not keys:
        raise InputError("The checkpoint is empty.")
    is_unet = any(k.startswith("model.model.") for k in keys)
    is_resnet = any(re.match(r"model\.\d+\.conv_block\.", k) for k in keys)
    if arch == "auto":
        if not (is_unet or is_resnet):
            raise InputError("Not a pytorch-CycleGAN-and-pix2pix generator: expected unet_* keys (model.model.*) or "
                             "resnet_* keys (model.N.conv_block.*). Pass --arch if it is one.")
        kind = "unet" if is_unet else "resnet"
    else:
        kind = "unet" if arch.startswith("unet") else "resnet"
    detected = "batch" if any(k.endswith("running_mean") for k in keys) else "instance"
    if norm == "auto":
        norm = detected
    elif norm != detected:
        raise InputError(f"--norm {norm} does not fit this checkpoint: it was trained with {detected} norm "
                         f"({'it has' if detected == 'batch' else 'it has no'} running_mean entries). Use "
                         f"--norm {detected} (or auto).")
    if kind == "unet":
        depth = max(k.count("model.") for k in keys) - 1
        if arch in ("unet_256", "unet_128") and depth != {"unet_256": 8, "unet_128": 7}[arch]:
            raise InputError(f"--arch {arch} does not fit: the checkpoint has {depth} U-Net levels.")
        check_complete(state, pix2pix_keys("unet", depth, norm), f"U-Net generator of {depth} levels ({norm} norm)")
        first, last = state["model.model.0.weight"], state["model.model.3.weight"]  # last: (in, out, kh, kw)
        params = {"in_channels": int(first.shape[1]), "out_channels": int(last.shape[1]),
                  "features": int(first.shape[0]), "depth": int(depth), "norm": norm, "upsample": "transpose"}
        return "unet2d", params
    blocks = {int(m.group(1)) - 10 for k in keys if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
    n_blocks = max(blocks) + 1 if blocks else 0  # a missing block in the middle shows as missing, not as fewer
    if arch in ("resnet_9blocks", "resnet_6blocks") and n_blocks != int(arch.split("_")[1][0]):
        raise InputError(f"--arch {arch} does not fit: the checkpoint has {n_blocks} residual blocks.")
    dropout = any(re.match(r"model\.\d+\.conv_block\.6\.weight$", k) and state[k].dim() == 4 for k in keys)
    check_complete(state, pix2pix_keys("resnet", n_blocks, norm, dropout),
                   f"ResNet generator of {n_blocks} blocks ({norm} norm)")
    first, last = state["model.1.weight"], state[f"model.{10 + n_blocks + 7}.weight"]
    params = {"in_channels": int(first.shape[1]), "out_channels": int(last.shape[0]), "features": int(first.shape[0]),
              "n_blocks": n_blocks, "n_down": 2, "norm": norm, "upsample": "transpose"}
    return "resnet2d", params


def convert_state_dict(state: dict[str, torch.Tensor], net: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Map their tensors onto ``net``'s state-dict keys.

    Both networks register their tensors in the same order (MedGAN's U-Net and ResNet generators follow the
    nesting order of the originals), so the i-th tensor of one is the i-th of the other; every shape is checked.
    """
    theirs = list(state.items())
    ours = [(k, v) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(theirs) != len(ours):
        raise ModelError(f"The checkpoint has {len(theirs)} tensors but the matching MedGAN generator has {len(ours)}: "
                         f"the architecture or norm type differs (checkpoints trained with instance norm have conv "
                         f"biases and no running statistics; batch norm the opposite). Check --arch and --norm.")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (their_key, value), (our_key, ref) in zip(theirs, ours):
        if tuple(value.shape) != tuple(ref.shape):
            raise ModelError(f"Tensor {their_key} has shape {tuple(value.shape)} but {our_key} needs "
                             f"{tuple(ref.shape)}; the architecture does not match (check --arch/--norm).")
        out[our_key] = value.detach().float()
    return out


def _spec(modality: str, window: list[float] | None, kind: str) -> dict[str, Any]:
    if kind == "mr_percentile":
        return {"kind": "mr_percentile", "percentiles": [0.5, 99.5], "range": [-1, 1]}
    if window is None:
        raise InputError(f"A {kind} normalisation needs a window: pass --input-window/--output-window LOW HIGH "
                         f"({'HU' if modality == 'CT' else 'intensity units'}).")
    return {"kind": kind, "window": [float(window[0]), float(window[1])], "range": [-1, 1]}


def import_pix2pix(checkpoint: str | Path, out_dir: str | Path, *, model_id: str, task: str = "synthesize",
                   input_modality: str = "MR", input_contrast: str | None = None,
                   output_modality: str = "MR", output_contrast: str | None = None,
                   input_window: list[float] | None = None, output_window: list[float] | None = None,
                   arch: str = "auto", norm: str = "auto", name: str | None = None, version: str = "1.0.0",
                   license: str = "as stated by the model's authors", training_data: str = "unknown (imported)") -> Any:
    """Convert a pytorch-CycleGAN-and-pix2pix generator checkpoint into the model folder ``out_dir/<model_id>``."""
    from . import build_network
    from .registry import save_model

    state = read_pix2pix_checkpoint(checkpoint)
    arch_name, params = detect_layout(state, arch, norm)
    net = build_network(arch_name, params)
    net.load_state_dict(convert_state_dict(state, net), strict=True)
    in_kind = "ct_window" if input_modality == "CT" else ("fixed" if input_window else "mr_percentile")
    if task == "denoise":
        out_spec: dict[str, Any] = {"kind": "same_as_input"}
    else:
        out_kind = "ct_window" if output_modality == "CT" else "fixed"
        out_spec = _spec(output_modality, output_window, out_kind)
    size = net.size_multiple
    card = {
        "id": model_id, "version": version, "task": task, "name": name or f"{model_id} (imported)",
        "architecture": {"name": arch_name, "params": params}, "dims": "2d", "slice_axis": 0,
        "tile_size": [size, size] if size >= 128 else None,
        "input": {"modality": input_modality, **({"contrast": input_contrast} if input_contrast else {}),
                  "normalization": _spec(input_modality, input_window, in_kind)},
        "output": {"modality": output_modality, **({"contrast": output_contrast} if output_contrast else {}),
                   "units": "HU" if output_modality == "CT" else "a.u.", "normalization": out_spec},
        "license": license, "training_data": training_data,
        "intended_use": "research, not for diagnosis",
        "imported_from": {"file": Path(checkpoint).name, "format": "pytorch-CycleGAN-and-pix2pix",
                          "note": f"{arch_name} {params}; batch-norm models run with their running statistics "
                                  f"(eval mode)"},
    }
    if card["tile_size"] is None:
        del card["tile_size"]
    return save_model(Path(out_dir) / model_id, card, net.state_dict(), dtype=torch.float16)


# --- command line -------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Import a pytorch-CycleGAN-and-pix2pix generator checkpoint (.pth) as a MedGAN model, or "
                          "install a MedGAN model folder.")
    parser.add_argument("source", help="a .pth generator checkpoint (latest_net_G.pth, latest_net_G_A.pth, ...) or "
                                       "a model folder (card.json + weights.safetensors)")
    parser.add_argument("--id", dest="model_id", help="id of the new model (lower case, digits, '-', '.', '_')")
    parser.add_argument("--task", default="synthesize", choices=["synthesize", "denoise"])
    parser.add_argument("--arch", default="auto", choices=ARCHS, help="generator type (default: from the weights)")
    parser.add_argument("--norm", default="auto", choices=["auto", "batch", "instance"],
                        help="norm layers the model was trained with (default: from the weights)")
    parser.add_argument("--input-modality", default="MR", choices=["MR", "CT"])
    parser.add_argument("--input-contrast", help="e.g. T1w")
    parser.add_argument("--input-window", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="intensity window mapped to [-1, 1] (HU for CT; default for MR: 0.5-99.5 percentiles)")
    parser.add_argument("--output-modality", default="MR", choices=["MR", "CT"])
    parser.add_argument("--output-contrast", help="e.g. T2w")
    parser.add_argument("--output-window", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="what the model's [-1, 1] output means in output units (HU for CT)")
    parser.add_argument("--name", help="human-readable model name")
    parser.add_argument("--license", default="as stated by the model's authors")
    parser.add_argument("--output", help="folder to write the model folder into (default: the user model folder)")
    parser.add_argument("--replace", action="store_true", help="overwrite an installed model with the same id")


def main(args: argparse.Namespace) -> int:
    from .registry import install_model, user_models_dir

    source = Path(args.source)
    if source.is_dir():
        card = install_model(source, replace=args.replace)
        print(f"Installed model {card.id} to {card.folder}.")
        return 0
    if not args.model_id:
        raise InputError("--id is required when importing a .pth checkpoint (the new model's id).")
    out_dir = Path(args.output) if args.output else user_models_dir()
    if (out_dir / args.model_id).exists() and not args.replace:
        raise InputError(f"A model {args.model_id!r} already exists in {out_dir}; pass --replace to overwrite it.")
    card = import_pix2pix(source, out_dir, model_id=args.model_id, task=args.task,
                          input_modality=args.input_modality, input_contrast=args.input_contrast,
                          output_modality=args.output_modality, output_contrast=args.output_contrast,
                          input_window=args.input_window, output_window=args.output_window, arch=args.arch,
                          norm=args.norm, name=args.name, license=args.license)
    print(f"Imported {source.name} as model {card.id} ({card.architecture} {card.arch_params}) in {card.folder}.")
    return 0


if __name__ == "__main__":  # python -m MedGANLogic.models.importer ...: the same as `medgan import ...`
    from ..cli import main as medgan

    sys.exit(medgan(["import", *sys.argv[1:]]))
