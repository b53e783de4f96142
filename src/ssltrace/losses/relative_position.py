"""Relative position's loss (Doersch, Gupta & Efros, 2015, §3): which of the 8 neighbours of
the first patch the second patch is.

With s_i the 8 logits of pair i and y_i its position (0..7, Doersch et al.'s Fig. 2 numbering
1..8 minus one: row by row around the centre),

    loss = mean_i ( -s_{i, y_i} + log sum_{c=0..7} exp(s_{i, c}) ).

Split: the whole cross-entropy is `invariance` and `regularisation` is 0: the task predicts a
property of the image's layout, with no views to make invariant and no term against collapse
(the classification target itself rules a constant representation out), as for DeepCluster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POSITIONS = 8


def relative_position_loss(logits: torch.Tensor, positions: torch.Tensor) -> dict:
    """Mean cross-entropy of `logits` [N, 8] against the positions [N] (0..7)."""
    if logits.ndim != 2 or logits.shape[1] != POSITIONS:
        raise ValueError(f"logits must be [pairs, {POSITIONS}], got {tuple(logits.shape)}")
    if positions.shape != (len(logits),):
        raise ValueError(f"positions must be [{len(logits)}], got {tuple(positions.shape)}")
    loss = F.cross_entropy(logits.float(), positions)
    return {"loss": loss, "invariance": loss, "regularisation": torch.zeros_like(loss)}
