"""CPC (van den Oord et al., 2018; Hénaff et al., 2019): predict lower crops from the rows above.

Crops. Each augmented view (`n_views = 1`) is resized (bilinearly) to `image_size` and cut
into a grid of overlapping square crops of `crop_size` pixels every `crop_stride` pixels:
R = C = (image_size - crop_size) / crop_stride + 1 rows and columns. van den Oord et al. cut
a 256 px image into 7 x 7 crops of 64 px with 32 px overlap (§3.2; seed 003's authors did the
same, neuroailab/unsup_vvs `cpc_utils.image_preprocess`); the default is that grid at 1/8
scale on a 32 px view: 7 x 7 crops of 8 px every 4 px. A 224 px study sets image_size 256,
crop_size 64, crop_stride 32 (the paper's numbers).

Network (Hénaff et al.'s Appendix A.2 pseudo-code): each crop goes through the backbone
(pooled): the latents z [B, D, R, C]. The targets are `head(z)` (the shared MLPHead to
`target_dim` = 64 units, in place of the pseudo-code's 1x1 convolution, so that `head.fc1` is
extracted as for every method; `probe_forward` is the default head(backbone(x)) on whole
images). The context network (`context`) reads the latents:
- `pixelcnn` (default; Hénaff et al.'s): `context_blocks` (5) residual blocks of 1x1 conv to
  `context_dim` (256) -> ReLU -> 1x3 conv along the row -> one row of zeros padded above ->
  2x1 conv without padding (row r sees rows r-1 and r) -> ReLU -> 1x1 conv back to D, then
  ReLU: the context at row r depends on rows <= r only (all columns);
- `gru`: a GRU of `context_dim` units down each column (seed 003's "recurrent head"; the
  authors' code runs a GRU over the rows of each column): row r sees rows <= r of its column.
For each offset k in `min_offset`..`max_offset` a 1x1 convolution (a linear map) of the
context at row r, times `emb_scale` (0.1), predicts the target at row r + k of the same column
(ssltrace.losses.cpc: InfoNCE against every crop of the batch; sum over offsets).

No context position sees a target crop: the context of row r depends on the crops of rows
<= r only, and `min_offset` x crop_stride >= crop_size is required, so the crop of row
r + k shares no pixel with the crops of rows <= r (overlapping crops would otherwise give
the answer away; Hénaff et al.'s pseudo-code skips offsets 1 and 2 of its half-overlapping
grid, `steps_to_ignore = 2`). The defaults predict 2 and 3 rows ahead (8 and 12 px at 32 px).

Deliberate differences, each named: the backbone keeps its BatchNorm (the study's network),
whose batch statistics couple the crops of a batch during training (Hénaff et al. replaced
BatchNorm by LayerNorm for this reason; at evaluation the coupling is gone); predictions go
top to bottom only (Hénaff et al. also predict the other three directions); no per-crop
augmentation (their colour dropping): the study's augmentation acts on the whole view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssltrace.losses.cpc import cpc_loss
from ssltrace.methods.base import METHODS, Method, make_head

CONTEXTS = ("pixelcnn", "gru")


class MaskedBlock(nn.Module):
    """One residual block of Hénaff et al.'s context network (module docstring)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.row = nn.Conv2d(hidden, hidden, (1, 3), padding=(0, 1))
        self.down = nn.Conv2d(hidden, hidden, (2, 1))  # valid: output row r <- rows r-1, r
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.row(F.relu(self.reduce(x)))
        c = self.down(F.pad(c, (0, 0, 1, 0)))  # a row of zeros above the first
        return x + self.expand(F.relu(c))


class PixelCNNContext(nn.Module):
    """Latents [B, D, R, C] -> context [B, D, R, C]; row r depends on rows <= r."""

    def __init__(self, channels: int, hidden: int, blocks: int):
        super().__init__()
        self.blocks = nn.Sequential(*(MaskedBlock(channels, hidden) for _ in range(blocks)))
        self.out_dim = channels

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return F.relu(self.blocks(latents))


class ColumnGRUContext(nn.Module):
    """Latents [B, D, R, C] -> context [B, H, R, C]: a GRU down each column."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.gru = nn.GRU(channels, hidden, batch_first=True)
        self.out_dim = hidden

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        batch, dim, rows, cols = latents.shape
        sequences = latents.permute(0, 3, 2, 1).reshape(batch * cols, rows, dim)
        out, _ = self.gru(sequences)
        return out.reshape(batch, cols, rows, -1).permute(0, 3, 2, 1)


def crop_grid(x: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """Crops [B, R, C, channels, size, size] of x [B, channels, H, W], row-major."""
    return x.unfold(2, size, stride).unfold(3, size, stride).permute(0, 2, 3, 1, 4, 5)


def grid_side(image_size: int, crop_size: int, crop_stride: int) -> int:
    return (image_size - crop_size) // crop_stride + 1


@METHODS.register("cpc")
class CPC(Method):
    name = "cpc"
    n_views = 1
    defaults = {
        "image_size": 32,
        "crop_size": 8,
        "crop_stride": 4,
        "min_offset": 2,
        "max_offset": 3,
        "context": "pixelcnn",
        "context_dim": 256,
        "context_blocks": 5,
        "target_dim": 64,
        "emb_scale": 0.1,
        "hidden_dim": None,
    }

    positive = (
        "image_size", "crop_size", "crop_stride", "min_offset", "max_offset", "context_dim",
        "context_blocks", "target_dim", "emb_scale", "hidden_dim",
    )  # fmt: skip

    @classmethod
    def resolve(cls, params):
        p = super().resolve(params)
        if p["context"] not in CONTEXTS:
            raise ValueError(
                f"method_params 'context' of 'cpc' must be one of {', '.join(CONTEXTS)}, "
                f"got {p['context']!r}"
            )
        _check_grid(p)
        return p

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        p = self.params
        dim = backbone.out_dim
        self.head = make_head(dim, p["hidden_dim"], p["target_dim"])
        if p["context"] == "pixelcnn":
            self.context = PixelCNNContext(dim, p["context_dim"], p["context_blocks"])
        else:
            self.context = ColumnGRUContext(dim, p["context_dim"])
        offsets = range(p["min_offset"], p["max_offset"] + 1)
        self.offsets = tuple(offsets)
        self.predictors = nn.ModuleList(
            nn.Conv2d(self.context.out_dim, p["target_dim"], 1) for _ in offsets
        )

    def latents(self, view: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of every crop of the grid, [B, R, C, D]."""
        p = self.params
        x = _resize(view, p["image_size"])
        crops = crop_grid(x, p["crop_size"], p["crop_stride"])
        batch, rows, cols = crops.shape[:3]
        flat = crops.reshape(batch * rows * cols, *crops.shape[3:])
        flat = flat.contiguous(memory_format=_memory_format(view))
        return self.backbone(flat).view(batch, rows, cols, -1)

    def predict(self, latents: torch.Tensor) -> dict[int, torch.Tensor]:
        """{k: predictions of rows k.. from the context of rows ..R-1-k, [B, R-k, C, T]}."""
        context = self.context(latents.permute(0, 3, 1, 2))
        scale = self.params["emb_scale"]
        out = {}
        for k, predictor in zip(self.offsets, self.predictors, strict=True):
            out[k] = (predictor(context[:, :, :-k]) * scale).permute(0, 2, 3, 1)
        return out

    def loss(self, views, labels=None, index=None):
        self.check_views(views)
        latents = self.latents(views[0])
        batch, rows, cols, dim = latents.shape
        targets = self.head(latents.reshape(-1, dim)).view(batch, rows, cols, -1)
        return cpc_loss(self.predict(latents), targets)


def _check_grid(p: dict) -> None:
    """The crop grid fits `image_size`, the offsets fit the grid, and no target crop shares a
    pixel with a context crop; errors name the parameter."""
    size, crop, stride = p["image_size"], p["crop_size"], p["crop_stride"]
    if crop > size:
        raise ValueError(
            f"method_params 'crop_size' of 'cpc' must be <= image_size {size}, got {crop}"
        )
    if (size - crop) % stride:
        raise ValueError(
            f"method_params 'crop_stride' of 'cpc' = {stride}: crops of {crop} px every "
            f"{stride} px do not tile image_size {size} (image_size - crop_size must be a "
            "multiple of crop_stride)"
        )
    rows = grid_side(size, crop, stride)
    if p["max_offset"] > rows - 1:
        raise ValueError(
            f"method_params 'max_offset' of 'cpc' = {p['max_offset']}: the {rows} x {rows} "
            f"grid of crops has no row that far below another (at most {rows - 1})"
        )
    if p["min_offset"] > p["max_offset"]:
        raise ValueError(
            f"method_params 'min_offset' of 'cpc' must be <= max_offset {p['max_offset']}, "
            f"got {p['min_offset']}"
        )
    if p["min_offset"] * stride < crop:
        raise ValueError(
            f"method_params 'min_offset' of 'cpc' = {p['min_offset']}: the crop {p['min_offset']}"
            f" rows below shares pixels with the context rows (min_offset x crop_stride must "
            f"be >= crop_size {crop}); at least {-(-crop // stride)}"
        )


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    antialias = min(x.shape[-2:]) > size
    return F.interpolate(x, (size, size), mode="bilinear", antialias=antialias)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format
