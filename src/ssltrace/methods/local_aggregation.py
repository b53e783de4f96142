"""Local Aggregation (Zhuang, Zhai & Yamins, 2019): close vs background neighbours, memory bank.

Each embedding is pulled towards its close neighbours (shared k-means clusters) within its
background neighbours (nearest bank entries).

The network, view, embedding and memory bank are Instance Recognition's
(`ssltrace.methods.memory_bank`). For each image i with embedding v (the paper's Eqs. 2-4):
B_i = the `background_k` bank entries nearest to v by cosine; C_i = the entries that share
i's cluster in at least one of `n_kmeans` k-means clusterings of the bank into `kmeans_k`
clusters; the loss is -log P(C_i ∩ B_i | v) / P(B_i | v) with P(A|v) the non-parametric
softmax mass of A at temperature 0.07 (`ssltrace.losses.instance.local_aggregation_loss`).

The clusterings are recomputed at the start of every epoch (`before_epoch`, as the authors'
code does once per epoch) from the bank as it stands, with `ssltrace.kmeans.kmeans`
(`kmeans_iterations` Lloyd steps, 20 as faiss in the authors' code) drawing from the epoch's
generator: a resumed run restores the bank and recomputes the same clusters, so the labels
need not be saved.

Initialisation by IR (the authors' README: 10 IR epochs before LA): for the first
`ir_epochs` epochs (default 10, the paper's count; 5 % of the study's 200 epochs) the method
optimises the Instance Recognition loss (full softmax, or NCE with `nce_negatives`) and only
then switches to LA, all in one run, so the bank is an IR bank when it is first clustered.

Sizes scaled to the dataset (n training images; the paper's are for ImageNet's 1,281,167):
`kmeans_k` null = round(10000 n / 1,281,167), at least 2, so a cluster keeps the paper's
~128 images; `background_k` null = min(4096, n), the paper's 4096, so the background keeps
holding ~32 clusters' worth of images. Scaling the background with n as well (80 of 25,000)
would make it smaller than one cluster, C_i ∩ B_i ≈ B_i and the loss ≈ 0. Both may be set.

Loss split: `invariance` = -log( sum_{C∩B} exp(s) + 1e-7 sum_B exp(s) ) (the aggregation
towards close neighbours), `regularisation` = log sum_B exp(s) (the separation from the
background); in the IR epochs, IR's split. They add up to the loss.

Parameters: Instance Recognition's, plus `background_k`, `kmeans_k` (null = scaled as
above), `n_kmeans` (10), `kmeans_iterations` (20) and `ir_epochs` (10).
"""

from __future__ import annotations

from typing import Any

import torch

from ssltrace.kmeans import kmeans
from ssltrace.losses.instance import local_aggregation_loss
from ssltrace.methods.base import METHODS, EpochContext
from ssltrace.methods.memory_bank import MemoryBankMethod, require_at_most

# The paper's ImageNet settings and the size they were chosen for.
IMAGENET_IMAGES = 1_281_167
PAPER_BACKGROUND_K = 4096
PAPER_KMEANS_K = 10_000


def neighbourhood_sizes(params: dict[str, Any], n_images: int) -> tuple[int, int]:
    """(background_k, kmeans_k) for `n_images`: the params, or the scaled defaults."""
    background = params["background_k"]
    if background is None:
        background = min(PAPER_BACKGROUND_K, n_images)
    clusters = params["kmeans_k"]
    if clusters is None:
        clusters = min(n_images, max(2, round(PAPER_KMEANS_K * n_images / IMAGENET_IMAGES)))
    return background, clusters


@METHODS.register("local_aggregation")
class LocalAggregation(MemoryBankMethod):
    name = "local_aggregation"
    defaults = {
        **MemoryBankMethod.defaults,
        "background_k": None,
        "kmeans_k": None,
        "n_kmeans": 10,
        "kmeans_iterations": 20,
        "ir_epochs": 10,
    }
    positive = (
        *MemoryBankMethod.positive,
        "background_k",
        "kmeans_k",
        "n_kmeans",
        "kmeans_iterations",
    )
    non_negative = (*MemoryBankMethod.non_negative, "ir_epochs")

    @classmethod
    def resolve(cls, params):
        resolved = super().resolve(params)
        if resolved["kmeans_k"] is not None and resolved["kmeans_k"] < 2:
            raise ValueError(
                f"method_params 'kmeans_k' of {cls.name!r} must be >= 2 (k-means into one "
                f"cluster makes every image a close neighbour), got {resolved['kmeans_k']}"
            )
        return resolved

    @classmethod
    def check_training_set(cls, params, n_images, colour):
        super().check_training_set(params, n_images, colour)
        for key in ("background_k", "kmeans_k"):
            require_at_most(cls.name, params, key, n_images)

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        self.cluster_labels: torch.Tensor | None = None  # [n_kmeans, n]; None: IR epochs
        self.background_k = self.kmeans_k = 0  # set by setup from the training set's size

    def setup(self, n_images: int) -> None:
        self.check_training_set(self.params, n_images, colour=True)
        super().setup(n_images)
        self.background_k, self.kmeans_k = neighbourhood_sizes(self.params, n_images)

    def before_epoch(self, ctx: EpochContext) -> None:
        if ctx.epoch <= self.params["ir_epochs"]:
            self.cluster_labels = None
            return
        self.cluster_labels = self.cluster_bank(ctx.generator)

    @torch.no_grad()
    def cluster_bank(self, generator: torch.Generator) -> torch.Tensor:
        """`n_kmeans` k-means clusterings of the bank, one after another from `generator`."""
        bank = self.memory_bank.entries
        labels = [
            kmeans(bank, self.kmeans_k, generator, self.params["kmeans_iterations"]).labels
            for _ in range(self.params["n_kmeans"])
        ]
        return torch.stack(labels)

    def loss(self, views, labels=None, index=None):
        v = self.embed(views, index)
        if self.cluster_labels is None:
            return self.instance_loss(v, index)
        with torch.autocast(v.device.type, enabled=False):  # bank logits in float32
            return local_aggregation_loss(
                v,
                self.memory_bank.entries,
                index,
                self.cluster_labels,
                self.background_k,
                self.params["temperature"],
            )
