"""Local Label Propagation (Zhuang, Ding, Murli & Yamins, 2019): Local Aggregation's embedding
and memory bank, with labels propagated from the labelled images to their neighbours.

Network: Instance Recognition's backbone, head (embedding `proj_dim` 128, `head_fc1`) and
memory bank (`ssltrace.methods.memory_bank`), plus a linear category classifier on the
backbone's pooled features (`classifier`, the paper's category prediction).

At the start of every epoch after the first `ir_epochs` the bank's pseudo-labels and
confidences are recomputed from the bank as it stands and the labelled subset
(`ssltrace.losses.label_propagation.propagate_labels`: K = `propagation_k` nearest labelled
neighbours, votes exp(V_i . V_j / t) / rho_j with the local density rho_j over `density_k`
neighbours); the step's loss is the confidence-weighted aggregation towards the bank entries
of the same pseudo-label within the background neighbours, plus the confidence-weighted
categorisation (`local_label_propagation_loss`). A resumed run restores the bank and
recomputes the same labels, so they need not be saved.

Initialisation as Local Aggregation's: for the first `ir_epochs` epochs the embedding learns
by Instance Recognition (the bank is random before that, so propagating through it would only
spread noise), while the classifier already learns from the labelled images (cross-entropy on
the batch's labelled rows, added to the IR loss's `invariance`). `background_k` null = LA's
min(4096, n).

`labelled_share` > 0 gives every batch that share of labelled images (Mean Teacher's
two-stream batches, `methods.few_label.labelled_batches`); the default 0 is the plain random
order, as the LLP paper describes no such sampler.

Defaults not stated in the seed: `propagation_k` 10 labelled voters and `density_k` 10
neighbours for the density, as we read the LLP paper (§3.1); both are parameters. The authors'
repository (neuroailab/LocalLabelPropagation) was not available to check them against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssltrace.losses.label_propagation import local_label_propagation_loss, propagate_labels
from ssltrace.methods.base import METHODS, EpochContext
from ssltrace.methods.few_label import labelled_batches
from ssltrace.methods.local_aggregation import PAPER_BACKGROUND_K
from ssltrace.methods.memory_bank import MemoryBankMethod, require_at_most


@METHODS.register("local_label_propagation")
class LocalLabelPropagation(MemoryBankMethod):
    name = "local_label_propagation"
    uses_labels = True
    label_subset = True
    defaults = {
        **MemoryBankMethod.defaults,
        "background_k": None,
        "propagation_k": 10,
        "density_k": 10,
        "ir_epochs": 10,
        "labelled_share": 0.0,
    }
    positive = (*MemoryBankMethod.positive, "background_k", "propagation_k", "density_k")
    non_negative = (*MemoryBankMethod.non_negative, "ir_epochs")
    unit_interval = (*MemoryBankMethod.unit_interval, "labelled_share")

    @classmethod
    def check_training_set(cls, params, n_images, colour):
        super().check_training_set(params, n_images, colour)
        require_at_most(cls.name, params, "background_k", n_images)
        if params["density_k"] >= n_images:
            raise ValueError(
                f"method_params 'density_k' of {cls.name!r} must be below the number of "
                f"training images ({n_images}): the density sums over other images"
            )

    def __init__(self, backbone, params, n_classes):
        super().__init__(backbone, params, n_classes)
        self.classifier = nn.Linear(backbone.out_dim, n_classes)
        self.pseudo_labels: torch.Tensor | None = None  # [n]; None: IR epochs
        self.confidence: torch.Tensor | None = None
        self.background_k = 0

    def setup(self, n_images: int) -> None:
        self.check_training_set(self.params, n_images, colour=True)
        super().setup(n_images)
        self.background_k = self.params["background_k"] or min(PAPER_BACKGROUND_K, n_images)

    def epoch_order(self, ctx: EpochContext) -> torch.Tensor | None:
        share = self.params["labelled_share"]
        if share == 0:
            return None
        return labelled_batches(ctx.labels, ctx.batch_size, share, ctx.generator)

    def before_epoch(self, ctx: EpochContext) -> None:
        if ctx.epoch <= self.params["ir_epochs"]:
            self.pseudo_labels = self.confidence = None
            return
        self.pseudo_labels, self.confidence = propagate_labels(
            self.memory_bank.entries,
            ctx.labels,
            self.n_classes,
            self.params["propagation_k"],
            self.params["density_k"],
            self.params["temperature"],
        )

    def loss(self, views, labels=None, index=None):
        self.check_views(views)
        if labels is None:
            raise ValueError(f"{self.name} needs labels (-1 = unlabelled), got None")
        if index is None:
            raise ValueError(f"{self.name} needs the batch's positions (index), got None")
        if len(self.memory_bank) == 0:
            raise RuntimeError(f"{self.name}: the memory bank is empty; call setup(n_images)")
        features = self.backbone(views[0])
        v = F.normalize(self.head(features).float(), dim=1)
        self._pending = (index, v.detach())  # the bank moves after the step (memory_bank.py)
        logits = self.classifier(features).float()
        if self.pseudo_labels is None:
            return self._warmup_loss(v, logits, labels, index)
        with torch.autocast(v.device.type, enabled=False):  # bank logits in float32
            return local_label_propagation_loss(
                v,
                logits,
                self.memory_bank.entries,
                index,
                self.pseudo_labels,
                self.confidence,
                self.background_k,
                self.params["temperature"],
            )

    def _warmup_loss(self, v, logits, labels, index) -> dict:
        """Instance Recognition + cross-entropy of the batch's labelled rows."""
        out = self.instance_loss(v, index)
        labelled = labels >= 0
        ce = F.cross_entropy(logits[labelled], labels[labelled], reduction="sum")
        ce = ce / labelled.sum().clamp(min=1)
        return {**out, "loss": out["loss"] + ce, "invariance": out["invariance"] + ce}
