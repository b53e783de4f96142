"""A small vision transformer for 32x32 images (seed paper 004, Appendix A.2 and B.5).

Seed 004's second random-target network: "10 layers, with 8 attention heads and 384 hidden
dimensions. The classification was done using a classification token." Patches of 4x4 pixels
(64 tokens for a 32x32 image, the usual CIFAR choice), a learned class token and learned
position embeddings, then `depth` pre-norm encoder blocks (torchvision's ViT block: multi-head
self-attention and an MLP of width `mlp_ratio` x hidden, GELU), a final LayerNorm, and the
class token's vector as the output [B, hidden] (Dosovitskiy et al. 2021).

Stages (layer names): `embed` (tokens [B, 1 + T, hidden]), `block1` .. `block{depth}` (tokens),
`cls` (the normalised class token [B, hidden]).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ssltrace.models.backbone import ARCHITECTURES, Backbone, check_positive_int


class PatchEmbedding(nn.Module):
    """Image [B, C, H, W] -> [class token, patch tokens] + position embeddings [B, 1 + T, D]."""

    def __init__(self, in_channels: int, hidden: int, patch: int, image_size: int):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"patch_size {patch} must divide the image size {image_size}")
        self.proj = nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch)
        tokens = (image_size // patch) ** 2
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.position = nn.Parameter(torch.empty(1, tokens + 1, hidden).normal_(std=0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        cls = self.class_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.position


class ClassToken(nn.Module):
    """Final LayerNorm, then the class token's vector [B, D] (the classification token)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)[:, 0]


@ARCHITECTURES.register("vit")
def vit(
    *,
    depth: int = 10,
    hidden: int = 384,
    heads: int = 8,
    patch_size: int = 4,
    mlp_ratio: int = 4,
    image_size: int = 32,
    in_channels: int = 3,
) -> Backbone:
    """Vision transformer with a class token (seed 004 B.5: 10 layers, 8 heads, 384 wide).

    out_dim = hidden; `heads` must divide `hidden`. Token stages are [B, tokens, hidden]:
    they are not pooled by extraction, which reads conv maps and vectors (the ViT serves as
    a random-target network, whose class predictions are what the study uses).
    """
    depth = check_positive_int("depth", depth)
    hidden = check_positive_int("hidden", hidden)
    heads = check_positive_int("heads", heads)
    if hidden % heads:
        raise ValueError(f"heads ({heads}) must divide hidden ({hidden})")
    mlp = check_positive_int("mlp_ratio", mlp_ratio) * hidden
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    stages["embed"] = PatchEmbedding(
        check_positive_int("in_channels", in_channels),
        hidden,
        check_positive_int("patch_size", patch_size),
        check_positive_int("image_size", image_size),
    )
    from torchvision.models.vision_transformer import EncoderBlock  # lazily: ssltrace.models

    for index in range(1, depth + 1):
        stages[f"block{index}"] = EncoderBlock(heads, hidden, mlp, 0.0, 0.0)
    stages["cls"] = ClassToken(hidden)
    return Backbone(stages, out_dim=hidden)
