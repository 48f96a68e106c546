"""One small name -> object registry, for architectures, trainers, tasks and report sections.

Entries are added with a decorator (``@ARCHITECTURES.register("unet2d")``) or directly
(``TASKS.add("denoise", spec)``). A registry may name the modules whose import registers its entries
(``modules=("pix2pix", "cyclegan")``, relative to ``package``); they are imported on first look-up, and a
missing module is an error, never skipped. An unknown name is an error that lists the known ones. The entries
are listed in the order of ``modules`` (then in registration order within a module), whichever module happened
to be imported first.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry, filled by registration; ``kind`` names the entries in error messages.

    Example::

        SECTIONS: Registry[SectionFn] = Registry("report section", package=__name__, modules=(".synthesis",))

        @SECTIONS.register("mr-t1-to-t2")
        def t1_to_t2(ctx): ...

        SECTIONS.get("mr-t1-to-t2")  # imports the modules once, then looks the name up
    """

    def __init__(self, kind: str, *, package: str | None = None, modules: tuple[str, ...] = (),
                 error: type[Exception] = KeyError) -> None:
        self.kind = kind
        self._package = package
        self._modules = tuple(modules)
        self._error = error
        self._entries: dict[str, T] = {}
        self._origin: dict[str, str | None] = {}
        self._loaded = not modules

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name``."""

        def wrap(obj: T) -> T:
            self.add(name, obj)
            return obj

        return wrap

    def add(self, name: str, obj: T, *, module: str | None = None) -> None:
        """Register ``obj`` under ``name``; ``module`` (default: ``obj.__module__``) places it in the listing."""
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = obj
        self._origin[name] = module or getattr(obj, "__module__", None)

    def _ordered(self) -> list[tuple[str, T]]:
        """Entries in ``modules`` order; entries from other modules (or added directly) after them."""
        if not self._modules:
            return list(self._entries.items())
        rank = {importlib.util.resolve_name(m, self._package) if m.startswith(".") else m: i
                for i, m in enumerate(self._modules)}
        return sorted(self._entries.items(), key=lambda item: rank.get(self._origin[item[0]], len(rank)))

    def load(self) -> None:
        """Import the modules that register entries (once)."""
        if self._loaded:
            return
        self._loaded = True  # set first: the modules' own imports may look entries up
        try:
            for module in self._modules:
                importlib.import_module(module, self._package)
        except BaseException:
            self._loaded = False
            raise

    def get(self, name: str) -> T:
        self.load()
        try:
            return self._entries[name]
        except KeyError:
            raise self._error(f"Unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}.") from None

    def names(self) -> list[str]:
        self.load()
        return [name for name, _ in self._ordered()]

    def items(self) -> list[tuple[str, T]]:
        self.load()
        return self._ordered()

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
