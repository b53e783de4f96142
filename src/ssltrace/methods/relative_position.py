"""Relative position (Doersch, Gupta & Efros, 2015): which of 8 neighbours a second patch is.

Pairs (§3, Fig. 2): a 3 x 3 grid of square patches of `patch_size` pixels, `gap` pixels apart,
each patch moved by a random jitter of up to `jitter` pixels along each axis; the pair is the
centre patch and one of its 8 neighbours, uniformly at random, and the label is that
neighbour's position (0..7, row by row). The gap and the jitter keep low-level cues (lines
continuing across a boundary, texture continuity) from giving the answer; `gap >= 2 jitter` is
required, so two patches never share a pixel.

Laying the grid. Doersch et al. take 96-px patches with gaps of 48 px and jitter of up to 7 px
from images resized to 150k-450k pixels. A 32 px view is too small for a 3 x 3 grid of such
patches, so each view is first resized (bilinearly) to `image_size` x `image_size` and the
grid is laid on that:
- 32 px (the default): image_size 96 (the view upsampled 3x, one 32-px cell per grid
  position), patch 22, gap 10, jitter 3; the grid spans 3 x 22 + 2 x 10 + 2 x 3 = 92 px and
  is placed at a random offset within the 4 px left;
- 224 px (`augment.size: 224`): image_size 400, patch 96, gap 48, jitter 7, the paper's own
  numbers (3 x 96 + 2 x 48 + 2 x 7 = 398 px), on a 224 px view upsampled to 400 (the paper's
  images are 387-671 px a side).
`image_size` >= 3 patch + 2 gap + 2 jitter is checked with the parameters, before any job.

Network (§3.1, the late-fusion architecture): the backbone embeds each patch (shared weights:
both patches go through it as one batch); `head` (the shared MLPHead, fc1 -> ReLU -> BN -> fc2,
Doersch et al.'s per-patch fc6) embeds each patch's features, and the two embeddings,
concatenated (centre first), go through `classifier` (an MLPHead: their fc7, fc8) to the 8
logits. `probe_forward` is the default `head(backbone(x))` on whole images.

Loss (ssltrace.losses.relative_position): 8-way cross-entropy = invariance, regularisation 0.

Randomness: the label, the grid's offset and the jitter are drawn from the global torch RNG
(CPU), whose state the engine saves with each epoch, in a fixed number per batch: a resumed
run draws the same pairs. Augmentation before pairing is the study's (the authors of seed 003
used no colour dropping, Doersch et al.'s later remedy against chromatic aberration; it is
not implemented).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssltrace.losses.relative_position import POSITIONS, relative_position_loss
from ssltrace.methods.base import METHODS, Method, make_head

# (row, column) in the 3 x 3 grid of each label, Doersch et al.'s Fig. 2 order; centre (1, 1).
NEIGHBOURS = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))
CENTRE = (1, 1)


def grid_extent(patch_size: int, gap: int, jitter: int) -> int:
    """Side of the square the jittered 3 x 3 grid may cover."""
    return 3 * patch_size + 2 * gap + 2 * jitter


def sample_pairs(
    batch: int, image_size: int, patch_size: int, gap: int, jitter: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(centre top-left [B, 2], neighbour top-left [B, 2], label [B]) in pixels (row, col),
    drawn from the global torch RNG: label, grid offset, jitter of both patches."""
    slack = image_size - grid_extent(patch_size, gap, jitter)
    if slack < 0:
        raise ValueError(
            f"a 3 x 3 grid of {patch_size}-px patches with gap {gap} and jitter {jitter} needs "
            f"{grid_extent(patch_size, gap, jitter)} px, more than image_size {image_size}"
        )
    labels = torch.randint(POSITIONS, (batch,))
    origin = torch.randint(slack + 1, (batch, 2)) + jitter
    shifts = torch.randint(-jitter, jitter + 1, (batch, 2, 2))
    cells = torch.tensor(NEIGHBOURS)[labels]
    pitch = patch_size + gap
    centre = origin + pitch * torch.tensor(CENTRE) + shifts[:, 0]
    neighbour = origin + pitch * cells + shifts[:, 1]
    return centre, neighbour, labels


def crop(x: torch.Tensor, top_left: torch.Tensor, size: int) -> torch.Tensor:
    """Square crops [B, C, size, size] of x [B, C, H, W] at per-image (row, col) `top_left`."""
    offsets = torch.arange(size, device=x.device)
    rows = (top_left[:, 0, None] + offsets)[:, :, None]
    cols = (top_left[:, 1, None] + offsets)[:, None, :]
    batch = torch.arange(len(x), device=x.device)[:, None, None]
    return x[batch, :, rows, cols].permute(0, 3, 1, 2)  # advanced indices first: [B, s, s, C]


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """x [B, C, H, W] resized bilinearly to size x size (antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    antialias = min(x.shape[-2:]) > size
    return F.interpolate(x, (size, size), mode="bilinear", antialias=antialias)


@METHODS.register("relative_position")
class RelativePosition(Method):
    name = "relative_position"
    n_views = 1
    defaults = {
        "image_size": 96,
        "patch_size": 22,
        "gap": 10,
        "jitter": 3,
        "hidden_dim": None,
        "embed_dim": None,
    }

    positive = ("image_size", "patch_size", "hidden_dim", "embed_dim")
    non_negative = ("gap", "jitter")

    @classmethod
    def resolve(cls, params):
        p = super().resolve(params)
        if p["gap"] < 2 * p["jitter"]:
            raise ValueError(
                f"method_params 'gap' of 'relative_position' must be >= 2 x jitter "
                f"({2 * p['jitter']}) so that jittered patches never overlap, got {p['gap']}"
            )
        extent = grid_extent(p["patch_size"], p["gap"], p["jitter"])
        if extent > p["image_size"]:
            raise ValueError(
                f"method_params 'image_size' of 'relative_position' = {p['image_size']}: the "
                f"3 x 3 grid does not fit: 3 x patch_size {p['patch_size']} + 2 x gap "
                f"{p['gap']} + 2 x jitter {p['jitter']} = {extent} px"
            )
        return p

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        p = self.params
        embed = p["embed_dim"] or backbone.out_dim
        self.head = make_head(backbone.out_dim, p["hidden_dim"], embed)
        self.classifier = make_head(2 * embed, p["hidden_dim"] or backbone.out_dim, POSITIONS)

    def pairs(self, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(patches [2B, C, s, s]: centres then neighbours, labels [B]) of one view batch."""
        p = self.params
        x = resize(view, p["image_size"])
        centre, neighbour, labels = sample_pairs(
            len(x), p["image_size"], p["patch_size"], p["gap"], p["jitter"]
        )
        size, device = p["patch_size"], x.device
        patches = torch.cat([crop(x, centre.to(device), size), crop(x, neighbour.to(device), size)])
        return patches.contiguous(memory_format=_memory_format(view)), labels.to(device)

    def loss(self, views, labels=None, index=None):
        self.check_views(views)
        patches, positions = self.pairs(views[0])
        embedding = self.head(self.backbone(patches))
        centre, neighbour = embedding.chunk(2)
        logits = self.classifier(torch.cat([centre, neighbour], dim=1))
        return relative_position_loss(logits, positions)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format
