"""Few-label control (seed 003, Fig. 4d): supervised cross-entropy on the labelled subset only.

The supervised baseline's network and loss (`methods.supervised`) trained on the images that
`method_settings.<name>.labels` keeps labelled, and on nothing else: the control for what the
semi-supervised methods gain from their unlabelled images with the same labels.

An epoch is as many steps as every other method's (the training set's size / batch size), over
the labelled images only: each epoch's order is seeded permutations of the labelled images
joined until they fill the epoch, so the control gets the same optimisation budget as the
semi-supervised runs it is compared with (an epoch of the labelled images alone would be one
step at 3 % labels). Every image of a batch is labelled; the loss checks that.
"""

from __future__ import annotations

import torch

from ssltrace.losses import cross_entropy_loss
from ssltrace.methods.base import METHODS, EpochContext
from ssltrace.methods.supervised import Supervised


def labelled_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Seeded permutations of the labelled positions (labels >= 0), joined until they hold at
    least len(labels) entries, cut there."""
    known = torch.nonzero(labels >= 0).flatten()
    if len(known) == 0:
        raise ValueError("few_label: no labelled image in the training set")
    return labelled_order_of(known, len(labels), generator)


@METHODS.register("few_label")
class FewLabel(Supervised):
    name = "few_label"
    label_subset = True
    requires_label_subset = True  # without a subset it is the supervised baseline

    def epoch_order(self, ctx: EpochContext) -> torch.Tensor:
        return labelled_order(ctx.labels, ctx.generator)

    def loss(self, views, labels=None, index=None):
        if labels is None:
            raise ValueError("method 'few_label' needs labels, got None")
        logits = self.embed_views(views, self.head)
        if labels.device.type == "cpu" and bool((labels < 0).any()):
            raise ValueError("few_label trains on labelled images only; the batch has -1 labels")
        return cross_entropy_loss(logits, labels)


def labelled_batches(
    labels: torch.Tensor, batch_size: int, share: float, generator: torch.Generator
) -> torch.Tensor:
    """An epoch's order in which every batch holds round(share * batch_size) labelled images
    (at least one) and unlabelled ones fill the rest, each group cycled through seeded
    permutations: Mean Teacher's two-stream batches (the authors' TwoStreamBatchSampler), so
    that a small labelled subset still reaches every step. All images labelled or none: the
    plain seeded permutation."""
    n = len(labels)
    known = torch.nonzero(labels >= 0).flatten()
    unknown = torch.nonzero(labels < 0).flatten()
    if len(known) == 0 or len(unknown) == 0:
        return torch.randperm(n, generator=generator, device=generator.device).to(labels.device)
    steps = n // batch_size
    k = min(batch_size - 1, max(1, round(share * batch_size)))
    first = labelled_order_of(known, steps * k, generator).view(steps, k)
    rest = labelled_order_of(unknown, steps * (batch_size - k), generator)
    batches = torch.cat([first, rest.view(steps, batch_size - k)], dim=1).flatten()
    leftover = n - len(batches)  # the engine drops the incomplete last batch: pad the order
    return torch.cat([batches, unknown[:leftover]]) if leftover else batches


def labelled_order_of(members: torch.Tensor, length: int, generator: torch.Generator):
    """`length` entries of `members` in seeded permutations joined end to end."""
    rounds = max(1, -(-length // len(members)))
    device = generator.device
    n = len(members)
    perms = [torch.randperm(n, generator=generator, device=device) for _ in range(rounds)]
    return members[torch.cat(perms).to(members.device)][:length]
