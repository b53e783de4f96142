"""Cross-entropy for the supervised baseline.

    loss = mean_i ( -logit_{i, y_i} + log sum_c exp(logit_{i, c}) )

A supervised objective has no invariance/regularisation split, so both parts are NaN: a
table or figure that plots them shows a gap rather than a made-up number.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Mean cross-entropy of `logits` [N, C] against integer `labels` [N] in 0..C-1."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be [batch, classes], got {tuple(logits.shape)}")
    if labels is None or labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        shape = None if labels is None else tuple(labels.shape)
        raise ValueError(f"labels must be [{logits.shape[0]}] class indices, got {shape}")
    loss = F.cross_entropy(logits, labels)
    nan = torch.full_like(loss, float("nan"))
    return {"loss": loss, "invariance": nan, "regularisation": nan.clone()}
