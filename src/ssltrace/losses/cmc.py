"""CMC's contrastive losses between the L and ab views (Tian, Krishnan & Isola, 2019, §3).

Both views are embedded and l2-normalised: v_l, v_ab [B, D]. CMC's two-view loss is the sum
of both directions, L = L(l -> ab) + L(ab -> l) ("Contrastive learning with two views";
`l_loss + ab_loss` in its train_CMC.py). For direction l -> ab, anchor v_l,i is scored
against the ab memory bank M_ab (one running-average embedding per training image) at K+1
rows: its own image's row s_i0 = M_ab[y_i] . v_l,i / t and K rows drawn uniformly at random,
s_ij (j = 1..K).

`nce` (the paper's default, "Implementing the contrastive loss"; NCEAverage + NCECriterion
of its code): with n the number of training images, P_ij = exp(s_ij) / Z (Z a constant, set
once from the first batch as mean exp(s) * n) and the noise probability K / n,

    l_i = -log(P_i0 / (P_i0 + K/n + eps)) - sum_{j=1..K} log((K/n) / (P_ij + K/n + eps)).

`invariance` is the first (data) term: it only pulls v_l,i towards M_ab[y_i]; `regularisation`
the second (noise) term: it only pushes v_l,i away from the sampled rows.

`softmax` (the code's `--softmax`, NCESoftmaxLoss): l_i = -s_i0 + log sum_{j=0..K} exp(s_ij);
`invariance` is -s_i0, `regularisation` the log-sum-exp, as for NT-Xent and MoCo.

`in_batch` InfoNCE (the in-batch form of the same softmax; no memory bank): the negatives of
v_l,i are the other images' ab embeddings of the batch, s_ij = v_l,i . v_ab,j / t; split as
`softmax`.

Every term is the batch mean, summed over the two directions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssltrace.losses._checks import check_pair, check_positive

NCE_EPS = 1e-7  # NCECriterion's eps
OBJECTIVES = ("nce", "softmax", "in_batch")


def bank_logits(
    anchor: torch.Tensor, bank: torch.Tensor, sample: torch.Tensor, temperature: float
) -> torch.Tensor:
    """s_ij = bank[sample[i, j]] . anchor_i / t, [B, K+1], from one [B, n] product.

    CMC's code gathers the [B, K+1, D] bank rows first; scoring all n rows and gathering the
    scores gives the same numbers with B x n instead of B x (K+1) x D values in memory
    (at CIFAR scale, n = 25k against (K+1) D = 524k).
    """
    return (anchor @ bank.detach().T).gather(1, sample) / temperature


def nce_parts(logits: torch.Tensor, normaliser: torch.Tensor, n_data: int) -> dict:
    """NCE of logits [B, K+1] (column 0: the positive) with constant Z = `normaliser`."""
    k = logits.shape[1] - 1
    noise = k / n_data  # K P_n, P_n = 1 / n uniform noise
    p = torch.exp(logits) / normaliser
    data = -torch.log(p[:, 0] / (p[:, 0] + noise + NCE_EPS))
    noise_terms = -torch.log(noise / (p[:, 1:] + noise + NCE_EPS)).sum(dim=1)
    return _parts(data.mean(), noise_terms.mean())


def softmax_parts(logits: torch.Tensor) -> dict:
    """Cross-entropy of logits [B, K+1] with the positive in column 0."""
    return _parts(-logits[:, 0].mean(), torch.logsumexp(logits, dim=1).mean())


def cmc_bank_loss(
    v_l: torch.Tensor,
    v_ab: torch.Tensor,
    memory_l: torch.Tensor,
    memory_ab: torch.Tensor,
    sample: torch.Tensor,
    temperature: float,
    objective: str = "nce",
    normalisers: torch.Tensor | None = None,
) -> dict:
    """Both directions against the memory banks [n, D]; `sample` [B, K+1] holds bank rows,
    column 0 each image's own.

    `nce` needs `normalisers` = (Z_l, Z_ab), a float tensor [2]: entries <= 0 are set in place
    from this batch's scores (Z = mean exp(s) * n), as CMC's NCEAverage does on its first batch.
    """
    check_pair("v_l", v_l, "v_ab", v_ab)
    check_positive("temperature", temperature)
    v_l, v_ab = F.normalize(v_l, dim=1), F.normalize(v_ab, dim=1)
    # Direction l -> ab scores v_l against the ab bank (NCEAverage's out_l), and vice versa.
    out_l = bank_logits(v_l, memory_ab, sample, temperature)
    out_ab = bank_logits(v_ab, memory_l, sample, temperature)
    if objective == "softmax":
        return _sum(softmax_parts(out_l), softmax_parts(out_ab))
    if objective != "nce":
        raise ValueError(f"objective must be 'nce' or 'softmax' here, got {objective!r}")
    if normalisers is None or normalisers.shape != (2,):
        raise ValueError("the nce objective needs normalisers, a tensor [2] (Z_l, Z_ab)")
    n_data = memory_l.shape[0]
    with torch.no_grad():
        estimate = torch.stack([torch.exp(out.detach()).mean() * n_data for out in (out_l, out_ab)])
        # On the device, no .item(): reading the flag back would sync a GPU every step.
        normalisers.copy_(torch.where(normalisers > 0, normalisers, estimate))
    z_l, z_ab = normalisers.detach().clone()
    return _sum(nce_parts(out_l, z_l, n_data), nce_parts(out_ab, z_ab, n_data))


def cmc_in_batch_loss(v_l: torch.Tensor, v_ab: torch.Tensor, temperature: float = 0.07) -> dict:
    """In-batch InfoNCE, both directions: row i of `v_l` and `v_ab` is the same image."""
    check_pair("v_l", v_l, "v_ab", v_ab, min_rows=2)
    check_positive("temperature", temperature)
    v_l, v_ab = F.normalize(v_l, dim=1), F.normalize(v_ab, dim=1)
    logits = v_l @ v_ab.T / temperature  # row i: anchor v_l,i; column j: anchor v_ab,j
    alignment = -logits.diagonal().mean()
    l_to_ab = _parts(alignment, torch.logsumexp(logits, dim=1).mean())
    ab_to_l = _parts(alignment, torch.logsumexp(logits, dim=0).mean())
    return _sum(l_to_ab, ab_to_l)


@torch.no_grad()
def update_bank_(bank: torch.Tensor, index: torch.Tensor, v: torch.Tensor, momentum: float):
    """bank[index] <- normalise(m bank[index] + (1 - m) v), CMC's running average (NCEAverage)."""
    mixed = bank[index] * momentum + v.detach().to(bank.dtype) * (1 - momentum)
    bank.index_copy_(0, index, F.normalize(mixed, dim=1))


def _parts(invariance: torch.Tensor, regularisation: torch.Tensor) -> dict:
    return {
        "loss": invariance + regularisation,
        "invariance": invariance,
        "regularisation": regularisation,
    }


def _sum(a: dict, b: dict) -> dict:
    return {key: a[key] + b[key] for key in a}
