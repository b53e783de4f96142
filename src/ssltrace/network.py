"""A network = a backbone (`ssltrace.models`) inside a method (`ssltrace.methods`).

The one place that builds one from (architecture, method, params), rebuilds one from a
checkpoint, and names the layers extraction reads (the backbone's, then the method's head
layers): used by training, extraction, config checks and the planner alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ssltrace import io
from ssltrace.methods import METHODS, Method, build_method
from ssltrace.models import build_backbone


def build_network(
    architecture: Mapping[str, Any], method: str, params: Mapping | None, n_classes: int
) -> Method:
    """Method `method` (with `params`) around the backbone `architecture` = {name, ...}."""
    arch = {**architecture, "in_channels": METHODS.get(method).in_channels}
    return build_method(method, build_backbone(arch.pop("name"), **arch), params, n_classes)


def load_network(checkpoint_path: Path, device: torch.device) -> tuple[Method, dict]:
    """The network a checkpoint was written from, with its weights, in eval mode."""
    ckpt = io.torch_load(checkpoint_path)
    # The checkpoint's weights replace any initialisation: a weights file it started from
    # is not read again (and need not exist any more).
    architecture = {k: v for k, v in ckpt["architecture"].items() if k != "weights"}
    net = build_network(architecture, ckpt["method"], ckpt["method_params"], ckpt["n_classes"])
    net.load_state_dict(ckpt["state_dict"])
    return net.to(device).eval(), ckpt


def layer_names(architecture: Mapping[str, Any], method: str | None = None) -> list[str]:
    """Names of the extracted layers, input to output (built on the meta device: free)."""
    arch = dict(architecture)
    if method:
        arch["in_channels"] = METHODS.get(method).in_channels
    with torch.device("meta"):  # names only: allocate nothing, initialise nothing
        backbone = build_backbone(arch.pop("name"), **arch)
    heads = METHODS.get(method).head_layers if method else Method.head_layers
    return [*backbone.layer_names, *heads]
