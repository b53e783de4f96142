"""Barlow Twins' redundancy-reduction loss (Zbontar et al., 2021, eq. 1).

With each view's embeddings normalised along the batch (zero mean, unit variance per dimension,
as the authors' affine-free BatchNorm does: biased variance, eps inside the square root) and
C = Z1n^T Z2n / N their cross-correlation,

    loss = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2

`invariance` is the on-diagonal term, `regularisation` the weighted off-diagonal
(redundancy-reduction) term.
"""

from __future__ import annotations

import torch

from ssltrace.losses._checks import check_pair, check_positive


def batch_standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(z - batch mean) / sqrt(biased batch variance + eps), per dimension."""
    mean = z.mean(dim=0)
    var = z.var(dim=0, unbiased=False)
    return (z - mean) / torch.sqrt(var + eps)


def barlow_twins_loss(
    z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, eps: float = 1e-5
) -> dict:
    """Barlow Twins loss of two views `z1`, `z2` [N, D], N >= 2."""
    check_pair("z1", z1, "z2", z2, min_rows=2)
    check_positive("lambd", lambd)
    c = batch_standardise(z1, eps).T @ batch_standardise(z2, eps) / z1.shape[0]
    diagonal = torch.diagonal(c)
    invariance = (1 - diagonal).pow(2).sum()
    regularisation = lambd * (c.pow(2).sum() - diagonal.pow(2).sum())
    return {
        "loss": invariance + regularisation,
        "invariance": invariance,
        "regularisation": regularisation,
    }
