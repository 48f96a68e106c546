"""Network architectures (one file per family) and the model registry.

An architecture is registered under a name that model cards use::

    @register_architecture("conv2d")
    class SmallConvNet(nn.Module): ...

``build_network(card)`` instantiates it from ``card.architecture.params``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from ..errors import ModelError

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str) -> Callable:
    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in ARCHITECTURES and ARCHITECTURES[name] is not factory:
            raise ValueError(f"architecture {name!r} is registered twice")
        ARCHITECTURES[name] = factory
        return factory

    return wrap


def _import_families() -> None:
    # Importing a family module registers its architectures.
    from . import simple  # noqa: F401
    for family in ("unet", "resnet", "ldct", "srgan", "fanogan", "segmentation"):
        try:
            __import__(f"{__name__}.{family}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{family}":
                raise


def build_network(name: str, params: dict) -> nn.Module:
    _import_families()
    if name not in ARCHITECTURES:
        raise ModelError(f"Unknown architecture {name!r} in model card; known: {', '.join(sorted(ARCHITECTURES))}.")
    try:
        return ARCHITECTURES[name](**params)
    except TypeError as exc:
        raise ModelError(f"Model card architecture.params do not fit {name!r}: {exc}.") from exc
