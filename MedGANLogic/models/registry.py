"""Find, verify and load models.

Models live in folders of ``card.json`` + ``weights.safetensors`` under the built-in ``Resources/Models/`` and
the user folder (``$MEDGAN_MODELS_DIR``, default ``~/.medgan/models``). Weights are checked against the card's
SHA-256 before they are read, and only safetensors files are ever loaded here: no pickle, no code. Before any
tensor is read, the network is laid out on PyTorch's meta device (no memory) to bound its size and to compare
its shapes with the file's header, so a malformed or oversized file ends in a one-line :class:`ModelError`.
Loaded networks stay cached in the process, keyed by weights SHA-256 and device, so a second run (or a
second Apply in Slicer) does not load them again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelError
from .card import ModelCard, load_card, validate_card

if TYPE_CHECKING:  # torch and safetensors are imported by the functions that load or save weights, so that
    import torch  # listing and verifying models (medgan models, medgan doctor) starts without them
    import torch.nn as nn

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_CACHE: OrderedDict[tuple[str, str], nn.Module] = OrderedDict()
_CACHE_SIZE = 6
_LOCK = threading.Lock()
MAX_PARAMETERS = 1_000_000_000  # 4 GB in fp32: far above any model MedGAN ships, far below what breaks a machine


def builtin_models_dir() -> Path:
    return Path(os.environ.get("MEDGAN_BUILTIN_MODELS", PACKAGE_ROOT / "Resources" / "Models"))


def user_models_dir() -> Path:
    return Path(os.environ.get("MEDGAN_MODELS_DIR", Path.home() / ".medgan" / "models"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def list_models(task: str | None = None, strict: bool = False) -> list[ModelCard]:
    """Every model found, built-in first; a user model with the same id as a built-in one overrides it.

    Each card says where it comes from (``card.source``: "builtin" or "user", ``card.folder``); a user model that
    hides a built-in one has ``card.shadows`` = the built-in folder. Invalid folders are skipped
    (``strict=False``) so one broken download cannot hide the others; ``strict=True`` raises instead.
    """
    found: dict[str, ModelCard] = {}
    for source, root in (("builtin", builtin_models_dir()), ("user", user_models_dir())):
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if (p / "card.json").is_file()):
            try:
                card = load_card(folder, source=source)
            except ModelError:
                if strict:
                    raise
                continue
            hidden = found.get(card.id)
            if hidden is not None and hidden.source == "builtin" and source == "user":
                card.shadows = hidden.folder
            found[card.id] = card
    cards = list(found.values())
    return [c for c in cards if task is None or c.task == task]


def get_model(model_id: str | os.PathLike) -> ModelCard:
    """A card by id, or by the path of a model folder."""
    path = Path(model_id)
    if path.is_dir() and (path / "card.json").is_file():
        return load_card(path, source="path")
    for card in list_models():
        if card.id == str(model_id):
            return card
    known = ", ".join(c.id for c in list_models()) or "none installed"
    raise ModelError(f"Unknown model {str(model_id)!r}. Installed models: {known}. "
                     f"Run `medgan models` to list them, or give the path of a model folder.")


def verify_weights(card: ModelCard) -> Path:
    path = card.weights_path
    if not path.is_file():
        raise ModelError(f"Weights of model {card.id} are missing: {path}.")
    digest = sha256_file(path)
    if digest != card.sha256:
        raise ModelError(f"Weights of model {card.id} fail their SHA-256 check ({path}: {digest[:12]}..., card says "
                         f"{card.sha256[:12]}...). The file is corrupt or was changed; reinstall the model. "
                         f"Refusing to load it.")
    return path


def _layout(card: ModelCard) -> dict[str, tuple[int, ...]]:
    """The shapes of the card's network's state dict, laid out on the meta device (no memory); too large: refused."""
    import torch

    from . import build_network

    with torch.device("meta"):
        skeleton = build_network(card.architecture, card.arch_params)
    count = sum(p.numel() for p in skeleton.parameters())
    if count > MAX_PARAMETERS:
        raise ModelError(f"Model {card.id}: architecture {card.architecture!r} with these params would have "
                         f"{count:,} parameters ({count * 4 / 1e9:,.1f} GB in fp32); MedGAN loads networks of at most "
                         f"{MAX_PARAMETERS:,} parameters. Check architecture.params in card.json.")
    return {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}


def _read_weights(card: ModelCard, path: Path, expected: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The file's tensors as float32, after its header was checked against ``expected`` (names and shapes)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:  # reads and checks the header only
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            missing = [k for k in expected if k not in shapes]
            unexpected = [k for k in shapes if k not in expected]
            wrong = [f"{k} {shapes[k]} vs {v}" for k, v in expected.items() if k in shapes and shapes[k] != v]
            if missing or unexpected or wrong:
                raise ModelError(f"Weights of model {card.id} do not fit architecture {card.architecture!r}: "
                                 f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}. "
                                 f"Check architecture.params in card.json.")
            return {k: f.get_tensor(k).float() for k in shapes}
    except SafetensorError as exc:
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"Weights of model {card.id} are not a valid safetensors file ({path}: {problem}). "
                         f"Reinstall the model, or export its weights again.") from exc


def read_weights(card: ModelCard) -> dict[str, torch.Tensor]:
    """The card's weights as a float32 state dict, after the SHA-256 and the header's names and shapes were checked
    against the card's architecture (what :func:`load_network` loads; training starts from it with ``init``)."""
    return _read_weights(card, verify_weights(card), _layout(card))


def load_network(card: ModelCard, device: torch.device | str = "cpu") -> nn.Module:
    """Build the card's network, load its verified safetensors weights (float32), eval mode, on ``device``."""
    key = (card.sha256, str(device))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    from . import build_network

    state = read_weights(card)
    net = build_network(card.architecture, card.arch_params)
    net.load_state_dict(state)
    net.eval().requires_grad_(False).to(device)
    with _LOCK:
        _CACHE[key] = net
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return net


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def save_model(folder: str | Path, card_data: dict, state_dict: dict[str, torch.Tensor],
               dtype: torch.dtype | None = None) -> ModelCard:
    """Write a model folder: weights as safetensors (``dtype`` for floating tensors, default float16), card with
    their SHA-256.

    The folder is assembled under a temporary name and renamed at the end, so a failure leaves nothing.
    """
    import torch
    from safetensors.torch import save_file

    dtype = torch.float16 if dtype is None else dtype
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        tensors = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
                   for k, v in state_dict.items()}
        weights = tmp / "weights.safetensors"
        save_file(tensors, str(weights), metadata={"format": "pt", "model_id": card_data.get("id", "")})
        data = json.loads(json.dumps(card_data))
        data["weights"] = {"file": "weights.safetensors", "sha256": sha256_file(weights),
                           "dtype": str(dtype).replace("torch.", "")}
        validate_card(data, where=str(folder))
        (tmp / "card.json").write_text(json.dumps(data, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_card(folder)


def install_model(source: str | Path, *, replace: bool = False) -> ModelCard:
    """Validate a model folder (card + weights, SHA-256 checked, network built) and copy it to the user folder."""
    card = load_card(source, source="user")
    verify_weights(card)  # always re-hash: the network cache is keyed by the card's SHA-256, not the file
    load_network(card, "cpu")  # proves the weights fit the architecture before anything is copied
    target = user_models_dir() / card.id
    if target.exists() and not replace:
        raise ModelError(f"A model {card.id!r} is already installed at {target}; pass replace=True (--replace) to "
                         f"overwrite it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{card.id}.installing")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        shutil.copy2(Path(source) / "card.json", tmp / "card.json")
        shutil.copy2(card.weights_path, tmp / card.weights_path.name)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_card(target, source="user")
