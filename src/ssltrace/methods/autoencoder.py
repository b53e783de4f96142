"""Auto-encoder (seed 003, Zhuang et al., 2021): image -> 128-d code -> reversed ResNet-18 -> image.

Network, as the authors' code builds it (neuroailab/unsup_vvs, `get_ae_resnet_18` and the
`ae_head` block): the backbone's feature map before its global pool (seed 003 uses ResNet-18
"without its final pooling layer"), flattened, goes through one linear layer to `hidden_dim`
(128) units and a ReLU: that is the hidden vector h ("compress_fc"). The decoder
(`ssltrace.models.decoder.ResNetDecoder`) maps h back through a fully connected layer to the
last stage's map and through the reversed ResNet-18 to an image.

    backbone stages -> flatten -> head.fc1 (Linear) -> ReLU = h -> decoder -> image

`head.fc1` is that linear layer, so extraction's `head_fc1` is the code before its ReLU (the
shared MLPHead has no place here: the paper's bottleneck is one layer). `probe_forward` runs
the encoder and the code only; the backbone's `pool` stage still runs once so its activation
is extracted as for every method.

Training sees one augmented view per image (`n_views = 1`) and reconstructs that view as the
network sees it (normalised RGB, as the code's target `color_normalize(image)`). The loss
(`ssltrace.losses.autoencoder`): invariance = the L2 reconstruction, regularisation =
`l1_weight` x the mean |h| (the code's per-element normalisation of both terms).

Sizes. The decoder produces `image_size` x `image_size` images (a multiple of 8: three x2
upsamplings), and views of another size are resized to it bilinearly (a 224 px study sets
`image_size: 224`: the flattened map is then C x 28 x 28 for the CIFAR stem, and head.fc1 has
~51M weights at full width; at 32 px it is C x 4 x 4). The decoder mirrors the backbone's
`width` (1.0 for an architecture without one, e.g. res_lh).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssltrace.losses.autoencoder import autoencoder_loss
from ssltrace.methods.base import METHODS, Method
from ssltrace.models.decoder import UPSAMPLINGS, ResNetDecoder, feature_map_shape, pre_pool


class CodeHead(nn.Module):
    """Flattened feature map -> fc1 -> ReLU: the hidden vector (the code's "compress_fc")."""

    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.relu = nn.ReLU()

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.relu(self.fc1(feature_map.flatten(1)))


@METHODS.register("autoencoder")
class AutoEncoder(Method):
    name = "autoencoder"
    n_views = 1
    head_layers = ("head_fc1",)  # the code (fc1) is the head's output: no fc2
    defaults = {"image_size": 32, "hidden_dim": 128, "l1_weight": 1e-4}

    positive = ("image_size", "hidden_dim")
    non_negative = ("l1_weight",)

    @classmethod
    def resolve(cls, params):
        p = super().resolve(params)
        if p["image_size"] % 2**UPSAMPLINGS:
            raise ValueError(
                f"method_params 'image_size' of 'autoencoder' must be a multiple of "
                f"{2**UPSAMPLINGS} (the reversed ResNet-18 upsamples three times), got "
                f"{p['image_size']}"
            )
        return p

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        p = self.params
        in_channels = getattr(backbone, "spec", {}).get("in_channels", 3)
        shape = feature_map_shape(backbone, in_channels, p["image_size"])
        self.head = CodeHead(math.prod(shape), p["hidden_dim"])
        width = getattr(backbone, "spec", {}).get("width", 1.0)
        self.decoder = ResNetDecoder(p["hidden_dim"], p["image_size"], width, in_channels)

    def probe_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder and the code's linear layer (what extraction reads)."""
        feature_map, _ = pre_pool(self.backbone, self.resize(x))
        return self.head.fc1(feature_map.flatten(1))

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        size = self.params["image_size"]
        if x.shape[-1] == size and x.shape[-2] == size:
            return x
        antialias = min(x.shape[-2:]) > size  # antialiasing filters only when shrinking
        return F.interpolate(x, (size, size), mode="bilinear", antialias=antialias)

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction of x, hidden vector h), for x at image_size."""
        feature_map, _ = pre_pool(self.backbone, x)
        hidden = self.head(feature_map)
        return self.decoder(hidden), hidden

    def loss(self, views, labels=None, index=None):
        self.check_views(views)
        x = self.resize(views[0])
        reconstruction, hidden = self.reconstruct(x)
        return autoencoder_loss(
            reconstruction.float(), x.float(), hidden.float(), self.params["l1_weight"]
        )
