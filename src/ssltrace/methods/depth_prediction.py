"""Depth prediction (seed 003, Methods): a multi-layer decoder head on the backbone outputs a
per-pixel depth image, trained by L2 against the per-image standardised ground truth.

Network: the backbone's feature map before its global pool (`models.decoder.pre_pool`, the
C x b x b map, b = image side / 8 for the CIFAR ResNet-18) goes through the head

    fc1: 1x1 conv C -> `hidden_dim` -> BN -> ReLU,
    three x2 upsampling stages (transposed conv k4 s2 p1 -> BN -> ReLU), halving the width,
    a 3x3 conv to one channel: the depth image at the input's size,

as in the dense heads of the depth-estimation work the seed cites (a decoder that upsamples the
encoder's map back to the image); transposed convolutions, never interpolation, keep a
deterministic GPU run possible (see models/decoder.py). `head.fc1` is what extraction reads
(a feature map, pooled like the backbone's).

Training: one augmented view per image; the training engine crops, resizes and mirrors each
image's depth map with its view (`Augmenter.views_with_maps`), so the target matches what the
network sees. The loss is `losses.depth.depth_loss`. A dataset without depth maps
(`train_depth`) is refused at the config check (`snakemake -n`) and by the engine.
"""

from __future__ import annotations

import torch
from torch import nn

from ssltrace.losses.depth import depth_loss
from ssltrace.methods.base import METHODS, Method
from ssltrace.models.decoder import UPSAMPLINGS, feature_map_shape, pre_pool


class DepthHead(nn.Module):
    """Feature map [B, C, b, b] -> depth image [B, 1, 8b, 8b] (module docstring)."""

    def __init__(self, in_channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(in_channels, hidden, 1, bias=False)
        layers: list[nn.Module] = [nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        width = hidden
        for _ in range(UPSAMPLINGS):
            out = max(width // 2, 8)
            layers += [
                nn.ConvTranspose2d(width, out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            width = out
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc1(feature_map))


@METHODS.register("depth_prediction")
class DepthPrediction(Method):
    name = "depth_prediction"
    n_views = 1
    needs_depth = True
    defaults = {"hidden_dim": 256}
    positive = ("hidden_dim",)

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        in_channels = getattr(backbone, "spec", {}).get("in_channels", 3)
        channels = feature_map_shape(backbone, in_channels, 32)[0]
        self.head = DepthHead(channels, self.params["hidden_dim"])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Depth images [B, H, W] for inputs [B, 3, H, W] (H, W multiples of 8)."""
        feature_map, _ = pre_pool(self.backbone, x)
        return self.head(feature_map)[:, 0]

    def probe_forward(self, x: torch.Tensor) -> torch.Tensor:
        feature_map, _ = pre_pool(self.backbone, x)
        return self.head.fc1(feature_map)

    def loss(self, views, labels=None, index=None, depth=None):
        self.check_views(views)
        if depth is None:
            raise ValueError("method 'depth_prediction' needs each view's depth map, got None")
        prediction = self.predict(views[0])
        return depth_loss(prediction, depth[0])
