"""Decoders for the generative and dense pretext tasks, and the backbone's pre-pool feature map.

`ResNetDecoder` is a CIFAR ResNet-18 run backwards (seed 003, Methods, "Auto-Encoder": "an
output image was then generated from this vector using a reversed ResNet-18"; the authors'
code, neuroailab/unsup_vvs `get_ae_resnet_18`, reverses each residual block and turns every
stride-2 convolution into an upsampling one). Encoder stage k of the CIFAR ResNet-18 is two
BasicBlocks, the first changing the width C(k-1) -> C(k) and the stride; its mirror keeps the
width in its first block and maps C(k) -> C(k-1) in its second, upsampling x2 where the encoder
halved the resolution (layers 4, 3, 2). The stem (3x3 conv, stride 1) becomes the output
convolution to `out_channels`, linear like the authors' output layer: the target is the
normalised image. A fully connected layer first turns the code vector into the C(4) x b x b map
(the code's "decompress_fc", with its ReLU), b = image side / 8. The output convolution
starts at zero (the first reconstructions are blank instead of noise several times the
images' scale: with He initialisation the initial loss is ~50x that of a blank output).

Upsampling is done by transposed convolutions (kernel 4, stride 2, padding 1 in the main path;
kernel 2, stride 2 in the shortcut), never by nn.Upsample or F.interpolate: the CUDA backward of
nearest and bilinear upsampling has no deterministic implementation, so a deterministic GPU run
could not use them.

`pre_pool(backbone, x)` runs a backbone's stages up to, not including, its final global pool
and returns that map together with the pooled vector, calling every stage once, so the forward
hooks of extraction see each layer exactly as in `backbone(x)`.
"""

from __future__ import annotations

import torch
from torch import nn

from ssltrace.models.backbone import GlobalAvgPool, check_positive_int, init_weights
from ssltrace.models.resnet_cifar import stage_widths

UPSAMPLINGS = 3  # layers 2, 3 and 4 of the CIFAR ResNet-18 halve the resolution


class UpBlock(nn.Module):
    """A BasicBlock reversed: conv3x3 -> BN -> ReLU -> (transposed) conv -> BN, plus shortcut."""

    def __init__(self, in_ch: int, out_ch: int, upsample: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU(inplace=True)
        if upsample:
            self.conv2 = nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False)
        else:
            self.conv2 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if upsample or in_ch != out_ch:
            conv = (
                nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2, bias=False)
                if upsample
                else nn.Conv2d(in_ch, out_ch, 1, bias=False)
            )
            self.shortcut = nn.Sequential(conv, nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + self.shortcut(x))


class ResNetDecoder(nn.Module):
    """Code [B, code_dim] -> image [B, out_channels, image_size, image_size] (module docstring).

    `width` is the CIFAR ResNet-18 width multiplier of the mirrored encoder; `image_size` must
    be a multiple of 8 (three x2 upsamplings from image_size / 8).
    """

    def __init__(self, code_dim: int, image_size: int, width: float = 1.0, out_channels: int = 3):
        super().__init__()
        code_dim = check_positive_int("code_dim", code_dim)
        image_size = check_positive_int("image_size", image_size)
        if image_size % 2**UPSAMPLINGS:
            raise ValueError(
                f"image_size must be a multiple of {2**UPSAMPLINGS} for the reversed ResNet-18 "
                f"(three x2 upsamplings), got {image_size}"
            )
        widths = stage_widths(width)  # C1..C4
        self.base = image_size // 2**UPSAMPLINGS
        self.widths = widths
        self.fc = nn.Linear(code_dim, widths[-1] * self.base**2)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        # Reversed layers 4, 3, 2, 1: keep the width, then step down (upsampling but layer 1).
        for k in range(len(widths) - 1, -1, -1):
            out_ch = widths[max(k - 1, 0)]
            stages.append(
                nn.Sequential(
                    UpBlock(widths[k], widths[k], False), UpBlock(widths[k], out_ch, k > 0)
                )
            )
        self.stages = nn.Sequential(*stages)
        self.output = nn.Conv2d(
            widths[0], check_positive_int("out_channels", out_channels), 3, 1, 1
        )
        init_weights(self)
        # The first reconstructions are blank, not noise many times the images' scale.
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc(code)).view(len(code), self.widths[-1], self.base, self.base)
        return self.output(self.stages(x))


def pre_pool(backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(feature map before the global pool [B, C, h, w], pooled features [B, C]).

    Every stage runs once (the pool too), so extraction's hooks fire as in `backbone(x)`.
    A backbone without final pooling (seed 003's `final_pool: false`) has its last map as
    the map, and that map flattened (its output) in place of pooled features.
    """
    from ssltrace.models.resnet_imagenet import FlatBackbone

    stages = list(backbone.children())
    if isinstance(backbone, FlatBackbone):
        for stage in stages:
            x = stage(x)
        return x, x.flatten(1)
    if not stages or not isinstance(stages[-1], GlobalAvgPool):
        raise ValueError(
            "the backbone must end in a GlobalAvgPool stage or have no final pooling "
            "(ssltrace.models)"
        )
    for stage in stages[:-1]:
        x = stage(x)
    return x, stages[-1](x)


@torch.no_grad()
def feature_map_shape(backbone: nn.Module, in_channels: int, image_size: int) -> tuple[int, ...]:
    """(C, h, w) of the pre-pool map of an `image_size` input: one forward of two blank images
    in eval mode, so no BatchNorm statistic moves and no random number is drawn."""
    was_training = backbone.training
    backbone.eval()
    try:
        device = next(backbone.parameters()).device
        blank = torch.zeros(2, in_channels, image_size, image_size, device=device)
        return tuple(pre_pool(backbone, blank)[0].shape[1:])
    finally:
        backbone.train(was_training)
