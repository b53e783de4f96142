"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al., 2020).

With the 2N embeddings of a batch l2-normalised, s(i, k) their cosine similarity and p(i) the
other view of sample i, each anchor's loss is

    l_i = -s(i, p(i)) / t + log sum_{k != i} exp(s(i, k) / t)

and the loss is the mean of l_i over all 2N anchors. `invariance` is the mean of the first
(alignment) term. `regularisation` follows seed paper 004 §2.1 by default ("cross_view"): the
mean over anchors of log sum_{j != i} exp(s(z_i, z'_j) / t), the negatives of the other view
only; then invariance + regularisation is not the optimised loss (which also has the positive
and the same-view negatives in its denominator). "denominator" is the Wang & Isola (2020)
split, the log-sum-exp of the loss's own denominator, which adds up to `loss` exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssltrace.losses._checks import check_pair, check_positive

SPLITS = ("cross_view", "denominator")


def nt_xent_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, split: str = "cross_view"
) -> dict:
    """NT-Xent over two views `z1`, `z2` [N, D] (row i of each is the same image); `split`
    chooses how the logged regularisation is defined (module docstring)."""
    check_pair("z1", z1, "z2", z2, min_rows=2)
    check_positive("temperature", temperature)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    # An anchor is never its own negative: -inf drops it from the log-sum-exp.
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    alignment = -logits[torch.arange(2 * n, device=z.device), positive]
    uniformity = torch.logsumexp(logits, dim=1)
    invariance = alignment.mean()
    loss = invariance + uniformity.mean()
    if split == "denominator":
        regularisation = uniformity.mean()
    else:
        regularisation = _cross_view_negatives(logits, n).detach()
    return {"loss": loss, "invariance": invariance, "regularisation": regularisation}


def _cross_view_negatives(logits: torch.Tensor, n: int) -> torch.Tensor:
    """Mean over the 2N anchors of log sum over the other view's samples j != i (seed 004)."""
    cross = torch.cat([logits[:n, n:], logits[n:, :n]])  # [2N, N]: anchor i vs other view
    own = torch.eye(n, dtype=torch.bool, device=logits.device).repeat(2, 1)
    return torch.logsumexp(cross.masked_fill(own, float("-inf")), dim=1).mean()
