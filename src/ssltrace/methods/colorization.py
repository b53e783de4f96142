"""Colourisation (Zhang, Isola & Efros, 2016): the network sees L and predicts the ab colours.

Input: one augmented view per image (`n_views = 1`) converted to Lab and normalised as CMC's
code does (`colour_space = "lab"`, ssltrace.augment); the analysed `backbone` takes the L
channel only (`in_channels = 1`) and `probe_forward` feeds it the L channel of the probe
images (seed 003 analyses grey stimuli through the L network, as for CMC).

Network: the backbone's feature map before its global pool (stride 8 for the CIFAR ResNets)
goes through a convolutional head that predicts per pixel at 1/`target_stride` of the input
resolution (4, the paper's: its network outputs 56 x 56 for 224 x 224 inputs; the target ab
map is the input's subsampled with that stride, as the Caffe code's `data_ab_ss`):

    head.fc1 1x1 conv -> ReLU -> BN -> x(stride/target_stride) transposed conv (omitted at
    1) -> 3x3 conv -> ReLU -> BN -> 1x1 conv to Q = 313 logits (or 2 ab values)

`head.fc1` is what extraction reads (its map, pooled like any convolutional layer). The
authors of seed 003 (neuroailab/unsup_vvs, col_resnet18.cfg) used a dilated ResNet-18 and a
2x2-1x1-1x1 head at stride 8; the study's backbones are not dilated, so the head upsamples.

Objective (`objective`; formulas in ssltrace.losses.colorization):
- `classification` (default, the paper's): soft-encoded 313-bin targets (`neighbours` nearest
  bins, Gaussian `sigma`), cross-entropy rebalanced by the class weights of eqs. 3-4 with
  lambda = `prior_mix` (0.5) over the training set's colour prior smoothed with
  `prior_sigma` (5); images without colour (all |ab| <= `grey_threshold` = 5) are skipped;
- `regression`: 1/2 ||ab - ab'||^2 per pixel on the normalised ab channels (the paper's eq. 1
  baseline), same skipping.

The prior p~ is counted once, at the first `before_epoch`, over every pixel of the
un-augmented training images (the paper counts ImageNet's training set): `ctx.plain` gives
normalised Lab, whose ab channels are mapped back to ab units with augment.LAB_MEAN/LAB_STD
and assigned to their nearest bin. It is a non-persistent buffer kept in the resume state
(`training_state`), not in checkpoints; nothing here draws random numbers.

A colourisation study should augment with crops and flips only (as the paper and the authors'
code do): colour jitter changes the targets, and random grayscale views are skipped by the
grey mask, wasting 20 % of the batch at the `seed000` preset.
"""

from __future__ import annotations

import torch
from torch import nn

from ssltrace.augment import LAB_MEAN, LAB_STD
from ssltrace.losses.colorization import (
    ab_bins,
    classification_loss,
    colourful,
    nearest_bin,
    rebalancing_weights,
    regression_loss,
    smoothed_prior,
)
from ssltrace.methods.base import METHODS, EpochContext, Method
from ssltrace.models.decoder import feature_map_shape, pre_pool

OBJECTIVES = ("classification", "regression")
PIXEL_CHUNK = 2**16  # ab points per nearest-bin search (a [chunk, 313] distance matrix)
_PROBE_SIZE = 64  # input side at which the backbone's output stride is measured


class ColourHead(nn.Module):
    """Per-pixel prediction from a feature map (module docstring); `fc1` is extracted."""

    def __init__(self, in_ch: int, hidden: int, out_ch: int, upsample: int):
        super().__init__()
        self.fc1 = nn.Conv2d(in_ch, hidden, 1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.relu = nn.ReLU()
        # kernel = stride: every output pixel has one input pixel (no checkerboard overlap).
        self.up = nn.ConvTranspose2d(hidden, hidden, upsample, upsample) if upsample > 1 else None
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.out = nn.Conv2d(hidden, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.relu(self.fc1(x)))
        if self.up is not None:
            x = self.up(x)
        return self.out(self.bn2(self.relu(self.conv2(x))))


@METHODS.register("colorization")
class Colorization(Method):
    name = "colorization"
    n_views = 1
    head_layers = ("head_fc1",)  # the head has no fc2 (its output is not a vector)
    colour_space = "lab"
    in_channels = 1  # the analysed backbone takes L
    defaults = {
        "objective": "classification",
        "target_stride": 4,
        "hidden_dim": None,
        "neighbours": 5,
        "sigma": 5.0,
        "prior_sigma": 5.0,
        "prior_mix": 0.5,
        "grey_threshold": 5.0,
    }

    positive = ("target_stride", "hidden_dim", "neighbours", "sigma", "prior_sigma")
    non_negative = ("grey_threshold",)
    unit_interval = ("prior_mix",)

    @classmethod
    def resolve(cls, params):
        p = super().resolve(params)
        if p["objective"] not in OBJECTIVES:
            raise ValueError(
                f"method_params 'objective' of 'colorization' must be one of "
                f"{', '.join(OBJECTIVES)}, got {p['objective']!r}"
            )
        q = len(ab_bins())
        if p["neighbours"] > q:
            raise ValueError(
                f"method_params 'neighbours' of 'colorization' must be <= {q} (the ab bins), "
                f"got {p['neighbours']}"
            )
        return p

    @classmethod
    def check_training_set(cls, params, n_images, colour):
        if not colour:
            raise ValueError(
                "method 'colorization' needs a colour dataset: it predicts the ab channels, "
                "which are constant in grey images (this dataset has colour: false)"
            )

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        if getattr(backbone, "spec", {}).get("in_channels") != 1:
            raise ValueError(
                "colorization's backbone takes the L channel: build it with in_channels=1 "
                "(ssltrace.network.build_network does)"
            )
        p = self.params
        channels, height, _ = feature_map_shape(backbone, 1, _PROBE_SIZE)
        stride = _PROBE_SIZE // height
        if stride % p["target_stride"]:
            raise ValueError(
                f"method_params 'target_stride' of 'colorization' must divide the backbone's "
                f"output stride {stride}, got {p['target_stride']}"
            )
        self.register_buffer("bins", ab_bins(), persistent=False)
        out = len(self.bins) if p["objective"] == "classification" else 2
        hidden = p["hidden_dim"] or channels
        self.head = ColourHead(channels, hidden, out, stride // p["target_stride"])
        q = len(self.bins)
        # Filled at the first before_epoch (classification), or from the resume state.
        self.register_buffer("ab_prior", torch.zeros(q, dtype=torch.float64), persistent=False)
        self.register_buffer("class_weights", torch.ones(q), persistent=False)
        self.has_prior = False  # a flag, so the loss need not read the buffer (a GPU sync)

    def probe_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The L network on the L channel of Lab input [B, 3, H, W], then the head."""
        return self.head(pre_pool(self.backbone, x[:, :1])[0])

    @torch.no_grad()
    def before_epoch(self, ctx: EpochContext) -> None:
        """Count the training set's colour prior once (module docstring)."""
        if self.params["objective"] != "classification" or self.has_prior:
            return
        counts = torch.zeros(len(self.bins), dtype=torch.long)
        for start in range(0, len(ctx.images), ctx.batch_size):
            ab = self.ab_units(ctx.plain(ctx.images[start : start + ctx.batch_size])[:, 1:])
            points = ab.permute(0, 2, 3, 1).reshape(-1, 2)
            for chunk in points.split(PIXEL_CHUNK):
                # Counted on the CPU: CUDA's bincount is not deterministic.
                index = nearest_bin(chunk, self.bins).cpu()
                counts += torch.bincount(index, minlength=len(self.bins))
        prior = smoothed_prior(counts, self.bins.cpu(), self.params["prior_sigma"])
        self.ab_prior.copy_(prior)
        self._set_weights()
        self.has_prior = True

    def _set_weights(self) -> None:
        self.class_weights.copy_(rebalancing_weights(self.ab_prior, self.params["prior_mix"]))

    def training_state(self) -> dict[str, torch.Tensor]:
        return {"ab_prior": self.ab_prior}

    def load_training_state(self, state) -> None:
        if "ab_prior" not in state:
            return
        if state["ab_prior"].shape != self.ab_prior.shape:
            raise ValueError(
                f"colorization resume state: ab_prior must be {tuple(self.ab_prior.shape)}, "
                f"got {tuple(state['ab_prior'].shape)}"
            )
        self.ab_prior.copy_(state["ab_prior"])
        self.has_prior = bool(self.ab_prior.sum() > 0)  # epoch 0's state has none yet
        if self.has_prior:
            self._set_weights()

    def ab_units(self, ab: torch.Tensor) -> torch.Tensor:
        """Normalised ab channels [B, 2, H, W] -> ab in CIE units (undo augment's Lab scaling)."""
        mean = torch.tensor(LAB_MEAN[1:], device=ab.device).view(1, 2, 1, 1)
        std = torch.tensor(LAB_STD[1:], device=ab.device).view(1, 2, 1, 1)
        return ab.float() * std + mean

    def loss(self, views, labels=None, index=None):
        self.check_views(views)
        x = views[0]
        stride = self.params["target_stride"]
        prediction = self.probe_forward(x)
        target = x[:, 1:, ::stride, ::stride]
        if prediction.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                f"colorization predicts a {tuple(prediction.shape[-2:])} map but the target ab "
                f"map (every {stride}th pixel of {tuple(x.shape[-2:])} views) is "
                f"{tuple(target.shape[-2:])}: the view side must be a multiple of the "
                "backbone's output stride"
            )
        ab = self.ab_units(target)
        mask = colourful(ab, self.params["grey_threshold"])
        mask = mask[:, None, None].expand(-1, *ab.shape[-2:]).reshape(-1)
        pixels = prediction.permute(0, 2, 3, 1).reshape(-1, prediction.shape[1])
        if self.params["objective"] == "regression":
            return regression_loss(pixels, target.permute(0, 2, 3, 1).reshape(-1, 2), mask)
        if not self.has_prior:
            raise RuntimeError(
                "colorization: the colour prior is not counted yet: setup and before_epoch(ctx) "
                "must run before loss (the engine calls them)"
            )
        p = self.params
        return classification_loss(
            pixels, ab.permute(0, 2, 3, 1).reshape(-1, 2), self.bins, self.class_weights,
            p["neighbours"], p["sigma"], mask,
        )  # fmt: skip
