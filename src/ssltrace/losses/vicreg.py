"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce & LeCun, 2022).

    s(Z, Z') = mean_i ||z_i - z'_i||^2 / D                 (invariance, MSE)
    v(Z)     = mean_j max(0, 1 - sqrt(Var(z^j) + eps))     (variance, unbiased Var, gamma = 1)
    c(Z)     = sum_{j != k} C(Z)_{jk}^2 / D                (covariance, C unbiased)
    loss     = lambda s + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]

as both the VICReg paper and seed paper 004 (Eq. 1) write it. `variance="mean"` is the
authors' code, which averages the two variance terms, mu (v(Z) + v(Z')) / 2 (a named option:
results trained with that code used it). `invariance` is lambda s; `regularisation` is the
variance plus covariance part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssltrace.losses._checks import check_pair

VARIANCE_TERMS = ("sum", "mean")


def _variance_term(z: torch.Tensor, eps: float) -> torch.Tensor:
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1 - std).mean()


def _covariance_term(z: torch.Tensor) -> torch.Tensor:
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / d


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
    variance: str = "sum",
) -> dict:
    """VICReg loss of two views `z1`, `z2` [N, D], N >= 2; `variance` "sum" (the papers) or
    "mean" (the authors' code) of the two views' variance terms."""
    check_pair("z1", z1, "z2", z2, min_rows=2)
    if variance not in VARIANCE_TERMS:
        raise ValueError(f"variance must be one of {', '.join(VARIANCE_TERMS)}, got {variance!r}")
    invariance = sim_coeff * F.mse_loss(z1, z2)
    terms = _variance_term(z1, eps) + _variance_term(z2, eps)
    variance = terms / 2 if variance == "mean" else terms
    covariance = _covariance_term(z1) + _covariance_term(z2)
    regularisation = std_coeff * variance + cov_coeff * covariance
    return {
        "loss": invariance + regularisation,
        "invariance": invariance,
        "regularisation": regularisation,
    }
