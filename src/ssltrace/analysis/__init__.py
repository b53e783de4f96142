"""Array-level analyses: arrays in, arrays (or numbers) out; no files, no models.

`ANALYSES` maps each analysis name to a one-line description (shown by `ssltrace list`).
A module of this package registers its own analyses when imported:

    from ssltrace.analysis import register_analysis
    register_analysis("fewshot", "pairwise m-shot prototype errors ...")

`registered()` imports every module of the package first, so the registry it returns is
complete and adding an analysis never touches this file. Importing one module imports only
that one: a clustering job does not load torch for the few-shot module beside it.
"""

from __future__ import annotations

import importlib
import pkgutil

from ssltrace.registry import Registry

ANALYSES: Registry[str] = Registry("analysis")


def register_analysis(name: str, description: str) -> None:
    """Add `name` -> one-line `description` to `ANALYSES` (a name registered twice is an error)."""
    ANALYSES.register(name)(description)


def registered() -> Registry[str]:
    """`ANALYSES` with every analysis of the package registered."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    return ANALYSES
