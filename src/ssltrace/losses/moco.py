"""MoCo's InfoNCE against a queue of negative keys (He et al., 2020, eq. 1; Chen et al., 2020).

With q the l2-normalised queries, k+ their l2-normalised positive keys (from the momentum
encoder, no gradient) and the K queued keys k_j as negatives,

    l_i = -q_i . k+_i / t + log( exp(q_i . k+_i / t) + sum_j exp(q_i . k_j / t) )

averaged over the batch. The split mirrors NT-Xent: `invariance` is the mean of the first
(alignment) term, `regularisation` the mean of the log-sum-exp (uniformity) term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssltrace.losses._checks import check_pair, check_positive


def moco_infonce_loss(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2
) -> dict:
    """InfoNCE of queries `q` [N, D] with positives `k` [N, D] and negatives `queue` [K, D]."""
    check_pair("q", q, "k", k)
    check_positive("temperature", temperature)
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be [K, {q.shape[1]}], got {tuple(queue.shape)}")
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True) / temperature
    negative = q @ queue.detach().T / temperature
    alignment = -positive.squeeze(1)
    uniformity = torch.logsumexp(torch.cat([positive, negative], dim=1), dim=1)
    invariance = alignment.mean()
    regularisation = uniformity.mean()
    return {
        "loss": invariance + regularisation,
        "invariance": invariance,
        "regularisation": regularisation,
    }
