"""The backbone type every architecture returns, its registry and parameter checks.

A backbone is a chain of named stages. Each stage's output is one activation that extraction
reads through a forward hook, so the chain itself is the list of extractable layers.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from numbers import Integral, Real

import torch
from torch import nn

from ssltrace.registry import Registry

ARCHITECTURES: Registry = Registry("architecture")


class Backbone(nn.Sequential):
    """Named stages run in order; `forward(x)` returns the last stage's output [B, out_dim]."""

    def __init__(self, stages: OrderedDict[str, nn.Module], out_dim: int):
        super().__init__(stages)
        self.layer_names: tuple[str, ...] = tuple(stages)
        self.out_dim = int(out_dim)

    def layer_modules(self) -> dict[str, nn.Module]:
        """Module per layer name, in order; its forward output is that layer's activation."""
        return dict(self.named_children())


class GlobalAvgPool(nn.Module):
    """Mean over the spatial axes, flattened to [B, C].

    A plain mean rather than nn.AdaptiveAvgPool2d: the latter's CUDA backward has no
    deterministic implementation and fails under torch.use_deterministic_algorithms(True).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False),
            bn=nn.BatchNorm2d(out_ch),
            relu=nn.ReLU(inplace=True),
        )
    )


def init_weights(model: nn.Module) -> None:
    """torchvision's ResNet initialisation: He-normal convolutions, unit BatchNorm scales."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)
