"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al., 2020).

With the 2N embeddings of a batch l2-normalised, s(i, k) their cosine similarity and p(i) the
other view of sample i, each anchor's loss is

    l_i = -s(i, p(i)) / t + log sum_{k != i} exp(s(i, k) / t)

and the loss is the mean of l_i over all 2N anchors. The split follows Wang & Isola (2020):
`invariance` is the mean of the first (alignment) term, `regularisation` the mean of the
log-sum-exp (uniformity) term; they add up to `loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssltrace.losses._checks import check_pair, check_positive


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> dict:
    """NT-Xent over two views `z1`, `z2` [N, D] (row i of each is the same image)."""
    check_pair("z1", z1, "z2", z2, min_rows=2)
    check_positive("temperature", temperature)
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
    regularisation = uniformity.mean()
    return {
        "loss": invariance + regularisation,
        "invariance": invariance,
        "regularisation": regularisation,
    }
