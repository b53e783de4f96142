"""SimSiam's symmetrised negative cosine similarity (Chen & He, 2021, Algorithm 1).

    D(p, z) = -cos(p, stopgrad(z))
    L = D(p1, z2) / 2 + D(p2, z1) / 2

with p the predictor outputs and z the projector outputs of the two views, averaged over the
batch. SimSiam has no explicit anti-collapse term (stop-gradient and the predictor prevent
collapse), so `invariance` is the whole loss and `regularisation` is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssltrace.losses._checks import check_pair


def negative_cosine(p: torch.Tensor, z: torch.Tensor, stop_gradient: bool = True) -> torch.Tensor:
    """Mean over the batch of -cos(p_i, z_i), with z detached when `stop_gradient`."""
    if stop_gradient:
        z = z.detach()
    return -F.cosine_similarity(p, z, dim=1).mean()


def simsiam_loss(
    p1: torch.Tensor,
    p2: torch.Tensor,
    z1: torch.Tensor,
    z2: torch.Tensor,
    stop_gradient: bool = True,
) -> dict:
    """Symmetrised SimSiam loss; `stop_gradient=False` is the collapsing ablation (paper Fig. 2)."""
    check_pair("p1", p1, "z2", z2)
    check_pair("p2", p2, "z1", z1)
    loss = 0.5 * negative_cosine(p1, z2, stop_gradient) + 0.5 * negative_cosine(
        p2, z1, stop_gradient
    )
    return {"loss": loss, "invariance": loss, "regularisation": torch.zeros_like(loss)}
