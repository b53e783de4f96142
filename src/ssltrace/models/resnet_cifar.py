"""CIFAR ResNets: torchvision's blocks behind a 3x3 stride-1 stem without max-pool.

The usual CIFAR adaptation (SimCLR, solo-learn): a 32x32 image keeps its full resolution into
layer1 instead of being cut to 8x8 by the ImageNet stem. `width` scales every stage's channels.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from torch import nn

from ssltrace.models.backbone import (
    ARCHITECTURES,
    Backbone,
    GlobalAvgPool,
    check_positive_int,
    check_positive_number,
    conv_bn_relu,
    init_weights,
)

if TYPE_CHECKING:  # imported where used: see ssltrace.models' docstring
    from torchvision.models.resnet import BasicBlock, Bottleneck

BASE_WIDTHS = (64, 128, 256, 512)


def stage_widths(width: float) -> tuple[int, ...]:
    """Channels (`planes`) of the four stages for a width multiplier, at least 1 each."""
    width = check_positive_number("width", width)
    return tuple(max(1, round(base * width)) for base in BASE_WIDTHS)


def _make_layer(
    block: type[BasicBlock | Bottleneck], in_ch: int, planes: int, blocks: int, stride: int
) -> nn.Sequential:
    # torchvision's own _make_layer reads widths from ResNet attributes fixed at 64..512, so the
    # stage is assembled here: a projection shortcut whenever shape changes, as in torchvision.
    out_ch = planes * block.expansion
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_ch),
        )
    layers = [block(in_ch, planes, stride, downsample)]
    layers += [block(out_ch, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def cifar_resnet(
    block: type[BasicBlock | Bottleneck], blocks: list[int], width: float, in_channels: int = 3
) -> Backbone:
    planes = stage_widths(width)
    in_channels = check_positive_int("in_channels", in_channels)
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    stages["stem"] = conv_bn_relu(in_channels, planes[0], kernel=3, stride=1, padding=1)
    in_ch = planes[0]
    for index, (n_planes, n_blocks) in enumerate(zip(planes, blocks, strict=True)):
        stride = 1 if index == 0 else 2
        stages[f"layer{index + 1}"] = _make_layer(block, in_ch, n_planes, n_blocks, stride)
        in_ch = n_planes * block.expansion
    stages["pool"] = GlobalAvgPool()
    model = Backbone(stages, out_dim=in_ch)
    init_weights(model)
    return model


@ARCHITECTURES.register("resnet18")
def resnet18(*, width: float = 1.0, in_channels: int = 3) -> Backbone:
    """CIFAR ResNet-18 (BasicBlock [2,2,2,2]); out_dim = 512*width."""
    from torchvision.models.resnet import BasicBlock

    return cifar_resnet(BasicBlock, [2, 2, 2, 2], width, in_channels)


@ARCHITECTURES.register("resnet50")
def resnet50(*, width: float = 1.0, in_channels: int = 3) -> Backbone:
    """CIFAR ResNet-50 (Bottleneck [3,4,6,3]); out_dim = 2048*width."""
    from torchvision.models.resnet import Bottleneck

    return cifar_resnet(Bottleneck, [3, 4, 6, 3], width, in_channels)
