"""One tiny registry type shared by datasets, architectures, methods and analyses.

A registry maps a config name to a factory, so adding a method (say) is one new file that
decorates its class with `@METHODS.register("name")`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """`package`: a package whose modules register here, imported on the first lookup (not at
    import of the registry), so that a caller needing only the registry's neighbours does not
    pay for the modules' dependencies (the figures' matplotlib at every Snakefile parse)."""

    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._package = package

    def _load(self) -> None:
        if self._package is not None:
            package, self._package = self._package, None  # first: modules register while loading
            for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
                if not module.name.startswith("_"):
                    importlib.import_module(f"{package}.{module.name}")

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
