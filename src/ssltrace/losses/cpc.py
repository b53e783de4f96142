"""CPC's InfoNCE over a grid of crop embeddings (van den Oord et al., 2018, eq. 4; Hénaff et
al., 2019, §2 and the pseudo-code of their Appendix A.2).

Crops of an image form a grid of R rows and C columns; z_{b,r,c} are their target embeddings
[B, R, C, T]. For each offset k, the prediction made from the context of row r, zhat^k_{b,r,c}
(r = 0..R-1-k), is scored against every target embedding of the batch (the other crops of the
same image and all crops of the other images are the negatives):

    s_{(b,r,c), l} = zhat^k_{b,r,c} . z_l                      for all l = (b', r', c')
    l^k_{b,r,c}   = -s_{(b,r,c), (b,r+k,c)} + log sum_l exp(s_{(b,r,c), l})

The loss is the sum over offsets k of the mean of l^k over its predictions (Hénaff et al.'s
pseudo-code adds one mean cross-entropy per offset).

Split (as NT-Xent's "denominator" split, Wang & Isola 2020): `invariance` = the sum over k of
the mean -s of the true target (the pull of each prediction towards the crop it predicts),
`regularisation` = the sum over k of the mean log-sum-exp (the push away from all other
crops); they add up to `loss`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def cpc_loss(predictions: Mapping[int, torch.Tensor], targets: torch.Tensor) -> dict:
    """InfoNCE of `predictions` {k: [B, R-k, C, T]} against `targets` [B, R, C, T]."""
    if targets.ndim != 4:
        raise ValueError(f"targets must be [batch, rows, cols, dim], got {tuple(targets.shape)}")
    if not predictions:
        raise ValueError("predictions must hold at least one offset")
    batch, rows, cols, dim = targets.shape
    dtype = torch.promote_types(targets.dtype, torch.float32)  # bf16 under autocast: float32
    flat = targets.reshape(-1, dim).to(dtype)
    invariance = regularisation = flat.new_zeros(())
    for k, prediction in predictions.items():
        if not 1 <= k < rows or prediction.shape != (batch, rows - k, cols, dim):
            raise ValueError(
                f"prediction for offset {k} must be [{batch}, {rows - k}, {cols}, {dim}] with "
                f"1 <= k < {rows}, got {tuple(prediction.shape)}"
            )
        scores = prediction.reshape(-1, dim).to(dtype) @ flat.T
        # The true target of prediction (b, r, c) is (b, r + k, c): its score as a dot product.
        true = (prediction.to(dtype) * targets[:, k:].to(dtype)).sum(dim=3)
        invariance = invariance - true.mean()
        regularisation = regularisation + torch.logsumexp(scores, dim=1).mean()
    loss = invariance + regularisation
    return {"loss": loss, "invariance": invariance, "regularisation": regularisation}
