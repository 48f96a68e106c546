"""Network architectures (one file per family) and the model registry.

An architecture is registered under a name that model cards use::

    @register_architecture("conv2d")
    class SmallConvNet(nn.Module): ...

``build_network(name, params)`` instantiates it from ``card.architecture.params``. The family modules listed in
:data:`ARCHITECTURES` are imported on the first look-up; a missing one is an error, never skipped.
This package may import torch and the engine's core (errors, registry); never Slicer or Qt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ModelError
from ..registry import Registry

if TYPE_CHECKING:  # torch comes with the family modules, so that listing model cards does not need it
    import torch.nn as nn

#: Architecture name -> network factory (a class or function taking the card's ``architecture.params``).
ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry(
    "architecture", package=__name__, error=ModelError,
    modules=(".simple", ".unet", ".resnet", ".ldct", ".srgan", ".fanogan", ".segmentation", ".blindspot",
             ".adapted", ".inpaint"))

#: Decorator: ``@register_architecture("unet2d")`` registers a network factory under a card's name.
register_architecture = ARCHITECTURES.register


def build_network(name: str, params: dict) -> nn.Module:
    """The network ``name`` built with keyword arguments ``params`` (a card's ``architecture.params``)."""
    factory = ARCHITECTURES.get(name)
    try:
        return factory(**params)
    except TypeError as exc:
        raise ModelError(f"Model card architecture.params do not fit {name!r}: {exc}.") from exc
