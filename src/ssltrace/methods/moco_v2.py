"""MoCo v2 (Chen, Fan, Girshick & He, 2020): queries against a momentum encoder's keys + queue.

The key encoder (`key_backbone`, `key_head`) is a frozen copy updated after every step as
key <- m key + (1 - m) query, with m on BYOL's cosine schedule from `base_momentum` (0.99) to
`final_momentum` (1.0) as solo-learn does on CIFAR (equal values: MoCo's constant m). The
queue (`queue` [queue_size, proj_dim], `queue_ptr`) is a buffer, so checkpoints carry it; the
step's keys are enqueued in `after_step`, after the optimiser step, replacing the oldest.

`symmetric` (default true, as solo-learn's MoCo v2+ and MoCo v3): the loss is the mean of
InfoNCE(q1, k2) and InfoNCE(q2, k1) and both views' keys are enqueued; false is the original
one-directional loss InfoNCE(q1, k2) enqueueing k2, as the MoCo v2 paper and seed paper 001
trained it.

`shuffle_bn_groups` G > 1 emulates MoCo's shuffling BatchNorm on one device: with G GPUs each
computes BatchNorm over its own sub-batch, and the keys' sub-batches are shuffled across GPUs
so a query and its key never share batch statistics (BN would otherwise leak which key is
the positive, He et al. 2020 §3.3). Here the queries run in G contiguous groups and the keys
in G groups of a random permutation (drawn from the global RNG, which resumes restore). 1 (the
default) runs each encoder on the whole batch, as solo-learn does on one GPU.
With several processes (ssltrace.training.ddp) each rank's keys are gathered before they are
enqueued, in the order one process on the whole batch enqueues them (view 1 of every rank,
then view 2), so the queues stay identical. `shuffle_bn_groups` then acts within each rank's
share (MoCo's own shuffle runs across GPUs; here it stays an emulation inside a process).
`presets/seed001_moco.yaml` is seed 001's setting (one-directional, m = 0.999, G = 8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssltrace.distributed import gather_detached
from ssltrace.losses import moco_infonce_loss
from ssltrace.methods.base import METHODS, MomentumMethod, forward_views, make_head


@METHODS.register("moco_v2")
class MoCoV2(MomentumMethod):
    name = "moco_v2"
    defaults = {
        "temperature": 0.2,
        "queue_size": 16384,
        "proj_hidden_dim": None,
        "proj_dim": 128,
        "base_momentum": 0.99,
        "final_momentum": 1.0,
        "symmetric": True,
        "shuffle_bn_groups": 1,
    }

    positive = ("temperature", "queue_size", "proj_dim", "shuffle_bn_groups")
    momentum_pairs = (("key_backbone", "backbone"), ("key_head", "head"))

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        p = self.params
        self.head = make_head(backbone.out_dim, p["proj_hidden_dim"], p["proj_dim"])
        self.make_targets()
        # Random unit keys until real ones arrive, as in MoCo's reference code.
        queue = F.normalize(torch.randn(p["queue_size"], p["proj_dim"]), dim=1)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending_keys: torch.Tensor | None = None

    def loss(self, views, labels=None, index=None):
        self.check_views(views)
        temperature = self.params["temperature"]
        if not self.params["symmetric"]:
            q1 = self._queries(views[:1])
            k2 = self._keys(views[1:])
            self._pending_keys = F.normalize(k2, dim=1)
            return moco_infonce_loss(q1, k2, self.queue, temperature)
        q1, q2 = self._queries(views).chunk(2)
        keys = self._keys(views)
        k1, k2 = keys.chunk(2)
        self._pending_keys = F.normalize(keys, dim=1)
        a = moco_infonce_loss(q1, k2, self.queue, temperature)
        b = moco_infonce_loss(q2, k1, self.queue, temperature)
        return {key: (a[key] + b[key]) / 2 for key in a}

    def _queries(self, views: list[torch.Tensor]) -> torch.Tensor:
        """Query embeddings of `views`, BatchNorm over each of the G contiguous groups."""
        groups = self.params["shuffle_bn_groups"]
        if groups == 1:
            return forward_views(views, self.backbone, self.head)
        chunks = _groups(torch.cat(list(views)), groups)
        return torch.cat([forward_views([c], self.backbone, self.head) for c in chunks])

    @torch.no_grad()
    def _keys(self, views: list[torch.Tensor]) -> torch.Tensor:
        """Key embeddings of `views`; with G > 1 over G groups of a random permutation."""
        groups = self.params["shuffle_bn_groups"]
        if groups == 1:
            return forward_views(views, self.key_backbone, self.key_head)
        x = torch.cat(list(views))
        perm = torch.randperm(len(x), device=x.device)
        parts = [
            forward_views([c], self.key_backbone, self.key_head) for c in _groups(x[perm], groups)
        ]
        return torch.cat(parts)[torch.argsort(perm)]

    def after_step(self, progress: float) -> None:
        super().after_step(progress)
        if self._pending_keys is not None:
            chunks = self._pending_keys.chunk(2 if self.params["symmetric"] else 1)
            self.enqueue_(torch.cat([gather_detached(k) for k in chunks]))
            self._pending_keys = None

    @torch.no_grad()
    def enqueue_(self, keys: torch.Tensor) -> None:
        """Overwrite the oldest queue rows with `keys` (a ring buffer)."""
        size = self.queue.shape[0]
        keys = keys[-size:].to(self.queue.dtype)
        rows = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[rows] = keys
        # In place on the device: reading the pointer back would sync the GPU every step.
        self.queue_ptr.add_(keys.shape[0]).remainder_(size)


def _groups(x: torch.Tensor, groups: int) -> tuple[torch.Tensor, ...]:
    """`x` split into `groups` sub-batches, each large enough for BatchNorm statistics."""
    if len(x) < 2 * groups:
        raise ValueError(
            f"moco_v2 shuffle_bn_groups={groups} needs at least {2 * groups} images per encoder "
            f"pass (2 per group), got {len(x)}: lower it or raise train.batch_size"
        )
    return x.chunk(groups)
