"""Self-supervised (and baseline) methods, one file each, behind the `METHODS` registry.

`build_method(name, backbone, params, n_classes)` builds one; `describe()` lists them with
their parameters and defaults. Adding a method is one new file whose class is decorated with
`@METHODS.register("name")`: every module of this package is imported here.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Mapping
from typing import Any

from torch import nn

from ssltrace.methods.base import METHODS, EpochContext, Method, MomentumMethod

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "EpochContext", "Method", "MomentumMethod", "build_method", "describe"]


def build_method(
    name: str, backbone: nn.Module, params: Mapping[str, Any] | None, n_classes: int
) -> Method:
    """Build method `name` around `backbone`; `params` override its defaults (see describe())."""
    return METHODS.get(name)(backbone, params, n_classes)


def describe() -> str:
    """One line per method: name, views, labels, and its parameters with their defaults."""
    lines = []
    for name in METHODS:
        cls = METHODS.get(name)
        doc = (sys.modules[cls.__module__].__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else ""
        params = ", ".join(f"{k}={v!r}" for k, v in cls.defaults.items()) or "none"
        flags = f"views={cls.n_views} labels={'yes' if cls.uses_labels else 'no'}"
        if not cls.trains:
            flags += " (not trained)"
        lines.append(f"{name}: {summary}\n    {flags}; params: {params}")
    return "\n".join(lines)
