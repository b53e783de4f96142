"""Backbones and heads.

`build_backbone(name, **params)` returns a `Backbone`: `layer_names` (ordered tuple), `out_dim`,
`forward(x [B,3,32,32]) -> [B, out_dim]` pooled features (x at 224 px for the `*_imagenet`
ones), and `layer_modules()` mapping each layer name to the module whose forward output is that
activation (for forward hooks).

The Snakefile imports the registries to check a config, so the architecture modules import
torchvision only inside the functions that build a network: a dry run stays fast.
"""

from __future__ import annotations

import inspect
import re

import torch

from ssltrace.models import (  # noqa: F401  (register the architectures)
    res_lh,
    resnet_cifar,
    resnet_imagenet,
    vit,
)
from ssltrace.models.backbone import ARCHITECTURES, Backbone
from ssltrace.models.heads import MLPHead

__all__ = ["ARCHITECTURES", "Backbone", "MLPHead", "build_backbone", "describe"]

_RES_LH_NAME = re.compile(r"res_(\d+)_(\d+)")


def build_backbone(name: str, **params) -> Backbone:
    """Build a registered architecture; `res_{L}_{H}` is `res_lh` with depth=L, hidden=H."""
    name, params = _resolve_name(name, params)
    factory = ARCHITECTURES.get(name)
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"architecture {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are: {', '.join(accepted) or 'none'}"
        )
    model = factory(**params)
    # How it was built, so a method can build a sibling (e.g. CMC's ab backbone).
    model.spec = {"name": name, **params}
    return model


def _resolve_name(name: str, params: dict) -> tuple[str, dict]:
    if not isinstance(name, str):
        raise TypeError(f"architecture name must be a string, got {name!r}")
    match = _RES_LH_NAME.fullmatch(name)
    if match is None:
        if name not in ARCHITECTURES:
            known = ", ".join(ARCHITECTURES.names())
            raise KeyError(
                f"unknown architecture {name!r}; known: {known} (res_lh also as res_{{L}}_{{H}}, "
                "e.g. res_4_128)"
            )
        return name, params
    from_name = {"depth": int(match[1]), "hidden": int(match[2])}
    for key, value in from_name.items():
        if key in params and params[key] != value:
            raise ValueError(
                f"architecture {name!r} sets {key}={value} but params give {key}={params[key]!r}"
            )
    return "res_lh", {**params, **from_name}


def describe() -> dict[str, dict]:
    """Per architecture: layer names at default parameters and the factory's description."""
    out = {}
    for name in ARCHITECTURES.names():
        # Built on the meta device: no memory is allocated and no weights are initialised.
        with torch.device("meta"):
            model = build_backbone(name)
        doc = inspect.getdoc(ARCHITECTURES.get(name)) or ""
        out[name] = {"layers": list(model.layer_names), "description": doc.splitlines()[0]}
    return out
