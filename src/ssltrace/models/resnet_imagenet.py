"""ImageNet ResNets at 224 px: torchvision's own networks behind the standard 7x7 stem.

The modules are torchvision's `resnet18()` / `resnet50()` (not rebuilt), regrouped into the
named stages extraction hooks. Layer names at 224 x 224 input (C x H x W of each activation):

    layer   ResNet-18        ResNet-50        what it is
    stem    64 x 56 x 56     64 x 56 x 56     7x7/2 conv, BN, ReLU, 3x3/2 max-pool ("first
                                              pooling layer" in seed 003's readouts)
    layer1  64 x 56 x 56     256 x 56 x 56    residual stage 1 (2 resp. 3 blocks)
    layer2  128 x 28 x 28    512 x 28 x 28    stage 2, stride 2
    layer3  256 x 14 x 14    1024 x 14 x 14   stage 3, stride 2
    layer4  512 x 7 x 7      2048 x 7 x 7     stage 4, stride 2
    pool    512              2048             global average pool (absent with final_pool=False)

`final_pool=False` is seed 003's backbone ("ResNet-18 without its final pooling layer and the
categorization readout layer", Zhuang et al. 2021): the network ends at layer4 and its output is
layer4's map flattened, C * s * s values with s = image_size / 32 rounded up (25,088 for
ResNet-18 at 224 px), so a head sees the spatial layout. `weights` names a torchvision weights
file on disk (e.g. resnet18-f37072fd.pth) that initialises the backbone, for a supervised
reference; its `fc` classifier is not part of a backbone and is left out.

`width` scales every stage's channels as the CIFAR ResNets' option does (ssltrace.models.
resnet_cifar: 64..512 times width, at least 1). Width 1 is torchvision's network itself; any
other width assembles the same stem and stages from torchvision's blocks at the scaled widths
(for tests and pilot runs of the 224-px DAG on a CPU: width 0.25 costs about 1/16 of the
FLOPs). A weights file fits width 1 only. Measured with torch 2.14.1 on the CPU: width 0.125
(8-channel stem) aborts in the channels_last backward ("double free or corruption"), a torch
fault; train with `train.channels_last: false` or width >= 0.25 there.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict

import torch
from torch import nn

from ssltrace import io
from ssltrace.models.backbone import (
    ARCHITECTURES,
    Backbone,
    GlobalAvgPool,
    check_positive_int,
    init_weights,
)
from ssltrace.models.resnet_cifar import _make_layer, stage_widths

# torchvision's stem modules, kept under their own names inside the "stem" stage so that a
# torchvision state dict maps onto ours by prefixing "stem." (see torchvision_key).
STEM_MODULES = ("conv1", "bn1", "relu", "maxpool")
N_HALVINGS = 5  # stem conv, max-pool, layer2..layer4: each maps a side s to ceil(s / 2)


class FlatBackbone(Backbone):
    """A backbone whose output is its last map flattened (no final pooling).

    The flattened size depends on the input side, so a mismatch is reported here, naming
    `image_size`, instead of as a shape error inside the head.
    """

    def __init__(self, stages: OrderedDict[str, nn.Module], out_dim: int, image_size: int):
        super().__init__(stages, out_dim)
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x).flatten(1)
        if out.shape[1] != self.out_dim:
            raise ValueError(
                f"architecture parameter image_size={self.image_size} gives {self.out_dim} "
                f"features without final pooling, but a {tuple(x.shape[-2:])} input gave "
                f"{out.shape[1]}; set image_size to the input's side"
            )
        return out


def final_side(image_size: int) -> int:
    """Side of layer4's map for a square input of side `image_size` (7 at 224)."""
    side = image_size
    for _ in range(N_HALVINGS):
        side = math.ceil(side / 2)
    return side


def torchvision_key(key: str) -> str | None:
    """Our state-dict key for a torchvision ResNet key; None for the classifier (fc)."""
    head = key.split(".", 1)[0]
    if head == "fc":
        return None
    return f"stem.{key}" if head in STEM_MODULES else key


def load_torchvision_weights(model: Backbone, path: str | os.PathLike) -> None:
    """Copy a torchvision ResNet weights file (loaded with weights_only=True) into `model`.

    Every backbone tensor must be in the file with the same shape; the file's `fc.*` is
    dropped. A missing file, a wrong architecture or a stem of another channel count is an
    error naming the file and the architecture parameter `weights`.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"architecture parameter weights: no file {path}")
    # remove=False: a damaged file is the user's, reported but never deleted.
    state = io.torch_load(path, remove=False)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"architecture parameter weights: {path} holds no state dict")
    mapped = {torchvision_key(k): v for k, v in state.items()}
    mapped.pop(None, None)
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    wrong = [k for k in own if k in mapped and mapped[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        )
        raise ValueError(
            f"architecture parameter weights: {path} does not fit this network ({detail}); "
            "expected a torchvision weights file of the same ResNet with a 3-channel stem"
        )
    model.load_state_dict(mapped)


def imagenet_resnet(
    name: str,
    in_channels: int,
    final_pool: bool,
    image_size: int,
    weights: str | None,
    width: float = 1.0,
) -> Backbone:
    in_channels = check_positive_int("in_channels", in_channels)
    image_size = check_positive_int("image_size", image_size)
    if not isinstance(final_pool, bool):
        raise ValueError(f"final_pool must be true or false, got {final_pool!r}")
    planes = stage_widths(width)
    if weights is not None and width != 1:
        raise ValueError(
            f"architecture parameter weights: a torchvision weights file fits width 1, not {width}"
        )
    stages = _stages(name, in_channels) if width == 1 else _scaled_stages(name, in_channels, planes)
    channels = _out_channels(stages)
    if final_pool:
        stages["pool"] = GlobalAvgPool()
        model = Backbone(stages, out_dim=channels)
    else:
        model = FlatBackbone(stages, channels * final_side(image_size) ** 2, image_size)
    if width != 1:
        init_weights(model)
    # On the meta device (layer names, config checks) there is nothing to load into.
    if weights is not None and not next(model.parameters()).is_meta:
        load_torchvision_weights(model, weights)
    return model


def _stages(name: str, in_channels: int) -> OrderedDict[str, nn.Module]:
    """torchvision's own network (its initialisation), regrouped into the named stages."""
    import torchvision  # lazily: see ssltrace.models' docstring

    net = getattr(torchvision.models, name)()
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    stages["stem"] = nn.Sequential(OrderedDict((m, getattr(net, m)) for m in STEM_MODULES))
    for index in range(1, 5):
        stages[f"layer{index}"] = getattr(net, f"layer{index}")
    return stages


def _scaled_stages(name: str, in_channels: int, planes: tuple[int, ...]):
    """The same stem and stages at scaled widths, from torchvision's blocks."""
    import torchvision

    block, blocks = {
        "resnet18": (torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]),
        "resnet50": (torchvision.models.resnet.Bottleneck, [3, 4, 6, 3]),
    }[name]
    stem = OrderedDict(
        conv1=nn.Conv2d(in_channels, planes[0], kernel_size=7, stride=2, padding=3, bias=False),
        bn1=nn.BatchNorm2d(planes[0]),
        relu=nn.ReLU(inplace=True),
        maxpool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    stages: OrderedDict[str, nn.Module] = OrderedDict(stem=nn.Sequential(stem))
    in_ch = planes[0]
    for index, (n_planes, n_blocks) in enumerate(zip(planes, blocks, strict=True)):
        stride = 1 if index == 0 else 2
        stages[f"layer{index + 1}"] = _make_layer(block, in_ch, n_planes, n_blocks, stride)
        in_ch = n_planes * block.expansion
    return stages


def _out_channels(stages: OrderedDict[str, nn.Module]) -> int:
    """Channels of layer4's output (its last block's last BatchNorm)."""
    norms = [m for m in stages["layer4"].modules() if isinstance(m, nn.BatchNorm2d)]
    return norms[-1].num_features


@ARCHITECTURES.register("resnet18_imagenet")
def resnet18_imagenet(
    *,
    in_channels: int = 3,
    final_pool: bool = True,
    image_size: int = 224,
    weights: str | None = None,
    width: float = 1.0,
) -> Backbone:
    """ImageNet ResNet-18 (torchvision, 7x7 stem, 224 px); out_dim 512*width, or 512*7*7
    unpooled."""
    return imagenet_resnet("resnet18", in_channels, final_pool, image_size, weights, width)


@ARCHITECTURES.register("resnet50_imagenet")
def resnet50_imagenet(
    *,
    in_channels: int = 3,
    final_pool: bool = True,
    image_size: int = 224,
    weights: str | None = None,
    width: float = 1.0,
) -> Backbone:
    """ImageNet ResNet-50 (torchvision, 7x7 stem, 224 px); out_dim 2048*width, or 2048*7*7
    unpooled."""
    return imagenet_resnet("resnet50", in_channels, final_pool, image_size, weights, width)
