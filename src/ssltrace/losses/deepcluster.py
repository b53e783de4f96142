"""DeepCluster's loss (Caron et al., 2018, eq. 1): cross-entropy of the top layer's logits
against the k-means pseudo-labels of the images.

With z_i the logits of an augmented view of image i (the top layer on the head's features)
and y_i the cluster of the un-augmented image i,

    loss = mean_i ( -z_{i, y_i} + log sum_c exp(z_{i, c}) )

Split: the whole cross-entropy is `invariance`: it makes an augmented view predict the cluster
of its un-augmented image, so what it rewards is a representation invariant to the
augmentations at the grain of the clusters. `regularisation` is 0: the paper's objective has
no term against collapse; DeepCluster avoids trivial solutions outside the loss (§3.3: empty
clusters re-seeded inside k-means, cluster-balanced sampling of the images), so a zero says
that no part of the gradient serves that purpose. (Splitting the cross-entropy into its
-z_y and log-sum-exp parts, as NT-Xent is split, would not fit: DeepCluster's logits are
unbounded linear scores of a classifier re-drawn every epoch, not similarities.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def deepcluster_loss(logits: torch.Tensor, pseudo_labels: torch.Tensor) -> dict:
    """Mean cross-entropy of `logits` [N, k] against cluster indices `pseudo_labels` [N]."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
        raise ValueError(f"logits must be a 2-D tensor [batch, clusters], got {shape}")
    if (
        not isinstance(pseudo_labels, torch.Tensor)
        or pseudo_labels.ndim != 1
        or pseudo_labels.shape[0] != logits.shape[0]
    ):
        shape = getattr(pseudo_labels, "shape", None)
        shape = tuple(shape) if shape is not None else type(pseudo_labels).__name__
        raise ValueError(f"pseudo_labels must be [{logits.shape[0]}] cluster indices, got {shape}")
    invariance = F.cross_entropy(logits, pseudo_labels)
    regularisation = torch.zeros_like(invariance)
    return {
        "loss": invariance + regularisation,
        "invariance": invariance,
        "regularisation": regularisation,
    }
