"""Analyses: array-level measures (arrays in, arrays or numbers out) and the pipeline
analyses that apply them to every epoch and layer of a run (`ssltrace.analysis.base`).

`ANALYSES` maps each pipeline analysis name to its class; the class lives in the module of
the same name (`fewshot` in `fewshot.py`) and registers itself:

    @ANALYSES.register("fewshot")
    class FewShot(PerEpochAnalysis): ...

`analysis(name)` imports only that module (a clustering job does not load torch for the
few-shot module beside it); `registered()` imports every module first, so the registry it
returns is complete and adding an analysis never touches this file. The Snakefile calls
`registered()` at every parse (each dry run, each cluster job), so a module imports scipy's and
scikit-learn's submodules inside the functions that use them, not at its top.
"""

from __future__ import annotations

import importlib
import pkgutil

from ssltrace.registry import Registry

ANALYSES: Registry[type] = Registry("analysis")


def analysis(name: str) -> type:
    """The class of pipeline analysis `name`, importing only its own module."""
    if name not in ANALYSES and name in _module_names():
        importlib.import_module(f"{__name__}.{name}")
    return ANALYSES.get(name)


def registered() -> Registry[type]:
    """`ANALYSES` with every analysis of the package registered."""
    for name in _module_names():
        importlib.import_module(f"{__name__}.{name}")
    return ANALYSES


def _module_names() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
