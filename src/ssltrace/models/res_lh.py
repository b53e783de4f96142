"""res_L_H: the small constant-width residual network of seed paper 004 (Appendix A.2).

Two 2x2 stride-2 convolutions (each with BatchNorm and ReLU) take a 32x32 image to 8x8 with H
channels; L residual blocks of width H follow (conv3x3-BN-ReLU-conv3x3-BN + identity, ReLU),
then global average pooling.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ssltrace.models.backbone import (
    ARCHITECTURES,
    Backbone,
    GlobalAvgPool,
    check_positive_int,
    conv_bn_relu,
    init_weights,
)


@ARCHITECTURES.register("res_lh")
def res_lh(*, depth: int = 4, hidden: int = 128, in_channels: int = 3) -> Backbone:
    """res_L_H (seed 004): 2x2/2 convs to 8x8, L=depth residual blocks of H=hidden channels.

    Also reachable as `res_{L}_{H}`, e.g. `build_backbone("res_4_128")`; out_dim = hidden.
    `in_channels` is set by methods whose input is not RGB (e.g. CMC's L channel).
    """
    from torchvision.models.resnet import BasicBlock  # lazily: see ssltrace.models' docstring

    depth = check_positive_int("depth", depth)
    hidden = check_positive_int("hidden", hidden)
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    in_channels = check_positive_int("in_channels", in_channels)
    stages["stem1"] = conv_bn_relu(in_channels, hidden, kernel=2, stride=2, padding=0)
    stages["stem2"] = conv_bn_relu(hidden, hidden, kernel=2, stride=2, padding=0)
    # torchvision's BasicBlock without a downsample is exactly the block described above.
    for index in range(1, depth + 1):
        stages[f"block{index}"] = BasicBlock(hidden, hidden)
    stages["pool"] = GlobalAvgPool()
    model = Backbone(stages, out_dim=hidden)
    init_weights(model)
    return model
