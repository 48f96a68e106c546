"""Training configuration: one YAML or JSON file per run, named recipes for the shipped models.

A config is a nested mapping; anything left out takes the value of :data:`DEFAULTS` (and then the family's
own defaults, e.g. ``cyclegan`` sets ``loss.cycle``). Example (``recipes/mr-t1-to-t2.yaml`` is a real one)::

    name: my-t1-to-t2
    family: pix2pix                 # pix2pix | cyclegan | ldct (see MedGANLogic.train.TRAINERS)
    seed: 0
    steps: 2000
    batch_size: 8
    data: {source: folders, source_dir: data/T1, target_dir: data/T2}   # or source: phantom
    generator: {name: unet2d, params: {features: 32, depth: 4}}
    discriminator: {channels: 32, layers: 3, norm: instance}
    loss: {gan_mode: lsgan, adversarial: 1.0, pixel: 100.0, feature_matching: 10.0}
    optim: {lr_g: 2.0e-4, lr_d: 2.0e-4, betas: [0.5, 0.999], decay_from: 0.5}
    log: {every: 25, sample_every: 250, checkpoint_every: 250}
    export:
      - generator: G
        card: {id: my-t1-to-t2, version: 1.0.0, task: synthesize, dims: 2d, ...}   # see models/card.py

Stages: ``extends: mr-denoise-base`` (a bundled recipe's name, or a config file's path, relative to this file's
folder) starts from that config and applies this file over it (:func:`extend`: mappings merge key by key, lists and
scalars are replaced, ``export`` entries merge one by one), so a fine-tuning stage states only what it changes.

Fine-tuning: ``init: {G: ldct-denoise}`` (``medgan train --init ldct-denoise``) starts network ``G`` from an
installed model's weights (an id, or the path of a model folder) instead of random ones; the model's
architecture must be the run's ``generator``, and the exported card records what it started from.

``export[*].card`` is the model card the run produces, minus ``architecture`` and ``weights`` (filled in at
export). Its ``input.normalization`` and ``output.normalization`` are also how the training data are
normalised, so training and inference see identical intensities. A ``fixed`` window may be ``"auto"``:
it is then set from the training data (median foreground [0.5, 99.5] percentile window; from 0 with
``zero_based: true``) and written into the card.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
GAN_MODES = ("lsgan", "vanilla", "wgan-gp")

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "family": "pix2pix",
    "seed": 0,
    "steps": 1000,
    "batch_size": 8,
    "device": "auto",
    "data": {
        "source": "phantom",  # phantom | randomized | folders | synthetic
        "slice_axis": 0,
        "min_foreground": 0.1,  # skip slices where less than this fraction is not background
        "crop": None,  # [h, w] random crops; None = whole slices padded to the generator's size multiple
        "noisy_input": False,  # super-resolution: the input from each sample's noisy source, not its clean target
        "noisy_target": False,  # super-resolution: input and target both from the noisy source (the real-scan case)
        "natural_images": 0.0,  # super-resolution: this share of the crops from skimage's photographs
        "natural_noisy_copies": 0,  # denoising: this many noisy copies of each photograph beside the heads (MR or CT)
        "augment": {"flip": True, "shift": 4},
    },
    "generator": {"name": "unet2d", "params": {}},
    "discriminator": {"channels": 32, "layers": 3, "norm": "instance", "conditional": True},
    "loss": {
        "gan_mode": "lsgan",
        "adversarial": 1.0,
        "pixel": 100.0,  # weight of the pixel loss (pix2pix lambda_L1)
        "pixel_kind": "l1",  # l1 | mse
        "feature_matching": 0.0,  # discriminator feature matching (the default perceptual loss)
        "vgg": 0.0,  # VGG19 perceptual loss; needs vgg_weights
        "vgg_weights": None,  # user-supplied VGG19 safetensors (torchvision key names)
        "vgg_layer": 36,  # number of VGG19 feature layers used (36 = up to relu5_4)
        "gradient_penalty": 10.0,  # WGAN-GP lambda
        "critic_steps": 1,  # discriminator updates per generator update
    },
    "optim": {"lr_g": 2.0e-4, "lr_d": 2.0e-4, "betas": [0.5, 0.999], "decay_from": 0.5},
    "log": {"every": 25, "sample_every": 250, "checkpoint_every": 250, "keep_checkpoints": 2,
            "tensorboard": True},
    "init": {},  # network name -> model id or model folder whose weights it starts from (fine-tuning)
    "init_grow": False,  # True: a generator with more residual blocks than its init model starts as it (srresnet2d)
    "export": [],
}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` updated recursively with ``override`` (lists and scalars are replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def list_recipes() -> list[str]:
    """Names of the bundled recipes (``medgan train --recipe NAME``)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.y*ml")) + sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def recipe_path(name: str) -> Path:
    for suffix in (".yaml", ".yml", ".json"):
        path = RECIPES_DIR / f"{name}{suffix}"
        if path.is_file():
            return path
    raise InputError(f"Unknown recipe {name!r}; bundled recipes: {', '.join(list_recipes())}. "
                     f"Or pass your own file with --config.")


def read_config_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping a config file holds, with its ``extends`` (if any) resolved: see :func:`extend`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Config file {path} does not exist.")
    data = _read_mapping(path)
    if "extends" not in data:
        return data
    base = data.pop("extends")
    if not isinstance(base, str) or not base.strip():
        raise InputError(f"Config file {path}: 'extends' must name a bundled recipe or a config file; got {base!r}.")
    base_path = _base_path(base, path)
    chain = (*_chain, path.resolve())
    if base_path.resolve() in chain:
        raise InputError(f"Config file {path}: 'extends' makes a loop ({' -> '.join(p.name for p in chain)} -> "
                         f"{base_path.name}); a recipe cannot extend itself.")
    return extend(read_config_file(base_path, chain), data, where=str(path))


def _base_path(base: str, path: Path) -> Path:
    """``extends: base`` of the file at ``path``: a file beside it (relative), an absolute file, or a recipe."""
    candidate = Path(base) if Path(base).is_absolute() else path.parent / base
    if candidate.suffix in (".yaml", ".yml", ".json") and candidate.is_file():
        return candidate
    if "/" in base or Path(base).suffix in (".yaml", ".yml", ".json"):
        raise InputError(f"Config file {path}: 'extends: {base}' names no file ({candidate} does not exist).")
    return recipe_path(base)


def extend(base: dict[str, Any], child: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """``child`` over the config it ``extends``: mappings merge key by key (:func:`deep_merge`), lists and scalars
    are replaced, except ``export``, whose entries merge one by one with the base's (the child lists as many
    entries as the base, or none); ``name`` is not inherited. A stage-2 recipe thus states only what differs from
    stage 1. A key of the base cannot be removed, only given another value."""
    out = deep_merge({k: v for k, v in base.items() if k != "name"},  # a run's name is its own
                     {k: v for k, v in child.items() if k != "export"})
    if "export" in child:
        mine, theirs = child["export"], base.get("export") or []
        if not isinstance(mine, list) or (theirs and len(mine) != len(theirs)):
            raise InputError(f"{where}: 'export' of a config that extends another merges entry by entry with the "
                             f"base's {len(theirs)} export entries; give a list of {len(theirs)} (or leave 'export' "
                             f"out to keep the base's).")
        out["export"] = ([deep_merge(b, m) if isinstance(b, dict) and isinstance(m, dict) else copy.deepcopy(m)
                          for b, m in zip(theirs, mine)] if theirs else copy.deepcopy(mine))
    return out


def _read_mapping(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InputError(f"Config file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                         f"{str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise InputError(f"Config file {path} must hold a mapping (key: value), not {type(data).__name__}.")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=VALUE`` -> (["a", "b", "c"], VALUE parsed as YAML, so 3, 1e-4, true, [1, 2] keep their types)."""
    if "=" not in text:
        raise InputError(f"--set expects KEY=VALUE (e.g. --set loss.pixel=50), got {text!r}.")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise InputError(f"--set {text!r} has an empty key.")
    return parts, yaml.safe_load(value)


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(config)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return out


def load_config(recipe: str | None = None, path: str | Path | None = None, overrides: list[str] | None = None,
                family_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full, validated config of a run: DEFAULTS <- family defaults <- recipe/file <- overrides."""
    if (recipe is None) == (path is None):
        raise InputError("Give exactly one of a recipe name (--recipe) or a config file (--config).")
    user = read_config_file(recipe_path(recipe) if recipe else path)  # type: ignore[arg-type]
    user = apply_overrides(user, overrides or [])
    if recipe and "name" not in user:
        user["name"] = recipe
    return resolve_config(user, family_defaults)


def resolve_config(user: dict[str, Any], family_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    if family_defaults is None:
        from . import trainer_class

        family_defaults = trainer_class(str(user.get("family", DEFAULTS["family"]))).DEFAULTS
    base = deep_merge(DEFAULTS, family_defaults)
    for net in ("generator", "discriminator"):  # another network than the default: its default params do not fit
        named = user[net].get("name") if isinstance(user.get(net), dict) else None
        if named is not None and isinstance(base.get(net), dict) and base[net].get("name", named) != named:
            base[net] = {k: v for k, v in base[net].items() if k != "params"}
    config = deep_merge(base, user)
    validate_config(config)
    return config


def _need(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise InputError(f"Training config: '{key}' {problem}.")


def validate_config(config: dict[str, Any]) -> None:
    """Raise :class:`InputError` naming the first bad key and what it should be."""
    _need(isinstance(config["name"], str) and config["name"].strip() != "", "name", "must be a non-empty string")
    _need(isinstance(config["seed"], int) and config["seed"] >= 0, "seed", "must be a non-negative integer")
    _need(isinstance(config["steps"], int) and config["steps"] >= 1, "steps", "must be a positive integer")
    _need(isinstance(config["batch_size"], int) and config["batch_size"] >= 1, "batch_size",
          "must be a positive integer")
    data = config["data"]
    _need(data.get("source") in ("phantom", "randomized", "folders", "synthetic"), "data.source",
          "must be phantom, randomized, folders or synthetic")
    _need(data.get("slice_axis") in (0, 1, 2), "data.slice_axis", "must be 0 (z), 1 (y) or 2 (x)")
    crop = data.get("crop")
    _need(crop is None or (isinstance(crop, list) and len(crop) == 2 and all(isinstance(c, int) and c > 0
                                                                             for c in crop)),
          "data.crop", "must be null (whole slices) or [height, width] in pixels")
    loss = config["loss"]
    _need(loss.get("gan_mode") in GAN_MODES, "loss.gan_mode", f"must be one of {', '.join(GAN_MODES)}")
    _need(loss.get("pixel_kind") in ("l1", "mse"), "loss.pixel_kind", "must be l1 or mse")
    for key in ("adversarial", "pixel", "feature_matching", "vgg", "gradient_penalty"):
        _need(isinstance(loss.get(key), (int, float)) and loss[key] >= 0, f"loss.{key}", "must be a number >= 0")
    _need(isinstance(loss.get("critic_steps"), int) and loss["critic_steps"] >= 1, "loss.critic_steps",
          "must be an integer >= 1")
    if loss["vgg"] > 0:
        _need(bool(loss.get("vgg_weights")), "loss.vgg_weights",
              "must name a VGG19 safetensors file when loss.vgg > 0 (weights cannot be downloaded here; "
              "or use loss.feature_matching instead)")
    optim = config["optim"]
    for key in ("lr_g", "lr_d"):
        _need(isinstance(optim.get(key), (int, float)) and optim[key] > 0, f"optim.{key}", "must be > 0")
    _need(isinstance(optim.get("betas"), list) and len(optim["betas"]) == 2, "optim.betas", "must be [beta1, beta2]")
    _need(0.0 <= float(optim.get("decay_from", 1.0)) <= 1.0, "optim.decay_from",
          "must be a fraction of the steps in [0, 1]")
    restart = optim.get("restart_at")
    _need(restart is None or (isinstance(restart, int) and 0 < restart < int(config["steps"])), "optim.restart_at",
          "must be a step between 0 and steps (where a run planned to end there was extended)")
    gen = config["generator"]
    _need(isinstance(gen.get("name"), str), "generator.name", "must name a registered architecture")
    _need(isinstance(gen.get("params", {}), dict), "generator.params", "must be a mapping of keyword arguments")
    init = config.get("init") or {}
    _need(isinstance(init, dict) and all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                         for k, v in init.items()),
          "init", "must map a network name to a model id or model folder, e.g. {G: ldct-denoise}")
    _need(isinstance(config.get("init_grow", False), bool), "init_grow",
          "must be true (a deeper generator starts as its init model, the added blocks identity) or false")
    for i, entry in enumerate(config["export"]):
        _need(isinstance(entry, dict) and isinstance(entry.get("card"), dict), f"export[{i}].card",
              "must be a model card mapping (see MedGANLogic/models/card.py)")
        for key in ("id", "task", "dims", "input", "output"):
            _need(key in entry["card"], f"export[{i}].card.{key}", "is missing")
    for key in ("every", "sample_every", "checkpoint_every"):
        _need(isinstance(config["log"].get(key), int) and config["log"][key] >= 1, f"log.{key}",
              "must be a positive integer (steps)")


def dump_config(config: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
