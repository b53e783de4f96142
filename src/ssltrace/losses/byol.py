"""BYOL's symmetrised normalised mean squared error (Grill et al., 2020, eq. 2).

    L(q, z') = || q / ||q|| - z' / ||z'|| ||^2 = 2 - 2 cos(q, z')
    loss = L(q1, z'2) + L(q2, z'1)

with q the online predictions and z' the target projections (no gradient flows into the
target), averaged over the batch. Like SimSiam, BYOL has no explicit anti-collapse term, so
`invariance` is the whole loss and `regularisation` is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssltrace.losses._checks import check_pair


def _normalised_mse(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return (2 - 2 * F.cosine_similarity(q, z.detach(), dim=1)).mean()


def byol_loss(q1: torch.Tensor, q2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor) -> dict:
    """Online predictions `q1`, `q2` against target projections `t1`, `t2` ([N, D] each)."""
    check_pair("q1", q1, "t2", t2)
    check_pair("q2", q2, "t1", t1)
    loss = _normalised_mse(q1, t2) + _normalised_mse(q2, t1)
    return {"loss": loss, "invariance": loss, "regularisation": torch.zeros_like(loss)}
